// Deterministic bucketing: a device's place in a rollout is a keyed hash of the rollout and the device id
// into 0..9999, so a stage of p % holds exactly the devices whose bucket is below p × 100, whatever order
// they poll in, and a device that joins the fleet later lands where its id says. The key is derived from
// the master secret, so nobody can pick ids that land in (or out of) the first stage; the rollout id in the
// hash gives every rollout a different first stage, so the same devices are not always the canaries.
import { createHmac } from "node:crypto";

export const BUCKETS = 10_000;

export function bucketOf(key: Buffer, rolloutId: string, deviceId: string): number {
  const mac = createHmac("sha256", key).update(`${rolloutId}\n${deviceId}`).digest();
  return mac.readUInt32BE(0) % BUCKETS;
}

/** Buckets below this number are in a stage of `percent` % (0.01 % steps). */
export function stageLimit(percent: number): number {
  return Math.round(percent * 100);
}
