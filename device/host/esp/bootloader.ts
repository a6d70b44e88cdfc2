// The second-stage bootloader's choice of app, with app rollback enabled, as ESP-IDF's bootloader_utility.c
// makes it (bootloader_utility_get_selected_boot_partition, bootloader_utility_load_boot_image):
//
// 1. Any otadata entry still PENDING_VERIFY belongs to an image that was not confirmed before this reset:
//    it becomes ABORTED.
// 2. If both entries are invalid (erased, INVALID or ABORTED): the factory app, or ota_0 without one.
//    Otherwise the valid entry with the highest sequence number picks slot (seq - 1) % slots; a NEW entry
//    becomes PENDING_VERIFY (the app must mark itself valid before the next reset).
// 3. The chosen slot must hold an image that passes verification (with secure boot on, a Secure Boot v2
//    signature under a trusted, unrevoked key digest; with anti-rollback, a secure_version no lower than the
//    eFuse's); if not, the bootloader tries the slots below it down to factory, then those above it.
import { createHash } from "node:crypto";
import { APP_TYPE, OTA_SUBTYPE_MIN, otaSelectCrc, type AppImage, type Partition, type PartitionTable } from "../../../server/esp";
import { Efuse } from "./efuse";
import { Flash } from "./flash";
import { checkAppSignature, checkImage, checkSecureVersion, ImageCheckError, storedLength, type Chip } from "./image-check";
import { activeEntry, isInvalid, newEntry, OtaState, Otadata, slotOf, SEQ_NONE } from "./otadata";

export const FACTORY_INDEX = -1;
const FACTORY_SUBTYPE = 0x00;

export interface BootedApp {
  /** OTA slot index, or FACTORY_INDEX. */
  index: number;
  partition: Partition;
  image: AppImage;
  /** SHA-256 of the image bytes (header through appended hash), hex. */
  sha256: string;
  log: string[];
}

export function otaSlots(table: PartitionTable): Partition[] {
  return table.entries
    .filter((p) => p.type === APP_TYPE && p.subtype >= OTA_SUBTYPE_MIN && p.subtype <= OTA_SUBTYPE_MIN + 15)
    .sort((a, b) => a.subtype - b.subtype);
}

function factoryPartition(table: PartitionTable): Partition | undefined {
  return table.entries.find((p) => p.type === APP_TYPE && p.subtype === FACTORY_SUBTYPE);
}

/** SHA-256 of the image's bytes on flash, its signature sector included when it has one: what the server served. */
export function imageSha256(flash: Flash, p: Partition, img: AppImage): string {
  const slot = flash.view(p.offset, p.size);
  return createHash("sha256").update(slot.subarray(0, storedLength(slot, img))).digest("hex");
}

/** Which checks beyond the image format a verification makes. */
export interface VerifyOptions {
  efuse?: Efuse;
  /** The Secure Boot v2 signature under the eFuse key digests. */
  signature?: boolean;
  /** secure_version against the eFuse's. */
  secureVersion?: boolean;
}

/** Verifies the app in a partition; throws ImageCheckError with the failed check's code. */
export function verifyApp(flash: Flash, p: Partition, chip: Chip, o: VerifyOptions = {}): AppImage {
  const slot = flash.view(p.offset, p.size);
  const img = checkImage(slot, chip);
  if (o.efuse && o.signature && o.efuse.signedApps) checkAppSignature(slot, img, o.efuse);
  if (o.efuse && o.secureVersion) checkSecureVersion(img, o.efuse);
  return img;
}

/** Verifies the app in a partition; null when it cannot boot. */
export function loadApp(flash: Flash, p: Partition, chip: Chip, o: VerifyOptions = {}): AppImage | null {
  try {
    return verifyApp(flash, p, chip, o);
  } catch (e) {
    if (e instanceof ImageCheckError) return null;
    throw e;
  }
}

/** Runs the bootloader: updates otadata as it would and returns the app that starts, or null if none can. */
export function bootloader(flash: Flash, table: PartitionTable, chip: Chip, efuse: Efuse = new Efuse()): BootedApp | null {
  const log: string[] = [];
  const slots = otaSlots(table);
  const factory = factoryPartition(table);
  let start = FACTORY_INDEX;
  let initialContents = false;
  const od = table.otadata ? new Otadata(flash, table.otadata) : null;

  if (od) {
    const two = od.read();
    for (const i of [0, 1]) {
      if (two[i]!.state === OtaState.PENDING_VERIFY) {
        log.push(`otadata[${i}] was pending verification at reset: marked aborted`);
        two[i]!.state = OtaState.ABORTED;
        od.write(i, two[i]!);
      }
    }
    if ((isInvalid(two[0]!) && isInvalid(two[1]!)) || slots.length === 0) {
      if (factory) {
        start = FACTORY_INDEX;
      } else {
        start = 0;
        const unusable = (e: (typeof two)[number]) => e.seq === SEQ_NONE || e.crc !== otaSelectCrc(e.seq);
        if (unusable(two[0]!) && unusable(two[1]!)) initialContents = true;
      }
    } else {
      const active = activeEntry(two);
      if (active !== -1) {
        start = slotOf(two[active]!, slots.length);
        if (two[active]!.state === OtaState.NEW) {
          log.push(`otadata[${active}] is new: marked pending verification`);
          two[active]!.state = OtaState.PENDING_VERIFY;
          od.write(active, two[active]!);
        }
      } else {
        log.push("no valid otadata entry: trying every app partition");
        start = FACTORY_INDEX;
      }
    }
  }

  const partitionAt = (index: number) => (index === FACTORY_INDEX ? factory : slots[index]);
  const order: number[] = [];
  for (let i = start; i >= FACTORY_INDEX; i--) order.push(i);
  for (let i = start + 1; i < slots.length; i++) order.push(i);
  for (const index of order) {
    const p = partitionAt(index);
    if (!p) continue;
    let image: AppImage;
    try {
      // With secure boot the app's signature is verified; anti-rollback always applies.
      image = verifyApp(flash, p, chip, { efuse, signature: efuse.secureBoot, secureVersion: true });
    } catch (e) {
      if (!(e instanceof ImageCheckError)) throw e;
      log.push(`${p.name} is not bootable (${e.code})`);
      continue;
    }
    if (index > FACTORY_INDEX && initialContents && od) {
      // set_actual_ota_seq: fresh otadata gets an entry for the slot that booted
      od.write(0, newEntry(index + 1, OtaState.VALID));
      log.push(`otadata initialised for ${p.name}`);
    }
    return { index, partition: p, image, sha256: imageSha256(flash, p, image), log };
  }
  log.push("no bootable app partition");
  return null;
}
