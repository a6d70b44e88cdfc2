// What a device gets when it is provisioned, and what it computes per request: tests that speak for a device.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** The provisioning bundle `POST /api/v1/devices/:id/provision` answers with. */
export interface Bundle {
  deviceId: string;
  apiKey: string;
  hmacKey: string;
  keyGeneration: number;
  serverUrl: string;
  ca: string;
}

/** A fresh X-Nonce. */
export const nonce = () => randomBytes(12).toString("base64url");

/** HMAC-SHA256 under a hex key, as hex: how a device checks X-Manifest-HMAC. */
export const mac = (hexKey: string, data: string | Buffer) => createHmac("sha256", Buffer.from(hexKey, "hex")).update(data).digest("hex");

/**
 * What the agent makes of a manifest answer to the request it sent with `sentNonce` (device/src/agent/checkin.ts):
 * the MAC over the exact body under its own key, compared in constant time, then the nonce and device id inside.
 */
export function agentVerdict(d: Bundle, sentNonce: string, r: { headers: Record<string, unknown>; body: Buffer }): "ok" | "hmac_mismatch" | "replayed_manifest" {
  const sent = r.headers["x-manifest-hmac"];
  const computed = createHmac("sha256", Buffer.from(d.hmacKey, "hex")).update(r.body).digest();
  if (typeof sent !== "string" || !/^[0-9a-fA-F]{64}$/.test(sent) || !timingSafeEqual(Buffer.from(sent, "hex"), computed)) return "hmac_mismatch";
  const m = JSON.parse(r.body.toString("utf8")) as { nonce?: unknown; device_id?: unknown };
  return m.nonce === sentNonce && m.device_id === d.deviceId ? "ok" : "replayed_manifest";
}
