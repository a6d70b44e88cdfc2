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

describe("partitions.csv rules, one at a time", () => {
  const parse = (text: string, env: NodeJS.ProcessEnv = {}) => summary(parsePartitionsCsv(text, { env }));
  /** The error a table is refused with (fails when it is accepted). */
  const refusal = (text: string, env: NodeJS.ProcessEnv = {}): PartitionTableError => {
    try {
      parsePartitionsCsv(text, { env });
    } catch (e) {
      expect(e).toBeInstanceOf(PartitionTableError);
      return e as PartitionTableError;
    }
    throw new Error(`accepted: ${text}`);
  };

  it("numbers: hex, octal, binary and decimal, K and M suffixes, negative ends, in any case", () => {
    expect(
      parse(
        [
          "a, data, nvs, 0o110000, 0B1000000000000", // 0x9000, 4 KiB
          "b, data, nvs, 0XA000, 0O20000", // 8 KiB
          "c, data, nvs, 40960K, 12M",
          "d, data, nvs, 0x1000000, -0o100200000", // ends at 0x1010000 (octal)
          "e, data, nvs, , -0b1000000100001000000000000", // ends at 0x1021000 (binary)
          "f, data, nvs, , 8k",
        ].join("\n"),
      ),
    ).toEqual([
      ["a", 1, 2, 0x9000, 0x1000],
      ["b", 1, 2, 0xa000, 0x2000],
      ["c", 1, 2, 40960 * K, 12 * K * K],
      ["d", 1, 2, 0x1000000, 0x10000],
      ["e", 1, 2, 0x1010000, 0x11000],
      ["f", 1, 2, 0x1021000, 0x2000],
    ]);
  });

  it.each([
    ["x0x10", "junk before a hex number"],
    ["0x10z", "junk after a hex number"],
    ["x0o7", "junk before an octal number"],
    ["0o78", "a digit that is not octal"],
    ["x0b1", "junk before a binary number"],
    ["0b12", "a digit that is not binary"],
    ["x10", "junk before a decimal number"],
    ["10x", "junk after a decimal number"],
    ["1k2", "a suffix that is not at the end"],
    ["1m2", "an M that is not at the end"],
  ])("a size of %s (%s) is not a number", (size) => {
    expect(refusal(`a, data, nvs, , ${size}`).message).toBe(`line 1: size "${size}" is not a number`);
  });

  it("names the line and the field of a bad number", () => {
    const text = "# a table\n\n   # an indented comment\n\t\na, data, nvs, , 0x1000\nb, zz, nvs, , 0x1000";
    expect(refusal(text).message).toBe('line 6: type "zz" is not a number');
    expect(refusal("a, data, zz, , 0x1000").message).toBe('line 1: subtype "zz" is not a number');
    expect(refusal("a, data, nvs, zz, 0x1000").message).toBe('line 1: offset "zz" is not a number');
    expect(refusal("a, data, nvs, , zz").message).toBe('line 1: size "zz" is not a number');
  });

  it("expands ${NAME} as well as $NAME", () => {
    expect(parse("nvs, data, nvs, ${NVS_AT}, ${NVS_SIZE}", { NVS_AT: "0x9000", NVS_SIZE: "0x6000" })).toEqual([["nvs", 1, 2, 0x9000, 0x6000]]);
  });

  it("drops a byte order mark only at the start of the file", () => {
    expect(parse("n\uFEFFvs, data, nvs, , 0x1000")[0]![0]).toBe("n\uFEFFvs");
  });

  it("types: names or numbers 0-254; subtypes: names of the type, or numbers 0-254", () => {
    expect(parse("a, 0xfe, 0xfe, , 0x1000\nb, 0x40, , , 0x1000\nc, data, , , 0x1000\nf, app, 0, 0x10000, 1M")).toEqual([
      ["a", 0xfe, 0xfe, 0x9000, 0x1000],
      ["b", 0x40, 0, 0xa000, 0x1000],
      ["c", 1, 0x06, 0xb000, 0x1000], // data without a subtype: "undefined"
      ["f", 0, 0, 0x10000, 0x100000],
    ]);
    expect(refusal("a, 0xff, 0, , 0x1000").message).toBe('line 1: type "0xff" must be app, data or a number 0-254');
    expect(refusal("a, -1, 0, , 0x1000").message).toBe('line 1: type "-1" must be app, data or a number 0-254');
    expect(refusal("a, , nvs, , 0x1000").message).toBe('line 1: type "" must be app, data or a number 0-254');
    expect(refusal("a, data, 0xff, , 0x1000").message).toBe('line 1: subtype "0xff" is not known for this type');
    expect(refusal("a, data, -1, , 0x1000").message).toBe('line 1: subtype "-1" is not known for this type');
    expect(refusal("a, app, , 0x10000, 1M").message).toBe('line 1: app partition "a" needs a subtype');
  });

  it("names, sizes and flags", () => {
    expect(refusal(", data, nvs, , 0x1000").message).toBe("line 1: partition name is empty");
    expect(refusal("a, data, nvs, ,").message).toBe('line 1: partition "a" needs a size');
    expect(refusal("a, data, nvs, , 0").message).toBe('line 1: partition "a" has no size');
    expect(refusal("a, data, nvs, 0x9000, -0x9000").message).toBe('line 1: partition "a" has no size');
    expect(refusal("a, app, ota_0, , 0x10800").message).toBe('line 1: app partition "a" size must be a multiple of 0x1000');
    expect(parse("a, data, nvs, , 0x1800")).toEqual([["a", 1, 2, 0x9000, 0x1800]]);
    const t = parsePartitionsCsv("a-name-longer-than-16, data, nvs, , 0x1000, encrypted : readonly\nb, data, nvs, , 0x1000, readonly", { env: {} });
    expect(t.entries.map((p) => [p.name, p.flags])).toEqual([
      ["a-name-longer-th", 3],
      ["b", 2],
    ]);
    expect(refusal("a, data, nvs, , 0x1000, encrypted:shiny").message).toBe('line 1: unknown flag "shiny" (encrypted, readonly)');
  });

  it("overlaps are found whatever the order of the lines, and named", () => {
    expect(parse("b, data, nvs, 0x20000, 0x1000\na, data, nvs, 0x9000, 0x1000")).toEqual([
      ["b", 1, 2, 0x20000, 0x1000],
      ["a", 1, 2, 0x9000, 0x1000],
    ]);
    expect(refusal("a, data, nvs, 0x9000, 0x1000\nb, data, nvs, 0x20000, 0x1000\nc, data, nvs, 0x9000, 0x1000").message).toBe(
      'partitions "a" and "c" overlap',
    );
    expect(refusal("a, data, nvs, 0x8000, 0x1000").message).toBe(
      'partition "a" at 0x8000 overlaps the bootloader or the partition table (which ends at 0x9000)',
    );
  });

  it("OTA slots are the app partitions ota_0 to ota_15, and the smallest decides the image size", () => {
    const t = parsePartitionsCsv(
      "otadata, data, ota, , 0x2000\nfactory, app, factory, , 1M\ntest, app, test, , 1M\nota_0, app, ota_0, , 2M\nota_15, app, ota_15, , 1536K",
      { env: {} },
    );
    expect(t.otaSlots.map((p) => p.name)).toEqual(["ota_0", "ota_15"]);
    expect(t.maxImageSize).toBe(1536 * K);
    expect(() => requireOtaLayout(t)).not.toThrow();
    const noOtadata = parsePartitionsCsv("ota_0, app, ota_0, , 1M\nota_1, app, ota_1, , 1M", { env: {} });
    expect(() => requireOtaLayout(noOtadata)).toThrow("the table has no otadata (data, ota) partition; OTA needs one");
  });

  it("errors are PartitionTableErrors by name", () => {
    expect(refusal("").name).toBe("PartitionTableError");
  });
});

describe("binary partition tables, entry by entry", () => {
  const entry = (name: string, offset: number) => ({ name, type: 1, subtype: 2, offset, size: 0x1000, flags: 0 });
  const entries = (n: number) => Array.from({ length: n }, (_, i) => entry(`p${i}`, 0x9000 + i * 0x1000));

  it("holds 94 entries with the MD5 entry in 0xC00 bytes, and refuses 95", () => {
    const full = encodePartitionTable(entries(94));
    expect(full.length).toBe(0xc00);
    expect(decodePartitionTable(full)).toEqual(entries(94));
    expect(() => encodePartitionTable(entries(95))).toThrow("too many partitions");
  });

  it("reads up to the last entry that fits in 0xC00 bytes, and needs an end marker there", () => {
    // 95 entries and an end marker in the 96th: no MD5 entry.
    const raw = Buffer.alloc(0xc00, 0xff);
    encodePartitionTable(entries(94)).copy(raw, 0, 0, 94 * 32);
    encodePartitionTable([entry("last", 0x70000)]).copy(raw, 94 * 32, 0, 32);
    expect(decodePartitionTable(raw).map((p) => p.name)).toEqual([...entries(94).map((p) => p.name), "last"]);
    // Entries to the end of the buffer and no marker: refused, also when more bytes follow 0xC00.
    const noMarker = encodePartitionTable(entries(2)).subarray(0, 64);
    expect(() => decodePartitionTable(noMarker)).toThrow("partition table has no end marker");
    const longer = Buffer.concat([Buffer.alloc(0xc00), Buffer.alloc(32, 0xff)]);
    for (let at = 0; at < 0xc00; at += 32) encodePartitionTable([entry(`x${at}`, 0x9000)]).copy(longer, at, 0, 32);
    expect(() => decodePartitionTable(longer)).toThrow("partition table has no end marker");
  });

  it("refuses an entry without the magic, and reads names of 0 and 16 bytes", () => {
    const t = encodePartitionTable([entry("a", 0x9000), entry("b", 0xa000)]);
    const bad = Buffer.from(t);
    bad[32] = 0;
    expect(() => decodePartitionTable(bad)).toThrow("entry at byte 32 has no 0xAA50 magic");
    const names = encodePartitionTable([entry("", 0x9000), entry("exactly16charsxx", 0xa000)]);
    expect(decodePartitionTable(names).map((p) => p.name)).toEqual(["", "exactly16charsxx"]);
  });
});
