// Real ESP32 test data lives beside the project in ../shared/fixtures (see its README).
import fs from "node:fs";
import path from "node:path";

export const FIXTURES_DIR = process.env.OTA_FIXTURES_DIR ?? path.resolve(__dirname, "../../../shared/fixtures");
export const IMAGES_DIR = path.join(FIXTURES_DIR, "esp32-images");
export const PARTITIONS_DIR = path.join(FIXTURES_DIR, "partitions");

if (!fs.existsSync(IMAGES_DIR)) {
  throw new Error(
    `ESP32 fixtures not found at ${IMAGES_DIR}: the tests need the shared reference folder beside the project ` +
      `(../shared/fixtures) or OTA_FIXTURES_DIR pointing at a copy of it`,
  );
}

export const HELLO_WORLD = path.join(IMAGES_DIR, "esp32_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_C3 = path.join(IMAGES_DIR, "esp32c3_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_S3 = path.join(IMAGES_DIR, "esp32s3_hello_world_idf5.2.2.bin");
export const HELLO_WORLD_IDF41 = path.join(IMAGES_DIR, "esp32_hello-world_idf4.1-dev.bin");
export const BOOTLOADER = path.join(IMAGES_DIR, "bootloader_esp32_idf5.2.2.bin");
export const ESPHOME = path.join(IMAGES_DIR, "esp32_esphome-2021.12.0-dev_arduino.bin");
export const OTADATA = path.join(IMAGES_DIR, "boot_app0_otadata_arduino.bin");
export const PARTITION_TABLE_OTA = path.join(IMAGES_DIR, "partitions_arduino_default_ota.bin");
export const PARTITION_TABLE_SINGLE = path.join(IMAGES_DIR, "partition-table_esp32_singleapp.bin");

export interface ExpectedFile {
  file: string;
  parsed: Record<string, any>;
}
export function expected(): ExpectedFile[] {
  return JSON.parse(fs.readFileSync(path.join(IMAGES_DIR, "EXPECTED.json"), "utf8")).files;
}
export function read(file: string): Buffer {
  return fs.readFileSync(file);
}
