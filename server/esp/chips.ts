// ESP chip ids as written in the image header (esp_image_header_t.chip_id, ESP-IDF esp_app_format.h).
export const CHIPS: Readonly<Record<number, string>> = Object.freeze({
  0: "esp32",
  2: "esp32s2",
  5: "esp32c3",
  9: "esp32s3",
  12: "esp32c2",
  13: "esp32c6",
  16: "esp32h2",
  18: "esp32p4",
  20: "esp32c61",
  23: "esp32c5",
});

const BY_NAME: ReadonlyMap<string, number> = new Map(Object.entries(CHIPS).map(([id, name]) => [name, Number(id)]));

export const CHIP_NAMES: readonly string[] = Object.values(CHIPS);

export function chipName(id: number): string | undefined {
  return CHIPS[id];
}

/** Accepts "esp32", "ESP32-S3", "esp32_c3" and returns the canonical name, or undefined. */
export function normalizeChip(input: string): string | undefined {
  const name = input.toLowerCase().replace(/[-_\s]/g, "");
  return BY_NAME.has(name) ? name : undefined;
}
