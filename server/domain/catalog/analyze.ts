// Decides whether a file is an image this fleet can install: a valid ESP-IDF app that fits the smallest
// OTA slot. Also computes what the manifest needs: whole-file SHA-256 and MD5, and per-block SHA-256.
import { createHash } from "node:crypto";
import { ImageError, maxChipRevision, parseAppImage, type ImageRejectCode } from "../../esp";

/** Why a file is not offered. `link` and `not_a_file` come from the folder watcher, which never reads those. */
export type RejectCode = ImageRejectCode | "too_large" | "bad_name" | "empty" | "link" | "not_a_file";

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

export function analyzeImage(buf: Buffer, maxImageSize: number): Analysis {
  if (buf.length === 0) return { ok: false, code: "empty", message: "file is empty" };
  if (buf.length > maxImageSize) return tooLarge(buf.length, maxImageSize);
  let img;
  try {
    img = parseAppImage(buf);
  } catch (e) {
    if (e instanceof ImageError) return { ok: false, code: e.code, message: e.message };
    throw e;
  }
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
