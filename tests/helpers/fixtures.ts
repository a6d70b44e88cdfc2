// Real ESP32 test data: the shared reference folder beside the project (../shared/fixtures) when present,
// else the copies in tests/fixtures (see its README). Override with OTA_FIXTURES_DIR.
import fs from "node:fs";
import path from "node:path";

const SHARED = path.resolve(__dirname, "../../../shared/fixtures");
const BUNDLED = path.resolve(__dirname, "../fixtures");

const FIXTURES_DIR =
  process.env.OTA_FIXTURES_DIR ?? (fs.existsSync(path.join(SHARED, "esp32-images")) ? SHARED : BUNDLED);
const IMAGES_DIR = path.join(FIXTURES_DIR, "esp32-images");
export const PARTITIONS_DIR = path.join(FIXTURES_DIR, "partitions");

export const HELLO_WORLD = path.join(IMAGES_DIR, "esp32_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_C3 = path.join(IMAGES_DIR, "esp32c3_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_S3 = path.join(IMAGES_DIR, "esp32s3_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_IDF41 = path.join(IMAGES_DIR, "esp32_hello-world_idf4.1-dev.bin");
export const BOOTLOADER = path.join(IMAGES_DIR, "bootloader_esp32_idf5.2.2.bin");
export const OTADATA = path.join(IMAGES_DIR, "boot_app0_otadata_arduino.bin");
export const PARTITION_TABLE_OTA = path.join(IMAGES_DIR, "partitions_arduino_default_ota.bin");
export const PARTITION_TABLE_SINGLE = path.join(IMAGES_DIR, "partition-table_esp32_singleapp.bin");

/** The 1.5 MB production image may only be read from the shared folder (GPL test data, not copied). */
const esphome = [path.join(IMAGES_DIR, "esp32_esphome-2021.12.0-dev_arduino.bin"), path.join(SHARED, "esp32-images", "esp32_esphome-2021.12.0-dev_arduino.bin")].find((f) =>
  fs.existsSync(f),
);
export const ESPHOME: string = esphome ?? "";
export const HAS_ESPHOME = Boolean(esphome);
/** `it` when the 1.5 MB image is available, else a skip that says why. */
export const itWithEsphome: jest.It = HAS_ESPHOME
  ? it
  : (((name: string) => it.skip(`${name} [skipped: ../shared/fixtures/esp32-images/esp32_esphome-2021.12.0-dev_arduino.bin is absent]`, () => undefined)) as unknown as jest.It);

export interface ExpectedFile {
  file: string;
  parsed: Record<string, any>;
}
/** EXPECTED.json entries for files present here (the ESPHome image only when it is available). */
export function expected(): ExpectedFile[] {
  const all: ExpectedFile[] = JSON.parse(fs.readFileSync(path.join(IMAGES_DIR, "EXPECTED.json"), "utf8")).files;
  return all.filter((f) => fs.existsSync(path.join(IMAGES_DIR, f.file)) || (HAS_ESPHOME && f.file === path.basename(ESPHOME)));
}
export function fixturePath(file: string): string {
  return file === path.basename(ESPHOME) ? ESPHOME : path.join(IMAGES_DIR, file);
}
export function read(file: string): Buffer {
  return fs.readFileSync(file);
}
