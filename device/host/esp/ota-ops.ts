// ESP-IDF's esp_ota_ops (components/app_update/esp_ota_ops.c) over the emulated flash, with app rollback
// enabled: what the native writer does for each command of device/services/otawriter.md.
import { createHash } from "node:crypto";
import { MAX_SIGNATURE_BLOCKS, otaSelectCrc, type Partition, type PartitionTable } from "../../../server/esp";
import { FACTORY_INDEX, imageSha256, loadApp, otaSlots, verifyApp, type BootedApp } from "./bootloader";
import { Efuse } from "./efuse";
import { Flash, SECTOR_SIZE } from "./flash";
import { ImageCheckError, signerSlots, type Chip } from "./image-check";
import { activeEntry, isValid, OtaState, Otadata, selectEntry, slotOf, SEQ_NONE, type OtaEntry } from "./otadata";

/** Writer statuses (device/services/otawriter.md). */
export const Status = {
  Ok: 0,
  InvalidArg: 1,
  Gap: 2,
  NotBegun: 3,
  OutOfRange: 4,
  HashMismatch: 5,
  ImageInvalid: 6,
  FlashError: 7,
  InvalidState: 8,
  RollbackImpossible: 9,
  Mismatch: 10,
  SignatureInvalid: 11,
  SecureVersionTooLow: 12,
  KeyInUse: 13,
} as const;

/** Image check codes of a signature refusal (checkSignature's), answered with SignatureInvalid. */
const SIGNATURE_CODES = new Set(["unsigned", "untrusted_signer", "signature_invalid", "signature_digest_mismatch", "malformed_signature_sector"]);

function refusal(e: ImageCheckError): { status: StatusCode; reason: string } {
  if (SIGNATURE_CODES.has(e.code)) return { status: Status.SignatureInvalid, reason: e.code };
  if (e.code === "secure_version_too_low") return { status: Status.SecureVersionTooLow, reason: e.code };
  return { status: Status.ImageInvalid, reason: e.code };
}
export type StatusCode = (typeof Status)[keyof typeof Status];

interface Handle {
  partition: Partition;
  index: number;
  size: number;
  /** Contiguous bytes written from offset 0. */
  written: number;
}

export class OtaOps {
  private handle: Handle | null = null;
  private ended: { partition: Partition; index: number } | null = null;
  private readonly slots: Partition[];
  private readonly otadata: Otadata;

  constructor(
    private readonly flash: Flash,
    private readonly table: PartitionTable,
    readonly chip: Chip,
    readonly running: BootedApp,
    readonly efuse: Efuse = new Efuse(),
  ) {
    this.slots = otaSlots(table);
    if (!table.otadata || this.slots.length < 2) throw new Error("the partition table has no OTA layout (otadata, ota_0, ota_1)");
    this.otadata = new Otadata(flash, table.otadata);
  }

  get bytesWritten(): number {
    return this.handle?.written ?? 0;
  }

  /** esp_ota_get_next_update_partition(NULL) */
  nextUpdate(): { partition: Partition; index: number } {
    const r = this.running.index;
    const index = r === FACTORY_INDEX || r + 1 >= this.slots.length ? 0 : r + 1;
    return { partition: this.slots[index]!, index };
  }

  /** esp_ota_get_state_partition(running), UNDEFINED when it has none (factory app, no entry). */
  runningState(): number {
    if (this.running.index === FACTORY_INDEX) return OtaState.UNDEFINED;
    const two = this.otadata.read();
    for (const e of two) {
      if (slotOf(e, this.slots.length) === this.running.index && e.crc === otaSelectCrc(e.seq)) return e.state;
    }
    return OtaState.UNDEFINED;
  }

  runningSha256(): Buffer {
    return Buffer.from(this.running.sha256, "hex");
  }

  /**
   * esp_ota_begin(next, size): erase what the image needs, forget the slot's old otadata entry. One sector more
   * is erased when the slot has it, so that no signature sector of an older image is left where this image's
   * would be.
   */
  begin(size: number): { status: StatusCode; slot: number } {
    const next = this.nextUpdate();
    if (this.runningState() === OtaState.PENDING_VERIFY) return { status: Status.InvalidState, slot: next.index };
    if (size <= 0 || size > next.partition.size) return { status: Status.OutOfRange, slot: next.index };
    this.flash.erase(next.partition.offset, Math.min(next.partition.size, (Math.ceil(size / SECTOR_SIZE) + 1) * SECTOR_SIZE));
    this.invalidateInactiveSlot();
    this.handle = { partition: next.partition, index: next.index, size, written: 0 };
    this.ended = null;
    return { status: Status.Ok, slot: next.index };
  }

  /** esp_ota_resume(next, ..., offset): continue after a reset; nothing is erased. */
  resume(size: number, offset: number): { status: StatusCode; written: number } {
    const next = this.nextUpdate();
    if (size <= 0 || size > next.partition.size || offset > size) return { status: Status.OutOfRange, written: 0 };
    this.handle = { partition: next.partition, index: next.index, size, written: offset };
    this.ended = null;
    return { status: Status.Ok, written: offset };
  }

  /** esp_ota_write_with_offset, idempotent, refusing gaps. */
  write(offset: number, data: Uint8Array): { status: StatusCode; written: number } {
    const h = this.handle;
    if (!h) return { status: Status.NotBegun, written: 0 };
    if (offset + data.length > h.size) return { status: Status.OutOfRange, written: h.written };
    if (offset > h.written) return { status: Status.Gap, written: h.written };
    if (offset === 0 && data.length > 0 && data[0] !== 0xe9) return { status: Status.ImageInvalid, written: h.written };
    const overlap = Math.min(h.written, offset + data.length) - offset;
    if (overlap > 0) {
      const have = this.flash.view(h.partition.offset + offset, overlap);
      if (!have.equals(Buffer.from(data.buffer, data.byteOffset, overlap))) return { status: Status.Mismatch, written: h.written };
    }
    if (offset + data.length > h.written) {
      this.flash.write(h.partition.offset + h.written, data.subarray(h.written - offset));
      h.written = offset + data.length;
    }
    return { status: Status.Ok, written: h.written };
  }

  /**
   * esp_ota_end, with the whole-image SHA-256 the VM cannot compute itself. On a chip with key digests in
   * eFuse the image must carry a signature block valid under one of them (CONFIG_SECURE_SIGNED_ON_UPDATE:
   * SignatureInvalid), and its secure_version must not be below the eFuse's (SecureVersionTooLow, the check
   * esp_ota_set_boot_partition makes with CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK, made here already).
   */
  end(sha256: Uint8Array): { status: StatusCode; reason: string } {
    const h = this.handle;
    if (!h) return { status: Status.NotBegun, reason: "no update in progress" };
    this.handle = null;
    if (h.written !== h.size) return { status: Status.InvalidArg, reason: `incomplete: ${h.written} of ${h.size} bytes written` };
    const got = createHash("sha256").update(this.flash.view(h.partition.offset, h.size)).digest();
    if (sha256.length !== 32 || !got.equals(Buffer.from(sha256))) return { status: Status.HashMismatch, reason: "sha256" };
    try {
      verifyApp(this.flash, h.partition, this.chip, { efuse: this.efuse, signature: true, secureVersion: true });
    } catch (e) {
      if (e instanceof ImageCheckError) return refusal(e);
      throw e;
    }
    this.ended = { partition: h.partition, index: h.index };
    return { status: Status.Ok, reason: "" };
  }

  /**
   * esp_ota_set_boot_partition: validate the image (its signature too on a chip with key digests), refuse one
   * whose secure_version is below the eFuse's (and erase it, as ESP-IDF does), then write the next otadata
   * entry (state NEW).
   */
  setBoot(): StatusCode {
    const target = this.ended ?? this.nextUpdate();
    try {
      verifyApp(this.flash, target.partition, this.chip, { efuse: this.efuse, signature: true });
    } catch (e) {
      if (e instanceof ImageCheckError) return refusal(e).status;
      throw e;
    }
    if (!loadApp(this.flash, target.partition, this.chip, { efuse: this.efuse, secureVersion: true })) {
      this.flash.erase(target.partition.offset, target.partition.size);
      this.ended = null;
      return Status.SecureVersionTooLow;
    }
    this.rewriteOtaData(target.index);
    return Status.Ok;
  }

  /** esp_ota_mark_app_valid_cancel_rollback, with anti-rollback: the eFuse secure_version rises to the app's. */
  markValid(): StatusCode {
    const two = this.otadata.read();
    const active = activeEntry(two);
    if (active === -1) return Status.InvalidState; // running firmware is factory
    if (two[active]!.state !== OtaState.VALID) {
      two[active]!.state = OtaState.VALID;
      this.otadata.write(active, two[active]!);
      this.efuse.updateSecureVersion(this.running.image.app.secureVersion);
    }
    return Status.Ok;
  }

  /**
   * esp_ota_revoke_secure_boot_public_key(index), with its checks (components/app_update/esp_ota_ops.c): secure
   * boot must be on, the running app marked valid, and the app must verify under a digest other than the one
   * revoked (KeyInUse otherwise: revoking would leave nothing it is signed by; the last key is never revoked).
   * A digest already revoked is Ok again (commands arrive at least once; a power cut may hide the answer). The
   * eFuse write is the commit point. ESP-IDF also verifies the bootloader under another digest; the emulated
   * chip has no bootloader image to check.
   */
  revokeKey(index: number): StatusCode {
    if (!this.efuse.secureBoot) return Status.InvalidState;
    if (!Number.isInteger(index) || index < 0 || index >= MAX_SIGNATURE_BLOCKS || index >= this.efuse.digestCount) return Status.InvalidArg;
    if (this.runningState() !== OtaState.VALID) return Status.InvalidState;
    if (this.efuse.isRevoked(index)) return Status.Ok;
    if ((this.runningSigners() & ~(1 << index)) === 0) return Status.KeyInUse;
    this.efuse.revoke(index);
    return Status.Ok;
  }

  /** The eFuse digest slots the running app verifies under, one bit per slot. */
  runningSigners(): number {
    const p = this.running.partition;
    return signerSlots(this.flash.view(p.offset, p.size), this.running.image, this.efuse);
  }

  /** esp_ota_mark_app_invalid_rollback (the caller then resets the chip). */
  markInvalid(): StatusCode {
    const two = this.otadata.read();
    const active = activeEntry(two);
    if (active === -1) return Status.InvalidState;
    if (!this.rollbackPossible(two)) return Status.RollbackImpossible;
    two[active]!.state = OtaState.INVALID;
    this.otadata.write(active, two[active]!);
    return Status.Ok;
  }

  /** esp_ota_check_rollback_is_possible */
  private rollbackPossible(two: OtaEntry[]): boolean {
    const valid = [isValid(two[0]!), isValid(two[1]!)];
    const active = selectEntry(two, valid, true);
    if (active === -1) return false;
    const last = active ^ 1;
    if (!valid[last]) {
      const factory = this.table.entries.find((p) => p.type === 0 && p.subtype === 0);
      return !!factory && !!loadApp(this.flash, factory, this.chip, this.verifyBootable);
    }
    const p = this.slots[slotOf(two[last]!, this.slots.length)];
    return !!p && !!loadApp(this.flash, p, this.chip, this.verifyBootable);
  }

  /** What the bootloader will check of an app to go back to. */
  private get verifyBootable() {
    return { efuse: this.efuse, signature: this.efuse.secureBoot, secureVersion: true };
  }

  /** esp_ota_invalidate_inactive_ota_data_slot: the entry pointing at the slot about to be overwritten goes. */
  private invalidateInactiveSlot(): void {
    const two = this.otadata.read();
    const active = activeEntry(two);
    if (active === -1) return;
    const inactive = active ^ 1;
    const e = two[inactive]!;
    if (e.seq === SEQ_NONE || e.crc !== otaSelectCrc(e.seq)) return;
    const slot = slotOf(e, this.slots.length);
    if (slot === this.running.index) return;
    this.otadata.eraseSector(inactive);
  }

  /** esp_rewrite_ota_data(slot): the next sequence number that selects `slot`, in the other sector. */
  private rewriteOtaData(slot: number): void {
    const two = this.otadata.read();
    const count = this.slots.length;
    const active = activeEntry(two);
    let next: number;
    let seq: number;
    if (active !== -1) {
      if (slotOf(two[active]!, count) === slot) {
        next = active;
        seq = two[active]!.seq;
      } else {
        next = active ^ 1;
        const base = (slot + 1) % count;
        let i = 0;
        while (two[active]!.seq > base + i * count) i++;
        seq = base + i * count;
      }
    } else {
      next = 0;
      seq = slot + 1;
    }
    const e = two[next]!;
    const entry: OtaEntry = { seq, label: e.label, state: OtaState.NEW, crc: otaSelectCrc(seq) };
    this.otadata.write(next, entry);
  }

  /** For registers and tests: what runs, and how it was verified. */
  describeRunning(): { slot: number; version: string; secureVersion: number; sha256: string; state: number } {
    return {
      slot: this.running.index === FACTORY_INDEX ? 255 : this.running.index,
      version: this.running.image.app.version,
      secureVersion: this.running.image.app.secureVersion,
      sha256: imageSha256(this.flash, this.running.partition, this.running.image),
      state: this.runningState(),
    };
  }
}
