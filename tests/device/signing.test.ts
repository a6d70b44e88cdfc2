// The chip's own checks, below the agent: an emulated ESP32 with a Secure Boot v2 key digest in eFuse (the
// fixture ECDSA key, "A") and anti-rollback, running the real agent in the VM against the real server, which
// checks no signatures itself (no OTA_SIGNING_KEYS): it stands for a compromised server offering anything.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EmulatedDevice } from "../../device/host/device";
import { deriveImage } from "../../device/host/esp/factory-image";
import { Status } from "../../device/host/esp/ota-ops";
import { trustedKeyFromPem } from "../../server/esp";
import { HELLO, makeDevice, reported, SERVER_ENV, serverView, useFastClock, type MakeDevice } from "../helpers/device";
import { Operator } from "../helpers/fleet";
import { SIGNED_DIR, SIGNED_KEYS_DIR, read } from "../helpers/fixtures";
import { Relay } from "../helpers/relay";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(90_000);

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const SIGNED_BY_A = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin"));
const SIGNED_BY_OTHER = read(path.join(SIGNED_DIR, "esp32_hello_world_signed_rsa3072.bin"));
const TRUSTS_A = { trustedKeys: [trustedKeyFromPem(fs.readFileSync(path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pub.pem")), "A")] };

describe("the emulated chip checks signatures and secure_version natively", () => {
  let s: TestServer;
  let relay: Relay;
  let op: Operator;
  const devices: EmulatedDevice[] = [];

  beforeAll(async () => {
    useFastClock();
    s = await startTestServer(SERVER_ENV);
    op = new Operator(s);
    relay = await Relay.start(s);
  });
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.powerOff()));
  });
  afterAll(async () => {
    await relay.close();
    await s.close();
  });

  const device = async (o: Omit<MakeDevice, "url">) => {
    const d = await makeDevice(s, { url: relay.url, ...o });
    devices.push(d);
    return d;
  };
  /** Puts an image in the firmware folder and publishes it as a release. */
  const publish = async (name: string, image: Buffer, extra: Record<string, unknown> = {}) => {
    fs.writeFileSync(path.join(s.dirs.firmware, `${name}.bin`), image);
    await eventually(() => s.running.ctx.catalog.image(sha(image)), 20_000);
    await op.ok("POST", "/releases", { name, image: `${name}.bin`, ...extra });
  };
  const endOps = (d: EmulatedDevice) => d.ops.filter((o) => o.op === "end").map((o) => ({ status: o.status, reason: o.reason }));

  it("an image signed by an untrusted key is refused at end: the device keeps its image, reports signature_invalid, the rollout counts it", async () => {
    await publish("untrusted", SIGNED_BY_OTHER);
    await op.ok("POST", "/releases/untrusted/rollout", { stages: [100] });
    const dev = await device({ id: "dev-untrusted", efuse: TRUSTS_A });
    await dev.powerOn();
    const failed = await reported(dev, "failed", 60_000);
    expect(failed).toMatchObject({ reason: "signature_invalid", sha256: sha(SIGNED_BY_OTHER) });
    expect(String(failed.error)).toMatch(/untrusted_signer/);

    // Refused natively at end; set_boot never called; still the factory image, nothing new to boot.
    expect(endOps(dev)[0]).toEqual({ status: Status.SignatureInvalid, reason: "untrusted_signer" });
    expect(dev.ops.map((o) => o.op)).not.toContain("set_boot");
    expect(dev.running!.partition.name).toBe("app0");
    expect(dev.otadataStates()).toEqual([
      { seq: 1, state: "undefined", valid: true },
      { seq: 0xffffffff, state: "undefined", valid: false },
    ]);

    const view = await serverView(s, "dev-untrusted");
    expect(view.reports.find((r) => r.status === "failed")).toMatchObject({ reason: "signature_invalid" });
    expect(view.device).toMatchObject({ version: "v1.0.0" });
    const rollout = await op.ok("GET", "/rollouts/untrusted");
    expect(rollout.devices).toMatchObject({ failed: 1, succeeded: 0 });
    await op.ok("POST", "/rollouts/untrusted/abort", { reason: "signed by an unknown key" });
  });

  it("an image signed by the trusted key installs, confirms, and is not installed again", async () => {
    await publish("trusted", SIGNED_BY_A);
    const dev = await device({ id: "dev-trusted", efuse: TRUSTS_A });
    await op.ok("PATCH", "/devices/dev-trusted", { pinned_release: "trusted" });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(endOps(dev)).toEqual([{ status: Status.Ok, reason: "" }]);
    expect(dev.running!.partition.name).toBe("app1");
    expect((await serverView(s, "dev-trusted")).device).toMatchObject({ state: "confirmed", version: dev.running!.image.app.version });
    // The running image's SHA-256 covers its signature sector: the agent sees the offer as what it runs and
    // does not install it again at the next polls.
    const from = relay.requests.length;
    await eventually(() => relay.requests.slice(from).filter((r) => r.path.startsWith("/firmware/manifest")).length >= 3, 30_000);
    expect(dev.ops.filter((o) => o.op === "begin")).toHaveLength(1);
    expect(dev.running!.sha256).toBe(sha(SIGNED_BY_A));
  });

  it("eFuse secure_version rises when an image is confirmed; a lower one is then refused natively, whatever the manifest allows", async () => {
    const v2 = deriveImage(HELLO, { secureVersion: 2 });
    const v1 = deriveImage(HELLO, { version: "v9.0.0", secureVersion: 1 });
    await publish("sv2", v2);
    await publish("sv1", v1, { allow_downgrade: true });
    const dev = await device({ id: "dev-antirollback" });
    await op.ok("PATCH", "/devices/dev-antirollback", { pinned_release: "sv2" });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(dev.efuse.secureVersion).toBe(2);

    await op.ok("PATCH", "/devices/dev-antirollback", { pinned_release: "sv1" });
    const failed = await dev.waitFor((e) => e.state === "failed" && e.reported === true, 60_000);
    expect(failed).toMatchObject({ reason: "secure_version_too_low", sha256: sha(v1) });
    expect(endOps(dev).at(-1)).toEqual({ status: Status.SecureVersionTooLow, reason: "secure_version_too_low" });
    expect(dev.running!.image.app.secureVersion).toBe(2);
    expect(dev.ops.filter((o) => o.op === "set_boot")).toHaveLength(1); // the first install's only
    expect((await serverView(s, "dev-antirollback")).reports.find((r) => r.status === "failed")).toMatchObject({ reason: "secure_version_too_low" });
  });
});
