import { hkdfSync, randomBytes } from "node:crypto";
import {
  deriveKey,
  deviceApiKey,
  deviceMacKey,
  deviceMqttPassword,
  fleetManifestMacKey,
  newFleetKey,
  operatorSigningKey,
  rolloutBucketKey,
  safeEqual,
} from "../../server/infra/auth/keys";

// The salt and info layout are part of the key hierarchy in docs/security.md.
const nodeHkdf = (master: Buffer, ...info: (string | number)[]) =>
  Buffer.from(hkdfSync("sha256", master, Buffer.from("esp32-ota/v1"), Buffer.from(info.map(String).join("\0"), "utf8"), 32));

describe("key derivation", () => {
  it("is exactly HKDF-SHA256 (Node's hkdfSync) for every key kind, many secrets and ids", () => {
    for (let i = 0; i < 200; i++) {
      const master = randomBytes(32);
      const id = `24:0a:c4:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
      const gen = i % 3;
      expect(deviceMacKey(master, id, gen)).toEqual(nodeHkdf(master, "device-mac-key", id, gen));
      expect(deviceApiKey(master, id, gen)).toBe("otadev_" + nodeHkdf(master, "device-api-key", id, gen).toString("base64url"));
      expect(operatorSigningKey(master)).toEqual(nodeHkdf(master, "operator-jwt"));
      expect(deviceMqttPassword(master, id, gen)).toBe("otamqtt_" + nodeHkdf(master, "device-mqtt-password", id, gen).toString("base64url"));
      expect(fleetManifestMacKey(master, gen)).toEqual(nodeHkdf(master, "fleet-manifest-mac-key", gen));
      expect(rolloutBucketKey(master)).toEqual(nodeHkdf(master, "rollout-bucket"));
    }
  });

  it("a new fleet key is 32 random bytes; its id, shown in listings, is only its first 8 characters", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const { key, id } = newFleetKey();
      expect(key).toMatch(/^otafleet_[A-Za-z0-9_-]{43}$/);
      expect(id).toBe(key.slice("otafleet_".length, "otafleet_".length + 8));
      seen.add(key);
    }
    expect(seen.size).toBe(50);
  });

  it("a fleet key's id never starts with '-', which a command line would read as an option", () => {
    // One random id in 64 would; of 2,000, at least one would all but surely (1 - (63/64)^2000).
    const ids = Array.from({ length: 2000 }, () => newFleetKey().id);
    expect(ids.filter((id) => id.startsWith("-"))).toEqual([]);
    expect(ids.some((id) => id.startsWith("_"))).toBe(true); // the rest of the alphabet stays
  });

  it("separates secrets, labels, ids and generations", () => {
    const a = randomBytes(32);
    const b = randomBytes(32);
    const keys = [
      deriveKey(a, "device-mac-key", "dev-1", 0),
      deriveKey(b, "device-mac-key", "dev-1", 0),
      deriveKey(a, "device-api-key", "dev-1", 0),
      deriveKey(a, "device-mac-key", "dev-2", 0),
      deriveKey(a, "device-mac-key", "dev-1", 1),
    ].map((k) => k.toString("hex"));
    expect(new Set(keys).size).toBe(keys.length);
    // The cached extract step must follow the secret, not the first one it saw.
    expect(deriveKey(a, "x", 1)).toEqual(nodeHkdf(a, "x", 1));
    expect(deriveKey(b, "x", 1)).toEqual(nodeHkdf(b, "x", 1));
  });
});

describe("safeEqual", () => {
  it("is true only for the same bytes, whatever their length or type", () => {
    const key = deviceApiKey(randomBytes(32), "dev-1", 1);
    expect(safeEqual(key, key.slice())).toBe(true);
    expect(safeEqual(key, Buffer.from(key))).toBe(true);
    for (const i of [0, 7, key.length - 1]) {
      const other = key.slice(0, i) + (key[i] === "A" ? "B" : "A") + key.slice(i + 1);
      expect(safeEqual(other, key)).toBe(false);
    }
    expect(safeEqual(key.slice(0, -1), key)).toBe(false);
    expect(safeEqual(key + "A", key)).toBe(false);
    expect(safeEqual("", key)).toBe(false);
    expect(safeEqual("", "")).toBe(true);
  });
});
