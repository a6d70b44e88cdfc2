// The otadata partition as ESP-IDF writes it: two esp_ota_select_entry_t, one at the start of each of its two
// 4 KiB sectors:
//   uint32_t ota_seq; uint8_t seq_label[20]; uint32_t ota_state; uint32_t crc;   (32 bytes, little endian)
// crc = esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4). The entry with the highest valid sequence number says
// which OTA slot boots: (ota_seq - 1) % number_of_ota_slots. Rules from ESP-IDF bootloader_common_loader.c.
import { otaSelectCrc, type Partition } from "../../../server/esp";
import { Flash, SECTOR_SIZE } from "./flash";

const ENTRY_SIZE = 32;
export const SEQ_NONE = 0xffffffff;

/** esp_ota_img_states_t */
export const OtaState = {
  NEW: 0x0,
  PENDING_VERIFY: 0x1,
  VALID: 0x2,
  INVALID: 0x3,
  ABORTED: 0x4,
  UNDEFINED: 0xffffffff,
} as const;

export function stateName(state: number): string {
  const e = Object.entries(OtaState).find(([, v]) => v === state);
  return e ? e[0].toLowerCase() : `0x${state.toString(16)}`;
}

export interface OtaEntry {
  seq: number;
  label: Buffer;
  state: number;
  crc: number;
}

export function decodeEntry(b: Buffer): OtaEntry {
  return { seq: b.readUInt32LE(0), label: Buffer.from(b.subarray(4, 24)), state: b.readUInt32LE(24), crc: b.readUInt32LE(28) };
}

function encodeEntry(e: OtaEntry): Buffer {
  const b = Buffer.alloc(ENTRY_SIZE, 0xff);
  b.writeUInt32LE(e.seq >>> 0, 0);
  e.label.copy(b, 4, 0, 20);
  b.writeUInt32LE(e.state >>> 0, 24);
  b.writeUInt32LE(e.crc >>> 0, 28);
  return b;
}

/** An entry with every byte 0xFF but the given fields (what ESP-IDF writes into a fresh sector). */
export function newEntry(seq: number, state: number): OtaEntry {
  return { seq: seq >>> 0, label: Buffer.alloc(20, 0xff), state: state >>> 0, crc: otaSelectCrc(seq) };
}

/** bootloader_common_ota_select_invalid */
export function isInvalid(e: OtaEntry): boolean {
  return e.seq === SEQ_NONE || e.state === OtaState.INVALID || e.state === OtaState.ABORTED;
}

/** bootloader_common_ota_select_valid */
export function isValid(e: OtaEntry): boolean {
  return !isInvalid(e) && e.crc === otaSelectCrc(e.seq);
}

/** bootloader_common_select_otadata: index of the entry with the highest (max) or lowest sequence number. */
export function selectEntry(two: OtaEntry[], valid: boolean[], max: boolean): number {
  if (valid[0] && valid[1]) {
    const first = max ? two[0]!.seq >= two[1]!.seq : two[0]!.seq < two[1]!.seq;
    return first ? 0 : 1;
  }
  if (valid[0]) return 0;
  if (valid[1]) return 1;
  return -1;
}

/** bootloader_common_get_active_otadata */
export function activeEntry(two: OtaEntry[]): number {
  return selectEntry(two, [isValid(two[0]!), isValid(two[1]!)], true);
}

/** The OTA slot an entry selects: (ota_seq - 1) % count, in uint32 arithmetic. */
export function slotOf(e: OtaEntry, count: number): number {
  return ((e.seq - 1) >>> 0) % count;
}

export class Otadata {
  constructor(
    private readonly flash: Flash,
    readonly partition: Partition,
  ) {}

  read(): OtaEntry[] {
    return [0, 1].map((i) => decodeEntry(this.flash.read(this.partition.offset + i * SECTOR_SIZE, ENTRY_SIZE)));
  }

  /** write_otadata / rewrite_ota_seq: erase the entry's sector, write the entry. */
  write(index: number, e: OtaEntry): void {
    const at = this.partition.offset + index * SECTOR_SIZE;
    this.flash.erase(at, SECTOR_SIZE);
    this.flash.write(at, encodeEntry(e));
  }

  eraseSector(index: number): void {
    this.flash.erase(this.partition.offset + index * SECTOR_SIZE, SECTOR_SIZE);
  }
}
