// What a device gets when it is provisioned, and what it computes per request: tests that speak for a device.
import { createHmac, randomBytes } from "node:crypto";

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
