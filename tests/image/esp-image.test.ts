import { createHash } from "node:crypto";
import { appImageLength, ImageError, maxChipRevision, otaSelectCrc, parseAppImage } from "../../server/esp";
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

  it("treats a max chip revision of 0 (older headers) or 0xFFFF as no maximum", () => {
    const idf41 = parseAppImage(read(fixturePath("esp32_hello-world_idf4.1-dev.bin")));
    expect(maxChipRevision(idf41.header)).toBeNull();
    const header = parseAppImage(read(HELLO_WORLD)).header;
    expect(maxChipRevision(header)).toBe(399);
    expect(maxChipRevision({ ...header, maxChipRevFull: 0xffff })).toBeNull(); // ESP-IDF's "no maximum" in newer headers
    expect(maxChipRevision({ ...header, maxChipRevFull: 0xfffe })).toBe(0xfffe);
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

describe("where each check starts to refuse, to the byte, and what it says", () => {
  const good = read(HELLO_WORLD);
  const img = parseAppImage(good);
  const C = img.checksumOffset;
  const refusal = (buf: Buffer): [string, string] => {
    try {
      parseAppImage(buf);
    } catch (e) {
      if (e instanceof ImageError) return [e.code, e.message];
      throw e;
    }
    return ["accepted", ""];
  };
  const cut = (len: number) => refusal(good.subarray(0, len));
  const segEnd = (i: number) => img.segments[i]!.dataOffset + img.segments[i]!.length;

  it("the header and the app descriptor", () => {
    expect(cut(23)).toEqual(["too_short", "file is 23 bytes, shorter than the 24-byte image header"]);
    expect(cut(24)).toEqual(["truncated", "file is 24 bytes and ends before the app descriptor at offset 32"]);
    expect(cut(35)).toEqual(["truncated", "file is 35 bytes and ends before the app descriptor at offset 32"]);
    expect(cut(36)).toEqual(["truncated", "file ends inside the app descriptor (36 bytes)"]);
    expect(cut(287)).toEqual(["truncated", "file ends inside the app descriptor (287 bytes)"]);
    expect(cut(288)).toEqual(["truncated", `segment 0 needs bytes up to ${segEnd(0)} but the file has 288: incomplete copy or truncated image`]);
  });

  it("a refusal prints as an ImageError with its words, as the CLI and logs show it", () => {
    let caught: unknown;
    try {
      parseAppImage(good.subarray(0, 23));
    } catch (e) {
      caught = e;
    }
    expect(String(caught)).toBe("ImageError: file is 23 bytes, shorter than the 24-byte image header");
  });

  it("each segment's header and data", () => {
    expect(img.segments.length).toBeGreaterThan(2);
    for (let i = 1; i < img.segments.length; i++) {
      const header = img.segments[i]!.dataOffset - 8;
      expect(header).toBe(segEnd(i - 1)); // segments follow each other
      expect(cut(segEnd(i - 1) - 1)).toEqual(["truncated", `segment ${i - 1} needs bytes up to ${segEnd(i - 1)} but the file has ${segEnd(i - 1) - 1}: incomplete copy or truncated image`]);
      expect(cut(header)).toEqual(["truncated", `file ends in the header of segment ${i} (${header} bytes)`]);
      expect(cut(header + 7)).toEqual(["truncated", `file ends in the header of segment ${i} (${header + 7} bytes)`]);
      expect(cut(header + 8)[1]).toBe(`segment ${i} needs bytes up to ${segEnd(i)} but the file has ${header + 8}: incomplete copy or truncated image`);
    }
  });

  it("the checksum byte and the appended SHA-256", () => {
    const last = segEnd(img.segments.length - 1);
    expect(C).toBe(last + (15 - (last % 16)));
    expect(cut(last)).toEqual(["truncated", `file ends before the checksum byte at offset ${C}`]);
    expect(cut(C)).toEqual(["truncated", `file ends before the checksum byte at offset ${C}`]);
    expect(cut(C + 1)).toEqual(["truncated", `file ends inside the appended SHA-256 (needs ${C + 33} bytes)`]);
    expect(cut(C + 32)).toEqual(["truncated", `file ends inside the appended SHA-256 (needs ${C + 33} bytes)`]);
    expect(cut(C + 33)).toEqual(["accepted", ""]);
    expect(img.imageLength).toBe(C + 33);
  });

  it("appImageLength measures the same image length from the headers alone, and refuses where the hash is cut", () => {
    expect(appImageLength(good)).toBe(img.imageLength);
    expect(appImageLength(Buffer.concat([good, Buffer.alloc(4096, 0xff)]))).toBe(img.imageLength);
    const damaged = Buffer.from(good);
    damaged[img.segments[1]!.dataOffset]! ^= 1; // no checksum is checked here
    expect(appImageLength(damaged)).toBe(img.imageLength);
    expect(() => appImageLength(good.subarray(0, C + 32))).toThrow(`file ends inside the appended SHA-256 (needs ${C + 33} bytes)`);
    expect(() => appImageLength(good.subarray(0, C + 33))).not.toThrow();
  });

  it("the segment count: 1 to 16", () => {
    const withCount = (n: number) => {
      const b = Buffer.from(good);
      b[1] = n;
      return refusal(b);
    };
    const outOfRange = ["bad_header", "the image header's segment count is not between 1 and 16, as ESP-IDF requires: not an ESP app image or a damaged one"];
    expect(withCount(0)).toEqual(outOfRange);
    expect(withCount(17)).toEqual(outOfRange);
    expect(withCount(16)[0]).not.toBe("bad_header"); // allowed; this image's bytes then read as more segments
  });

  it("an otadata partition (two valid selection entries in 8 KiB) and a partition table are named as such", () => {
    const otadata = Buffer.alloc(0x2000, 0xff);
    otadata.writeUInt32LE(1, 0);
    otadata.writeUInt32LE(otaSelectCrc(1), 28);
    const said = ["otadata", "this is an otadata partition (two OTA selection entries, 8 KiB), not an app image"];
    expect(refusal(otadata)).toEqual(said);
    expect(refusal(Buffer.alloc(0x2000, 0xff))).toEqual(said); // erased entries count as valid
    expect(refusal(Buffer.concat([otadata, Buffer.alloc(1, 0xff)]))[0]).toBe("wrong_magic"); // not 8 KiB
    const badCrc = Buffer.from(otadata);
    badCrc.writeUInt32LE(otaSelectCrc(2), 28);
    expect(refusal(badCrc)[0]).toBe("wrong_magic");
    const secondBad = Buffer.from(otadata);
    secondBad.writeUInt32LE(7, 0x1000);
    expect(refusal(secondBad)[0]).toBe("wrong_magic");

    const table = Buffer.alloc(3072, 0xff);
    table.writeUInt16LE(0x50aa, 0);
    expect(refusal(table)).toEqual(["partition_table", "this is a partition table (starts with 0xAA 0x50), not an app image; flash it with esptool, not OTA"]);
  });

  it("the other refusals' words", () => {
    expect(refusal(read(BOOTLOADER))).toEqual([
      "bootloader",
      "this is a second-stage bootloader image (bootloader descriptor at offset 32), not an app; OTA cannot update the bootloader",
    ]);
    const noDesc = Buffer.from(good);
    noDesc.writeUInt32LE(0x12345678, 32);
    expect(refusal(noDesc)).toEqual(["not_an_app", "no app descriptor (magic 0xABCD5432) at offset 32: not an ESP-IDF application image"]);
    const flipped = Buffer.from(good);
    flipped[img.segments[2]!.dataOffset + 100]! ^= 0x01;
    expect(refusal(flipped)).toEqual([
      "checksum_mismatch",
      `image checksum is 0x${img.checksum.toString(16)} but the segments give 0x${(img.checksum ^ 1).toString(16)}: the file is corrupted`,
    ]);
    const hash = Buffer.from(good);
    hash[C + 5]! ^= 0x80;
    expect(refusal(hash)).toEqual(["sha256_mismatch", "the SHA-256 appended to the image does not match its contents: the file is corrupted"]);
    const chip = Buffer.from(good);
    chip.writeUInt16LE(0x7777, 12);
    expect(refusal(reseal(chip, C))).toEqual(["unknown_chip", "image is built for chip id 30583, which this server does not know"]);
  });

  it("text fields of the app descriptor end at their first NUL, or fill their whole width", () => {
    /** Edits the version field (32 bytes at offset 48) and re-seals checksum and hash. */
    const withVersion = (field: Buffer) => {
      const b = Buffer.from(good);
      field.copy(b, 32 + 16);
      let x = 0xef;
      for (const s of img.segments) for (let j = s.dataOffset; j < s.dataOffset + s.length; j++) x ^= b[j]!;
      b[C] = x;
      return parseAppImage(reseal(b, C)).app.version;
    };
    expect(withVersion(Buffer.alloc(32, 0x41))).toBe("A".repeat(32));
    const short = Buffer.alloc(32, 0x42);
    short[5] = 0;
    expect(withVersion(short)).toBe("BBBBB");
    // An empty field (as time and date are with CONFIG_APP_EXCLUDE_PROJECT_TIME_FIELD) is "", not NULs.
    expect(withVersion(Buffer.alloc(32, 0))).toBe("");
  });

  it("an image without an appended SHA-256 (hash_appended 0, esptool --dont-append-digest) ends at its checksum byte", () => {
    const noHash = Buffer.from(good.subarray(0, C + 1));
    noHash[23] = 0; // the header is outside the checksum: nothing else to re-seal
    const parsed = parseAppImage(noHash);
    expect(parsed.header.hashAppended).toBe(false);
    expect(parsed.appendedSha256).toBeNull();
    expect(parsed.imageLength).toBe(C + 1);
    expect(appImageLength(noHash)).toBe(C + 1);
    // What follows is trailing bytes (a signature sector, say), never taken for a digest.
    const followed = Buffer.concat([noHash, Buffer.alloc(32, 0x5a)]);
    expect(parseAppImage(followed)).toMatchObject({ imageLength: C + 1, trailingBytes: 32, appendedSha256: null });
    expect(appImageLength(followed)).toBe(C + 1);
  });
});
