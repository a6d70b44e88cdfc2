// ESP-IDF Secure Boot v2 signatures, as `espsecure.py sign_data --version 2` appends them and as
// `esp_image_verify()` (`CONFIG_SECURE_SIGNED_ON_UPDATE`) and the bootloader check them.
//
// Layout: the app image (image_len bytes, through its appended SHA-256) is padded with 0xFF to the next 4 KiB
// boundary, then one 4096-byte signature sector follows. The sector holds up to 3 blocks of 1216 bytes, then
// 0xFF. Every block signs the same digest: SHA-256 of every byte before the sector. A block:
//   @0 magic 0xE7, @1 version (0x02 RSA-3072-PSS, 0x03 ECDSA), @2..3 reserved (ECDSA: @2 0 = SHA-256),
//   @4 image digest (32), @36 the public key, then the signature,
//   @1196 CRC32 (zlib's, little-endian) of bytes 0..1195, @1200 16 zero bytes.
//   RSA: n (384, LE) @36, e (u32) @420, R = 2^6144 mod n (384, LE) @424, M' = -n^-1 mod 2^32 (u32) @808,
//        signature (384, LE; RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt) @812.
//   ECDSA: curve id @36 (1 P-192, 2 P-256), X‖Y (32 + 32, each LE) @37, r‖s (32 + 32, each LE) @101.
// Both schemes sign the 32-byte digest as an already-hashed message. The key digest ESP-IDF burns into eFuse
// is SHA-256 of the key fields as stored: bytes 36..811 (RSA) or 36..100 (ECDSA).
//
// parseSignatureSector() reports every fact about a file's sector; checkSignature() answers the question the
// server's policy and the device's writer ask: does at least one block verify under a trusted key?
import { constants, createHash, createPrivateKey, createPublicKey, timingSafeEqual, verify, type KeyObject } from "node:crypto";
import { crc32 } from "node:zlib";
import { verifyP256Prehashed, verifyRsaPssPrehashed } from "./prehashed";

export const SIGNATURE_SECTOR_SIZE = 4096;
export const SIGNATURE_BLOCK_SIZE = 1216;
/** Blocks a sector holds (and trusted key digests a chip holds). */
export const MAX_SIGNATURE_BLOCKS = 3;
export const SIGNATURE_BLOCK_MAGIC = 0xe7;
const VERSION_RSA = 0x02;
const VERSION_ECDSA = 0x03;
const CRC_COVERS = 1196;
const DIGEST_AT = 4;
const KEY_AT = 36;
const RSA_LEN = 384;
const RSA_BITS = 3072;
const RSA_SALT_LEN = 32;
/** RSA: n, e, R, M' — the key digest covers them all. */
const RSA_KEY_LEN = RSA_LEN + 4 + RSA_LEN + 4;
const ECDSA_KEY_LEN = 1 + 64;
const CURVE_P192 = 1;
const CURVE_P256 = 2;
const CURVE_P384 = 3;
const ECDSA_SHA_384 = 1;

export type SignatureScheme = "rsa3072" | "ecdsa256";
export const SIGNATURE_SCHEMES: readonly SignatureScheme[] = ["rsa3072", "ecdsa256"];

/** Why a signature sector, or one of its blocks, is not what espsecure.py writes. Stable: callers match on them. */
export type SignatureProblemCode =
  /** The file ends inside the 4096-byte sector. */
  | "sector_truncated"
  /** Bytes follow the sector (or the sector does not start where ESP-IDF looks for it). */
  | "trailing_bytes"
  /** A 4th block starts after the 3 a sector can hold. */
  | "too_many_blocks"
  /** The bytes after the blocks are not the 0xFF padding. */
  | "bad_sector_padding"
  /** A block slot that is not empty (all 0xFF) does not start with 0xE7. */
  | "bad_magic"
  /** The block's CRC32 does not cover its bytes 0..1195. */
  | "bad_crc"
  /** Version byte other than 0x02 (RSA) or 0x03 (ECDSA). */
  | "unknown_version"
  /** ECDSA curve id that ESP-IDF does not define. */
  | "unknown_curve"
  /** ECDSA curve ESP-IDF defines but that an OTA update cannot be verified with here (P-192, P-384). */
  | "unsupported_curve"
  /** RSA modulus that is not 3072 bits. */
  | "wrong_key_size"
  /** The key fields are not a usable public key (point not on the curve, even exponent...). */
  | "bad_public_key"
  /** RSA: R or M' do not follow from n (the chip's RSA peripheral would compute garbage). */
  | "bad_rsa_parameters";

export interface SignatureProblem {
  code: SignatureProblemCode;
  /** What is wrong and what to do, for a person. */
  message: string;
  /** The block it concerns, null for the sector as a whole. */
  block: number | null;
}

export interface SignatureBlock {
  /** Slot in the sector, 0..2. */
  index: number;
  version: number;
  /** null when the block names no scheme read here (see problem). */
  scheme: SignatureScheme | null;
  /** The eFuse key digest (hex) of the block's public key, as ESP-IDF computes it; null when the layout is unknown. */
  keyDigest: string | null;
  crcOk: boolean;
  /** The digest the block carries equals SHA-256 of every byte before the sector. */
  digestOk: boolean;
  /** The signature holds over the digest the block carries, under the block's own key. */
  signatureOk: boolean;
  /** Well-formed, CRC, digest and signature all hold: a device trusting keyDigest accepts the image. */
  valid: boolean;
  /** The first malformation found in this block, if any. */
  problem: SignatureProblem | null;
}

export interface SignatureSector {
  /** The image's image_len (bytes the image format covers), as given. */
  imageLength: number;
  /** Where the sector starts (image_len rounded up to 4 KiB); null when the file carries no sector. */
  sectorOffset: number | null;
  /** SHA-256 (hex) of every byte before the sector: what every block must sign. null when unsigned. */
  digest: string | null;
  /** The non-empty block slots, in order. */
  blocks: SignatureBlock[];
  /** Every malformation, of the sector and of its blocks. */
  problems: SignatureProblem[];
  /**
   * unsigned: nothing but 0xFF after the image; malformed: some problem; valid: well-formed and at least one
   * block valid (whose key is trusted is checkSignature's question); invalid: well-formed, no block valid.
   */
  verdict: "unsigned" | "malformed" | "valid" | "invalid";
}

const hex = (b: Buffer) => b.toString("hex");
const reversed = (b: Buffer) => Buffer.from(b).reverse();
const b64url = (b: Buffer) => b.toString("base64url");

export const alignToSector = (n: number) => Math.ceil(n / SIGNATURE_SECTOR_SIZE) * SIGNATURE_SECTOR_SIZE;

function bigFromBytes(be: Buffer): bigint {
  return be.length ? BigInt(`0x${be.toString("hex")}`) : 0n;
}
function bytesFromBig(n: bigint, length: number): Buffer {
  const s = n.toString(16).padStart(length * 2, "0");
  if (s.length > length * 2) throw new RangeError(`number does not fit in ${length} bytes`);
  return Buffer.from(s, "hex");
}
/** Big-endian without leading zero bytes (JWK). */
function trimmed(be: Buffer): Buffer {
  let i = 0;
  while (i < be.length - 1 && be[i] === 0) i++;
  return be.subarray(i);
}

/** R = 2^6144 mod n and M' = -n^-1 mod 2^32: the Montgomery constants the chip's RSA peripheral takes. */
function rsaMontgomery(n: bigint): { r: bigint; mPrime: number } {
  const r = (1n << BigInt(2 * RSA_BITS)) % n;
  // n^-1 mod 2^32 by Newton iteration (n is odd): each step doubles the correct low bits.
  const w = n & 0xffffffffn;
  let inv = w;
  for (let i = 0; i < 5; i++) inv = (inv * (2n - w * inv)) & 0xffffffffn;
  return { r, mPrime: Number((0x100000000n - inv) & 0xffffffffn) };
}

function isRsaScheme(key: KeyObject): boolean {
  return key.asymmetricKeyType === "rsa";
}

/**
 * The key fields of a signature block for a public (or private) key: RSA n‖e‖R‖M' (776 bytes) or ECDSA
 * curve‖X‖Y (65 bytes), little-endian as the block stores them. Throws SignatureKeyError for keys Secure Boot v2
 * cannot use here.
 */
export function signatureKeyFields(key: KeyObject): { scheme: SignatureScheme; fields: Buffer } {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  const jwk = pub.export({ format: "jwk" });
  if (isRsaScheme(pub) && jwk.n && jwk.e) {
    const nBe = Buffer.from(jwk.n, "base64url");
    const n = bigFromBytes(nBe);
    const bits = n.toString(2).length;
    if (bits !== RSA_BITS) {
      throw new SignatureKeyError(`this is an RSA-${bits} key; Secure Boot v2 uses RSA-3072 (or ECDSA P-256)`);
    }
    const e = bigFromBytes(Buffer.from(jwk.e, "base64url"));
    if (e > 0xffffffffn) throw new SignatureKeyError("the RSA public exponent does not fit the block's 32-bit field");
    const { r, mPrime } = rsaMontgomery(n);
    const fields = Buffer.alloc(RSA_KEY_LEN);
    reversed(bytesFromBig(n, RSA_LEN)).copy(fields, 0);
    fields.writeUInt32LE(Number(e), RSA_LEN);
    reversed(bytesFromBig(r, RSA_LEN)).copy(fields, RSA_LEN + 4);
    fields.writeUInt32LE(mPrime, 2 * RSA_LEN + 4);
    return { scheme: "rsa3072", fields };
  }
  if (pub.asymmetricKeyType === "ec" && jwk.x && jwk.y) {
    if (jwk.crv !== "P-256") {
      throw new SignatureKeyError(
        `this is an ECDSA ${jwk.crv ?? "unknown-curve"} key; only P-256 (or RSA-3072) is supported here`,
      );
    }
    const fields = Buffer.alloc(ECDSA_KEY_LEN);
    fields[0] = CURVE_P256;
    reversed(Buffer.from(jwk.x, "base64url")).copy(fields, 1);
    reversed(Buffer.from(jwk.y, "base64url")).copy(fields, 33);
    return { scheme: "ecdsa256", fields };
  }
  throw new SignatureKeyError(
    `this is ${pub.asymmetricKeyType ? `an ${pub.asymmetricKeyType.toUpperCase()}` : "an unknown"} key; Secure Boot v2 keys are RSA-3072 or ECDSA P-256`,
  );
}

export class SignatureKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignatureKeyError";
  }
}

/** Reads a PEM public or private key (SPKI, PKCS#1, PKCS#8, SEC1). Throws SignatureKeyError when it is none. */
export function readKey(pem: string | Buffer): KeyObject {
  const text = pem.toString();
  try {
    return /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text) ? createPrivateKey(text) : createPublicKey(text);
  } catch (e) {
    throw new SignatureKeyError(`not a usable PEM key: ${(e as Error).message}`);
  }
}

/** The eFuse key digest (32 bytes) for a key: SHA-256 of its block key fields (`espsecure.py digest_sbv2_public_key`). */
export function publicKeyDigest(key: KeyObject): Buffer {
  return createHash("sha256").update(signatureKeyFields(key).fields).digest();
}

/** A key a device (or the server) trusts, named for messages. */
export interface TrustedKey {
  /** ESP-IDF's public key digest, 32 bytes. */
  digest: Buffer;
  /** e.g. the PEM file it came from. */
  name: string;
}

/** A trusted key from a PEM public (or private) key. */
export function trustedKeyFromPem(pem: string | Buffer, name: string): TrustedKey {
  return { digest: publicKeyDigest(readKey(pem)), name };
}

function problem(code: SignatureProblemCode, message: string, block: number | null = null): SignatureProblem {
  return { code, message, block };
}

interface ParsedKey {
  scheme: SignatureScheme;
  key: KeyObject;
  keyDigest: string;
  /** Checks the signature over the bytes before the sector (OpenSSL hashes them). */
  verifyData(data: Buffer): boolean;
  /** Checks the signature over a digest given as is. */
  verifyDigest(digest: Buffer): boolean;
}

function parseRsaBlock(block: Buffer, index: number): ParsedKey | SignatureProblem {
  const nLe = block.subarray(KEY_AT, KEY_AT + RSA_LEN);
  const e = block.readUInt32LE(KEY_AT + RSA_LEN);
  const rLe = block.subarray(KEY_AT + RSA_LEN + 4, KEY_AT + 2 * RSA_LEN + 4);
  const mPrime = block.readUInt32LE(KEY_AT + 2 * RSA_LEN + 4);
  const sigBe = reversed(block.subarray(KEY_AT + RSA_KEY_LEN, KEY_AT + RSA_KEY_LEN + RSA_LEN));
  const nBe = reversed(nLe);
  const n = bigFromBytes(nBe);
  const bits = n.toString(2).length;
  if (bits !== RSA_BITS) {
    return problem("wrong_key_size", `block ${index}: the RSA modulus is ${n === 0n ? 0 : bits} bits; Secure Boot v2 uses RSA-3072`, index);
  }
  if ((n & 1n) === 0n || e < 3 || (e & 1) === 0) {
    return problem("bad_public_key", `block ${index}: the RSA key is not valid (modulus must be odd, exponent odd and at least 3; exponent is ${e})`, index);
  }
  const want = rsaMontgomery(n);
  if (bigFromBytes(reversed(rLe)) !== want.r || mPrime !== want.mPrime) {
    return problem("bad_rsa_parameters", `block ${index}: R or M' in the RSA key do not follow from its modulus; the block was not written by espsecure.py or ota sign`, index);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: "RSA", n: b64url(trimmed(nBe)), e: b64url(trimmed(bytesFromBig(BigInt(e), 4))) }, format: "jwk" });
  } catch (err) {
    return problem("bad_public_key", `block ${index}: the RSA key cannot be used: ${(err as Error).message}`, index);
  }
  const pss = { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: RSA_SALT_LEN };
  return {
    scheme: "rsa3072",
    key,
    keyDigest: hex(createHash("sha256").update(block.subarray(KEY_AT, KEY_AT + RSA_KEY_LEN)).digest()),
    verifyData: (data) => verify("sha256", data, pss, sigBe),
    verifyDigest: (digest) => verifyRsaPssPrehashed(key, RSA_BITS, digest, sigBe, RSA_SALT_LEN),
  };
}

function parseEcdsaBlock(block: Buffer, index: number): ParsedKey | SignatureProblem {
  const curve = block[KEY_AT]!;
  if (block[2] === ECDSA_SHA_384 || curve === CURVE_P384) {
    return problem("unsupported_curve", `block ${index}: ECDSA P-384 (SHA-384) is not supported here; sign with an ECDSA P-256 or RSA-3072 key`, index);
  }
  if (curve === CURVE_P192) {
    return problem(
      "unsupported_curve",
      `block ${index}: ECDSA P-192 is not accepted (ESP-IDF's check of an OTA update does not take it); sign with an ECDSA P-256 or RSA-3072 key`,
      index,
    );
  }
  if (curve !== CURVE_P256) {
    return problem("unknown_curve", `block ${index}: ECDSA curve id ${curve} is not one ESP-IDF defines (1 P-192, 2 P-256, 3 P-384)`, index);
  }
  const xBe = reversed(block.subarray(KEY_AT + 1, KEY_AT + 33));
  const yBe = reversed(block.subarray(KEY_AT + 33, KEY_AT + 65));
  const rBe = reversed(block.subarray(KEY_AT + 65, KEY_AT + 97));
  const sBe = reversed(block.subarray(KEY_AT + 97, KEY_AT + 129));
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64url(xBe), y: b64url(yBe) }, format: "jwk" });
  } catch (err) {
    return problem("bad_public_key", `block ${index}: the ECDSA public key is not a point on P-256 (${(err as Error).message})`, index);
  }
  const p1363 = Buffer.concat([rBe, sBe]);
  return {
    scheme: "ecdsa256",
    key,
    keyDigest: hex(createHash("sha256").update(block.subarray(KEY_AT, KEY_AT + ECDSA_KEY_LEN)).digest()),
    verifyData: (data) => verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, p1363),
    verifyDigest: (digest) => verifyP256Prehashed(xBe, yBe, digest, rBe, sBe),
  };
}

function parseBlock(block: Buffer, index: number, signedData: Buffer, digest: Buffer): SignatureBlock {
  const version = block[1]!;
  const crcOk = (crc32(block.subarray(0, CRC_COVERS)) >>> 0) === block.readUInt32LE(CRC_COVERS);
  const carried = block.subarray(DIGEST_AT, DIGEST_AT + 32);
  const digestOk = carried.equals(digest);
  const out: SignatureBlock = { index, version, scheme: null, keyDigest: null, crcOk, digestOk, signatureOk: false, valid: false, problem: null };
  if (block[0] !== SIGNATURE_BLOCK_MAGIC) {
    out.problem = problem("bad_magic", `block ${index}: starts with 0x${block[0]!.toString(16).padStart(2, "0")}, a signature block starts with 0xE7`, index);
    return out;
  }
  let parsed: ParsedKey | SignatureProblem;
  if (version === VERSION_RSA) parsed = parseRsaBlock(block, index);
  else if (version === VERSION_ECDSA) parsed = parseEcdsaBlock(block, index);
  else {
    parsed = problem("unknown_version", `block ${index}: version 0x${version.toString(16).padStart(2, "0")} is neither 0x02 (RSA-3072) nor 0x03 (ECDSA)`, index);
  }
  if ("code" in parsed) {
    out.problem = parsed;
  } else {
    out.scheme = parsed.scheme;
    out.keyDigest = parsed.keyDigest;
    // The bytes are hashed again by OpenSSL when the digests match: that is the check acceptance rests on.
    out.signatureOk = digestOk ? parsed.verifyData(signedData) : parsed.verifyDigest(carried);
  }
  // A damaged block is reported as damaged first (ESP-IDF checks magic, then CRC), whatever else looks wrong.
  if (!crcOk) out.problem = problem("bad_crc", `block ${index}: its CRC32 does not match its contents: the block is damaged`, index);
  out.valid = !out.problem && crcOk && digestOk && out.signatureOk;
  return out;
}

const allErased = (b: Buffer) => b.every((x) => x === 0xff);

/**
 * Everything about the signature sector of `file`, an app image whose image format covers `imageLength` bytes
 * (AppImage.imageLength, or appImageLength() for an image that may be damaged). Never throws for what the file
 * holds: malformations are reported in `problems`.
 */
export function parseSignatureSector(file: Buffer, imageLength: number): SignatureSector {
  if (!Number.isInteger(imageLength) || imageLength < 0 || imageLength > file.length) {
    throw new RangeError(`imageLength ${imageLength} is not within the file (${file.length} bytes)`);
  }
  const base = { imageLength, sectorOffset: null, digest: null, blocks: [], problems: [] };
  if (allErased(file.subarray(imageLength))) return { ...base, verdict: "unsigned" };

  const sectorOffset = alignToSector(imageLength);
  const signedData = file.subarray(0, Math.min(sectorOffset, file.length));
  const digest = createHash("sha256").update(signedData).digest();
  const sector: SignatureSector = { ...base, sectorOffset, digest: hex(digest), verdict: "malformed" };
  const end = sectorOffset + SIGNATURE_SECTOR_SIZE;
  if (file.length <= sectorOffset) {
    sector.problems.push(
      problem(
        "trailing_bytes",
        `the ${file.length - imageLength} bytes after the image (from offset ${imageLength}) are neither 0xFF padding nor a signature sector (which would start at ${sectorOffset}); upload the build output as it is, or signed`,
      ),
    );
    return sector;
  }
  if (file.length < end) {
    sector.problems.push(
      problem(
        "sector_truncated",
        `the file ends ${file.length - sectorOffset} bytes into the signature sector at offset ${sectorOffset}; a signed image is ${end} bytes: incomplete copy?`,
      ),
    );
    return sector;
  }
  if (file.length > end) {
    sector.problems.push(
      problem(
        "trailing_bytes",
        `${file.length - end} bytes follow the signature sector at offset ${sectorOffset} (the image's end rounded up to 4 KiB, where ESP-IDF reads it); sign the unpadded build output, or cut the file to ${end} bytes`,
      ),
    );
    return sector;
  }

  for (let i = 0; i < MAX_SIGNATURE_BLOCKS; i++) {
    const block = file.subarray(sectorOffset + i * SIGNATURE_BLOCK_SIZE, sectorOffset + (i + 1) * SIGNATURE_BLOCK_SIZE);
    if (allErased(block)) continue;
    const parsed = parseBlock(block, i, signedData, digest);
    sector.blocks.push(parsed);
    if (parsed.problem) sector.problems.push(parsed.problem);
  }
  const tail = file.subarray(sectorOffset + MAX_SIGNATURE_BLOCKS * SIGNATURE_BLOCK_SIZE, end);
  if (tail[0] === SIGNATURE_BLOCK_MAGIC) {
    sector.problems.push(problem("too_many_blocks", `a 4th signature block starts at sector offset ${MAX_SIGNATURE_BLOCKS * SIGNATURE_BLOCK_SIZE}; a sector holds at most ${MAX_SIGNATURE_BLOCKS}`));
  } else if (!allErased(tail)) {
    sector.problems.push(problem("bad_sector_padding", `the signature sector's last ${tail.length} bytes are not 0xFF padding`));
  }
  if (sector.problems.length === 0) sector.verdict = sector.blocks.some((b) => b.valid) ? "valid" : "invalid";
  return sector;
}

/** Why an image is refused under a set of trusted keys. Stable: the server's policy reports these. */
export type SignatureRejectCode = "unsigned" | "untrusted_signer" | "signature_invalid" | "signature_digest_mismatch" | "malformed_signature_sector";

export type SignatureCheck =
  | { ok: true; block: SignatureBlock; signer: TrustedKey }
  | { ok: false; code: SignatureRejectCode; message: string };

export interface CheckOptions {
  /**
   * Ignore malformed blocks as a device does (ESP-IDF skips a block with a bad magic or CRC and trusts only key
   * digests it knows), instead of refusing the whole image. Sector-level problems refuse either way.
   */
  skipMalformedBlocks?: boolean;
}

const sameDigest = (a: Buffer, b: Buffer) => a.length === b.length && timingSafeEqual(a, b);
const short = (digest: string) => digest.slice(0, 16);

/**
 * Does at least one block verify under one of `trusted`? The first such block, with the key that trusts it;
 * otherwise the most telling reason, judged as ESP-IDF does: a block counts only when its key digest is trusted.
 */
export function checkSignature(sector: SignatureSector, trusted: readonly TrustedKey[], options: CheckOptions = {}): SignatureCheck {
  const refuse = (code: SignatureRejectCode, message: string): SignatureCheck => ({ ok: false, code, message });
  if (sector.verdict === "unsigned") {
    return refuse("unsigned", "the image carries no signature: sign it (ota sign, or espsecure.py sign_data --version 2)");
  }
  const sectorProblem = sector.problems.find((p) => p.block === null);
  if (sectorProblem) return refuse("malformed_signature_sector", sectorProblem.message);
  if (!options.skipMalformedBlocks && sector.problems.length > 0) {
    const more = sector.problems.length > 1 ? ` (and ${sector.problems.length - 1} more problem${sector.problems.length > 2 ? "s" : ""})` : "";
    return refuse("malformed_signature_sector", sector.problems[0]!.message + more);
  }
  const usable = sector.blocks.filter((b) => !b.problem && b.keyDigest);
  if (usable.length === 0) {
    return refuse("malformed_signature_sector", sector.problems[0]?.message ?? "the signature sector holds no usable block");
  }
  const withTrustedKey = usable.flatMap((b) => {
    const digest = Buffer.from(b.keyDigest!, "hex");
    const signer = trusted.find((t) => sameDigest(t.digest, digest));
    return signer ? [{ block: b, signer }] : [];
  });
  const good = withTrustedKey.find(({ block }) => block.valid);
  if (good) return { ok: true, block: good.block, signer: good.signer };
  const first = withTrustedKey[0];
  if (first && !first.block.digestOk) {
    return refuse(
      "signature_digest_mismatch",
      `block ${first.block.index} (signed by ${first.signer.name}) was made for other bytes: the image was changed after it was signed`,
    );
  }
  if (first) {
    return refuse("signature_invalid", `block ${first.block.index} names ${first.signer.name} but its signature does not verify under that key`);
  }
  const signers = usable.map((b) => `block ${b.index}: ${b.scheme} key ${short(b.keyDigest!)}…`).join(", ");
  const names = trusted.length ? trusted.map((t) => `${t.name} (${short(hex(t.digest))}…)`).join(", ") : "none";
  return refuse("untrusted_signer", `no block is signed by a trusted key (${signers}; trusted: ${names})`);
}
