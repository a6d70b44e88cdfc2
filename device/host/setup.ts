// Everything an emulated device needs besides its provisioning: the agent (built if stale), the partition
// table, a factory image and the otadata ESP32 boards ship with.
import fs from "node:fs";
import path from "node:path";
import { parsePartitionsCsv, requireOtaLayout, type PartitionTable } from "../../server/esp";
import { buildAgent } from "./build-agent";
import { deriveImage } from "./esp/factory-image";
import { PARTITIONS_CSV, ROOT, SERVICES_JSON } from "./paths";

export function loadAgent(log?: (line: string) => void): { program: Buffer; services: unknown[] } {
  const file = buildAgent({ log });
  return { program: fs.readFileSync(file), services: JSON.parse(fs.readFileSync(SERVICES_JSON, "utf8")) as unknown[] };
}

export function loadPartitions(file = PARTITIONS_CSV): PartitionTable {
  const table = parsePartitionsCsv(fs.readFileSync(file, "utf8"));
  requireOtaLayout(table);
  return table;
}

/** Real ESP32 files: ../shared/fixtures beside the project when present, else the copies in tests/fixtures. */
export function espFixture(name: string): string {
  const dirs = [path.resolve(ROOT, "../shared/fixtures/esp32-images"), path.join(ROOT, "tests/fixtures/esp32-images")];
  for (const d of dirs) {
    const f = path.join(d, name);
    if (fs.existsSync(f)) return f;
  }
  throw new Error(`${name} not found in ${dirs.join(" or ")}`);
}

export const HELLO_WORLD_FILE = "esp32_hello_world_idf5.2.2.bin";
const BOOT_APP0_FILE = "boot_app0_otadata_arduino.bin";

/** The real ESP-IDF hello_world with its version set (default v1.0.0, older than the build's own). */
export function factoryImage(version = "v1.0.0", secureVersion?: number): Buffer {
  return deriveImage(fs.readFileSync(espFixture(HELLO_WORLD_FILE)), { version, secureVersion });
}

/** Arduino-ESP32's boot_app0.bin: otadata that boots ota_0. */
export function factoryOtadata(): Buffer {
  return fs.readFileSync(espFixture(BOOT_APP0_FILE));
}
