import fs from "node:fs";
import path from "node:path";
import {
  decodePartitionTable,
  encodePartitionTable,
  parsePartitionsCsv,
  PartitionTableError,
  requireOtaLayout,
} from "../../server/esp";
import { PARTITIONS_DIR, PARTITION_TABLE_OTA, PARTITION_TABLE_SINGLE, read } from "../helpers/fixtures";

const csv = (name: string) => fs.readFileSync(path.join(PARTITIONS_DIR, name), "utf8");
const K = 1024;
const summary = (t: ReturnType<typeof parsePartitionsCsv>) =>
  t.entries.map((p) => [p.name, p.type, p.subtype, p.offset, p.size]);

describe("partitions.csv by ESP-IDF's rules, on real tables", () => {
  it("ESP-IDF two_ota: all offsets blank, resolved by alignment", () => {
    const t = parsePartitionsCsv(csv("esp-idf_partitions_two_ota.csv"));
    expect(summary(t)).toEqual([
      ["nvs", 1, 0x02, 0x9000, 16 * K],
      ["otadata", 1, 0x00, 0xd000, 8 * K],
      ["phy_init", 1, 0x01, 0xf000, 4 * K],
      ["factory", 0, 0x00, 0x10000, 1024 * K],
      ["ota_0", 0, 0x10, 0x110000, 1024 * K],
      ["ota_1", 0, 0x11, 0x210000, 1024 * K],
    ]);
    expect(t.otaSlots.map((p) => p.name)).toEqual(["ota_0", "ota_1"]);
    expect(t.maxImageSize).toBe(0x100000);
    expect(() => requireOtaLayout(t)).not.toThrow();
  });

  it("Arduino-ESP32 default: tabs, numeric subtype, no final newline", () => {
    const text = csv("arduino-esp32_default.csv");
    expect(text.endsWith("\n")).toBe(false);
    expect(text).toContain("\t");
    const t = parsePartitionsCsv(text);
    expect(summary(t)).toEqual([
      ["nvs", 1, 0x02, 0x9000, 20 * K],
      ["otadata", 1, 0x00, 0xe000, 8 * K],
      ["app0", 0, 0x10, 0x10000, 1280 * K],
      ["app1", 0, 0x11, 0x150000, 1280 * K],
      ["eeprom", 1, 0x99, 0x290000, 4 * K],
      ["spiffs", 1, 0x82, 0x291000, 1468 * K],
    ]);
    expect(t.maxImageSize).toBe(0x140000);
  });

  it("esp-serial-flasher single app: K suffix, no OTA slots, refused for OTA", () => {
    const t = parsePartitionsCsv(csv("esp-serial-flasher_esp32_example_partitions.csv"));
    expect(summary(t)).toEqual([
      ["nvs", 1, 0x02, 0x9000, 24 * K],
      ["phy_init", 1, 0x01, 0xf000, 4 * K],
      ["factory", 0, 0x00, 0x10000, 1920 * K],
    ]);
    expect(t.maxImageSize).toBe(0);
    expect(() => requireOtaLayout(t)).toThrow(/at least ota_0 and ota_1/);
  });

  it("the project's partitions.csv encodes byte-for-byte to the real ESPHome binary table", () => {
    const ours = parsePartitionsCsv(fs.readFileSync(path.join(__dirname, "../../partitions.csv"), "utf8"));
    requireOtaLayout(ours);
    expect(ours.maxImageSize).toBe(0x1c0000);
    expect(encodePartitionTable(ours.entries).equals(read(PARTITION_TABLE_OTA))).toBe(true);
  });

  it("decodes both real binary tables and checks their MD5", () => {
    const single = decodePartitionTable(read(PARTITION_TABLE_SINGLE));
    expect(single.map((p) => [p.name, p.offset, p.size])).toEqual([
      ["nvs", 0x9000, 0x6000],
      ["phy_init", 0xf000, 0x1000],
      ["factory", 0x10000, 0x100000],
    ]);
    expect(encodePartitionTable(single).equals(read(PARTITION_TABLE_SINGLE))).toBe(true);
    const broken = Buffer.from(read(PARTITION_TABLE_OTA));
    broken[4]! ^= 1;
    expect(() => decodePartitionTable(broken)).toThrow(/MD5/);
  });

  it.each([
    ["overlap", "a, data, nvs, 0x9000, 0x2000\nb, data, nvs, 0xa000, 0x1000", /overlap/],
    ["misaligned app", "app0, app, ota_0, 0x11000, 0x100000", /not aligned to 0x10000/],
    ["duplicate name", "a, data, nvs, , 0x1000\na, data, nvs, , 0x1000", /used twice/],
    ["two otadata", "o1, data, ota, , 0x2000\no2, data, ota, , 0x2000", /more than one otadata/],
    ["small otadata", "o1, data, ota, , 0x1000", /must be 0x2000/],
    ["unknown flag", "a, data, nvs, , 0x1000, shiny", /unknown flag/],
    ["bad number", "a, data, nvs, , lots", /not a number/],
    ["app without subtype", "a, app, , , 1M", /needs a subtype/],
    ["below the table", "a, data, nvs, 0x8000, 0x1000", /overlaps the bootloader/],
    ["unknown variable", "a, data, nvs, , $NOPE_NOT_SET", /unknown variable/],
    ["empty", "# only a comment\n\n", /empty/],
  ])("refuses a table with %s", (_name, text, message) => {
    expect(() => parsePartitionsCsv(text, { env: {} })).toThrow(PartitionTableError);
    expect(() => parsePartitionsCsv(text, { env: {} })).toThrow(message);
  });

  it("expands variables, negative sizes and a BOM", () => {
    const t = parsePartitionsCsv("\uFEFFnvs, data, nvs, , $NVS_SIZE\nfs, data, spiffs, 0x10000, -0x20000\n", {
      env: { NVS_SIZE: "0x6000" },
    });
    expect(summary(t)).toEqual([
      ["nvs", 1, 2, 0x9000, 0x6000],
      ["fs", 1, 0x82, 0x10000, 0x10000],
    ]);
  });
});
