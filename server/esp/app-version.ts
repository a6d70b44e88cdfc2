// A copy of an app image with another version string in its app descriptor (esp_app_desc_t.version), with
// the XOR checksum and the appended SHA-256 made right again: a second version of an app without rebuilding,
// for trying updates. Bytes after the image (a Secure Boot signature) are dropped: they signed other bytes.
import { createHash } from "node:crypto";
import { APP_DESC_OFFSET, parseAppImage } from "./esp-image";

const VERSION_AT = APP_DESC_OFFSET + 16;
const VERSION_LEN = 32;
const CHECKSUM_SEED = 0xef;

export class AppVersionError extends Error {}

/** The rule a new version string must follow (printable ASCII, room for the terminating NUL). */
export const APP_VERSION_RULE = "1-31 printable ASCII characters";

export function withAppVersion(image: Buffer, version: string): { image: Buffer; previous: string; droppedBytes: number } {
  if (!/^[\x20-\x7e]{1,31}$/.test(version)) throw new AppVersionError(`the version must be ${APP_VERSION_RULE}`);
  const parsed = parseAppImage(image); // verifies it first: never fix up the checksum of a damaged image
  const first = parsed.segments[0];
  if (!first || first.dataOffset > VERSION_AT || first.dataOffset + first.length < VERSION_AT + VERSION_LEN) {
    throw new AppVersionError("the app descriptor is not in the image's first segment");
  }
  const out = Buffer.from(image.subarray(0, parsed.imageLength));
  out.fill(0, VERSION_AT, VERSION_AT + VERSION_LEN);
  out.write(version, VERSION_AT, "latin1");
  let checksum = CHECKSUM_SEED;
  for (const seg of parsed.segments) {
    for (let j = seg.dataOffset, end = seg.dataOffset + seg.length; j < end; j++) checksum ^= out[j]!;
  }
  out[parsed.checksumOffset] = checksum;
  if (parsed.header.hashAppended) {
    const end = parsed.checksumOffset + 1;
    createHash("sha256").update(out.subarray(0, end)).digest().copy(out, end);
  }
  parseAppImage(out);
  return { image: out, previous: parsed.app.version, droppedBytes: parsed.trailingBytes };
}
