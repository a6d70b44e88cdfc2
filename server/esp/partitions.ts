// ESP-IDF partition tables: the CSV that describes a flash layout and the 3 KiB binary the bootloader reads.
// Rules follow ESP-IDF's gen_esp32part.py (v1.5): blank offsets follow the previous partition, app
// partitions sit on 64 KiB boundaries, sizes take K/M suffixes, at most one otadata of exactly 8 KiB.
import { createHash } from "node:crypto";

export const DEFAULT_TABLE_OFFSET = 0x8000;
const TABLE_SIZE = 0x1000;
const MAX_TABLE_DATA = 0xc00;
const ENTRY_LEN = 32;
const ENTRY_MAGIC = 0x50aa; // bytes AA 50
const MD5_MARKER = Buffer.concat([Buffer.from([0xeb, 0xeb]), Buffer.alloc(14, 0xff)]);

export const APP_TYPE = 0x00;
const DATA_TYPE = 0x01;
export const OTA_SUBTYPE_MIN = 0x10;
const OTA_SUBTYPE_MAX = 0x1f;
const OTADATA_SUBTYPE = 0x00;
const OTADATA_SIZE = 0x2000;

const TYPES: Record<string, number> = { app: 0x00, data: 0x01, bootloader: 0x02, partition_table: 0x03 };
const SUBTYPES: Record<number, Record<string, number>> = {
  0x00: {
    factory: 0x00,
    test: 0x20,
    tee_0: 0x30,
    tee_1: 0x31,
    ...Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`ota_${i}`, OTA_SUBTYPE_MIN + i])),
  },
  0x01: {
    ota: 0x00,
    phy: 0x01,
    nvs: 0x02,
    coredump: 0x03,
    nvs_keys: 0x04,
    efuse: 0x05,
    undefined: 0x06,
    esphttpd: 0x80,
    fat: 0x81,
    spiffs: 0x82,
    littlefs: 0x83,
    tee_ota: 0x90,
  },
  0x02: { primary: 0x00, ota: 0x01, recovery: 0x02 },
  0x03: { primary: 0x00, ota: 0x01 },
};
const FLAGS: Record<string, number> = { encrypted: 1 << 0, readonly: 1 << 1 };

export interface Partition {
  name: string;
  type: number;
  subtype: number;
  offset: number;
  size: number;
  flags: number;
}

export interface PartitionTable {
  entries: Partition[];
  /** App partitions ota_0..ota_15, in table order. */
  otaSlots: Partition[];
  otadata: Partition | null;
  /** Size of the smallest OTA slot: the largest image every slot can hold. */
  maxImageSize: number;
}

export class PartitionTableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PartitionTableError";
  }
}

function parseInt0(text: string, what: string, line: number): number {
  let v = text.trim();
  let mul = 1;
  if (/[kK]$/.test(v)) {
    mul = 1024;
    v = v.slice(0, -1);
  } else if (/[mM]$/.test(v)) {
    mul = 1024 * 1024;
    v = v.slice(0, -1);
  }
  let n: number;
  if (/^-?0x[0-9a-f]+$/i.test(v)) n = v.startsWith("-") ? -parseInt(v.slice(3), 16) : parseInt(v.slice(2), 16);
  else if (/^-?0o[0-7]+$/i.test(v)) n = (v.startsWith("-") ? -1 : 1) * parseInt(v.replace(/^-?0o/i, ""), 8);
  else if (/^-?0b[01]+$/i.test(v)) n = (v.startsWith("-") ? -1 : 1) * parseInt(v.replace(/^-?0b/i, ""), 2);
  else if (/^-?[0-9]+$/.test(v)) n = parseInt(v, 10);
  else throw new PartitionTableError(`line ${line}: ${what} "${text.trim()}" is not a number`);
  return n * mul;
}

function expandVars(line: string, lineNo: number, env: NodeJS.ProcessEnv): string {
  return line.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a: string, b: string) => {
    const name = a ?? b;
    const value = env[name];
    if (value === undefined) throw new PartitionTableError(`line ${lineNo}: unknown variable $${name}`);
    return value;
  });
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

function offsetAlignment(type: number): number {
  return type === APP_TYPE ? 0x10000 : 0x1000;
}

export interface CsvOptions {
  tableOffset?: number;
  env?: NodeJS.ProcessEnv;
}

/** Parses a partitions.csv by ESP-IDF's rules and validates the resulting table. */
export function parsePartitionsCsv(text: string, opts: CsvOptions = {}): PartitionTable {
  const tableOffset = opts.tableOffset ?? DEFAULT_TABLE_OFFSET;
  const env = opts.env ?? process.env;
  const entries: Partition[] = [];
  let lastEnd = tableOffset + TABLE_SIZE;
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n|\r/);

  lines.forEach((raw, idx) => {
    const lineNo = idx + 1;
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const fields = expandVars(line, lineNo, env)
      .concat(",,,,")
      .split(",")
      .map((f) => f.trim());
    const [name = "", typeText = "", subtypeText = "", offsetText = "", sizeText = "", flagsText = ""] = fields;
    if (!name) throw new PartitionTableError(`line ${lineNo}: partition name is empty`);

    const type = typeText in TYPES ? TYPES[typeText]! : typeText ? parseInt0(typeText, "type", lineNo) : NaN;
    if (!Number.isInteger(type) || type < 0 || type > 0xfe) {
      throw new PartitionTableError(`line ${lineNo}: type "${typeText}" must be app, data or a number 0-254`);
    }

    let subtype: number;
    const known = SUBTYPES[type] ?? {};
    if (subtypeText === "") {
      if (type === APP_TYPE) throw new PartitionTableError(`line ${lineNo}: app partition "${name}" needs a subtype`);
      subtype = type === DATA_TYPE ? known.undefined! : 0;
    } else if (subtypeText in known) {
      subtype = known[subtypeText]!;
    } else {
      subtype = parseInt0(subtypeText, "subtype", lineNo);
      if (!Number.isInteger(subtype) || subtype < 0 || subtype > 0xfe) {
        throw new PartitionTableError(`line ${lineNo}: subtype "${subtypeText}" is not known for this type`);
      }
    }

    const align = offsetAlignment(type);
    let offset: number;
    if (offsetText === "") {
      offset = alignUp(lastEnd, align);
    } else {
      offset = parseInt0(offsetText, "offset", lineNo);
      if (offset % align !== 0) {
        throw new PartitionTableError(
          `line ${lineNo}: partition "${name}" at 0x${offset.toString(16)} is not aligned to 0x${align.toString(16)}`,
        );
      }
    }
    if (sizeText === "") throw new PartitionTableError(`line ${lineNo}: partition "${name}" needs a size`);
    let size = parseInt0(sizeText, "size", lineNo);
    if (size < 0) size = -size - offset; // a negative size names the end offset
    if (size <= 0) throw new PartitionTableError(`line ${lineNo}: partition "${name}" has no size`);
    if (type === APP_TYPE && size % 0x1000 !== 0) {
      throw new PartitionTableError(`line ${lineNo}: app partition "${name}" size must be a multiple of 0x1000`);
    }

    let flags = 0;
    for (const f of flagsText.split(":").map((s) => s.trim()).filter(Boolean)) {
      if (!(f in FLAGS)) throw new PartitionTableError(`line ${lineNo}: unknown flag "${f}" (encrypted, readonly)`);
      flags |= FLAGS[f]!;
    }

    entries.push({ name: name.slice(0, 16), type, subtype, offset, size, flags });
    lastEnd = offset + size;
  });

  return validateTable(entries, tableOffset);
}

function validateTable(entries: Partition[], tableOffset = DEFAULT_TABLE_OFFSET): PartitionTable {
  if (entries.length === 0) throw new PartitionTableError("the partition table is empty");
  const names = new Set<string>();
  for (const p of entries) {
    if (names.has(p.name)) throw new PartitionTableError(`partition name "${p.name}" is used twice`);
    names.add(p.name);
    if (p.offset < tableOffset + TABLE_SIZE) {
      throw new PartitionTableError(
        `partition "${p.name}" at 0x${p.offset.toString(16)} overlaps the bootloader or the partition table (which ends at 0x${(tableOffset + TABLE_SIZE).toString(16)})`,
      );
    }
  }
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.size) {
      throw new PartitionTableError(`partitions "${prev.name}" and "${cur.name}" overlap`);
    }
  }
  const otadatas = entries.filter((p) => p.type === DATA_TYPE && p.subtype === OTADATA_SUBTYPE);
  if (otadatas.length > 1) throw new PartitionTableError("more than one otadata (data, ota) partition");
  const otadata = otadatas[0] ?? null;
  if (otadata && otadata.size !== OTADATA_SIZE) {
    throw new PartitionTableError(`otadata partition "${otadata.name}" must be 0x2000 bytes`);
  }
  const otaSlots = entries.filter(
    (p) => p.type === APP_TYPE && p.subtype >= OTA_SUBTYPE_MIN && p.subtype <= OTA_SUBTYPE_MAX,
  );
  const maxImageSize = otaSlots.length ? Math.min(...otaSlots.map((p) => p.size)) : 0;
  return { entries, otaSlots, otadata, maxImageSize };
}

/** Checks a table is usable for OTA: two or more OTA slots and an otadata partition. */
export function requireOtaLayout(table: PartitionTable): void {
  if (table.otaSlots.length < 2) {
    throw new PartitionTableError(
      `the table has ${table.otaSlots.length} OTA app slot(s); over-the-air updates need at least ota_0 and ota_1`,
    );
  }
  if (!table.otadata) throw new PartitionTableError("the table has no otadata (data, ota) partition; OTA needs one");
}

/** Encodes a table as the bootloader reads it: 32-byte entries, an MD5 entry, 0xFF padding to 0xC00. */
export function encodePartitionTable(entries: Partition[]): Buffer {
  const body = Buffer.alloc(entries.length * ENTRY_LEN);
  entries.forEach((p, i) => {
    const at = i * ENTRY_LEN;
    body.writeUInt16LE(ENTRY_MAGIC, at);
    body[at + 2] = p.type;
    body[at + 3] = p.subtype;
    body.writeUInt32LE(p.offset, at + 4);
    body.writeUInt32LE(p.size, at + 8);
    Buffer.from(p.name, "utf8").copy(body, at + 12, 0, 16);
    body.writeUInt32LE(p.flags, at + 28);
  });
  if (body.length + ENTRY_LEN * 2 > MAX_TABLE_DATA) throw new PartitionTableError("too many partitions");
  const md5 = createHash("md5").update(body).digest();
  const out = Buffer.alloc(MAX_TABLE_DATA, 0xff);
  Buffer.concat([body, MD5_MARKER, md5]).copy(out);
  return out;
}

/** Decodes a binary partition table, checking its MD5 entry when present. */
export function decodePartitionTable(buf: Buffer): Partition[] {
  const entries: Partition[] = [];
  for (let at = 0; at + ENTRY_LEN <= Math.min(buf.length, MAX_TABLE_DATA); at += ENTRY_LEN) {
    const e = buf.subarray(at, at + ENTRY_LEN);
    if (e.every((b) => b === 0xff)) return entries;
    if (e.subarray(0, 16).equals(MD5_MARKER)) {
      const want = createHash("md5").update(buf.subarray(0, at)).digest();
      if (!want.equals(e.subarray(16))) throw new PartitionTableError("partition table MD5 does not match");
      continue;
    }
    if (e.readUInt16LE(0) !== ENTRY_MAGIC) {
      throw new PartitionTableError(`entry at byte ${at} has no 0xAA50 magic`);
    }
    const label = e.subarray(12, 28);
    const nul = label.indexOf(0);
    entries.push({
      type: e[2]!,
      subtype: e[3]!,
      offset: e.readUInt32LE(4),
      size: e.readUInt32LE(8),
      name: label.subarray(0, nul < 0 ? 16 : nul).toString("utf8"),
      flags: e.readUInt32LE(28),
    });
  }
  throw new PartitionTableError("partition table has no end marker");
}
