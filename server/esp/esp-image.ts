// Parser and verifier for ESP-IDF application images (the .bin an OTA update writes to an app slot).
//
// Layout (ESP-IDF esp_app_format.h, esp_image_format.c):
//   esp_image_header_t (24 bytes), then segments (8-byte header: load address, length; then data),
//   then padding so that a one-byte XOR checksum (seed 0xEF) is the last byte of a 16-byte block,
//   then, if hash_appended, the SHA-256 of everything before it. An app's first segment starts with
//   esp_app_desc_t (magic 0xABCD5432) at file offset 32.
// The same rules decide what the device-side writer accepts, so the server refuses exactly what a device would.
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { chipName } from "./chips";

const IMAGE_MAGIC = 0xe9;
const APP_DESC_MAGIC = 0xabcd5432;
const HEADER_LEN = 24;
const SEGMENT_HEADER_LEN = 8;
export const APP_DESC_OFFSET = 32;
const APP_DESC_LEN = 256;
const MAX_SEGMENTS = 16; // ESP_IMAGE_MAX_SEGMENTS
const CHECKSUM_SEED = 0xef;
const BOOTLOADER_DESC_MAGIC = 0x50; // esp_bootloader_desc_t.magic_byte
const PARTITION_TABLE_MAGIC = 0x50aa; // little-endian 0xAA 0x50
const OTADATA_LEN = 0x2000;

export type ImageRejectCode =
  | "too_short"
  | "wrong_magic"
  | "partition_table"
  | "otadata"
  | "bootloader"
  | "not_an_app"
  | "bad_header"
  | "truncated"
  | "checksum_mismatch"
  | "sha256_mismatch"
  | "unknown_chip";

export class ImageError extends Error {
  constructor(
    readonly code: ImageRejectCode,
    message: string,
  ) {
    super(message);
    this.name = "ImageError";
  }
}

export interface ImageHeader {
  segmentCount: number;
  spiMode: number;
  spiSpeed: number;
  spiSize: number;
  entryAddr: number;
  chipId: number;
  minChipRev: number;
  minChipRevFull: number;
  /** 0 and 0xFFFF mean "no maximum" (ESP-IDF IS_MAX_REV_SET). */
  maxChipRevFull: number;
  hashAppended: boolean;
}

export interface Segment {
  loadAddr: number;
  dataOffset: number;
  length: number;
}

export interface AppDescriptor {
  secureVersion: number;
  version: string;
  projectName: string;
  time: string;
  date: string;
  idfVersion: string;
  appElfSha256: string;
  minEfuseBlkRevFull: number;
  maxEfuseBlkRevFull: number;
  mmuPageSizeLog2: number;
}

export interface AppImage {
  header: ImageHeader;
  chip: string;
  segments: Segment[];
  app: AppDescriptor;
  checksumOffset: number;
  checksum: number;
  /** SHA-256 stored after the checksum block (hex), null when the image carries none. */
  appendedSha256: string | null;
  /** Bytes covered by the image format (through the appended hash). */
  imageLength: number;
  /** Bytes after imageLength, e.g. a secure-boot signature block. */
  trailingBytes: number;
}

function cString(buf: Buffer, start: number, len: number): string {
  const field = buf.subarray(start, start + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? len : nul).toString("utf8");
}

/** An esp_ota_select_entry_t is valid when its CRC covers its ota_seq, or it is erased (all 0xFF). */
function otaEntryLooksValid(buf: Buffer, at: number): boolean {
  const entry = buf.subarray(at, at + 32);
  if (entry.every((b) => b === 0xff)) return true;
  return otaSelectCrc(entry.readUInt32LE(0)) === entry.readUInt32LE(28);
}

/** CRC of an otadata entry: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4). */
export function otaSelectCrc(seq: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(seq >>> 0);
  return crc32(b, 0xffffffff) >>> 0;
}

function refuseOtherFormats(buf: Buffer): void {
  if (buf.length >= 2 && buf.readUInt16LE(0) === PARTITION_TABLE_MAGIC) {
    throw new ImageError(
      "partition_table",
      "this is a partition table (starts with 0xAA 0x50), not an app image; flash it with esptool, not OTA",
    );
  }
  if (buf.length === OTADATA_LEN && buf[0] !== IMAGE_MAGIC && otaEntryLooksValid(buf, 0) && otaEntryLooksValid(buf, 0x1000)) {
    throw new ImageError(
      "otadata",
      "this is an otadata partition (two OTA selection entries, 8 KiB), not an app image",
    );
  }
}

function parseHeader(buf: Buffer): ImageHeader {
  if (buf.length < HEADER_LEN) {
    throw new ImageError("too_short", `file is ${buf.length} bytes, shorter than the 24-byte image header`);
  }
  refuseOtherFormats(buf);
  if (buf[0] !== IMAGE_MAGIC) {
    throw new ImageError(
      "wrong_magic",
      // The file's own byte is not quoted: this text is shown to every operator, and the file may be anything.
      "not an ESP app image: it does not start with 0xE9, the first byte of every ESP app image",
    );
  }
  const header: ImageHeader = {
    segmentCount: buf[1]!,
    spiMode: buf[2]!,
    spiSpeed: buf[3]! & 0x0f,
    spiSize: buf[3]! >> 4,
    entryAddr: buf.readUInt32LE(4),
    chipId: buf.readUInt16LE(12),
    minChipRev: buf[14]!,
    minChipRevFull: buf.readUInt16LE(15),
    maxChipRevFull: buf.readUInt16LE(17),
    hashAppended: buf[23] === 1,
  };
  if (header.segmentCount === 0 || header.segmentCount > MAX_SEGMENTS) {
    throw new ImageError(
      "bad_header",
      `the image header's segment count is not between 1 and ${MAX_SEGMENTS}, as ESP-IDF requires: not an ESP app image or a damaged one`,
    );
  }
  return header;
}

/** Reads esp_app_desc_t; returns null when the first segment does not start with one. */
function parseAppDescriptor(buf: Buffer): AppDescriptor | null {
  const at = APP_DESC_OFFSET;
  if (buf.length < at + 4) {
    throw new ImageError("truncated", `file is ${buf.length} bytes and ends before the app descriptor at offset 32`);
  }
  if (buf.readUInt32LE(at) !== APP_DESC_MAGIC) return null;
  if (buf.length < at + APP_DESC_LEN) {
    throw new ImageError("truncated", `file ends inside the app descriptor (${buf.length} bytes)`);
  }
  return {
    secureVersion: buf.readUInt32LE(at + 4),
    version: cString(buf, at + 16, 32),
    projectName: cString(buf, at + 48, 32),
    time: cString(buf, at + 80, 16),
    date: cString(buf, at + 96, 16),
    idfVersion: cString(buf, at + 112, 32),
    appElfSha256: buf.subarray(at + 144, at + 176).toString("hex"),
    minEfuseBlkRevFull: buf.readUInt16LE(at + 176),
    maxEfuseBlkRevFull: buf.readUInt16LE(at + 178),
    mmuPageSizeLog2: buf[at + 180]!,
  };
}

/** Follows the segment headers to the checksum byte, without checking any data. */
function walkSegments(buf: Buffer, header: ImageHeader): { segments: Segment[]; checksumOffset: number } {
  const segments: Segment[] = [];
  let pos = HEADER_LEN;
  for (let i = 0; i < header.segmentCount; i++) {
    if (pos + SEGMENT_HEADER_LEN > buf.length) {
      throw new ImageError("truncated", `file ends in the header of segment ${i} (${buf.length} bytes)`);
    }
    const loadAddr = buf.readUInt32LE(pos);
    const length = buf.readUInt32LE(pos + 4);
    const dataOffset = pos + SEGMENT_HEADER_LEN;
    if (dataOffset + length > buf.length) {
      throw new ImageError(
        "truncated",
        `segment ${i} needs bytes up to ${dataOffset + length} but the file has ${buf.length}: incomplete copy or truncated image`,
      );
    }
    segments.push({ loadAddr, dataOffset, length });
    pos = dataOffset + length;
  }
  // The checksum is the last byte of the 16-byte block that follows the last segment.
  const checksumOffset = pos + (15 - (pos % 16));
  if (checksumOffset >= buf.length) {
    throw new ImageError("truncated", `file ends before the checksum byte at offset ${checksumOffset}`);
  }
  return { segments, checksumOffset };
}

/**
 * How many bytes the image format covers (through the appended SHA-256), found from the header and segment
 * headers alone: what ESP-IDF calls image_len, after which a Secure Boot v2 signature sector starts on the next
 * 4 KiB boundary. Checks no checksum or hash, so it also measures a damaged image; throws ImageError when the
 * file is not an image or ends too early.
 */
export function appImageLength(buf: Buffer): number {
  const header = parseHeader(buf);
  const length = walkSegments(buf, header).checksumOffset + 1 + (header.hashAppended ? 32 : 0);
  if (length > buf.length) {
    throw new ImageError("truncated", `file ends inside the appended SHA-256 (needs ${length} bytes)`);
  }
  return length;
}

/**
 * Parses and fully verifies an ESP-IDF app image: header, segment walk, XOR checksum, appended SHA-256,
 * app descriptor and chip. Throws ImageError with a precise reason for anything a device would refuse.
 */
export function parseAppImage(buf: Buffer): AppImage {
  const header = parseHeader(buf);

  const app = parseAppDescriptor(buf);
  if (!app) {
    if (buf.length > APP_DESC_OFFSET && buf[APP_DESC_OFFSET] === BOOTLOADER_DESC_MAGIC) {
      throw new ImageError(
        "bootloader",
        "this is a second-stage bootloader image (bootloader descriptor at offset 32), not an app; OTA cannot update the bootloader",
      );
    }
    throw new ImageError(
      "not_an_app",
      "no app descriptor (magic 0xABCD5432) at offset 32: not an ESP-IDF application image",
    );
  }

  const { segments, checksumOffset } = walkSegments(buf, header);
  let checksum = CHECKSUM_SEED;
  for (const seg of segments) {
    for (let j = seg.dataOffset, end = seg.dataOffset + seg.length; j < end; j++) checksum ^= buf[j]!;
  }
  const stored = buf[checksumOffset]!;
  if (stored !== checksum) {
    throw new ImageError(
      "checksum_mismatch",
      `image checksum is 0x${stored.toString(16)} but the segments give 0x${checksum.toString(16)}: the file is corrupted`,
    );
  }

  let imageLength = checksumOffset + 1;
  let appendedSha256: string | null = null;
  if (header.hashAppended) {
    if (imageLength + 32 > buf.length) {
      throw new ImageError("truncated", `file ends inside the appended SHA-256 (needs ${imageLength + 32} bytes)`);
    }
    const want = buf.subarray(imageLength, imageLength + 32);
    const got = createHash("sha256").update(buf.subarray(0, imageLength)).digest();
    if (!got.equals(want)) {
      throw new ImageError(
        "sha256_mismatch",
        "the SHA-256 appended to the image does not match its contents: the file is corrupted",
      );
    }
    appendedSha256 = want.toString("hex");
    imageLength += 32;
  }

  const chip = chipName(header.chipId);
  if (!chip) {
    throw new ImageError("unknown_chip", `image is built for chip id ${header.chipId}, which this server does not know`);
  }

  return {
    header,
    chip,
    segments,
    app,
    checksumOffset,
    checksum: stored,
    appendedSha256,
    imageLength,
    trailingBytes: buf.length - imageLength,
  };
}

/** Chip revision bound in the manifest form: "no maximum" becomes null. */
export function maxChipRevision(header: ImageHeader): number | null {
  return header.maxChipRevFull === 0 || header.maxChipRevFull === 0xffff ? null : header.maxChipRevFull;
}
