// What the bootloader and esp_ota_end check before an image may boot: the server's own parser (magic,
// segments, checksum, appended SHA-256, app descriptor; server/esp/esp-image.ts), then the chip id and
// revision range (bootloader_common_check_chip_validity); on a chip with key digests in eFuse, the Secure
// Boot v2 signature (server/esp/signature.ts), and the anti-rollback secure_version.
import {
  alignToSector,
  checkSignature,
  CHIPS,
  ImageError,
  maxChipRevision,
  MAX_SIGNATURE_BLOCKS,
  parseAppImage,
  parseSignatureSector,
  SIGNATURE_BLOCK_MAGIC,
  SIGNATURE_SECTOR_SIZE,
  type AppImage,
} from "../../../server/esp";
import type { Efuse } from "./efuse";

export interface Chip {
  name: string;
  /** esp_image_header_t.chip_id */
  id: number;
  /** major * 100 + minor */
  revision: number;
}

export function chipByName(name: string, revision: number): Chip {
  const id = Object.entries(CHIPS).find(([, n]) => n === name)?.[0];
  if (id === undefined) throw new Error(`unknown chip ${name}`);
  return { name, id: Number(id), revision };
}

export class ImageCheckError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Verifies an image for this chip; throws ImageCheckError with the failed check's code. */
export function checkImage(bytes: Buffer, chip: Chip): AppImage {
  let img: AppImage;
  try {
    img = parseAppImage(bytes);
  } catch (e) {
    if (e instanceof ImageError) throw new ImageCheckError(e.code, e.message);
    throw e;
  }
  if (img.header.chipId !== chip.id) {
    throw new ImageCheckError("chip_mismatch", `image is for ${img.chip}, the chip is ${chip.name}`);
  }
  const max = maxChipRevision(img.header);
  if (chip.revision < img.header.minChipRevFull || (max !== null && chip.revision > max)) {
    throw new ImageCheckError(
      "chip_revision",
      `image supports chip revisions ${img.header.minChipRevFull} to ${max ?? "any"}, the chip is ${chip.revision}`,
    );
  }
  return img;
}

/**
 * Where the bytes of an app image end on flash: after its signature sector when one follows it (a block's
 * magic at the image's end rounded up to 4 KiB; esp_image_verify counts the sector into image_len), else at
 * the image's own end. `slot` is the partition's bytes.
 */
export function storedLength(slot: Buffer, img: AppImage): number {
  const sector = alignToSector(img.imageLength);
  const end = sector + SIGNATURE_SECTOR_SIZE;
  return end <= slot.length && slot[sector] === SIGNATURE_BLOCK_MAGIC ? end : img.imageLength;
}

/**
 * The signature check of esp_image_verify() with CONFIG_SECURE_SIGNED_ON_UPDATE: at least one block of the
 * sector after the image must verify under a key digest burnt in eFuse and not revoked. Blocks that are
 * damaged or signed by other keys are skipped, as the chip skips them. Throws ImageCheckError with the
 * refusal's code (unsigned, untrusted_signer, signature_invalid, signature_digest_mismatch,
 * malformed_signature_sector).
 */
export function checkAppSignature(slot: Buffer, img: AppImage, efuse: Efuse): void {
  const end = Math.min(slot.length, alignToSector(img.imageLength) + SIGNATURE_SECTOR_SIZE);
  const sector = parseSignatureSector(slot.subarray(0, end), img.imageLength);
  const r = checkSignature(sector, efuse.trustedKeys(), { skipMalformedBlocks: true });
  if (!r.ok) throw new ImageCheckError(r.code, r.message);
}

/**
 * The eFuse digest slots under which the app verifies on its own, one bit per slot (bit i: slot i), as
 * esp_secure_boot_verify_with_efuse_digest_index() answers for each: burnt, not revoked, and a block of the
 * app's signature sector valid under it.
 */
export function signerSlots(slot: Buffer, img: AppImage, efuse: Efuse): number {
  const end = Math.min(slot.length, alignToSector(img.imageLength) + SIGNATURE_SECTOR_SIZE);
  const sector = parseSignatureSector(slot.subarray(0, end), img.imageLength);
  let mask = 0;
  for (let i = 0; i < MAX_SIGNATURE_BLOCKS; i++) {
    const key = efuse.trustedAt(i);
    if (key && checkSignature(sector, [key], { skipMalformedBlocks: true }).ok) mask |= 1 << i;
  }
  return mask;
}

/** Anti-rollback (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK): the app's secure_version must not be below the eFuse's. */
export function checkSecureVersion(img: AppImage, efuse: Efuse): void {
  if (!efuse.checkSecureVersion(img.app.secureVersion)) {
    throw new ImageCheckError(
      "secure_version_too_low",
      `the image's secure_version ${img.app.secureVersion} is below the chip's eFuse secure_version ${efuse.secureVersion}`,
    );
  }
}
