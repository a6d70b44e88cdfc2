// What the bootloader and esp_ota_end check before an image may boot: the server's own parser (magic,
// segments, checksum, appended SHA-256, app descriptor; server/esp/esp-image.ts), then the chip id and
// revision range (bootloader_common_check_chip_validity).
import { CHIPS, ImageError, maxChipRevision, parseAppImage, type AppImage } from "../../../server/esp";

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
