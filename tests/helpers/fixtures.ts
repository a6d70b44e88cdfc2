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
/** Images signed by espsecure.py (Secure Boot v2), their test keys and EXPECTED.json (signed/README.md). */
export const SIGNED_DIR = [path.join(FIXTURES_DIR, "signed"), path.join(BUNDLED, "signed")].find((d) => fs.existsSync(path.join(d, "EXPECTED.json")))!;
export const SIGNED_KEYS_DIR = path.join(SIGNED_DIR, "keys");

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
export interface SignedBlockFacts {
  index: number;
  scheme: string;
  public_key_digest: string;
  crc_ok: boolean;
  digest_ok: boolean;
  signature_ok: boolean;
  /** Public key files (in keys/) under which this block verifies. */
  verifies_with: string[];
}
export interface SignedFileFacts {
  size: number;
  sha256: string;
  /** The unsigned image in esp32-images/ that was signed. */
  signed_from: string;
  signature_sector_offset: number;
  sha256_of_bytes_before_sector: string;
  blocks: SignedBlockFacts[];
  verifies_with_any_listed_key: boolean;
}
/** signed/EXPECTED.json: file name -> ground truth. */
export function expectedSigned(): Record<string, SignedFileFacts> {
  return JSON.parse(fs.readFileSync(path.join(SIGNED_DIR, "EXPECTED.json"), "utf8")) as Record<string, SignedFileFacts>;
}

export function fixturePath(file: string): string {
  return file === path.basename(ESPHOME) ? ESPHOME : path.join(IMAGES_DIR, file);
}
export function read(file: string): Buffer {
  return fs.readFileSync(file);
}
