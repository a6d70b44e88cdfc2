// `ota keys`, `ota sign`, `ota verify`, run as the real CLI from dist/, offline. What `ota sign` writes is checked
// here by a verifier written from the format (fields read by offset, zlib's CRC, node:crypto with the PEM key),
// not by the project's own parser, and compared byte for byte with what espsecure.py wrote for the same image.
import { spawnSync } from "node:child_process";
import { constants, createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { crc32 } from "node:zlib";
import { expectedSigned, fixturePath, HELLO_WORLD, HELLO_WORLD_S3, PARTITION_TABLE_OTA, read, SIGNED_DIR, SIGNED_KEYS_DIR } from "../helpers/fixtures";

const ROOT = path.resolve(__dirname, "../..");
let dir: string;
/** The CLI with no OTA_* environment, in a scratch folder. */
const ota = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], { encoding: "utf8", cwd: dir, env: { PATH: process.env.PATH ?? "" } });
const openssl = (...args: string[]) => {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
};
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest();
const fixtureKey = (name: string) => path.join(SIGNED_KEYS_DIR, name);
const ECDSA_KEY = fixtureKey("release-ecdsa256.pem");
const ECDSA_PUB = fixtureKey("release-ecdsa256.pub.pem");
const RSA_KEY = fixtureKey("release-rsa3072.pem");
const RSA_PUB = fixtureKey("release-rsa3072.pub.pem");

const SECTOR = 4096;
const BLOCK = 1216;

/** Modular inverse by the extended Euclidean algorithm. */
function inverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}
function powMod(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  base %= m;
  for (; exp > 0n; exp >>= 1n, base = (base * base) % m) if (exp & 1n) result = (result * base) % m;
  return result;
}
const big = (b: Buffer) => BigInt(`0x${b.toString("hex")}`);
const le = (n: bigint, len: number) => Buffer.from(n.toString(16).padStart(len * 2, "0"), "hex").reverse();
const jwkBytes = (s: string | undefined) => Buffer.from(s ?? "", "base64url");

/**
 * Checks block `index` of a signed image against the public key in `pubPem`, from the Secure Boot v2 format
 * alone. Returns the block's key digest (hex).
 */
function verifyBlockFromFormat(image: Buffer, index: number, pubPem: string): string {
  expect(image.length % SECTOR).toBe(0);
  const sectorAt = image.length - SECTOR;
  const signed = image.subarray(0, sectorAt);
  const b = image.subarray(sectorAt + index * BLOCK, sectorAt + (index + 1) * BLOCK);
  const key = createPublicKey(pubPem);
  const jwk = key.export({ format: "jwk" });
  expect(b[0]).toBe(0xe7);
  expect(b[2]).toBe(0);
  expect(b[3]).toBe(0);
  expect(b.subarray(4, 36)).toEqual(sha256(signed));
  expect(b.readUInt32LE(1196)).toBe(crc32(b.subarray(0, 1196)) >>> 0);
  expect(b.subarray(1200).equals(Buffer.alloc(16))).toBe(true);
  if (key.asymmetricKeyType === "rsa") {
    expect(b[1]).toBe(0x02);
    const n = big(jwkBytes(jwk.n));
    expect(b.subarray(36, 420)).toEqual(le(n, 384));
    expect(b.readUInt32LE(420)).toBe(Number(big(jwkBytes(jwk.e))));
    expect(b.subarray(424, 808)).toEqual(le(powMod(2n, 6144n, n), 384));
    expect(b.readUInt32LE(808)).toBe(Number((2n ** 32n - inverse(n, 2n ** 32n)) % 2n ** 32n));
    const signature = Buffer.from(b.subarray(812, 1196)).reverse();
    expect(cryptoVerify("sha256", signed, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature)).toBe(true);
    return sha256(b.subarray(36, 812)).toString("hex");
  }
  expect(b[1]).toBe(0x03);
  expect(b[36]).toBe(2); // P-256
  expect(b.subarray(37, 69)).toEqual(jwkBytes(jwk.x).reverse());
  expect(b.subarray(69, 101)).toEqual(jwkBytes(jwk.y).reverse());
  const rs = Buffer.concat([Buffer.from(b.subarray(101, 133)).reverse(), Buffer.from(b.subarray(133, 165)).reverse()]);
  expect(cryptoVerify("sha256", signed, { key, dsaEncoding: "ieee-p1363" }, rs)).toBe(true);
  expect(b.subarray(165, 1196).equals(Buffer.alloc(1031))).toBe(true);
  return sha256(b.subarray(36, 101)).toString("hex");
}

/** The signature sector holds exactly `count` blocks, then 0xFF. */
function expectBlockCount(image: Buffer, count: number) {
  const sector = image.subarray(image.length - SECTOR);
  for (let i = 0; i < 3; i++) expect(sector[i * BLOCK]).toBe(i < count ? 0xe7 : 0xff);
  expect(sector.subarray(count * BLOCK).every((x) => x === 0xff)).toBe(true);
}

/** `a` equals `b` except in the byte ranges given (relative to the signature sector). */
function expectSameExcept(a: Buffer, b: Buffer, ranges: [number, number][]) {
  expect(a.length).toBe(b.length);
  const sectorAt = a.length - SECTOR;
  const mask = (x: Buffer) => {
    const c = Buffer.from(x);
    for (const [from, to] of ranges) c.fill(0, sectorAt + from, sectorAt + to);
    return c;
  };
  expect(mask(a).equals(mask(b))).toBe(true);
  expect(a.equals(b)).toBe(false);
}

describe("ota keys, sign and verify (offline)", () => {
  const tmp = (name: string) => path.join(dir, name);
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-sign-"));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe("keys", () => {
    it.each([
      ["release-ecdsa256", "ecdsa256"],
      ["release-rsa3072", "rsa3072"],
    ])("keys digest of %s prints the eFuse digest espsecure.py wrote, from the public or the private key; --out writes its bytes", (name) => {
      const want = read(fixtureKey(`${name}.digest.bin`));
      for (const file of [fixtureKey(`${name}.pub.pem`), fixtureKey(`${name}.pem`)]) {
        const r = ota("keys", "digest", file);
        expect(r.status).toBe(0);
        expect(r.stdout).toBe(want.toString("hex") + "\n");
      }
      const out = tmp(`${name}.digest.bin`);
      expect(ota("keys", "digest", fixtureKey(`${name}.pub.pem`), "--out", out).status).toBe(0);
      expect(read(out)).toEqual(want);
    });

    it.each(["ecdsa256", "rsa3072"])("keys generate --scheme %s writes a 0600 private key and KEY.pub.pem, in espsecure.py's formats, and never overwrites", (scheme) => {
      const key = tmp(`gen-${scheme}.pem`);
      const r = ota("keys", "generate", "--scheme", scheme, "--out", key);
      expect(r.status).toBe(0);
      const pub = tmp(`gen-${scheme}.pub.pem`);
      expect(fs.statSync(key).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(key, "utf8")).toMatch(scheme === "rsa3072" ? /^-----BEGIN RSA PRIVATE KEY-----/ : /^-----BEGIN EC PRIVATE KEY-----/);
      expect(fs.readFileSync(pub, "utf8")).toMatch(/^-----BEGIN PUBLIC KEY-----/);
      const jwk = createPublicKey(fs.readFileSync(pub)).export({ format: "jwk" });
      if (scheme === "rsa3072") expect(jwkBytes(jwk.n)).toHaveLength(384);
      else expect(jwk.crv).toBe("P-256");
      expect(r.stdout).toBe(ota("keys", "digest", pub).stdout);
      expect(r.stderr).not.toMatch(/PRIVATE KEY/);

      const before = fs.readFileSync(key);
      const again = ota("keys", "generate", "--scheme", scheme, "--out", key);
      expect(again.status).toBe(2);
      expect(again.stderr).toMatch(/already exists; a key is never overwritten/);
      expect(fs.readFileSync(key)).toEqual(before);
    });

    it.each([
      [["keys", "generate", "--scheme", "ecdsa384", "--out", "x.pem"], /must be one of rsa3072, ecdsa256/],
      [["keys", "digest", "/nonexistent.pem"], /cannot read key file/],
      [["keys", "digest", fixtureKey("release-ecdsa256.digest.bin")], /not a usable PEM key/],
      [["keys", "digest", HELLO_WORLD], /is 124416 bytes, more than the 65536 a key file can be/],
    ])("ota %j exits 2", (args, message) => {
      const r = ota(...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
    });

    it("keys digest refuses a key Secure Boot v2 cannot use", () => {
      const p384 = tmp("secp384.pem");
      openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", p384);
      const r = ota("keys", "digest", p384);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/ECDSA P-384 key; only P-256 \(or RSA-3072\)/);
      const rsa2048 = tmp("rsa2048.pem");
      openssl("genrsa", "-out", rsa2048, "2048");
      expect(ota("sign", "--key", rsa2048, "--out", tmp("never.bin"), HELLO_WORLD).stderr).toMatch(/RSA-2048 key; Secure Boot v2 uses RSA-3072/);
      expect(fs.existsSync(tmp("never.bin"))).toBe(false);
    });
  });

  describe("sign with a key", () => {
    const expected = expectedSigned();

    it.each([
      ["esp32_hello_world_signed_ecdsa256.bin", ECDSA_KEY, ECDSA_PUB, [[101, 165], [1196, 1200]]],
      ["esp32s3_hello_world_signed_ecdsa256.bin", ECDSA_KEY, ECDSA_PUB, [[101, 165], [1196, 1200]]],
      ["esp32_hello_world_signed_rsa3072.bin", RSA_KEY, RSA_PUB, [[812, 1196], [1196, 1200]]],
    ] as const)("signing the source of %s gives espsecure.py's bytes but for the (randomised) signature and its CRC", (fixture, key, pub, ranges) => {
      const source = fixturePath(expected[fixture]!.signed_from);
      const out = tmp(`signed-${fixture}`);
      const r = ota("sign", "--key", key, "--out", out, source);
      expect(r.status).toBe(0);
      const mine = read(out);
      expectSameExcept(mine, read(path.join(SIGNED_DIR, fixture)), ranges.map(([a, b]) => [a, b]));
      expectBlockCount(mine, 1);
      expect(verifyBlockFromFormat(mine, 0, fs.readFileSync(pub, "utf8"))).toBe(expected[fixture]!.blocks[0]!.public_key_digest);
    });

    it("--append adds blocks up to 3, each verifying on its own; a 4th is refused and nothing is written", () => {
      const third = tmp("third.pem");
      expect(ota("keys", "generate", "--scheme", "ecdsa256", "--out", third).status).toBe(0);
      const one = tmp("one.bin");
      const two = tmp("two.bin");
      const three = tmp("three.bin");
      expect(ota("sign", "--key", RSA_KEY, "--out", one, HELLO_WORLD_S3).status).toBe(0);
      expect(ota("sign", "--append", "--key", ECDSA_KEY, "--out", two, one).status).toBe(0);
      expect(ota("sign", "--append", "--key", third, "--out", three, two).status).toBe(0);
      const signed = read(three);
      expect(signed.subarray(0, signed.length - SECTOR)).toEqual(read(one).subarray(0, signed.length - SECTOR));
      expectBlockCount(signed, 3);
      // The first blocks are kept as they were.
      expect(signed.subarray(signed.length - SECTOR, signed.length - SECTOR + 2 * BLOCK)).toEqual(read(two).subarray(signed.length - SECTOR, signed.length - SECTOR + 2 * BLOCK));
      expect(verifyBlockFromFormat(signed, 0, fs.readFileSync(RSA_PUB, "utf8"))).toBe(read(fixtureKey("release-rsa3072.digest.bin")).toString("hex"));
      expect(verifyBlockFromFormat(signed, 1, fs.readFileSync(ECDSA_PUB, "utf8"))).toBe(read(fixtureKey("release-ecdsa256.digest.bin")).toString("hex"));
      expect(verifyBlockFromFormat(signed, 2, fs.readFileSync(tmp("third.pub.pem"), "utf8"))).toBe(ota("keys", "digest", tmp("third.pub.pem")).stdout.trim());

      const fourth = tmp("fourth.pem");
      expect(ota("keys", "generate", "--scheme", "ecdsa256", "--out", fourth).status).toBe(0);
      const r = ota("sign", "--append", "--key", fourth, "--out", tmp("four.bin"), three);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/already carries 3 signature blocks, as many as a sector holds/);
      expect(fs.existsSync(tmp("four.bin"))).toBe(false);
    });

    it("several --key at once make one block each", () => {
      const out = tmp("both.bin");
      expect(ota("sign", "--key", ECDSA_KEY, "--key", RSA_KEY, "--out", out, HELLO_WORLD).status).toBe(0);
      const signed = read(out);
      expectBlockCount(signed, 2);
      verifyBlockFromFormat(signed, 0, fs.readFileSync(ECDSA_PUB, "utf8"));
      verifyBlockFromFormat(signed, 1, fs.readFileSync(RSA_PUB, "utf8"));
    });

    it.each([
      [["sign", "--key", ECDSA_KEY, "--out", "x.bin", path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin")], /already signed \(1 block\); add a block with --append/],
      [["sign", "--append", "--key", ECDSA_KEY, "--out", "x.bin", path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin")], /already signed by this key/],
      [["sign", "--append", "--key", RSA_KEY, "--out", "x.bin", path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256_image_tampered.bin")], /not a valid ESP-IDF app image \(checksum_mismatch\)/],
      [["sign", "--key", ECDSA_KEY, "--out", "x.bin", PARTITION_TABLE_OTA], /not a valid ESP-IDF app image \(partition_table\)/],
      [["sign", "--key", ECDSA_KEY, "--out", "x.bin", "trailing.bin"], /what follows the image is not a valid signature sector: the 4 bytes after the image/],
      [["sign", "--key", ECDSA_PUB, "--out", "x.bin", HELLO_WORLD], /is a public key; --key needs the private signing key/],
      [["sign", "--key", ECDSA_KEY, HELLO_WORLD], /--out <file> is required/],
      [["sign", HELLO_WORLD], /say how to sign/],
      [["sign", "--digest-only", "--key", ECDSA_KEY, HELLO_WORLD], /--digest-only takes no key/],
      [["sign", "--public-key", ECDSA_PUB, "--out", "x.bin", HELLO_WORLD], /--public-key and --signature go together/],
    ])("ota %j exits 2 and writes nothing", (args, message) => {
      fs.writeFileSync(tmp("trailing.bin"), Buffer.concat([read(HELLO_WORLD), Buffer.from("junk")]));
      const r = ota(...args);
      expect(r.stderr).toMatch(message);
      expect(r.status).toBe(2);
      expect(fs.existsSync(tmp("x.bin"))).toBe(false);
    });
  });

  describe("remote signing: --digest-only, a signature made elsewhere, --public-key --signature", () => {
    it.each([
      ["ECDSA P-256 (DER from openssl)", ECDSA_KEY, ECDSA_PUB, [] as string[], [[101, 165], [1196, 1200]]],
      ["RSA-3072-PSS (raw from openssl)", RSA_KEY, RSA_PUB, ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:32"], [[812, 1196], [1196, 1200]]],
    ])("%s: openssl signs the printed digest, ota assembles an image laid out as ota sign --key does", (_, key, pub, pssOpts, ranges) => {
      const printed = ota("sign", "--digest-only", HELLO_WORLD);
      expect(printed.status).toBe(0);
      const plain = read(HELLO_WORLD);
      const padded = Buffer.concat([plain, Buffer.alloc(SECTOR - (plain.length % SECTOR), 0xff)]);
      expect(printed.stdout).toBe(sha256(padded).toString("hex") + "\n");

      // On the signing machine: the digest as bytes, signed as an already-hashed SHA-256 message.
      const digestFile = tmp(`digest-${path.basename(key)}`);
      fs.writeFileSync(digestFile, Buffer.from(printed.stdout.trim(), "hex"));
      const sig = tmp(`sig-${path.basename(key)}`);
      openssl("pkeyutl", "-sign", "-inkey", key, "-in", digestFile, "-out", sig, "-pkeyopt", "digest:sha256", ...pssOpts);

      const out = tmp(`remote-${path.basename(key)}.bin`);
      const r = ota("sign", "--public-key", pub, "--signature", sig, "--out", out, HELLO_WORLD);
      expect(r.status).toBe(0);
      const signed = read(out);
      expectBlockCount(signed, 1);
      verifyBlockFromFormat(signed, 0, fs.readFileSync(pub, "utf8"));
      const local = tmp(`local-${path.basename(key)}.bin`);
      expect(ota("sign", "--key", key, "--out", local, HELLO_WORLD).status).toBe(0);
      expectSameExcept(signed, read(local), ranges as [number, number][]);
    });

    it("--digest-only --out writes the raw digest; --append prints the digest the existing blocks signed", () => {
      const out = tmp("digest.bin");
      const r = ota("sign", "--digest-only", "--out", out, HELLO_WORLD);
      expect(read(out).toString("hex") + "\n").toBe(r.stdout);
      const appended = ota("sign", "--digest-only", "--append", path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"));
      expect(appended.stdout).toBe(r.stdout);
    });

    it("an ECDSA signature as 64 bytes r||s (an HSM's raw output) is read too, and can be appended", () => {
      const data = read(HELLO_WORLD);
      const padded = Buffer.concat([data, Buffer.alloc(SECTOR - (data.length % SECTOR), 0xff)]);
      const sig = tmp("raw-rs.sig");
      fs.writeFileSync(sig, cryptoSign("sha256", padded, { key: fs.readFileSync(ECDSA_KEY), dsaEncoding: "ieee-p1363" }));
      const out = tmp("raw-rs.bin");
      const base = path.join(SIGNED_DIR, "esp32_hello_world_signed_rsa3072.bin");
      const r = ota("sign", "--append", "--public-key", ECDSA_PUB, "--signature", sig, "--out", out, base);
      expect(r.status).toBe(0);
      const signed = read(out);
      expectBlockCount(signed, 2);
      expect(signed.subarray(0, signed.length - SECTOR + BLOCK)).toEqual(read(base).subarray(0, signed.length - SECTOR + BLOCK));
      verifyBlockFromFormat(signed, 0, fs.readFileSync(RSA_PUB, "utf8"));
      verifyBlockFromFormat(signed, 1, fs.readFileSync(ECDSA_PUB, "utf8"));
    });

    it("a signature over another image, or by another key, is refused with exit 8 and nothing is written", () => {
      const digestFile = tmp("s3.digest");
      expect(ota("sign", "--digest-only", "--out", digestFile, HELLO_WORLD_S3).status).toBe(0);
      const sig = tmp("s3.sig");
      openssl("pkeyutl", "-sign", "-inkey", ECDSA_KEY, "-in", digestFile, "-out", sig, "-pkeyopt", "digest:sha256");
      const wrongImage = ota("sign", "--public-key", ECDSA_PUB, "--signature", sig, "--out", tmp("wrong.bin"), HELLO_WORLD);
      expect(wrongImage.status).toBe(8);
      expect(wrongImage.stderr).toMatch(/the signature does not verify under this public key over the image's digest [0-9a-f]{64}/);
      const otherKey = tmp("other.pem");
      expect(ota("keys", "generate", "--scheme", "ecdsa256", "--out", otherKey).status).toBe(0);
      const wrongKey = ota("sign", "--public-key", tmp("other.pub.pem"), "--signature", sig, "--out", tmp("wrong.bin"), HELLO_WORLD_S3);
      expect(wrongKey.status).toBe(8);
      expect(fs.existsSync(tmp("wrong.bin"))).toBe(false);
      const garbage = tmp("garbage.sig");
      fs.writeFileSync(garbage, Buffer.alloc(50, 7));
      const bad = ota("sign", "--public-key", ECDSA_PUB, "--signature", garbage, "--out", tmp("wrong.bin"), HELLO_WORLD_S3);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/DER \(ECDSA-Sig-Value\) or 64 bytes r‖s; this one is 50 bytes/);
    });
  });

  describe("verify", () => {
    const signedBy = (file: string) => path.join(SIGNED_DIR, file);

    it("exits 0 when a block verifies under the key, naming it and listing the blocks", () => {
      const r = ota("verify", "--key", RSA_PUB, signedBy("esp32_hello_world_signed_rsa3072.bin"));
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("block 0: rsa3072, key digest daa8af2d91b385bad548df094227652fc695b8fcb832f2de7a5212e9411c31e4, crc ok, digest matches, signature valid");
      expect(r.stdout).toContain(`verified: block 0 (rsa3072) is signed by ${RSA_PUB}`);
      expect(ota("verify", "--key", ECDSA_PUB, "--key", RSA_PUB, signedBy("esp32s3_hello_world_signed_ecdsa256.bin")).status).toBe(0);
      expect(ota("verify", "--key", ECDSA_KEY, signedBy("esp32s3_hello_world_signed_ecdsa256.bin")).status).toBe(0);
    });

    it.each([
      ["the tampered image", "esp32_hello_world_signed_ecdsa256_image_tampered.bin", ECDSA_PUB, /not verified \(signature_digest_mismatch\): .*changed after it was signed/],
      ["an image signed by another key", "esp32_hello_world_signed_ecdsa256.bin", RSA_PUB, /not verified \(untrusted_signer\)/],
    ])("exits 8 for %s", (_, file, key, message) => {
      const r = ota("verify", "--key", key, signedBy(file));
      expect(r.status).toBe(8);
      expect(r.stderr).toMatch(message);
    });

    it("exits 8 for an unsigned image and for a damaged signature block", () => {
      const unsigned = ota("verify", "--key", ECDSA_PUB, HELLO_WORLD);
      expect(unsigned.status).toBe(8);
      expect(unsigned.stderr).toMatch(/not verified \(unsigned\)/);
      const damaged = Buffer.from(read(signedBy("esp32_hello_world_signed_ecdsa256.bin")));
      damaged[damaged.length - SECTOR + 120]! ^= 1; // inside r: the CRC no longer matches
      fs.writeFileSync(tmp("damaged.bin"), damaged);
      const r = ota("verify", "--key", ECDSA_PUB, tmp("damaged.bin"));
      expect(r.status).toBe(8);
      expect(r.stderr).toMatch(/not verified \(malformed_signature_sector\): block 0: its CRC32 does not match/);
    });

    it.each([
      [["verify", HELLO_WORLD], /required option '--key <file>'/],
      [["verify", "--key", "/nonexistent.pem", HELLO_WORLD], /cannot read key file/],
      [["verify", "--key", ECDSA_PUB, PARTITION_TABLE_OTA], /not a valid ESP-IDF app image \(partition_table\)/],
      [["verify", "--key", ECDSA_PUB, "/nonexistent.bin"], /cannot read image/],
    ])("ota %j exits 2", (args, message) => {
      const r = ota(...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
    });
  });
});
