// Key hierarchy (docs/security.md):
//   master secret ──HKDF──► per-device API key   (sent by the device in X-API-Key)
//                 ──HKDF──► per-device MAC key   (never sent: authenticates manifests to that device only)
//                 ──HKDF──► per-device MQTT password (the device's password at the broker, docs/mosquitto/)
//                 ──HKDF──► operator JWT signing key
//                 ──HKDF──► fleet manifest MAC key (optional, one for the whole fleet: weaker, off by default)
//                 ──HKDF──► rollout bucket key     (places devices in rollout stages)
// Fleet API keys and operator tokens are random and stored only as SHA-256 hashes.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

const SALT = Buffer.from("esp32-ota/v1");

export const FLEET_KEY_PREFIX = "otafleet_";
export const DEVICE_KEY_PREFIX = "otadev_";

/** HKDF's extract step depends only on the master secret: done once per secret, not per request. */
const prkCache = new WeakMap<Buffer, Buffer>();

/**
 * HKDF-SHA256 (RFC 5869) for one 32-byte output: PRK = HMAC(salt, master), OKM = HMAC(PRK, info || 0x01).
 * The same bytes as crypto.hkdfSync (tests/auth/keys.test.ts checks it), at a third of the cost, because a device's keys are
 * derived on every poll and hkdfSync builds key objects and redoes the extract step each time.
 */
function derive(master: Buffer, label: string, ...parts: (string | number)[]): Buffer {
  let prk = prkCache.get(master);
  if (!prk) {
    prk = createHmac("sha256", SALT).update(master).digest();
    prkCache.set(master, prk);
  }
  return createHmac("sha256", prk).update([label, ...parts.map(String)].join("\0"), "utf8").update(ONE).digest();
}

const ONE = Buffer.from([1]);

export { derive as deriveKey };

export function deviceApiKey(master: Buffer, deviceId: string, generation: number): string {
  return DEVICE_KEY_PREFIX + derive(master, "device-api-key", deviceId, generation).toString("base64url");
}

export function deviceMacKey(master: Buffer, deviceId: string, generation: number): Buffer {
  return derive(master, "device-mac-key", deviceId, generation);
}

const DEVICE_MQTT_PASSWORD_PREFIX = "otamqtt_";

/**
 * The device's password at the MQTT broker: its own secret, not its API key, so a broker (often run by another
 * team, and which sees every password in clear at each connect) learns nothing that opens the HTTPS API.
 */
export function deviceMqttPassword(master: Buffer, deviceId: string, generation: number): string {
  return DEVICE_MQTT_PASSWORD_PREFIX + derive(master, "device-mqtt-password", deviceId, generation).toString("base64url");
}

/** One key for every device: anyone who extracts it from one device can sign manifests for all of them. */
export function fleetManifestMacKey(master: Buffer, generation: number): Buffer {
  return derive(master, "fleet-manifest-mac-key", generation);
}

export function operatorSigningKey(master: Buffer): Buffer {
  return derive(master, "operator-jwt");
}

/** Keys the hash that places devices in rollout stages (server/domain/rollouts/bucket.ts). */
export function rolloutBucketKey(master: Buffer): Buffer {
  return derive(master, "rollout-bucket");
}

/** A new fleet key. Its id is typed on command lines (`ota apikey revoke ID`), so it never starts with "-". */
export function newFleetKey(): { key: string; id: string } {
  let raw = randomBytes(32).toString("base64url");
  while (raw.startsWith("-")) raw = randomBytes(32).toString("base64url");
  return { key: FLEET_KEY_PREFIX + raw, id: raw.slice(0, 8) };
}

export function sha256Hex(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Constant-time equality of a presented secret with the expected one. Equal lengths are compared byte by byte
 * directly; unequal lengths through fixed-size digests, so the time never depends on where they differ. (Every
 * secret compared here has a fixed, documented length, so that lengths differ is nothing to hide.)
 */
export function safeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const ba = typeof a === "string" ? Buffer.from(a, "utf8") : a;
  const bb = typeof b === "string" ? Buffer.from(b, "utf8") : b;
  if (ba.length === bb.length) return timingSafeEqual(ba, bb);
  return timingSafeEqual(createHash("sha256").update(ba).digest(), createHash("sha256").update(bb).digest());
}

export function hmacHex(key: Buffer, data: string | Buffer): string {
  return createHmac("sha256", key).update(data).digest("hex");
}
