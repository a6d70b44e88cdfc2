// Signing app images in the Secure Boot v2 format (signature.ts has the layout), byte for byte as
// `espsecure.py sign_data --version 2` does: the image is padded with 0xFF to the next 4 KiB boundary and one
// 4096-byte sector is appended, holding the blocks and then 0xFF. Works offline; a key never leaves the caller.
//
// Three ways to make a block:
//   signBlock():                 with a private key in hand;
//   blockFromDetachedSignature(): from a signature made elsewhere (an HSM, an air-gapped machine) over
//                                 PreparedImage.digest, checked against the public key before it is used;
// and appending to an already signed image keeps its blocks (up to 3 in all).
import { constants, createHash, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { crc32 } from "node:zlib";
import { parseAppImage } from "./esp-image";
import {
  alignToSector,
  MAX_SIGNATURE_BLOCKS,
  parseSignatureSector,
  SIGNATURE_BLOCK_MAGIC,
  SIGNATURE_BLOCK_SIZE,
  SIGNATURE_SECTOR_SIZE,
  publicKeyDigest,
  signatureKeyFields,
  SignatureKeyError,
  type SignatureScheme,
} from "./signature";

export type SigningErrorCode =
  /** The image already has a signature sector and appending was not asked for. */
  | "already_signed"
  /** What follows the image is not a well-formed signature sector, or one of its blocks does not verify over the image. */
  | "existing_signature_invalid"
  /** The sector already holds 3 blocks. */
  | "sector_full"
  /** A block by this key is already there. */
  | "duplicate_key"
  /** A detached signature is not in an encoding read here. */
  | "bad_signature_encoding"
  /** A detached signature does not verify over the image's digest under the public key given. */
  | "signature_mismatch";

export class SigningError extends Error {
  constructor(
    readonly code: SigningErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "SigningError";
  }
}

export interface PreparedImage {
  /** Every byte a signature covers: the image padded with 0xFF to 4 KiB (what goes before the sector). */
  signedData: Buffer;
  /** SHA-256 of signedData: the 32 bytes every block signs. */
  digest: Buffer;
  /** Blocks already in the image's sector, kept when appending. */
  existingBlocks: Buffer[];
  /** Their key digests (hex), in order. */
  existingKeyDigests: string[];
}

const RSA_LEN = 384;
const P256_LEN = 32;

/**
 * Checks `file` is a valid app image and returns what a signature covers. An already signed image is refused
 * unless `append`: then its sector must be well-formed, every block in it must verify over the image, and there
 * must be room for another. (`append` on an unsigned image signs it afresh, as espsecure.py does.) Throws
 * ImageError for a file that is not a valid app image, SigningError otherwise.
 */
export function prepareImage(file: Buffer, options: { append?: boolean } = {}): PreparedImage {
  const image = parseAppImage(file);
  const sectorOffset = alignToSector(image.imageLength);
  const sector = parseSignatureSector(file, image.imageLength);
  if (sector.verdict === "unsigned") {
    const signedData = Buffer.alloc(sectorOffset, 0xff);
    file.copy(signedData, 0, 0, Math.min(file.length, sectorOffset));
    return { signedData, digest: createHash("sha256").update(signedData).digest(), existingBlocks: [], existingKeyDigests: [] };
  }
  const sectorProblem = sector.problems.find((p) => p.block === null);
  if (sectorProblem || sector.blocks.length === 0) {
    throw new SigningError(
      "existing_signature_invalid",
      `what follows the image is not a valid signature sector: ${sectorProblem?.message ?? "it holds no block"}; sign the unsigned build output`,
    );
  }
  if (!options.append) {
    throw new SigningError(
      "already_signed",
      `the image is already signed (${sector.blocks.length} block${sector.blocks.length === 1 ? "" : "s"}); add a block with --append, or sign the unsigned build output`,
    );
  }
  if (sector.problems.length > 0) {
    throw new SigningError("existing_signature_invalid", `its signature sector is malformed: ${sector.problems[0]!.message}; sign the unsigned build output instead`);
  }
  const bad = sector.blocks.find((b) => !b.valid);
  if (bad) {
    const why = bad.digestOk ? "its signature does not verify" : "it was made for other bytes (the image changed after signing)";
    throw new SigningError("existing_signature_invalid", `block ${bad.index} in its signature sector is not valid: ${why}; sign the unsigned build output instead`);
  }
  if (sector.blocks.length >= MAX_SIGNATURE_BLOCKS) {
    throw new SigningError("sector_full", `the image already carries ${MAX_SIGNATURE_BLOCKS} signature blocks, as many as a sector holds (and a chip trusts); none can be added`);
  }
  // Kept in their order, packed from slot 0.
  const existingBlocks = sector.blocks.map((b) => {
    const at = sectorOffset + b.index * SIGNATURE_BLOCK_SIZE;
    return Buffer.from(file.subarray(at, at + SIGNATURE_BLOCK_SIZE));
  });
  const signedData = Buffer.from(file.subarray(0, sectorOffset));
  return { signedData, digest: Buffer.from(sector.digest!, "hex"), existingBlocks, existingKeyDigests: sector.blocks.map((b) => b.keyDigest!) };
}

function encodeBlock(scheme: SignatureScheme, digest: Buffer, keyFields: Buffer, signatureLe: Buffer): Buffer {
  const block = Buffer.alloc(SIGNATURE_BLOCK_SIZE, 0);
  block[0] = SIGNATURE_BLOCK_MAGIC;
  block[1] = scheme === "rsa3072" ? 0x02 : 0x03;
  // block[2] = 0: for ECDSA, the digest is SHA-256; block[3] reserved
  digest.copy(block, 4);
  keyFields.copy(block, 36);
  signatureLe.copy(block, 36 + keyFields.length);
  block.writeUInt32LE(crc32(block.subarray(0, 1196)) >>> 0, 1196);
  return block;
}

function keyFieldsFor(prepared: PreparedImage, key: KeyObject): { scheme: SignatureScheme; fields: Buffer } {
  const k = signatureKeyFields(key);
  const digest = createHash("sha256").update(k.fields).digest("hex");
  const at = prepared.existingKeyDigests.indexOf(digest);
  if (at >= 0) throw new SigningError("duplicate_key", `the image is already signed by this key (existing block ${at})`);
  return k;
}

/** Each of r and s, big-endian, turned little-endian as the block stores them. */
function ecdsaLe(p1363: Buffer): Buffer {
  return Buffer.concat([Buffer.from(p1363.subarray(0, P256_LEN)).reverse(), Buffer.from(p1363.subarray(P256_LEN)).reverse()]);
}

const pss = (key: KeyObject) => ({ key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });

/** A signature block made with a private key (RSA-3072-PSS or ECDSA P-256, by the key's type). */
function signBlock(prepared: PreparedImage, privateKey: KeyObject): Buffer {
  if (privateKey.type !== "private") throw new SignatureKeyError("signing needs the private key; this is a public key");
  const { scheme, fields } = keyFieldsFor(prepared, privateKey);
  // SHA-256 of signedData is the digest: signing the data with SHA-256 signs the digest as an already-hashed message.
  const signature =
    scheme === "rsa3072"
      ? Buffer.from(sign("sha256", prepared.signedData, pss(privateKey))).reverse()
      : ecdsaLe(sign("sha256", prepared.signedData, { key: privateKey, dsaEncoding: "ieee-p1363" }));
  return encodeBlock(scheme, prepared.digest, fields, signature);
}

/** Reads an ECDSA-Sig-Value (strict DER) into r‖s, each 32 bytes big-endian; null when it is not one. */
function derToP1363(der: Buffer): Buffer | null {
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) return null;
  const out = Buffer.alloc(2 * P256_LEN);
  let pos = 2;
  for (let i = 0; i < 2; i++) {
    if (der[pos] !== 0x02) return null;
    const len = der[pos + 1]!;
    const value = der.subarray(pos + 2, pos + 2 + len);
    if (len === 0 || value.length !== len || len >= 0x80) return null;
    if (value[0]! & 0x80) return null; // negative
    if (value[0] === 0 && (len === 1 || !(value[1]! & 0x80))) return null; // not minimal
    const magnitude = value[0] === 0 ? value.subarray(1) : value;
    if (magnitude.length > P256_LEN) return null;
    magnitude.copy(out, (i + 1) * P256_LEN - magnitude.length);
    pos += 2 + len;
  }
  return pos === der.length ? out : null;
}

/**
 * A signature block from a signature made elsewhere over `prepared.digest` (as an already-hashed message):
 * RSA-3072-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) as 384 bytes big-endian, what
 * `openssl pkeyutl -sign -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32` writes;
 * ECDSA P-256 as DER (what `openssl pkeyutl -sign` writes) or as 64 bytes r‖s big-endian (PKCS#11 CKM_ECDSA).
 * The signature must verify under `publicKey` over this image, else SigningError signature_mismatch.
 */
export function blockFromDetachedSignature(prepared: PreparedImage, publicKey: KeyObject, signature: Buffer): Buffer {
  const { scheme, fields } = keyFieldsFor(prepared, publicKey);
  const mismatch = () =>
    new SigningError(
      "signature_mismatch",
      `the signature does not verify under this public key over the image's digest ${prepared.digest.toString("hex")}: was it made for another build, over another digest, or with another key?`,
    );
  if (scheme === "rsa3072") {
    if (signature.length !== RSA_LEN) {
      throw new SigningError("bad_signature_encoding", `an RSA-3072 signature is ${RSA_LEN} bytes (big-endian); this one is ${signature.length}`);
    }
    if (!verify("sha256", prepared.signedData, pss(publicKey), signature)) throw mismatch();
    return encodeBlock(scheme, prepared.digest, fields, Buffer.from(signature).reverse());
  }
  const p1363 = derToP1363(signature) ?? (signature.length === 2 * P256_LEN ? signature : null);
  if (!p1363) {
    throw new SigningError("bad_signature_encoding", `an ECDSA P-256 signature is DER (ECDSA-Sig-Value) or 64 bytes r‖s; this one is ${signature.length} bytes of neither`);
  }
  if (!verify("sha256", prepared.signedData, { key: publicKey, dsaEncoding: "ieee-p1363" }, p1363)) throw mismatch();
  return encodeBlock(scheme, prepared.digest, fields, ecdsaLe(p1363));
}

/** The signed image: signedData, then a sector with the existing blocks, the new ones, and 0xFF. */
export function assembleSignedImage(prepared: PreparedImage, newBlocks: readonly Buffer[]): Buffer {
  const blocks = [...prepared.existingBlocks, ...newBlocks];
  if (blocks.length > MAX_SIGNATURE_BLOCKS) {
    throw new SigningError(
      "sector_full",
      `${blocks.length} signature blocks do not fit: a sector holds ${MAX_SIGNATURE_BLOCKS}${prepared.existingBlocks.length ? ` and the image already carries ${prepared.existingBlocks.length}` : ""}`,
    );
  }
  const sector = Buffer.alloc(SIGNATURE_SECTOR_SIZE, 0xff);
  blocks.forEach((b, i) => b.copy(sector, i * SIGNATURE_BLOCK_SIZE));
  return Buffer.concat([prepared.signedData, sector]);
}

/** Signs an app image with one or more private keys (appending to its existing blocks with `append`). */
export function signImage(file: Buffer, privateKeys: readonly KeyObject[], options: { append?: boolean } = {}): Buffer {
  const prepared = prepareImage(file, options);
  const signedSoFar = { ...prepared, existingKeyDigests: [...prepared.existingKeyDigests] }; // refuses a key given twice
  const blocks = privateKeys.map((key) => {
    const block = signBlock(signedSoFar, key);
    signedSoFar.existingKeyDigests.push(publicKeyDigest(key).toString("hex"));
    return block;
  });
  return assembleSignedImage(prepared, blocks);
}

/** A new signing key pair in PEM, as `espsecure.py generate_signing_key --version 2` writes them (PKCS#1 / SEC1; SPKI). */
export function generateSigningKey(scheme: SignatureScheme): { privateKeyPem: string; publicKeyPem: string } {
  const pair =
    scheme === "rsa3072"
      ? generateKeyPairSync("rsa", {
          modulusLength: 3072,
          publicExponent: 65537,
          publicKeyEncoding: { type: "spki", format: "pem" },
          privateKeyEncoding: { type: "pkcs1", format: "pem" },
        })
      : generateKeyPairSync("ec", {
          namedCurve: "P-256",
          publicKeyEncoding: { type: "spki", format: "pem" },
          privateKeyEncoding: { type: "sec1", format: "pem" },
        });
  return { privateKeyPem: pair.privateKey, publicKeyPem: pair.publicKey };
}
