// Secure Boot v2 signature sectors: every image espsecure.py signed in the fixtures against its EXPECTED.json,
// then malformations crafted from those images, each refused with its precise reason.
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { crc32 } from "node:zlib";
import {
  alignToSector,
  appImageLength,
  checkSignature,
  generateSigningKey,
  ImageError,
  parseSignatureSector,
  publicKeyDigest,
  readKey,
  SignatureKeyError,
  signImage,
  trustedKeyFromPem,
  type SignatureSector,
  type TrustedKey,
} from "../../server/esp";
import { expectedSigned, fixturePath, HELLO_WORLD, read, SIGNED_DIR, SIGNED_KEYS_DIR } from "../helpers/fixtures";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const keyFile = (name: string) => path.join(SIGNED_KEYS_DIR, name);
const trusted = (name: string): TrustedKey => trustedKeyFromPem(fs.readFileSync(keyFile(name)), name);
const PUBLIC_KEYS = ["release-ecdsa256.pub.pem", "release-rsa3072.pub.pem"];
const ECDSA = trusted("release-ecdsa256.pub.pem");
const RSA = trusted("release-rsa3072.pub.pem");

const sectorOf = (file: Buffer): SignatureSector => parseSignatureSector(file, appImageLength(file));

describe("signature sectors of the images espsecure.py signed", () => {
  const expected = expectedSigned();

  it("EXPECTED.json covers every signed image in the fixtures", () => {
    const bins = fs.readdirSync(SIGNED_DIR).filter((f) => f.endsWith(".bin"));
    expect(Object.keys(expected).sort()).toEqual(bins.sort());
    expect(bins).toHaveLength(4);
  });

  it.each(Object.entries(expected))("%s matches EXPECTED.json", (file, want) => {
    const buf = read(path.join(SIGNED_DIR, file));
    expect(buf.length).toBe(want.size);
    expect(sha256(buf)).toBe(want.sha256);

    const sector = sectorOf(buf);
    expect(sector.sectorOffset).toBe(want.signature_sector_offset);
    expect(sector.digest).toBe(want.sha256_of_bytes_before_sector);
    expect(sector.problems).toEqual([]);

    // What was signed: the unsigned build output, padded with 0xFF up to the sector.
    const source = read(fixturePath(want.signed_from));
    const before = buf.subarray(0, want.signature_sector_offset);
    expect(sector.imageLength).toBe(source.length);
    expect(before.subarray(source.length).every((b) => b === 0xff)).toBe(true);
    expect(before.subarray(0, source.length).equals(source)).toBe(!file.includes("tampered"));

    expect(sector.blocks.map((b) => ({ index: b.index, scheme: b.scheme, public_key_digest: b.keyDigest, crc_ok: b.crcOk, digest_ok: b.digestOk, signature_ok: b.signatureOk }))).toEqual(
      want.blocks.map(({ index, scheme, public_key_digest, crc_ok, digest_ok, signature_ok }) => ({ index, scheme, public_key_digest, crc_ok, digest_ok, signature_ok })),
    );
    for (const [i, block] of sector.blocks.entries()) {
      const verifiesWith = PUBLIC_KEYS.filter((k) => {
        const check = checkSignature(sector, [trusted(k)]);
        return check.ok && check.block.index === block.index;
      });
      expect(verifiesWith).toEqual(want.blocks[i]!.verifies_with);
    }
    expect(checkSignature(sector, PUBLIC_KEYS.map(trusted)).ok).toBe(want.verifies_with_any_listed_key);
    expect(sector.verdict).toBe(want.verifies_with_any_listed_key ? "valid" : "invalid");
  });

  it.each([
    ["release-ecdsa256", "ecdsa256"],
    ["release-rsa3072", "rsa3072"],
  ])("the eFuse digest of %s, from its public or its private key, is the one espsecure.py wrote", (name) => {
    const want = read(keyFile(`${name}.digest.bin`));
    expect(want).toHaveLength(32);
    expect(publicKeyDigest(readKey(read(keyFile(`${name}.pub.pem`))))).toEqual(want);
    expect(publicKeyDigest(readKey(read(keyFile(`${name}.pem`))))).toEqual(want);
  });

  it("a signed image is accepted under the key that signed it, with that key named", () => {
    const check = checkSignature(sectorOf(read(path.join(SIGNED_DIR, "esp32_hello_world_signed_rsa3072.bin"))), [ECDSA, RSA]);
    expect(check).toMatchObject({ ok: true, signer: { name: "release-rsa3072.pub.pem" }, block: { index: 0, scheme: "rsa3072" } });
  });

  it("a trusted key can be given as the raw eFuse digest", () => {
    const digest: TrustedKey = { digest: read(keyFile("release-ecdsa256.digest.bin")), name: "efuse BLOCK_KEY0" };
    const check = checkSignature(sectorOf(read(path.join(SIGNED_DIR, "esp32s3_hello_world_signed_ecdsa256.bin"))), [digest]);
    expect(check).toMatchObject({ ok: true, signer: { name: "efuse BLOCK_KEY0" } });
  });

  it("the tampered image is refused as changed after signing under its own key, as untrusted under another", () => {
    const sector = sectorOf(read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256_image_tampered.bin")));
    expect(checkSignature(sector, [ECDSA, RSA])).toMatchObject({ ok: false, code: "signature_digest_mismatch" });
    expect(checkSignature(sector, [RSA])).toMatchObject({ ok: false, code: "untrusted_signer" });
  });

  it("an image signed by a key nobody trusts is refused as untrusted_signer, naming both keys", () => {
    const check = checkSignature(sectorOf(read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"))), [RSA]);
    expect(check).toMatchObject({ ok: false, code: "untrusted_signer" });
    if (!check.ok) {
      expect(check.message).toContain("d2273e801c66ddbe");
      expect(check.message).toContain("release-rsa3072.pub.pem");
    }
    expect(checkSignature(sectorOf(read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"))), [])).toMatchObject({ ok: false, code: "untrusted_signer" });
  });
});

describe("crafted signature sectors", () => {
  const ecdsaImage = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"));
  const rsaImage = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_rsa3072.bin"));
  const SECTOR = ecdsaImage.length - 4096;
  const both = [ECDSA, RSA];

  /** A copy of `image` with `edit` applied to block `index` (a view into the copy), its CRC fixed unless `keepCrc`. */
  function withBlock(image: Buffer, edit: (block: Buffer) => void, { index = 0, keepCrc = false } = {}): Buffer {
    const out = Buffer.from(image);
    const block = out.subarray(SECTOR + index * 1216, SECTOR + (index + 1) * 1216);
    edit(block);
    if (!keepCrc) block.writeUInt32LE(crc32(block.subarray(0, 1196)) >>> 0, 1196);
    return out;
  }
  function refusal(file: Buffer, keys: TrustedKey[] = both) {
    const sector = sectorOf(file);
    // Every problem is told in words that name the block it concerns (or none, for the sector).
    for (const p of sector.problems) expect(p.message).toMatch(p.block === null ? /^\S.{40,}/ : new RegExp(`^block ${p.block}: \\S.{20,}`));
    const check = checkSignature(sector, keys);
    return { problems: sector.problems.map((p) => p.code), verdict: sector.verdict, code: check.ok ? "accepted" : check.code, sector };
  }

  it("the unsigned build output is unsigned, also when padded with 0xFF (a flash read-back)", () => {
    const plain = read(HELLO_WORLD);
    expect(refusal(plain)).toMatchObject({ verdict: "unsigned", code: "unsigned", problems: [] });
    const padded = Buffer.concat([plain, Buffer.alloc(20000, 0xff)]);
    expect(refusal(padded)).toMatchObject({ verdict: "unsigned", code: "unsigned" });
    expect(sectorOf(padded).sectorOffset).toBeNull();
  });

  it("bad magic", () => {
    const r = refusal(withBlock(ecdsaImage, (b) => (b[0] = 0xe6)));
    expect(r).toMatchObject({ problems: ["bad_magic"], verdict: "malformed", code: "malformed_signature_sector" });
    expect(r.sector.blocks[0]).toMatchObject({ scheme: null, keyDigest: null, signatureOk: false, valid: false });
    expect(sectorOf(withBlock(ecdsaImage, (b) => (b[0] = 0x05))).problems[0]!.message).toMatch(/^block 0: starts with 0x05, /);
  });

  it("bad CRC: every other fact still holds, the block is refused", () => {
    const r = refusal(withBlock(ecdsaImage, (b) => (b[500]! ^= 1), { keepCrc: true })); // in the ECDSA block's zero padding
    expect(r).toMatchObject({ problems: ["bad_crc"], code: "malformed_signature_sector" });
    expect(r.sector.blocks[0]).toMatchObject({ crcOk: false, digestOk: true, signatureOk: true, valid: false });
    const wrongCrc = refusal(withBlock(rsaImage, (b) => b.writeUInt32LE((b.readUInt32LE(1196) + 1) >>> 0, 1196), { keepCrc: true }));
    expect(wrongCrc).toMatchObject({ problems: ["bad_crc"], code: "malformed_signature_sector" });
  });

  it.each([
    ["ECDSA", ecdsaImage],
    ["RSA", rsaImage],
  ])("%s: image bytes changed after signing: signature_digest_mismatch, and the signature still holds over the block's own digest", (_, image) => {
    const changed = Buffer.from(image);
    changed[SECTOR - 1] = 0x00; // the 0xFF padding before the sector is signed too
    const r = refusal(changed);
    expect(r).toMatchObject({ problems: [], verdict: "invalid", code: "signature_digest_mismatch" });
    expect(r.sector.blocks[0]).toMatchObject({ crcOk: true, digestOk: false, signatureOk: true, valid: false });
  });

  it.each([
    ["ECDSA", ecdsaImage],
    ["RSA", rsaImage],
  ])("%s: the block's digest field changed: digest mismatch, and the signature does not hold over it", (_, image) => {
    const r = refusal(withBlock(image, (b) => (b[4]! ^= 0x80)));
    expect(r).toMatchObject({ problems: [], code: "signature_digest_mismatch" });
    expect(r.sector.blocks[0]).toMatchObject({ crcOk: true, digestOk: false, signatureOk: false });
  });

  it.each([
    ["ECDSA", ecdsaImage, 101 + 5],
    ["RSA", rsaImage, 812 + 100],
  ])("%s: a signature byte changed: signature_invalid", (_, image, at) => {
    const r = refusal(withBlock(image, (b) => (b[at]! ^= 0x01)));
    expect(r).toMatchObject({ problems: [], verdict: "invalid", code: "signature_invalid" });
    expect(r.sector.blocks[0]).toMatchObject({ crcOk: true, digestOk: true, signatureOk: false });
  });

  it("an RSA signature not smaller than the modulus is invalid, not an error", () => {
    const r = refusal(withBlock(rsaImage, (b) => b.fill(0xff, 812, 1196)));
    expect(r).toMatchObject({ code: "signature_invalid" });
  });

  it("wrong length: the sector truncated, or bytes after it", () => {
    expect(refusal(ecdsaImage.subarray(0, ecdsaImage.length - 100))).toMatchObject({ problems: ["sector_truncated"], code: "malformed_signature_sector" });
    expect(refusal(ecdsaImage.subarray(0, SECTOR + 1))).toMatchObject({ problems: ["sector_truncated"] });
    expect(refusal(Buffer.concat([ecdsaImage, Buffer.from("junk")]))).toMatchObject({ problems: ["trailing_bytes"], code: "malformed_signature_sector" });
    expect(refusal(Buffer.concat([ecdsaImage, Buffer.alloc(4096, 0xff)]))).toMatchObject({ problems: ["trailing_bytes"] });
    // Not 0xFF after the image, yet no room for a sector.
    const plain = read(HELLO_WORLD);
    expect(refusal(Buffer.concat([plain, Buffer.from("appended by some tool")]))).toMatchObject({ problems: ["trailing_bytes"], code: "malformed_signature_sector" });
    // A signature sector that is not where ESP-IDF looks (image_len rounded up to 4 KiB): a pad sector before it.
    const shifted = Buffer.concat([ecdsaImage.subarray(0, SECTOR), Buffer.alloc(4096, 0xff), ecdsaImage.subarray(SECTOR)]);
    expect(refusal(shifted)).toMatchObject({ problems: ["trailing_bytes"], code: "malformed_signature_sector" });
  });

  it("a 4th block", () => {
    const four = Buffer.from(ecdsaImage);
    for (const slot of [1, 2]) ecdsaImage.copy(four, SECTOR + slot * 1216, SECTOR, SECTOR + 1216);
    expect(refusal(four)).toMatchObject({ problems: [], code: "accepted" });
    ecdsaImage.copy(four, SECTOR + 3 * 1216, SECTOR, SECTOR + 448);
    expect(refusal(four)).toMatchObject({ problems: ["too_many_blocks"], code: "malformed_signature_sector" });
  });

  it("the sector's tail is not 0xFF", () => {
    const dirty = Buffer.from(ecdsaImage);
    dirty[dirty.length - 1] = 0;
    expect(refusal(dirty)).toMatchObject({ problems: ["bad_sector_padding"], code: "malformed_signature_sector" });
  });

  it("unknown version", () => {
    const r = refusal(withBlock(ecdsaImage, (b) => (b[1] = 0x04)));
    expect(r).toMatchObject({ problems: ["unknown_version"], code: "malformed_signature_sector" });
    expect(r.sector.blocks[0]).toMatchObject({ version: 4, scheme: null });
    expect(r.sector.problems[0]!.message).toMatch(/^block 0: version 0x04 is neither/);
    // One problem: the refusal is its message, nothing added.
    expect(checkSignature(r.sector, both)).toMatchObject({ message: r.sector.problems[0]!.message });
  });

  it.each([
    [1, "unsupported_curve", /P-192 is not accepted/],
    [3, "unsupported_curve", /P-384/],
    [0, "unknown_curve", /curve id 0/],
    [9, "unknown_curve", /curve id 9/],
  ])("ECDSA curve id %d: %s", (curve, code, message) => {
    const sector = sectorOf(withBlock(ecdsaImage, (b) => (b[36] = curve)));
    expect(sector.problems).toEqual([{ code, message: expect.stringMatching(message), block: 0 }]);
    expect(checkSignature(sector, both)).toMatchObject({ ok: false, code: "malformed_signature_sector" });
  });

  it("ECDSA with SHA-384 (the P-384 layout) is unsupported_curve", () => {
    expect(refusal(withBlock(ecdsaImage, (b) => (b[2] = 1)))).toMatchObject({ problems: ["unsupported_curve"] });
  });

  it("wrong RSA key size", () => {
    const r = refusal(withBlock(rsaImage, (b) => b.fill(0, 36 + 256, 36 + 384))); // a 2048-bit modulus
    expect(r).toMatchObject({ problems: ["wrong_key_size"], code: "malformed_signature_sector" });
    expect(r.sector.problems[0]!.message).toMatch(/2048 bits; Secure Boot v2 uses RSA-3072/);
  });

  it("R or M' that do not follow from n", () => {
    expect(refusal(withBlock(rsaImage, (b) => (b[808]! ^= 1)))).toMatchObject({ problems: ["bad_rsa_parameters"] });
    expect(refusal(withBlock(rsaImage, (b) => (b[424]! ^= 1)))).toMatchObject({ problems: ["bad_rsa_parameters"] });
  });

  it("a key that is not one: ECDSA point off the curve, RSA exponent even", () => {
    expect(refusal(withBlock(ecdsaImage, (b) => (b[40]! ^= 1)))).toMatchObject({ problems: ["bad_public_key"], code: "malformed_signature_sector" });
    expect(refusal(withBlock(rsaImage, (b) => b.writeUInt32LE(65538, 420)))).toMatchObject({ problems: ["bad_public_key"] });
  });

  it("a malformed block beside a good one: refused, unless malformed blocks are skipped as a device does", () => {
    const mixed = Buffer.from(rsaImage);
    ecdsaImage.copy(mixed, SECTOR + 1216, SECTOR, SECTOR + 1216); // slot 1: the ECDSA block, made over the same bytes
    mixed[SECTOR + 700]! ^= 1; // slot 0 (RSA): damaged, CRC no longer matches
    const sector = sectorOf(mixed);
    expect(sector.problems.map((p) => [p.code, p.block])).toEqual([["bad_crc", 0]]);
    expect(checkSignature(sector, both)).toMatchObject({ ok: false, code: "malformed_signature_sector" });
    expect(checkSignature(sector, both, { skipMalformedBlocks: true })).toMatchObject({ ok: true, block: { index: 1 }, signer: { name: "release-ecdsa256.pub.pem" } });
    expect(checkSignature(sector, [RSA], { skipMalformedBlocks: true })).toMatchObject({ ok: false, code: "untrusted_signer" });
    // Sector-level problems refuse either way.
    expect(checkSignature(sectorOf(Buffer.concat([mixed, Buffer.from([0])])), both, { skipMalformedBlocks: true })).toMatchObject({
      ok: false,
      code: "malformed_signature_sector",
    });
  });

  it("RSA key fields a chip cannot use: exponent 1, an even modulus, a zero modulus; exponent 3 is a key (its signature just fails)", () => {
    expect(refusal(withBlock(rsaImage, (b) => b.writeUInt32LE(1, 420)))).toMatchObject({ problems: ["bad_public_key"] });
    expect(refusal(withBlock(rsaImage, (b) => (b[36]! ^= 1)))).toMatchObject({ problems: ["bad_public_key"] });
    const zero = refusal(withBlock(rsaImage, (b) => b.fill(0, 36, 420)));
    expect(zero).toMatchObject({ problems: ["wrong_key_size"] });
    expect(zero.sector.problems[0]!.message).toMatch(/modulus is 0 bits/);
    const e3 = refusal(withBlock(rsaImage, (b) => b.writeUInt32LE(3, 420)));
    expect(e3).toMatchObject({ problems: [], verdict: "invalid", code: "untrusted_signer" }); // another key: another digest
    expect(e3.sector.blocks[0]).toMatchObject({ scheme: "rsa3072", digestOk: true, signatureOk: false });
  });

  it("bytes after the image up to exactly where the sector would start are trailing bytes, not a truncated sector", () => {
    const plain = read(HELLO_WORLD);
    const upTo = Buffer.concat([plain, Buffer.alloc(alignToSector(plain.length) - plain.length, 0x00)]);
    expect(refusal(upTo)).toMatchObject({ problems: ["trailing_bytes"], code: "malformed_signature_sector" });
  });

  it("the refusal of a sector with several problems counts the others", () => {
    const two = withBlock(withBlock(ecdsaImage, (b) => (b[1] = 0x04)), (b) => {
        ecdsaImage.copy(b, 0, SECTOR, SECTOR + 1216);
        b[0] = 0;
      },
      { index: 1 },
    );
    const sector2 = sectorOf(two);
    expect(sector2.problems.map((p) => p.code)).toEqual(["unknown_version", "bad_magic"]);
    const check2 = checkSignature(sector2, both);
    expect(check2.ok ? "" : check2.message).toMatch(/^block 0: .* \(and 1 more problem\)$/);
    const three = withBlock(two, (b) => {
        ecdsaImage.copy(b, 0, SECTOR, SECTOR + 1216);
        b[36] = 9;
      },
      { index: 2 },
    );
    const check3 = checkSignature(sectorOf(three), both);
    expect(check3.ok ? "" : check3.message).toMatch(/^block 0: .* \(and 2 more problems\)$/);
    // Skipping malformed blocks as a device does leaves none here: the first problem is the reason.
    const skipped = checkSignature(sector2, both, { skipMalformedBlocks: true });
    expect(skipped).toMatchObject({ ok: false, code: "malformed_signature_sector", message: sector2.problems[0]!.message });
  });

  it("the reasons name the block and the key", () => {
    const changed = Buffer.from(ecdsaImage);
    changed[SECTOR - 1] = 0;
    expect(checkSignature(sectorOf(changed), both)).toMatchObject({ message: expect.stringMatching(/^block 0 \(signed by release-ecdsa256.pub.pem\) was made for other bytes/) });
    const badSig = withBlock(ecdsaImage, (b) => (b[106]! ^= 1));
    expect(checkSignature(sectorOf(badSig), both)).toMatchObject({ message: "block 0 names release-ecdsa256.pub.pem but its signature does not verify under that key" });
    const none = checkSignature(sectorOf(ecdsaImage), []);
    expect(none).toMatchObject({ code: "untrusted_signer", message: expect.stringMatching(/^no block is signed by a trusted key \(block 0: ecdsa256 key d2273e801c66ddbe…; trusted: none\)$/) });
    const other = checkSignature(sectorOf(ecdsaImage), [RSA]);
    expect(other).toMatchObject({ message: expect.stringContaining(`trusted: release-rsa3072.pub.pem (${RSA.digest.toString("hex").slice(0, 16)}…)`) });
    expect(checkSignature(sectorOf(read(HELLO_WORLD)), both)).toMatchObject({ code: "unsigned", message: expect.stringMatching(/^the image carries no signature: sign it/) });
  });

  it("what the sector-level refusals say: how many bytes, and where", () => {
    const plain = read(HELLO_WORLD);
    expect(sectorOf(Buffer.concat([plain, Buffer.from("appended by some tool")])).problems[0]!.message).toMatch(/^the 21 bytes after the image \(from offset /);
    expect(sectorOf(ecdsaImage.subarray(0, ecdsaImage.length - 100)).problems[0]!.message).toMatch(/^the file ends 3996 bytes into the signature sector/);
    expect(sectorOf(Buffer.concat([ecdsaImage, Buffer.from("junk")])).problems[0]!.message).toMatch(/^4 bytes follow the signature sector/);
    const four = Buffer.from(ecdsaImage);
    ecdsaImage.copy(four, SECTOR + 3 * 1216, SECTOR, SECTOR + 448);
    expect(sectorOf(four).problems[0]!.message).toMatch(/starts at sector offset 3648;/);
  });

  it("one valid block is enough for the verdict; a sector problem found after the blocks refuses even when malformed blocks are skipped", () => {
    const mixed = withBlock(
      withBlock(ecdsaImage, (b) => ecdsaImage.copy(b, 0, SECTOR, SECTOR + 1216), { index: 1 }),
      (b) => (b[106]! ^= 1),
      { index: 1 },
    );
    expect(refusal(mixed)).toMatchObject({ problems: [], verdict: "valid", code: "accepted" });
    const dirty = Buffer.from(ecdsaImage);
    dirty[dirty.length - 1] = 0;
    expect(checkSignature(sectorOf(dirty), both, { skipMalformedBlocks: true })).toMatchObject({ ok: false, code: "malformed_signature_sector" });
  });

  it("a damaged block whose key still reads is skipped as a device does, not judged by its signature", () => {
    const damaged = withBlock(ecdsaImage, (b) => (b[500]! ^= 1), { keepCrc: true });
    expect(checkSignature(sectorOf(damaged), [ECDSA], { skipMalformedBlocks: true })).toMatchObject({ ok: false, code: "malformed_signature_sector" });
  });

  it("a trusted digest of the wrong length matches nothing; untrusted signers and trusted keys are each listed", () => {
    expect(checkSignature(sectorOf(ecdsaImage), [{ digest: Buffer.alloc(31), name: "short" }])).toMatchObject({ ok: false, code: "untrusted_signer" });
    const two = Buffer.from(rsaImage);
    ecdsaImage.copy(two, SECTOR + 1216, SECTOR, SECTOR + 1216);
    const check = checkSignature(sectorOf(two), [{ digest: Buffer.alloc(32, 1), name: "k1" }, { digest: Buffer.alloc(32, 2), name: "k2" }]);
    expect(check.ok ? "" : check.message).toMatch(/\(block 0: rsa3072 key [0-9a-f]{16}…, block 1: ecdsa256 key d2273e801c66ddbe…; trusted: k1 \(0101010101010101…\), k2 \(0202020202020202…\)\)$/);
  });

  it("imageLength must be a whole number of bytes within the file", () => {
    expect(() => parseSignatureSector(ecdsaImage, -1)).toThrow(RangeError);
    expect(() => parseSignatureSector(ecdsaImage, 100.5)).toThrow(/imageLength 100.5 is not within the file/);
    expect(parseSignatureSector(ecdsaImage, ecdsaImage.length)).toMatchObject({ verdict: "unsigned", sectorOffset: null, digest: null });
    expect(parseSignatureSector(Buffer.alloc(0), 0)).toMatchObject({ verdict: "unsigned" });
  });

  it("an image cut inside its segments is not measured as an image at all", () => {
    expect(() => appImageLength(ecdsaImage.subarray(0, 5000))).toThrow(ImageError);
    expect(() => parseSignatureSector(ecdsaImage, ecdsaImage.length + 1)).toThrow(RangeError);
  });
});

describe("keys Secure Boot v2 cannot hold", () => {
  const pem = (k: KeyObject) => k.export({ type: "spki", format: "pem" }).toString();

  it("RSA other than 3072 bits, ECDSA other than P-256, other key types, and text that is no key are refused with the reason", () => {
    const rsa2048 = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey;
    expect(() => publicKeyDigest(rsa2048)).toThrow(new SignatureKeyError("this is an RSA-2048 key; Secure Boot v2 uses RSA-3072 (or ECDSA P-256)"));
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    expect(() => publicKeyDigest(p384)).toThrow(new SignatureKeyError("this is an ECDSA P-384 key; only P-256 (or RSA-3072) is supported here"));
    const ed = generateKeyPairSync("ed25519").publicKey;
    expect(() => trustedKeyFromPem(pem(ed), "ed")).toThrow(new SignatureKeyError("this is an ED25519 key; Secure Boot v2 keys are RSA-3072 or ECDSA P-256"));
    expect(() => readKey("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")).toThrow(/^not a usable PEM key: /);
    expect(() => readKey("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")).toThrow(SignatureKeyError);
    // The name is what a log line or an uncaught error prints before the message.
    expect(() => publicKeyDigest(rsa2048)).toThrow(expect.objectContaining({ name: "SignatureKeyError" }));
  });

  it("an RSA public exponent wider than the block's 32-bit field is refused", () => {
    const jwk = readKey(read(keyFile("release-rsa3072.pub.pem"))).export({ format: "jwk" });
    const wide = createPublicKey({ key: { kty: "RSA", n: jwk.n!, e: Buffer.from([1, 0, 0, 0, 1]).toString("base64url") }, format: "jwk" });
    expect(() => publicKeyDigest(wide)).toThrow(/does not fit the block's 32-bit field/);
    const widest32 = createPublicKey({ key: { kty: "RSA", n: jwk.n!, e: Buffer.from([0xff, 0xff, 0xff, 0xff]).toString("base64url") }, format: "jwk" });
    expect(publicKeyDigest(widest32)).toHaveLength(32);
  });
});

describe("signatures made with fresh keys", () => {
  const plain = read(HELLO_WORLD);
  const cases = [...Array.from({ length: 6 }, (_, i) => ["ecdsa256", i] as const), ["rsa3072", 0] as const];

  it.each(cases)("%s key #%d: valid when untouched; after a change, the signature is still judged against the digest the block carries", (scheme) => {
    const pair = generateSigningKey(scheme);
    const signed = signImage(plain, [readKey(pair.privateKeyPem)]);
    const key = trustedKeyFromPem(pair.publicKeyPem, "fresh");
    const sector = sectorOf(signed);
    expect(sector.blocks).toMatchObject([{ scheme, keyDigest: key.digest.toString("hex"), crcOk: true, digestOk: true, signatureOk: true, valid: true }]);
    expect(checkSignature(sector, [key])).toMatchObject({ ok: true });

    const at = signed.length - 4096;
    const changed = Buffer.from(signed);
    changed[plain.length]! ^= 0xff; // the padding before the sector
    expect(sectorOf(changed).blocks[0]).toMatchObject({ digestOk: false, signatureOk: true });
    const otherDigest = Buffer.from(signed);
    const block = otherDigest.subarray(at, at + 1216);
    block[10]! ^= 1;
    block.writeUInt32LE(crc32(block.subarray(0, 1196)) >>> 0, 1196);
    expect(sectorOf(otherDigest).blocks[0]).toMatchObject({ crcOk: true, digestOk: false, signatureOk: false });
  });
});
