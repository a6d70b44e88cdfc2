import { createHash } from "node:crypto";
import { analyzeImage, blockHashes } from "../../server/domain/catalog/analyze";
import { manifestBody } from "../../server/api/device/manifest";
import type { Offer } from "../../server/domain/releases/offer";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_S3, read, SIGNED_DIR } from "../helpers/fixtures";

function offer(file: string, blockSize: number, release: string | null = null): Offer {
  const data = read(file);
  const a = analyzeImage(data, 0x200000);
  if (!a.ok) throw new Error(a.message);
  const hashes = blockHashes(data, blockSize);
  return {
    ...a.facts,
    firstIngestedAt: "2026-01-01T00:00:00.000Z",
    lastIngestedAt: "2026-01-01T00:00:00.000Z",
    blockSize,
    blockCount: hashes.length / 32,
    blockHashes: hashes,
    blockHashesSha256: createHash("sha256").update(hashes).digest("hex"),
    release,
    allowDowngrade: release !== null,
  };
}

// The manifest text is built from a per-offer cached head plus the per-request fields; devices MAC these exact
// bytes, so they must be what JSON.stringify of the whole manifest gives, whatever the ids and nonces hold.
describe("manifest body", () => {
  const images = [offer(HELLO_WORLD, 8192), offer(HELLO_WORLD_S3, 4096, 'r"1\\')];

  it.each([
    ["aa:bb:cc:dd:ee:ff", "q3Zk0Yw2Jc1mX8rTq5a9"],
    [null, null],
    ['dev"quote\\back', "n".repeat(64)],
  ])("is exactly the JSON of the whole manifest (device %p)", (deviceId, nonce) => {
    for (const image of images) {
      for (const base of ["https://ota.example.com", "https://localhost:8443"]) {
        const body = manifestBody(image, base, 300, deviceId, nonce).toString("utf8");
        const parsed = JSON.parse(body);
        expect(parsed.device_id).toBe(deviceId);
        expect(parsed.nonce).toBe(nonce);
        expect(parsed.url).toBe(`${base}/firmware/sha256/${image.sha256}.bin`);
        expect(parsed.block_size).toBe(image.blockSize);
        expect([parsed.release, parsed.allow_downgrade]).toEqual([image.release, image.allowDowngrade]);
        expect(Date.parse(parsed.issued_at)).toBeGreaterThan(Date.now() - 60_000);
        // Byte-identical to a fresh JSON.stringify with the same key order.
        expect(body).toBe(JSON.stringify(parsed));
        expect(Object.keys(parsed).slice(-4)).toEqual(["interval", "device_id", "nonce", "issued_at"]);
      }
    }
  });

  it("says when the image was built and which Secure Boot v2 blocks it carries", () => {
    const signed = offer(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"), 4096);
    const m = JSON.parse(manifestBody(signed, "https://a.example", 300, null, null).toString());
    expect(m.build).toBe("Jul 25 2024 16:23:40");
    // The digest espsecure.py gives for the key the fixture was signed with (EXPECTED.json).
    expect(m.signatures).toEqual([{ scheme: "ecdsa256", key_digest: "d2273e801c66ddbeaf7f9bae12b67841a0b6e8b73d6d4f745d40d2c5936fba9b" }]);
    expect(JSON.parse(manifestBody(images[0]!, "https://a.example", 300, null, null).toString()).signatures).toEqual([]);
    // An image whose app description has no build date or time says so with an empty string.
    const undated = { ...images[0]!, buildDate: "", buildTime: "" };
    expect(JSON.parse(manifestBody(undated, "https://a.example", 300, null, null).toString()).build).toBe("");
  });

  it("changes with the offer: another interval or base gives another head", () => {
    const a = JSON.parse(manifestBody(images[0]!, "https://a.example", 300, "d", "n".repeat(16)).toString());
    const b = JSON.parse(manifestBody(images[0]!, "https://a.example", 60, "d", "n".repeat(16)).toString());
    const c = JSON.parse(manifestBody(images[0]!, "https://b.example", 300, "d", "n".repeat(16)).toString());
    expect([a.interval, b.interval]).toEqual([300, 60]);
    expect(c.block_hashes_url.startsWith("https://b.example/")).toBe(true);
  });
});
