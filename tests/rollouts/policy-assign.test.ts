// The rules behind offers and rollouts, as pure functions: thresholds, bucketing, and which release a
// device gets (the HTTPS tests show the same rules end to end).
import { randomBytes } from "node:crypto";
import { assign, type AssignDeps, type DeviceFacts } from "../../server/domain/releases/assign";
import type { CompiledRelease } from "../../server/domain/releases/release-store";
import { compareVersions } from "../../server/domain/releases/version";
import { BUCKETS, bucketOf, stageLimit } from "../../server/domain/rollouts/bucket";
import { pauseReason, readyToAdvance, rolloutPolicySchema } from "../../server/domain/rollouts/policy";
import { release } from "../helpers/releases";

const policy = rolloutPolicySchema.parse({ max_failure_rate: 20, max_rollback_rate: 10, failure_min_sample: 5, success_threshold: 90, min_sample: 4 });

describe("rollout policy", () => {
  it("has documented defaults", () => {
    expect(rolloutPolicySchema.parse({})).toEqual({
      stages: [10, 50, 100],
      advance: "manual",
      success_threshold: 95,
      min_sample: 10,
      max_failure_rate: 10,
      max_rollback_rate: 10,
      failure_min_sample: 5,
    });
  });

  it("judges failure and rollback rates only over the minimum sample, and pauses only when a rate passes its threshold", () => {
    expect(pauseReason(policy, { succeeded: 0, failed: 4, rolledBack: 0 })).toBeNull();
    expect(pauseReason(policy, { succeeded: 4, failed: 1, rolledBack: 0 })).toBeNull(); // exactly 20 %
    expect(pauseReason(policy, { succeeded: 3, failed: 2, rolledBack: 0 })).toBe("failure rate 40% (2 of 5 finished devices) passed the 20% threshold");
    expect(pauseReason(policy, { succeeded: 8, failed: 0, rolledBack: 2 })).toBe("rollback rate 20% (2 of 10 finished devices) passed the 10% threshold");
  });

  it("advances when the stage's sample is large enough and its success rate reaches the threshold", () => {
    expect(readyToAdvance(policy, { succeeded: 3, failed: 0, rolledBack: 0 })).toBe(false);
    expect(readyToAdvance(policy, { succeeded: 9, failed: 1, rolledBack: 0 })).toBe(true); // exactly 90 %
    expect(readyToAdvance(policy, { succeeded: 8, failed: 1, rolledBack: 1 })).toBe(false);
  });
});

describe("bucketing", () => {
  it("spreads ids evenly over 0..9999 and differs per rollout", () => {
    const key = randomBytes(32);
    const counts = new Array(10).fill(0);
    let same = 0;
    let outside = 0;
    for (let i = 0; i < 50_000; i++) {
      const id = `dev-${i}`;
      const b = bucketOf(key, "ro_a", id);
      if (!(b >= 0 && b < BUCKETS && Number.isInteger(b))) outside++;
      counts[Math.floor(b / 1000)]++;
      if (b === bucketOf(key, "ro_b", id)) same++;
    }
    expect(outside).toBe(0);
    for (const c of counts) expect(Math.abs(c - 5000)).toBeLessThan(300);
    expect(same).toBeLessThan(50);
  });

  it("a stage of p % holds the buckets below p × 100", () => {
    expect([stageLimit(0.01), stageLimit(12.34), stageLimit(100)]).toEqual([1, 1234, 10_000]);
  });
});

describe("versions", () => {
  it("compare by their first x.y.z, and have no order without one", () => {
    expect(compareVersions("v1.4.1-2-g0296947-dirty", "v4.1-dev-1935-g647cb62-dirty")).toBe(-1);
    expect(compareVersions("2.0.0", "v2.0.0-rc1")).toBe(0);
    expect(compareVersions("9036908-dirty", "1.0.0")).toBe(1); // the ESPHome build's hash reads as 9036908.0.0
    expect(compareVersions("nightly", "1.0.0")).toBeNull();
  });
});

describe("assignment", () => {
  const rel = release;
  const device = (o: Partial<DeviceFacts> = {}): DeviceFacts => ({ id: "d1", chip: "esp32", chipRev: null, version: null, channel: "stable", group: null, tags: null, pinned: null, ...o });
  const deps = (releases: CompiledRelease[], included: (r: CompiledRelease) => boolean = () => true): AssignDeps => ({
    channel: (c) => releases.filter((r) => r.channel === c).sort((a, b) => b.id - a.id),
    get: (n) => releases.find((r) => r.name === n),
    includes: (r) => included(r),
  });

  it("takes the newest release whose rollout includes the device, falling back to older ones", () => {
    const a = rel({ version: "1.0.0" });
    const b = rel({ version: "2.0.0" });
    expect(assign(device(), deps([a, b]))?.release).toBe(b);
    expect(assign(device(), deps([a, b], (r) => r === a))?.release).toBe(a);
    expect(assign(device(), deps([a, b], () => false))).toBeNull();
  });

  it("never offers an image for another chip, an unknown chip, or a chip revision out of range", () => {
    const c3 = rel({ chip: "esp32c3", minChipRev: 3, maxChipRev: 199 });
    expect(assign(device({ chip: "esp32" }), deps([c3]))).toBeNull();
    expect(assign(device({ chip: null }), deps([c3]))).toBeNull();
    expect(assign(device({ chip: "esp32c3", chipRev: 2 }), deps([c3]))).toBeNull();
    expect(assign(device({ chip: "esp32c3", chipRev: 199 }), deps([c3]))?.release).toBe(c3);
  });

  it("a step on the upgrade path must fit the hardware too, and paths end after 8 steps", () => {
    const s3step = rel({ chip: "esp32s3", version: "1.5.0" });
    const final = rel({ version: "2.0.0", minVersion: "1.5.0", via: s3step.name });
    expect(assign(device({ version: "1.0.0" }), deps([s3step, final]))).toBeNull();
    const loop1 = rel({ version: "3.0.0", minVersion: "9.0.0" });
    const loop2 = rel({ version: "3.1.0", minVersion: "9.0.0", via: loop1.name });
    loop1.via = loop2.name;
    expect(assign(device({ version: "1.0.0" }), deps([loop1, loop2]))).toBeNull();
  });

  it("a pin is honoured only if the hardware fits and it is no downgrade unless allowed", () => {
    const old = rel({ version: "1.0.0" });
    expect(assign(device({ pinned: old.name, version: "2.0.0" }), deps([old]))).toBeNull();
    const back = rel({ version: "1.0.0", allowDowngrade: true });
    expect(assign(device({ pinned: back.name, version: "2.0.0" }), deps([back]))).toMatchObject({ release: back, pinned: true });
    expect(assign(device({ pinned: "gone" }), deps([old]))).toBeNull();
  });

  it("without an id a device matches only releases for everyone", () => {
    const targeted = rel({ targets: { groups: ["lab"], tags: [], devices: [] } });
    expect(assign(device({ id: null, group: "lab" }), deps([targeted]))).toBeNull();
    expect(assign(device({ group: "lab" }), deps([targeted]))?.release).toBe(targeted);
  });
});
