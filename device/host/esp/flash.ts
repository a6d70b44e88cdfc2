// SPI NOR flash as the ESP32 has it: erased bytes are 0xFF, erasing works on 4 KiB sectors, and a write can
// only clear bits (the stored byte becomes old AND new), so writing over unerased data corrupts it.
import type { Partition } from "../../../server/esp";

export const SECTOR_SIZE = 0x1000;

class FlashError extends Error {}

export class Flash {
  readonly data: Buffer;
  erases = 0;
  writes = 0;

  constructor(size = 4 * 1024 * 1024) {
    this.data = Buffer.alloc(size, 0xff);
  }

  private check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.data.length) {
      throw new FlashError(`flash access 0x${offset.toString(16)}+${length} is outside the ${this.data.length}-byte flash`);
    }
  }

  read(offset: number, length: number): Buffer {
    this.check(offset, length);
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  /** A view without copying (do not keep it across writes you do not expect). */
  view(offset: number, length: number): Buffer {
    this.check(offset, length);
    return this.data.subarray(offset, offset + length);
  }

  erase(offset: number, length: number): void {
    this.check(offset, length);
    if (offset % SECTOR_SIZE || length % SECTOR_SIZE) {
      throw new FlashError(`erase 0x${offset.toString(16)}+0x${length.toString(16)} is not sector aligned`);
    }
    this.data.fill(0xff, offset, offset + length);
    this.erases += length / SECTOR_SIZE;
  }

  write(offset: number, bytes: Uint8Array): void {
    this.check(offset, bytes.length);
    for (let i = 0; i < bytes.length; i++) this.data[offset + i] = this.data[offset + i]! & bytes[i]!;
    this.writes++;
  }

  /** Writes a whole image as esptool does: erase the sectors it covers, then write. */
  flashAt(offset: number, bytes: Uint8Array): void {
    const len = Math.ceil(bytes.length / SECTOR_SIZE) * SECTOR_SIZE;
    this.erase(offset, len);
    this.write(offset, bytes);
  }

  partition(p: Partition): Buffer {
    return this.view(p.offset, p.size);
  }
}
