// A factory image for the emulated flash: a real ESP-IDF image with its app descriptor (version,
// secure_version) or its header's chip revision range changed, and re-sealed as the build would have sealed
// it: the XOR checksum over the segments and the appended SHA-256 recomputed. The result passes the same
// verification as any image.
import { createHash } from "node:crypto";
import { APP_DESC_OFFSET, parseAppImage } from "../../../server/esp";

const VERSION_AT = APP_DESC_OFFSET + 16; // esp_app_desc_t.version[32]
const SECURE_VERSION_AT = APP_DESC_OFFSET + 4;
const MIN_CHIP_REV_FULL_AT = 15; // esp_image_header_t.min_chip_rev_full (major * 100 + minor)
const MAX_CHIP_REV_FULL_AT = 17; // esp_image_header_t.max_chip_rev_full (0xFFFF: no maximum)
const CHECKSUM_SEED = 0xef;

export interface Derivation {
  version?: string;
  secureVersion?: number;
  minChipRevFull?: number;
  maxChipRevFull?: number;
}

export function deriveImage(src: Buffer, d: Derivation): Buffer {
  const img = parseAppImage(src);
  const out = Buffer.from(src);
  if (d.version !== undefined) {
    if (!/^[\x20-\x7e]{1,31}$/.test(d.version)) throw new Error("a version is 1-31 printable ASCII characters");
    out.fill(0, VERSION_AT, VERSION_AT + 32);
    out.write(d.version, VERSION_AT, "ascii");
  }
  if (d.secureVersion !== undefined) out.writeUInt32LE(d.secureVersion >>> 0, SECURE_VERSION_AT);
  if (d.minChipRevFull !== undefined) out.writeUInt16LE(d.minChipRevFull, MIN_CHIP_REV_FULL_AT);
  if (d.maxChipRevFull !== undefined) out.writeUInt16LE(d.maxChipRevFull, MAX_CHIP_REV_FULL_AT);
  let checksum = CHECKSUM_SEED;
  for (const s of img.segments) for (let i = s.dataOffset; i < s.dataOffset + s.length; i++) checksum ^= out[i]!;
  out[img.checksumOffset] = checksum;
  if (img.appendedSha256) {
    const end = img.checksumOffset + 1;
    createHash("sha256").update(out.subarray(0, end)).digest().copy(out, end);
  }
  const check = parseAppImage(out);
  if (d.version !== undefined && check.app.version !== d.version) throw new Error("the derived image does not carry the new version");
  return out;
}
