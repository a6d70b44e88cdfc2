// The emulated ESP32's flash side, checked against ESP-IDF's rules on real files: the Arduino otadata,
// real app images, the project's partition table.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parseAppImage, parsePartitionsCsv, readKey, signImage, trustedKeyFromPem, type PartitionTable } from "../../server/esp";
import { bootloader, FACTORY_INDEX, otaSlots } from "../../device/host/esp/bootloader";
import { Efuse } from "../../device/host/esp/efuse";
import { deriveImage } from "../../device/host/esp/factory-image";
import { Flash } from "../../device/host/esp/flash";
import { checkImage, checkSecureVersion, chipByName, ImageCheckError, signerSlots, storedLength } from "../../device/host/esp/image-check";
import { OtaOps, Status } from "../../device/host/esp/ota-ops";
import { decodeEntry, newEntry, OtaState, Otadata } from "../../device/host/esp/otadata";
import { parseLargeFrame } from "../../device/host/writer-service";
import { BOOTLOADER, HELLO_WORLD, HELLO_WORLD_S3, OTADATA, PARTITIONS_DIR, read, SIGNED_DIR, SIGNED_KEYS_DIR } from "../helpers/fixtures";
import { ROOT } from "../helpers/server";

const chip = chipByName("esp32", 300);
const table = parsePartitionsCsv(fs.readFileSync(path.join(ROOT, "partitions.csv"), "utf8"));
const [slot0, slot1] = otaSlots(table) as [NonNullable<ReturnType<typeof otaSlots>[0]>, NonNullable<ReturnType<typeof otaSlots>[0]>];
const hello = read(HELLO_WORLD);
const factory = deriveImage(hello, { version: "v1.0.0" });
const sha = (b: Buffer) => createHash("sha256").update(b).digest();
/** Secure Boot v2 test keys: A (ECDSA P-256) and B (RSA-3072). */
const keyA = read(path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pem"));
const keyB = read(path.join(SIGNED_KEYS_DIR, "release-rsa3072.pem"));

/** A device as it leaves the factory: Arduino's boot_app0 otadata and the factory app in ota_0. */
function factoryFlash(t: PartitionTable = table): Flash {
  const f = new Flash();
  f.flashAt(t.otadata!.offset, read(OTADATA));
  f.flashAt(otaSlots(t)[0]!.offset, factory);
  return f;
}

function states(f: Flash, t: PartitionTable = table) {
  return new Otadata(f, t.otadata!).read().map((e) => ({ seq: e.seq, state: e.state }));
}

/** begin + write in 232-byte pieces + end, as the agent would. */
function install(ops: OtaOps, image: Buffer, digest = sha(image)) {
  expect(ops.begin(image.length).status).toBe(Status.Ok);
  for (let o = 0; o < image.length; o += 232) expect(ops.write(o, image.subarray(o, o + 232)).status).toBe(Status.Ok);
  return ops.end(digest);
}

describe("otadata and the bootloader", () => {
  it("reads Arduino's boot_app0.bin as 'boot ota_0' and boots the factory app there, state undefined", () => {
    const e = [0, 1].map((i) => decodeEntry(read(OTADATA).subarray(i * 4096, i * 4096 + 32)));
    expect(e.map((x) => [x.seq, x.state, x.crc])).toEqual([
      [1, OtaState.UNDEFINED, 0x4743989a],
      [0, OtaState.UNDEFINED, 0xffffffff],
    ]);
    const f = factoryFlash();
    const booted = bootloader(f, table, chip)!;
    expect(booted.index).toBe(0);
    expect(booted.partition.name).toBe("app0");
    expect(booted.image.app.version).toBe("v1.0.0");
    expect(new OtaOps(f, table, chip, booted).runningState()).toBe(OtaState.UNDEFINED);
    expect(states(f)).toEqual([
      { seq: 1, state: OtaState.UNDEFINED },
      { seq: 0, state: OtaState.UNDEFINED },
    ]); // the bootloader wrote nothing
  });

  it("with erased otadata and no factory partition boots ota_0 and records it (set_actual_ota_seq)", () => {
    const f = new Flash();
    f.flashAt(slot0.offset, factory);
    expect(bootloader(f, table, chip)!.index).toBe(0);
    expect(states(f)[0]).toEqual({ seq: 1, state: OtaState.VALID });
  });

  it("with a factory partition and invalid otadata boots the factory app", () => {
    const t = parsePartitionsCsv(fs.readFileSync(path.join(PARTITIONS_DIR, "esp-idf_partitions_two_ota.csv"), "utf8"));
    const factoryPart = t.entries.find((p) => p.name === "factory")!;
    const f = new Flash();
    f.flashAt(factoryPart.offset, factory);
    expect(bootloader(f, t, chip)!.index).toBe(FACTORY_INDEX);
  });

  it("falls back to another slot when the chosen one holds no valid image", () => {
    const f = factoryFlash();
    // otadata says ota_1 (seq 2) but ota_1 is erased
    new Otadata(f, table.otadata!).write(1, newEntry(2, OtaState.VALID));
    const b = bootloader(f, table, chip)!;
    expect(b.index).toBe(0);
    expect(b.log).toContain("app1 is not bootable (wrong_magic)");
  });

  it("nothing bootable is reported as such", () => {
    expect(bootloader(new Flash(), table, chip)).toBeNull();
  });
});


describe("esp_ota_ops on the emulated flash", () => {
  it("an update: new slot, state new, pending verification at the next boot, valid once marked", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(ops.nextUpdate().partition.name).toBe("app1");
    expect(install(ops, hello)).toEqual({ status: Status.Ok, reason: "" });
    expect(f.read(slot1.offset, hello.length).equals(hello)).toBe(true);
    expect(ops.setBoot()).toBe(Status.Ok);
    // esp_rewrite_ota_data: the next sequence number selecting ota_1 goes into the other sector, state NEW
    expect(states(f)[1]).toEqual({ seq: 2, state: OtaState.NEW });

    const first = bootloader(f, table, chip)!;
    expect(first.partition.name).toBe("app1");
    expect(first.log).toContain("otadata[1] is new: marked pending verification");
    const ops2 = new OtaOps(f, table, chip, first);
    expect(ops2.runningState()).toBe(OtaState.PENDING_VERIFY);
    expect(ops2.begin(100).status).toBe(Status.InvalidState); // no update while unconfirmed
    expect(ops2.markValid()).toBe(Status.Ok);
    expect(ops2.runningState()).toBe(OtaState.VALID);
    const again = bootloader(f, table, chip)!;
    expect(again.partition.name).toBe("app1");
    const ops3 = new OtaOps(f, table, chip, again);
    expect(ops3.describeRunning()).toMatchObject({ slot: 1, version: "v1.4.1-2-g0296947-dirty" });
    expect(ops3.nextUpdate().partition.name).toBe("app0"); // after the last slot comes the first
  });

  it("an otadata entry whose CRC does not match its sequence number is no entry: the running slot's state is undefined", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    install(ops, hello);
    ops.setBoot();
    const first = bootloader(f, table, chip)!;
    expect(new OtaOps(f, table, chip, first).runningState()).toBe(OtaState.PENDING_VERIFY);
    // Clear one bit of the CRC of the entry that selects ota_1 (otadata[1], bytes 28-31): NOR can only clear bits.
    const at = table.otadata!.offset + 4096 + 28;
    const crc = f.read(at, 4);
    const i = crc.findIndex((b) => b !== 0);
    crc[i] = crc[i]! & (crc[i]! - 1);
    f.write(at, crc);
    expect(new OtaOps(f, table, chip, first).runningState()).toBe(OtaState.UNDEFINED);
  });

  it("a reset before the new image is marked valid aborts it and the previous image boots", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    install(ops, hello);
    ops.setBoot();
    expect(bootloader(f, table, chip)!.partition.name).toBe("app1"); // pending verification
    const back = bootloader(f, table, chip)!; // reset before mark_valid
    expect(back.partition.name).toBe("app0");
    expect(back.log).toContain("otadata[1] was pending verification at reset: marked aborted");
    expect(states(f)[1]!.state).toBe(OtaState.ABORTED);
  });

  it("mark_invalid rolls back to the previous image; the invalid slot is never chosen again", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    install(ops, hello);
    ops.setBoot();
    const ops2 = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(ops2.markInvalid()).toBe(Status.Ok);
    expect(states(f)[1]!.state).toBe(OtaState.INVALID);
    expect(bootloader(f, table, chip)!.partition.name).toBe("app0");
    expect(bootloader(f, table, chip)!.partition.name).toBe("app0");
  });

  it("while the factory app runs, mark_valid and mark_invalid are refused and change nothing ('running firmware is factory')", () => {
    const t = parsePartitionsCsv(fs.readFileSync(path.join(PARTITIONS_DIR, "esp-idf_partitions_two_ota.csv"), "utf8"));
    const f = new Flash();
    f.flashAt(t.entries.find((p) => p.name === "factory")!.offset, factory);
    const ops = new OtaOps(f, t, chip, bootloader(f, t, chip)!);
    const otadata = Buffer.from(f.read(t.otadata!.offset, t.otadata!.size));
    expect(ops.runningState()).toBe(OtaState.UNDEFINED);
    expect(ops.markValid()).toBe(Status.InvalidState);
    expect(ops.markInvalid()).toBe(Status.InvalidState);
    expect(f.read(t.otadata!.offset, t.otadata!.size).equals(otadata)).toBe(true);
    expect(ops.nextUpdate().partition.name).toBe(otaSlots(t)[0]!.name); // from the factory app, the first slot
  });

  it("mark_invalid with nothing to go back to is refused", () => {
    const f = new Flash();
    f.flashAt(slot0.offset, factory); // erased otadata: the bootloader records ota_0 as valid
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(ops.markInvalid()).toBe(Status.RollbackImpossible);
  });

  it("writes are offset-addressed and idempotent, refuse gaps and changed data", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(ops.write(0, hello.subarray(0, 232))).toEqual({ status: Status.NotBegun, written: 0 });
    ops.begin(hello.length);
    expect(ops.write(0, hello.subarray(0, 232))).toEqual({ status: Status.Ok, written: 232 });
    expect(ops.write(0, hello.subarray(0, 232))).toEqual({ status: Status.Ok, written: 232 }); // duplicate
    expect(ops.write(464, hello.subarray(464, 696))).toEqual({ status: Status.Gap, written: 232 });
    const changed = Buffer.from(hello.subarray(100, 332));
    changed[0]! ^= 1;
    expect(ops.write(100, changed)).toEqual({ status: Status.Mismatch, written: 232 });
    expect(ops.write(100, hello.subarray(100, 332))).toEqual({ status: Status.Ok, written: 332 }); // overlapping, same bytes
    expect(ops.write(0, hello.subarray(0, 232))).toEqual({ status: Status.Ok, written: 332 }); // an earlier piece again moves nothing back
    expect(ops.write(0, Buffer.alloc(0))).toEqual({ status: Status.Ok, written: 332 }); // nothing to check the magic of
    expect(ops.write(hello.length - 10, Buffer.alloc(20))).toMatchObject({ status: Status.OutOfRange });
    expect(ops.bytesWritten).toBe(332);
  });

  it("the first byte must be an image's magic (esp_ota_write)", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    ops.begin(1000);
    expect(ops.write(0, Buffer.alloc(10, 0x50)).status).toBe(Status.ImageInvalid);
  });

  it("end checks the whole image's SHA-256 natively, then the image as the server's parser does", () => {
    const f = factoryFlash();
    const run = () => new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(install(run(), hello, Buffer.alloc(32))).toEqual({ status: Status.HashMismatch, reason: "sha256" });
    const corrupt = Buffer.from(hello);
    corrupt[5000]! ^= 0x40; // inside a segment: the image checksum no longer matches
    expect(install(run(), corrupt)).toEqual({ status: Status.ImageInvalid, reason: "checksum_mismatch" });
    expect(install(run(), read(HELLO_WORLD_S3))).toEqual({ status: Status.ImageInvalid, reason: "chip_mismatch" });
    expect(install(run(), read(BOOTLOADER))).toEqual({ status: Status.ImageInvalid, reason: "bootloader" });
    const ops = run();
    ops.begin(hello.length);
    ops.write(0, hello.subarray(0, 1000));
    expect(ops.end(sha(hello))).toEqual({ status: Status.InvalidArg, reason: `incomplete: 1000 of ${hello.length} bytes written` });
    // nothing of this became bootable
    expect(run().setBoot()).toBe(Status.ImageInvalid);
    expect(states(f)[1]!.seq).not.toBe(2);
  });

  it("begin erases what the image needs and forgets the slot's old otadata entry", () => {
    const f = factoryFlash();
    f.write(slot1.offset, Buffer.alloc(16, 0)); // junk in ota_1
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    ops.begin(hello.length);
    expect(f.read(slot1.offset, 16).equals(Buffer.alloc(16, 0xff))).toBe(true);
    // entry 1 (seq 0 selects ota_1, the slot being overwritten) is erased: esp_ota_invalidate_inactive_ota_data_slot
    expect(states(f)[1]).toEqual({ seq: 0xffffffff, state: 0xffffffff });
    expect(states(f)[0]).toEqual({ seq: 1, state: OtaState.UNDEFINED });
  });

  it("begin and resume take only sizes that fit the slot, and resume only an offset within the size", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(ops.begin(0)).toEqual({ status: Status.OutOfRange, slot: 1 });
    expect(ops.begin(slot1.size + 1)).toEqual({ status: Status.OutOfRange, slot: 1 });
    expect(ops.begin(slot1.size)).toEqual({ status: Status.Ok, slot: 1 });
    expect(ops.resume(0, 0)).toEqual({ status: Status.OutOfRange, written: 0 });
    expect(ops.resume(slot1.size + 1, 0)).toEqual({ status: Status.OutOfRange, written: 0 });
    expect(ops.resume(1000, 1001)).toEqual({ status: Status.OutOfRange, written: 0 });
    expect(ops.resume(slot1.size, slot1.size)).toEqual({ status: Status.Ok, written: slot1.size });
  });

  it("a partition table without two OTA slots and otadata is refused", () => {
    const factoryOnly = parsePartitionsCsv("nvs, data, nvs, 0x9000, 0x5000\nfactory, app, factory, 0x10000, 0x100000\n");
    const f = new Flash();
    expect(() => new OtaOps(f, factoryOnly, chip, bootloader(factoryFlash(), table, chip)!)).toThrow(/no OTA layout/);
  });

  it("resume after a reset continues without erasing what was written", () => {
    const f = factoryFlash();
    const ops = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    ops.begin(hello.length);
    for (let o = 0; o < 40960; o += 4096) ops.write(o, hello.subarray(o, o + 4096));
    // power cut: the handle is gone, the flash is not
    const after = new OtaOps(f, table, chip, bootloader(f, table, chip)!);
    expect(after.write(40960, hello.subarray(40960, 41000)).status).toBe(Status.NotBegun);
    expect(after.resume(hello.length, 40960)).toEqual({ status: Status.Ok, written: 40960 });
    for (let o = 40960; o < hello.length; o += 4096) expect(after.write(o, hello.subarray(o, o + 4096)).status).toBe(Status.Ok);
    expect(after.end(sha(hello)).status).toBe(Status.Ok);
    expect(after.setBoot()).toBe(Status.Ok);
  });

  it("flash behaves like NOR: writing without erasing can only clear bits", () => {
    const f = new Flash(64 * 1024);
    f.write(0, Buffer.from([0xf0]));
    f.write(0, Buffer.from([0x0f]));
    expect(f.read(0, 1)[0]).toBe(0x00);
    f.erase(0, 4096);
    expect(f.read(0, 1)[0]).toBe(0xff);
    expect(() => f.erase(100, 4096)).toThrow(/not sector aligned/);
  });
});

describe("eFuse: signed images (Secure Boot v2 key digests) and anti-rollback", () => {
  const trust = (...pems: Buffer[]) => pems.map((p, i) => trustedKeyFromPem(p, `key${i}`));
  const signedByA = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"));
  const signedByB = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_rsa3072.bin"));
  const tampered = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256_image_tampered.bin"));
  const ops = (f: Flash, efuse: Efuse) => new OtaOps(f, table, chip, bootloader(f, table, chip, efuse)!, efuse);

  it("a chip trusting key A takes only images with a block valid under A; one without digests takes any (as before)", () => {
    const efuse = new Efuse({ trustedKeys: trust(keyA) });
    const f = factoryFlash();
    expect(install(ops(f, efuse), hello)).toEqual({ status: Status.SignatureInvalid, reason: "unsigned" });
    expect(install(ops(f, efuse), signedByB)).toEqual({ status: Status.SignatureInvalid, reason: "untrusted_signer" });
    expect(install(ops(f, efuse), tampered).status).not.toBe(Status.Ok);
    // A block by A after a damaged one still counts: the chip skips what it cannot use.
    const both = signImage(hello, [readKey(keyA)]);
    const damaged = Buffer.from(signImage(hello, [readKey(keyB), readKey(keyA)]));
    damaged[damaged.length - 4096 + 10]! ^= 1; // block 0 (B's): CRC no longer matches
    expect(install(ops(f, efuse), damaged)).toEqual({ status: Status.Ok, reason: "" });
    expect(install(ops(f, efuse), both)).toEqual({ status: Status.Ok, reason: "" });
    expect(install(ops(f, efuse), signedByA)).toEqual({ status: Status.Ok, reason: "" });
    const o = ops(f, efuse);
    expect(o.setBoot()).toBe(Status.Ok);
    // The running image's SHA-256 is the served file's: signature sector included.
    const booted = bootloader(f, table, chip, efuse)!;
    expect(booted.partition.name).toBe("app1");
    expect(booted.sha256).toBe(sha(signedByA).toString("hex"));

    const plain = factoryFlash();
    expect(install(ops(plain, new Efuse()), signedByB)).toEqual({ status: Status.Ok, reason: "" });
    expect(install(ops(plain, new Efuse()), hello)).toEqual({ status: Status.Ok, reason: "" });
  });

  it("a revoked digest no longer counts; a chip holds at most 3", () => {
    const efuse = new Efuse({ trustedKeys: trust(keyA, keyB) });
    const f = factoryFlash();
    expect(install(ops(f, efuse), signedByA).status).toBe(Status.Ok);
    efuse.revoke(0);
    expect(efuse.isRevoked(0)).toBe(true);
    expect(install(ops(f, efuse), signedByA)).toEqual({ status: Status.SignatureInvalid, reason: "untrusted_signer" });
    expect(install(ops(f, efuse), signedByB).status).toBe(Status.Ok);
    expect(() => new Efuse({ trustedKeys: trust(keyA, keyB, keyA, keyB) })).toThrow(/at most 3/);
    expect(() => new Efuse({ secureBoot: true })).toThrow(/trusted key/);
  });

  it("revoke_key makes esp_ota_revoke_secure_boot_public_key's checks: secure boot, a valid running app signed under another digest; repeated, it answers Ok", () => {
    const efuse = new Efuse({ trustedKeys: trust(keyA, keyB), secureBoot: true });
    const f = new Flash();
    f.flashAt(table.otadata!.offset, read(OTADATA));
    f.flashAt(slot0.offset, signImage(factory, [readKey(keyA)]));
    const atFactory = ops(f, efuse);
    expect(atFactory.runningSigners()).toBe(0b01);
    expect(atFactory.revokeKey(1)).toBe(Status.InvalidState); // the factory app has no otadata state: not valid

    const both = signImage(deriveImage(hello, { version: "v2.0.0" }), [readKey(keyA), readKey(keyB)]);
    expect(install(atFactory, both).status).toBe(Status.Ok);
    expect(atFactory.setBoot()).toBe(Status.Ok);
    const pending = ops(f, efuse);
    expect(pending.runningSigners()).toBe(0b11);
    expect(pending.revokeKey(0)).toBe(Status.InvalidState); // pending verification
    expect(pending.markValid()).toBe(Status.Ok);

    const byB = signImage(deriveImage(hello, { version: "v3.0.0" }), [readKey(keyB)]);
    expect(install(pending, byB).status).toBe(Status.Ok);
    expect(pending.setBoot()).toBe(Status.Ok);
    const running = ops(f, efuse);
    expect(running.markValid()).toBe(Status.Ok);
    expect(running.runningSigners()).toBe(0b10);
    expect(running.revokeKey(1)).toBe(Status.KeyInUse); // B alone signs what runs: the last key is never revoked
    expect(running.revokeKey(2)).toBe(Status.InvalidArg); // no digest in slot 2
    expect(running.revokeKey(7)).toBe(Status.InvalidArg);
    expect(running.revokeKey(-1)).toBe(Status.InvalidArg);
    expect(running.revokeKey(0.5)).toBe(Status.InvalidArg);
    expect(efuse.trustedMask).toBe(0b11);
    expect(running.revokeKey(0)).toBe(Status.Ok);
    expect(efuse.trustedMask).toBe(0b10);
    expect(running.revokeKey(0)).toBe(Status.Ok); // again (a command repeated, or resent after a reset)
    expect(efuse.isRevoked(0)).toBe(true);
    // What runs boots again under B; so does the way back, the image signed by A and B in the other slot.
    expect(bootloader(f, table, chip, efuse)!.image.app.version).toBe("v3.0.0");
    expect(ops(f, efuse).markInvalid()).toBe(Status.Ok);
    expect(bootloader(f, table, chip, efuse)!.image.app.version).toBe("v2.0.0");
    expect(install(ops(f, efuse), signedByA)).toEqual({ status: Status.SignatureInvalid, reason: "untrusted_signer" });

    // Without secure boot, esp_ota_revoke_secure_boot_public_key refuses.
    const noSecureBoot = new Efuse({ trustedKeys: trust(keyA, keyB) });
    const g = factoryFlash();
    expect(ops(g, noSecureBoot).revokeKey(0)).toBe(Status.InvalidState);
    // ... also once a valid app signed by both keys runs
    const atG = ops(g, noSecureBoot);
    expect(install(atG, both).status).toBe(Status.Ok);
    expect(atG.setBoot()).toBe(Status.Ok);
    const validG = ops(g, noSecureBoot);
    expect(validG.markValid()).toBe(Status.Ok);
    expect(validG.runningState()).toBe(OtaState.VALID);
    expect(validG.revokeKey(0)).toBe(Status.InvalidState);
    expect(noSecureBoot.isRevoked(0)).toBe(false);
  });

  it("with secure boot, the bootloader refuses an unsigned or untrusted app and falls back", () => {
    const efuse = new Efuse({ trustedKeys: trust(keyA), secureBoot: true });
    const f = new Flash();
    f.flashAt(table.otadata!.offset, read(OTADATA));
    f.flashAt(slot0.offset, factory); // unsigned
    expect(bootloader(f, table, chip, efuse)).toBeNull();
    expect(bootloader(f, table, chip, new Efuse({ trustedKeys: trust(keyA) }))!.partition.name).toBe("app0"); // signed apps, no secure boot

    f.erase(slot0.offset, slot0.size);
    f.flashAt(slot0.offset, signImage(factory, [readKey(keyA)]));
    const o = ops(f, efuse);
    expect(o.describeRunning().slot).toBe(0);
    // ota_1 gets an image signed by B behind the writer's back (as if written by other means) and is selected.
    f.flashAt(slot1.offset, signedByB);
    expect(ops(f, new Efuse()).setBoot()).toBe(Status.Ok);
    const b = bootloader(f, table, chip, efuse)!;
    expect(b.partition.name).toBe("app0");
    expect(b.log).toContain("app1 is not bootable (untrusted_signer)");
    // and set_boot itself refuses it on this chip
    expect(ops(f, efuse).setBoot()).toBe(Status.SignatureInvalid);
  });

  it("secure_version: mark_valid raises the eFuse; end, set_boot and the bootloader refuse a lower one", () => {
    const efuse = new Efuse();
    const f = factoryFlash();
    const v2 = deriveImage(hello, { secureVersion: 2 });
    const v1 = deriveImage(hello, { version: "v9.0.0", secureVersion: 1 });
    expect(install(ops(f, efuse), v2).status).toBe(Status.Ok);
    expect(ops(f, efuse).setBoot()).toBe(Status.Ok);
    const pending = ops(f, efuse);
    expect(efuse.secureVersion).toBe(0);
    expect(pending.markValid()).toBe(Status.Ok);
    expect(efuse.secureVersion).toBe(2);
    efuse.updateSecureVersion(1); // never lowered
    expect(efuse.secureVersion).toBe(2);

    expect(install(ops(f, efuse), v1)).toEqual({ status: Status.SecureVersionTooLow, reason: "secure_version_too_low" });
    // set_boot after a reset (the slot checked again): refused, and the slot erased as ESP-IDF does
    const after = ops(f, efuse);
    expect(after.setBoot()).toBe(Status.SecureVersionTooLow);
    expect(f.read(slot0.offset, 16).equals(Buffer.alloc(16, 0xff))).toBe(true);
    // The factory image (secure_version 0) is no way back any more.
    const g = factoryFlash();
    const e2 = new Efuse({ secureVersion: 1 });
    expect(bootloader(g, table, chip, e2)).toBeNull();
  });
});

describe("the chip revision range an image allows (bootloader_common_check_chip_validity)", () => {
  /** hello_world with other min/max chip revisions in its header, its appended SHA-256 made again. */
  const withRevisions = (min: number, max: number): Buffer => deriveImage(hello, { minChipRevFull: min, maxChipRevFull: max });
  const atChip = (revision: number) => {
    const f = factoryFlash();
    const c = chipByName("esp32", revision);
    return new OtaOps(f, table, c, bootloader(f, table, c)!);
  };

  it("an image is taken from its minimum revision to its maximum, both included, and refused outside", () => {
    // (the factory app, hello_world's own range, boots on each of these revisions)
    expect(install(atChip(100), withRevisions(100, 200)).status).toBe(Status.Ok);
    expect(install(atChip(200), withRevisions(100, 200)).status).toBe(Status.Ok);
    expect(install(atChip(99), withRevisions(100, 200))).toEqual({ status: Status.ImageInvalid, reason: "chip_revision" });
    expect(install(atChip(201), withRevisions(100, 200))).toEqual({ status: Status.ImageInvalid, reason: "chip_revision" });
    expect(install(atChip(201), withRevisions(100, 0xffff)).status).toBe(Status.Ok); // 0xFFFF: no maximum
    expect(() => checkImage(withRevisions(301, 0xffff), chipByName("esp32", 300))).toThrow(
      "image supports chip revisions 301 to any, the chip is 300",
    );
  });
});

describe("the writer's image checks, called directly", () => {
  const refusal = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof ImageCheckError ? { code: e.code, message: e.message } : e;
    }
    return null;
  };

  it("each refusal says what the image is and what the chip is", () => {
    expect(() => chipByName("esp99", 0)).toThrow("unknown chip esp99");
    expect(refusal(() => checkImage(hello, chipByName("esp32s3", 0)))).toEqual({ code: "chip_mismatch", message: "image is for esp32, the chip is esp32s3" });
    const v1 = parseAppImage(deriveImage(hello, { secureVersion: 1 }));
    expect(refusal(() => checkSecureVersion(v1, new Efuse({ secureVersion: 2 })))).toEqual({
      code: "secure_version_too_low",
      message: "the image's secure_version 1 is below the chip's eFuse secure_version 2",
    });
    expect(refusal(() => checkSecureVersion(v1, new Efuse({ secureVersion: 1 })))).toBeNull();
  });

  it("an image's bytes on flash end after its signature sector when one follows it, else at the image's own end", () => {
    const signed = signImage(hello, [readKey(keyA)]);
    const img = parseAppImage(signed);
    expect(storedLength(signed, img)).toBe(signed.length); // the sector ends exactly where the slot does
    const slot = Buffer.alloc(slot1.size, 0xff);
    signed.copy(slot);
    expect(storedLength(slot, img)).toBe(signed.length);
    expect(storedLength(signed.subarray(0, signed.length - 1), img)).toBe(img.imageLength); // no room for a whole sector
    const plain = Buffer.alloc(slot1.size, 0xff);
    hello.copy(plain);
    expect(storedLength(plain, parseAppImage(hello))).toBe(parseAppImage(hello).imageLength); // no block magic after it
  });

  it("the digest slots an app verifies under: a damaged block beside a valid one is skipped, as the chip skips it", () => {
    const efuse = new Efuse({ trustedKeys: [keyB, keyA].map((p, i) => trustedKeyFromPem(p, `key${i}`)) });
    const both = signImage(hello, [readKey(keyB), readKey(keyA)]);
    expect(signerSlots(both, parseAppImage(both), efuse)).toBe(0b11);
    const damaged = Buffer.from(both);
    damaged[damaged.length - 4096 + 10]! ^= 1; // block 0 (B's): CRC no longer matches
    expect(signerSlots(damaged, parseAppImage(damaged), efuse)).toBe(0b10);
  });
});

describe("bulk writes (large frames)", () => {
  const frame = (topic: string, data: number[]) =>
    Uint8Array.from([0x12, 0x34, 0xff, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, ...Buffer.from(topic), 0, ...data]);

  it("a frame is split into its topic and data; a short one, one without 0xff or without the topic's NUL is none", () => {
    expect(parseLargeFrame(frame("otawriter/write/0", [1, 2]))).toEqual({ topic: "otawriter/write/0", data: Uint8Array.from([1, 2]) });
    expect(parseLargeFrame(frame("", []))).toEqual({ topic: "", data: new Uint8Array(0) }); // 17 bytes, the shortest
    expect(parseLargeFrame(frame("", []).subarray(0, 16))).toBeNull();
    const noFF = frame("t", [1]);
    noFF[2] = 0xfe;
    expect(parseLargeFrame(noFF)).toBeNull();
    expect(parseLargeFrame(frame("t", []).subarray(0, 17))).toBeNull(); // the topic's NUL cut off
  });
});

describe("factory image", () => {
  it("is the real hello_world with an older version, re-sealed so it verifies", () => {
    const img = parseAppImage(factory);
    expect(img.app.version).toBe("v1.0.0");
    expect(img.app.projectName).toBe("hello_world");
    expect(img.appendedSha256).toBe(createHash("sha256").update(factory.subarray(0, img.checksumOffset + 1)).digest("hex"));
    // only the version field, the checksum byte and the appended hash differ from the original
    const diff: number[] = [];
    for (let i = 0; i < hello.length; i++) if (hello[i] !== factory[i]) diff.push(i);
    expect(diff.every((i) => (i >= 48 && i < 80) || i === img.checksumOffset || i > img.checksumOffset)).toBe(true);
    expect(parseAppImage(deriveImage(hello, { version: "v9.0.0", secureVersion: 2 })).app).toMatchObject({ version: "v9.0.0", secureVersion: 2 });
  });
});
