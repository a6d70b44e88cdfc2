// Decides whether a file is an image this fleet can install: a valid ESP-IDF app that fits the smallest
// OTA slot and, when the server trusts signing keys (OTA_SIGNING_KEYS), carries a Secure Boot v2 signature
// block that verifies under one of them. Also computes what the manifest needs: whole-file SHA-256 and MD5,
// per-block SHA-256, and the image's signatures.
import { createHash } from "node:crypto";
import {
  appImageLength,
  checkSignature,
  ImageError,
  maxChipRevision,
  parseAppImage,
  parseSignatureSector,
  type AppImage,
  type ImageRejectCode,
  type SignatureRejectCode,
  type SignatureScheme,
  type SignatureSector,
  type TrustedKey,
} from "../../esp";

/** Why a file is not offered. `link` and `not_a_file` come from the folder watcher, which never reads those. */
export type RejectCode = ImageRejectCode | SignatureRejectCode | "too_large" | "bad_name" | "empty" | "link" | "not_a_file";

/** A Secure Boot v2 signature block of an image: its scheme and the eFuse digest (hex) of its public key. */
export interface ImageSignature {
  scheme: SignatureScheme;
  keyDigest: string;
}

/**
 * The keys images must be signed by (OTA_SIGNING_KEYS), or null: images are not signature-checked. Read once at
 * start; every image, stored or new, is judged against the keys of the running server.
 */
export type SigningPolicy = readonly TrustedKey[] | null;

export interface ImageFacts {
  sha256: string;
  md5: string;
  size: number;
  version: string;
  project: string;
  chip: string;
  chipId: number;
  minChipRev: number;
  maxChipRev: number | null;
  secureVersion: number;
  idfVersion: string;
  appElfSha256: string;
  buildDate: string;
  buildTime: string;
  trailingBytes: number;
  /** Every block whose signature holds over this image under the block's own key, in sector order (trusted or not). */
  signatures: ImageSignature[];
  /** The block a trusted key (OTA_SIGNING_KEYS) verifies, which admitted the image; null when no keys are set. */
  signedBy: ImageSignature | null;
}

export type Analysis = { ok: true; facts: ImageFacts } | { ok: false; code: RejectCode; message: string };

export const FIRMWARE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,123}\.bin$/;
export const FIRMWARE_NAME_RULE = "letters, digits, '.', '_', '+', '-', ending in .bin, at most 128 characters";

export function tooLarge(size: number, maxImageSize: number): Analysis {
  return {
    ok: false,
    code: "too_large",
    message: `image is ${size} bytes but the smallest OTA slot in the partition table holds ${maxImageSize}`,
  };
}

export type SignatureAnalysis =
  | { ok: true; signatures: ImageSignature[]; signedBy: ImageSignature | null }
  | { ok: false; code: SignatureRejectCode; message: string };

const signatureOf = (b: { scheme: SignatureScheme | null; keyDigest: string | null }): ImageSignature => ({ scheme: b.scheme!, keyDigest: b.keyDigest! });

/** The blocks that hold, when the sector is well-formed. */
const validSignatures = (sector: SignatureSector): ImageSignature[] =>
  sector.verdict === "valid" ? sector.blocks.filter((b) => b.valid).map(signatureOf) : [];

function judgeSector(sector: SignatureSector, policy: SigningPolicy): SignatureAnalysis {
  const signatures = validSignatures(sector);
  if (!policy) return { ok: true, signatures, signedBy: null };
  const check = checkSignature(sector, policy);
  if (!check.ok) return { ok: false, code: check.code, message: `${check.message} (the server accepts only images signed by a key in OTA_SIGNING_KEYS)` };
  return { ok: true, signatures, signedBy: signatureOf(check.block) };
}

/**
 * The signatures of an image already known to be valid whose format covers `imageLength` bytes, judged against
 * `policy`: what the catalog re-checks for every stored image at start, under the keys trusted now.
 */
export function analyzeSignatures(buf: Buffer, imageLength: number, policy: SigningPolicy): SignatureAnalysis {
  return judgeSector(parseSignatureSector(buf, imageLength), policy);
}

/** Image errors that mean changed bytes (not another kind of file): under a signing policy, the signature speaks first. */
const CHANGED_BYTES: ReadonlySet<ImageRejectCode> = new Set(["checksum_mismatch", "sha256_mismatch"]);

const refused = (e: unknown): Analysis => {
  if (e instanceof ImageError) return { ok: false, code: e.code, message: e.message };
  throw e;
};

/**
 * Judges a file. Under a signing policy, an app image is accepted only if a block verifies under a trusted key.
 * A file that is not an app image at all (a bootloader, a partition table, a truncated copy) is refused for what
 * it is; an app whose bytes were changed (bad checksum or appended SHA-256) has its signature checked first, on
 * the extent its header and segment headers give, so an image changed after it was signed is refused as
 * `signature_digest_mismatch`.
 */
export function analyzeImage(buf: Buffer, maxImageSize: number, policy: SigningPolicy = null): Analysis {
  if (buf.length === 0) return { ok: false, code: "empty", message: "file is empty" };
  if (buf.length > maxImageSize) return tooLarge(buf.length, maxImageSize);
  let img: AppImage;
  try {
    img = parseAppImage(buf);
  } catch (e) {
    if (policy && e instanceof ImageError && CHANGED_BYTES.has(e.code)) {
      let signed;
      try {
        signed = analyzeSignatures(buf, appImageLength(buf), policy);
      } catch (e2) {
        return refused(e2);
      }
      if (!signed.ok) return signed;
    }
    return refused(e);
  }
  const signed = analyzeSignatures(buf, img.imageLength, policy);
  if (!signed.ok) return signed;
  const { signatures, signedBy } = signed;
  return {
    ok: true,
    facts: {
      sha256: createHash("sha256").update(buf).digest("hex"),
      md5: createHash("md5").update(buf).digest("hex"),
      size: buf.length,
      version: img.app.version,
      project: img.app.projectName,
      chip: img.chip,
      chipId: img.header.chipId,
      minChipRev: img.header.minChipRevFull,
      maxChipRev: maxChipRevision(img.header),
      secureVersion: img.app.secureVersion,
      idfVersion: img.app.idfVersion,
      appElfSha256: img.app.appElfSha256,
      buildDate: img.app.date,
      buildTime: img.app.time,
      trailingBytes: img.trailingBytes,
      signatures,
      signedBy,
    },
  };
}

/** SHA-256 of each fixed-size block, concatenated (32 bytes a block): the resource the agent verifies against. */
export function blockHashes(buf: Buffer, blockSize: number): Buffer {
  const count = Math.ceil(buf.length / blockSize);
  const out = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) {
    createHash("sha256")
      .update(buf.subarray(i * blockSize, Math.min(buf.length, (i + 1) * blockSize)))
      .digest()
      .copy(out, i * 32);
  }
  return out;
}
