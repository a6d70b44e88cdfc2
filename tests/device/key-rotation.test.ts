// Key rotation without bricking, on emulated ESP32s with secure boot and two key digests in eFuse (slot 0: key
// A, slot 1: key B) running the real agent with the revoke_keys setting, against the real server: release 1
// signed by A, release 2 by A and B, release 3 by B alone. A is revoked on each device once it has confirmed
// release 3, including on devices whose power is cut before the confirmation, right after it and right after
// the eFuse write; afterwards an image signed by A alone is refused natively.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EmulatedDevice } from "../../device/host/device";
import { deriveImage } from "../../device/host/esp/factory-image";
import { Status } from "../../device/host/esp/ota-ops";
import { factoryImage } from "../../device/host/setup";
import type { WriterOp } from "../../device/host/writer-service";
import { generateSigningKey, readKey, signImage, trustedKeyFromPem } from "../../server/esp";
import { HELLO, makeDevice, SERVER_ENV, serverView, useFastClock } from "../helpers/device";
import { Operator } from "../helpers/fleet";
import { SIGNED_KEYS_DIR } from "../helpers/fixtures";
import { Relay } from "../helpers/relay";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(180_000);

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const KEY_A = fs.readFileSync(path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pem"));
const KEY_B = Buffer.from(generateSigningKey("ecdsa256").privateKeyPem);
const A = readKey(KEY_A);
const B = readKey(KEY_B);
const EFUSE = { trustedKeys: [trustedKeyFromPem(KEY_A, "A"), trustedKeyFromPem(KEY_B, "B")], secureBoot: true };

const R1 = signImage(deriveImage(HELLO, { version: "v2.0.0" }), [A]);
const R2 = signImage(deriveImage(HELLO, { version: "v3.0.0" }), [A, B]);
const R3 = signImage(deriveImage(HELLO, { version: "v4.0.0" }), [B]);
const LATE_A = signImage(deriveImage(HELLO, { version: "v5.0.0" }), [A]);

describe("key rotation from A to B: devices revoke A after confirming an image signed by B", () => {
  let s: TestServer;
  let relay: Relay;
  let op: Operator;
  const devices: EmulatedDevice[] = [];
  /** Boot at which each device's successful revoke_key ran, and whether its power was cut as planned. */
  const revokedAtBoot = new Map<string, number>();
  const cuts = new Map<string, number>();
  /** Devices whose bootloader found nothing it could start. */
  const bricked: string[] = [];

  const confirmedOn = (dev: EmulatedDevice, image: Buffer) =>
    dev.waitFor((e) => e.state === "confirmed" && e.reported === true && e.sha256 === sha(image), 150_000);

  /** Publishes a release and pins every device to it (the fleet moves as one). */
  const release = async (name: string, image: Buffer) => {
    fs.writeFileSync(path.join(s.dirs.firmware, `${name}.bin`), image);
    await eventually(() => s.running.ctx.catalog.image(sha(image)), 20_000);
    await op.ok("POST", "/releases", { name, image: `${name}.bin` });
    for (const d of devices) await op.ok("PATCH", `/devices/${d.deviceId}`, { pinned_release: name });
  };

  /** Cuts the device's power once, the first time `when` holds. */
  const cutOnce = (dev: EmulatedDevice, when: () => boolean) => () => {
    if (!cuts.has(dev.deviceId) && when()) {
      cuts.set(dev.deviceId, dev.boots);
      void dev.powerCycle();
    }
  };
  const runsR3 = (dev: EmulatedDevice) => dev.running?.sha256 === sha(R3);

  beforeAll(async () => {
    useFastClock();
    s = await startTestServer(SERVER_ENV);
    op = new Operator(s);
    relay = await Relay.start(s);
    for (const id of ["rot-plain", "rot-cut-unconfirmed", "rot-cut-valid", "rot-cut-revoke"]) {
      const dev = await makeDevice(s, {
        id,
        url: relay.url,
        efuse: EFUSE,
        factoryImage: signImage(factoryImage("v1.0.0"), [A]),
        settings: { revoke_keys: true },
      });
      dev.on("writer", (o: WriterOp) => {
        if (o.op === "revoke_key" && o.status === Status.Ok) revokedAtBoot.set(id, dev.boots);
      });
      dev.on("bricked", () => bricked.push(id));
      devices.push(dev);
    }
    const [, unconfirmed, valid, revoke] = devices as [EmulatedDevice, EmulatedDevice, EmulatedDevice, EmulatedDevice];
    // After set_boot, before the confirmation: "confirming" is stored, mark_valid not yet sent.
    unconfirmed.on("agent", (e: { state: string; reported?: boolean; sha256?: string }) =>
      cutOnce(unconfirmed, () => e.state === "confirming" && e.reported === true && e.sha256 === sha(R3))(),
    );
    // Right after mark_valid, before the revocation.
    valid.on("writer", (o: WriterOp) => cutOnce(valid, () => o.op === "mark_valid" && o.status === Status.Ok && runsR3(valid))());
    // Right after the eFuse write, before its answer reaches the agent.
    revoke.on("writer", (o: WriterOp) => cutOnce(revoke, () => o.op === "revoke_key" && o.status === Status.Ok)());
    for (const d of devices) await d.powerOn();
  });
  afterAll(async () => {
    await Promise.all(devices.map((d) => d.powerOff()));
    await relay.close();
    await s.close();
  });

  it("release 1, signed by A only, installs; nothing is revoked", async () => {
    await release("r1-a", R1);
    await Promise.all(devices.map((d) => confirmedOn(d, R1)));
    for (const d of devices) {
      expect([d.efuse.isRevoked(0), d.efuse.isRevoked(1)]).toEqual([false, false]);
      expect(d.ops.filter((o) => o.op === "revoke_key")).toEqual([]);
    }
  });

  it("release 2, signed by A and B, installs; A signed it, so A stays", async () => {
    await release("r2-ab", R2);
    await Promise.all(devices.map((d) => confirmedOn(d, R2)));
    for (const d of devices) {
      expect(d.running!.image.app.version).toBe("v3.0.0");
      expect([d.efuse.isRevoked(0), d.efuse.isRevoked(1)]).toEqual([false, false]);
      expect(d.ops.filter((o) => o.op === "revoke_key")).toEqual([]);
    }
  });

  it("release 3, signed by B only: each device confirms it, then revokes A; power cuts around the switch brick none", async () => {
    await release("r3-b", R3);
    await Promise.all(devices.map((d) => confirmedOn(d, R3)));
    await eventually(() => devices.every((d) => d.efuse.isRevoked(0)), 60_000);
    for (const d of devices) {
      expect(d.running!.image.app.version).toBe("v4.0.0");
      expect(d.otadataStates().filter((e) => e.valid).map((e) => e.state)).toContain("valid");
      expect([d.efuse.isRevoked(0), d.efuse.isRevoked(1)]).toEqual([true, false]);
      expect((await serverView(s, d.deviceId)).device).toMatchObject({ version: "v4.0.0" });
    }
    const [plain, unconfirmed, valid, revoke] = devices as [EmulatedDevice, EmulatedDevice, EmulatedDevice, EmulatedDevice];
    expect(cuts.has(plain.deviceId)).toBe(false);
    expect(plain.events).toContainEqual(expect.objectContaining({ state: "key_revoked", slot: 0, version: "v4.0.0" }));

    // Cut before the confirmation: the bootloader went back to release 2 (still signed by a key the chip
    // trusted), which reported the rollback; A stayed until release 3 was installed again and confirmed.
    expect(cuts.has(unconfirmed.deviceId)).toBe(true);
    const rolledBack = unconfirmed.events.find((e) => e.state === "rolled_back" && e.reported === true);
    expect(rolledBack).toMatchObject({ reason: "not_confirmed", version: "v3.0.0" });
    expect(revokedAtBoot.get(unconfirmed.deviceId)).toBeGreaterThan(rolledBack!.boot);

    // Cut between mark_valid and the eFuse write: the next boot of the valid image revoked A.
    expect(revokedAtBoot.get(valid.deviceId)).toBe(cuts.get(valid.deviceId)! + 1);

    // Cut after the eFuse write: A was revoked once, and the next boot found nothing left to revoke.
    expect(revokedAtBoot.get(revoke.deviceId)).toBe(cuts.get(revoke.deviceId));
    expect(revoke.boots).toBeGreaterThan(cuts.get(revoke.deviceId)!);
    for (const d of devices) expect(d.ops.filter((o) => o.op === "revoke_key" && o.status === Status.Ok)).toHaveLength(1);
    expect(bricked).toEqual([]);
  });

  it("after the rotation an image signed only by A is refused natively; every device boots, polls and reports on B", async () => {
    await release("late-a", LATE_A);
    for (const d of devices) {
      const failed = await d.waitFor((e) => e.state === "failed" && e.reported === true && e.sha256 === sha(LATE_A), 60_000);
      expect(failed).toMatchObject({ reason: "signature_invalid" });
      expect(String(failed.error)).toMatch(/untrusted_signer/);
      expect(d.ops.filter((o) => o.op === "end").at(-1)).toMatchObject({ status: Status.SignatureInvalid, reason: "untrusted_signer" });
    }
    for (const d of devices) {
      const from = d.events.length;
      await d.powerCycle();
      const boot = await d.waitFor((e) => e.state === "boot", 30_000, from);
      expect(boot).toMatchObject({ version: "v4.0.0", sha256: sha(R3) });
      // It polls again and reports on the A-only offer: tried and refused again, or, its tries used up, rejected.
      const again = await d.waitFor((e) => (e.state === "failed" || e.state === "rejected") && e.reported === true && e.sha256 === sha(LATE_A), 60_000, from);
      expect(again.reason).toMatch(/^(signature_invalid|too_many_attempts)$/);
      expect(d.running!.image.app.version).toBe("v4.0.0");
    }
    expect(bricked).toEqual([]);
  });
});
