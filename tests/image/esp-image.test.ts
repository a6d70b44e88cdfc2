import { createHash } from "node:crypto";
import { ImageError, maxChipRevision, otaSelectCrc, parseAppImage } from "../../server/esp";
import { BOOTLOADER, expected, fixturePath, HAS_ESPHOME, HELLO_WORLD, read } from "../helpers/fixtures";

function rejectCode(buf: Buffer): string {
  try {
    parseAppImage(buf);
  } catch (e) {
    if (e instanceof ImageError) return e.code;
    throw e;
  }
  return "accepted";
}

/** Re-seals an edited image: recompute the appended SHA-256 so only the edit itself is judged. */
function reseal(buf: Buffer, checksumOffset: number): Buffer {
  const out = Buffer.from(buf);
  createHash("sha256").update(out.subarray(0, checksumOffset + 1)).digest().copy(out, checksumOffset + 1);
  return out;
}

const hex = (s: string) => parseInt(s, 16);

describe("ESP-IDF app image parser against every real image in the fixtures", () => {
  const files = expected();
  const apps = files.filter((f) => f.parsed.kind === "app");

  it("covers the apps and non-apps the fixtures hold", () => {
    expect(apps.map((f) => f.file).sort()).toEqual([
      ...(HAS_ESPHOME ? ["esp32_esphome-2021.12.0-dev_arduino.bin"] : []),
      "esp32_hello-world_idf4.1-dev.bin",
      "esp32_hello_world_idf5.2.2.bin",
      "esp32c3_hello_world_idf5.2.2.bin",
      "esp32s3_hello_world_idf5.2.2.bin",
    ]);
  });

  it.each(apps.map((f) => [f.file, f.parsed] as const))("%s matches EXPECTED.json", (file, want) => {
    const buf = read(fixturePath(file));
    expect(createHash("sha256").update(buf).digest("hex")).toBe(want.file_sha256);
    const img = parseAppImage(buf);

    expect(img.header.segmentCount).toBe(want.header.segment_count);
    expect(img.header.spiMode).toBe(want.header.spi_mode);
    expect(img.header.spiSpeed).toBe(want.header.spi_speed);
    expect(img.header.spiSize).toBe(want.header.spi_size);
    expect(img.header.entryAddr).toBe(hex(want.header.entry_addr));
    expect(img.header.chipId).toBe(want.header.chip_id);
    expect(img.chip).toBe(want.header.chip_name.toLowerCase().replace("-", ""));
    expect(img.header.minChipRev).toBe(want.header.min_chip_rev);
    expect(img.header.minChipRevFull).toBe(want.header.min_chip_rev_full);
    expect(img.header.maxChipRevFull).toBe(want.header.max_chip_rev_full);
    expect(img.header.hashAppended).toBe(want.header.hash_appended === 1);

    expect(img.segments).toEqual(
      want.segments.map((s: any) => ({ loadAddr: hex(s.load_addr), dataOffset: s.data_offset, length: s.data_len })),
    );

    const d = want.app_desc;
    expect(img.app).toEqual({
      secureVersion: d.secure_version,
      version: d.version,
      projectName: d.project_name,
      time: d.time,
      date: d.date,
      idfVersion: d.idf_ver,
      appElfSha256: d.app_elf_sha256,
      minEfuseBlkRevFull: d.min_efuse_blk_rev_full,
      maxEfuseBlkRevFull: d.max_efuse_blk_rev_full,
      mmuPageSizeLog2: d.mmu_page_size_log2,
    });

    expect(img.checksumOffset).toBe(want.checksum_offset);
    expect(img.checksum).toBe(hex(want.checksum_stored));
    expect(img.appendedSha256).toBe(want.sha256_stored);
    expect(img.imageLength).toBe(want.image_len);
    expect(img.trailingBytes).toBe(want.trailing_bytes);
  });

  it("treats a max chip revision of 0 (older headers) as no maximum", () => {
    const idf41 = parseAppImage(read(fixturePath("esp32_hello-world_idf4.1-dev.bin")));
    expect(maxChipRevision(idf41.header)).toBeNull();
    expect(maxChipRevision(parseAppImage(read(HELLO_WORLD)).header)).toBe(399);
  });

  it.each([
    ["bootloader_esp32_idf5.2.2.bin", "bootloader"],
    ["partition-table_esp32_singleapp.bin", "partition_table"],
    ["partitions_arduino_default_ota.bin", "partition_table"],
    ["boot_app0_otadata_arduino.bin", "otadata"],
  ])("refuses %s as %s", (file, code) => {
    expect(rejectCode(read(fixturePath(file)))).toBe(code);
  });

  it("gives reasons a person can act on", () => {
    expect(() => parseAppImage(read(BOOTLOADER))).toThrow(/bootloader/);
    expect(() => parseAppImage(read(HELLO_WORLD).subarray(0, 60000))).toThrow(/segment 3 needs bytes up to/);
  });

  it("reads the otadata fixture's CRC the way ESP-IDF computes it", () => {
    const ota = expected().find((f) => f.file === "boot_app0_otadata_arduino.bin")!;
    expect(otaSelectCrc(1)).toBe(hex(ota.parsed.entries[0].crc));
  });
});

describe("hostile and damaged images", () => {
  const good = read(HELLO_WORLD);
  const img = parseAppImage(good);

  it.each([0, 1, 23, 24, 31, 100, 287, 7939, 60000, 124382, 124383, 124384, 124400, 124415])(
    "a copy cut at %i bytes is refused (never indexed as an image)",
    (len) => {
      expect(["too_short", "truncated"]).toContain(rejectCode(good.subarray(0, len)));
    },
  );

  it("a flipped bit in segment data fails the checksum", () => {
    const bad = Buffer.from(good);
    bad[img.segments[2]!.dataOffset + 100]! ^= 0x01;
    expect(rejectCode(bad)).toBe("checksum_mismatch");
  });

  it("a changed padding byte (outside the checksum) fails the appended SHA-256", () => {
    const bad = Buffer.from(good);
    bad[img.checksumOffset - 1]! ^= 0xff;
    expect(rejectCode(bad)).toBe("sha256_mismatch");
  });

  it("a changed appended hash fails", () => {
    const bad = Buffer.from(good);
    bad[img.checksumOffset + 5]! ^= 0x80;
    expect(rejectCode(bad)).toBe("sha256_mismatch");
  });

  it("wrong magic, zero or too many segments, unknown chip", () => {
    const magic = Buffer.from(good);
    magic[0] = 0xe8;
    expect(rejectCode(magic)).toBe("wrong_magic");
    const zero = Buffer.from(good);
    zero[1] = 0;
    expect(rejectCode(zero)).toBe("bad_header");
    const many = Buffer.from(good);
    many[1] = 17;
    expect(rejectCode(many)).toBe("bad_header");
    const chip = Buffer.from(good);
    chip.writeUInt16LE(0x7777, 12);
    expect(rejectCode(reseal(chip, img.checksumOffset))).toBe("unknown_chip");
  });

  it("a segment length pointing past the end is truncation, not a crash", () => {
    const bad = Buffer.from(good);
    bad.writeUInt32LE(0xffffffff, 24 + 4);
    expect(rejectCode(bad)).toBe("truncated");
  });

  it("no app descriptor: not an app", () => {
    const bad = Buffer.from(good);
    bad.writeUInt32LE(0x12345678, 32);
    expect(rejectCode(bad)).toBe("not_an_app");
  });

  it("random bytes and text are refused", () => {
    expect(rejectCode(Buffer.from("#!/bin/sh\necho not firmware\n"))).toBe("wrong_magic");
    const noise = Buffer.alloc(4096);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
    noise[0] = 0x17;
    expect(rejectCode(noise)).toBe("wrong_magic");
  });

  it("the reason for a file that is not an image quotes none of its bytes (every viewer reads it)", () => {
    const message = (buf: Buffer) => {
      try {
        parseAppImage(buf);
      } catch (e) {
        if (e instanceof ImageError) return e.message;
        throw e;
      }
      return "accepted";
    };
    // A hex secret, text, and a file that starts like an image but is none: no byte of theirs in the reason.
    const secret = Buffer.from("7f3a9c0e5b1d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a\n");
    expect(message(secret)).not.toMatch(/0x37\b|\b55\b/i);
    expect(message(Buffer.from("root:x:0:0:root:/root:/bin/bash\n"))).not.toMatch(/0x72\b|\b114\b/i);
    const e9 = Buffer.concat([Buffer.from([0xe9, 0x2a]), Buffer.alloc(40, 0x41)]);
    expect(message(e9)).not.toMatch(/\b42\b|0x2a\b/i);
    for (const b of [secret, e9]) expect(message(b)).toMatch(/not an ESP app image/);
  });

  it("trailing bytes after the image (e.g. a signature block) are counted", () => {
    const signed = Buffer.concat([good, Buffer.alloc(4096, 0xff)]);
    expect(parseAppImage(signed).trailingBytes).toBe(4096);
  });
});
