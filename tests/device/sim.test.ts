// `npm run device:sim`: emulated devices against a server, one JSON line per state change, --once exits
// with the outcome.
import fs from "node:fs";
import path from "node:path";
import { runSim } from "../../device/host/sim";
import { provisionDevice } from "../../server/domain/devices/provisioning";
import { HELLO_VERSION, offerHelloWorld, SERVER_ENV, serverView } from "../helpers/device";
import { SIGNED_KEYS_DIR } from "../helpers/fixtures";
import { Operator } from "../helpers/fleet";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(60_000);

describe("npm run device:sim", () => {
  let s: TestServer;
  let out: string[];
  let err: string[];
  let spies: jest.SpyInstance[];

  const provisioned = async (id: string) => {
    const file = path.join(s.dirs.root, `${id.replace(/:/g, "")}.json`);
    fs.writeFileSync(file, JSON.stringify(await provisionDevice(s.running.ctx, id, {})));
    return file;
  };
  const lines = () => out.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l));

  beforeAll(async () => {
    s = await startTestServer(SERVER_ENV);
    await offerHelloWorld(s);
    fs.writeFileSync(path.join(s.dirs.root, "ca.crt"), s.ca);
  });
  beforeEach(() => {
    out = [];
    err = [];
    spies = [
      jest.spyOn(process.stdout, "write").mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true)),
      jest.spyOn(process.stderr, "write").mockImplementation((c: string | Uint8Array) => (err.push(String(c)), true)),
    ];
  });
  afterEach(() => spies.forEach((x) => x.mockRestore()));
  afterAll(async () => s.close());

  it("--once takes two devices from their factory image to the offered one and exits 0 when both are confirmed", async () => {
    const a = await provisioned("24:6f:28:00:00:01");
    const b = await provisioned("24:6f:28:00:00:02");
    const ca = path.join(s.dirs.root, "ca.crt");
    const code = await runSim(["--server", s.url, "--ca", ca, "--device", a, "--device", b, "--once", "--clock", "10", "--timeout", "45"]);
    expect({ code, stderr: err.join("").slice(-3000) }).toMatchObject({ code: 0 }); // stderr shown if not
    const ls = lines();
    expect(ls.every((l) => typeof l.time === "string" && typeof l.device === "string")).toBe(true);
    for (const id of ["24:6f:28:00:00:01", "24:6f:28:00:00:02"]) {
      const states = ls.filter((l) => l.device === id && l.state).map((l) => l.state);
      expect(states).toEqual(expect.arrayContaining(["boot", "downloading", "verifying", "rebooting", "confirming", "confirmed"]));
      expect(ls.filter((l) => l.device === id && l.event === "boot").map((l) => l.slot)).toEqual(["app0", "app1"]);
      expect((await serverView(s, id)).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
    }
  });

  it("--once exits non-zero when the device refuses the offer, saying why", async () => {
    const f = await provisioned("24:6f:28:00:00:03");
    const code = await runSim(["--server", s.url, "--ca", path.join(s.dirs.root, "ca.crt"), "--device", f, "--once", "--factory-version", "v9.9.9", "--clock", "10"]);
    expect(code).toBe(1);
    expect(lines().find((l) => l.state === "rejected")).toMatchObject({ reason: "downgrade_refused" });
    expect(err.join("")).toMatch(/rejected \(downgrade_refused\)/);
  });

  it("--trusted-key and --secure-boot: the signed factory image boots, the server's unsigned offer is refused natively (signature_invalid)", async () => {
    const f = await provisioned("24:6f:28:00:00:04");
    const pub = path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pub.pem");
    const key = path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pem");
    const code = await runSim(["--server", s.url, "--ca", path.join(s.dirs.root, "ca.crt"), "--device", f, "--once", "--clock", "10", "--trusted-key", pub, "--secure-boot", "--factory-key", key]);
    expect(code).toBe(1);
    expect(lines().filter((l) => l.event === "boot").map((l) => l.slot)).toEqual(["app0"]);
    expect(lines().find((l) => l.state === "failed")).toMatchObject({ reason: "signature_invalid" });
    expect(err.join("")).toMatch(/failed \(signature_invalid\).*unsigned/);
  });

  it("--secure-boot without a factory image it can boot is refused before anything starts (exit 2)", async () => {
    const f = await provisioned("24:6f:28:00:00:05");
    const pub = path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pub.pem");
    const other = path.join(SIGNED_KEYS_DIR, "release-rsa3072.pem");
    const base = ["--server", s.url, "--device", f, "--once"];
    expect(await runSim([...base, "--trusted-key", pub, "--secure-boot"])).toBe(2);
    expect(err.join("")).toMatch(/--secure-boot needs --factory-key/);
    expect(await runSim([...base, "--trusted-key", pub, "--secure-boot", "--factory-key", other])).toBe(2);
    expect(err.join("")).toMatch(/is not one of the --trusted-key keys/);
    expect(await runSim([...base, "--trusted-key", path.join(s.dirs.root, "none.pem")])).toBe(2);
    expect(err.join("")).toMatch(/--trusted-key .*none\.pem/);
    expect(lines().filter((l) => l.event === "boot")).toEqual([]);
  });

  it("a device its release's rollout has not reached yet shows idle, waiting_for_rollout_stage, and takes the release once a stage includes it", async () => {
    const t = await startTestServer(SERVER_ENV);
    try {
      const op = new Operator(t);
      await offerHelloWorld(t);
      await op.ok("POST", "/releases", { name: "hello", image: "hello_world.bin" });
      const rollout = (await op.ok("POST", "/releases/hello/rollout", { stages: [10, 100] })).rollout.id as string;
      const id = Array.from({ length: 50 }, (_, i) => `24:6f:28:00:01:${i.toString(16).padStart(2, "0")}`).find(
        (x) => t.running.ctx.rollouts.bucket(rollout, x) >= 1000,
      )!;
      const file = path.join(t.dirs.root, "device.json");
      fs.writeFileSync(file, JSON.stringify(await provisionDevice(t.running.ctx, id, { chip: "esp32" })));
      fs.writeFileSync(path.join(t.dirs.root, "ca.crt"), t.ca);
      const args = ["--server", t.url, "--ca", path.join(t.dirs.root, "ca.crt"), "--device", file, "--clock", "10"];

      const ac = new AbortController();
      const running = runSim(args, { signal: ac.signal });
      await eventually(() => lines().some((l) => l.state === "idle" && l.reported === true), 30_000);
      ac.abort();
      expect(await running).toBe(0);
      expect(lines().find((l) => l.state === "idle")).toMatchObject({ device: id, reason: "waiting_for_rollout_stage", version: "v1.0.0" });
      expect(err.join("")).toContain(`device:sim: ${id}: waiting for its rollout stage: a release is for this device`);
      const view = (await serverView(t, id)).device;
      expect(view).toMatchObject({ state: "idle", state_detail: "waiting_for_rollout_stage" });
      expect(view.offer).toMatchObject({ status: "waiting_for_rollout_stage", release: "hello", message: expect.stringContaining("current stage (10 %") });

      // --once waits for the device until --timeout, and then says why it did not finish.
      expect(await runSim([...args, "--once", "--timeout", "3"])).toBe(1);
      expect(err.join("")).toContain(`timed out after 3 s without every device confirmed (${id} is idle: waiting_for_rollout_stage)`);

      await op.ok("POST", `/rollouts/${rollout}/advance`);
      out.length = 0;
      expect(await runSim([...args, "--once", "--timeout", "45"])).toBe(0);
      expect((await serverView(t, id)).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
    } finally {
      await t.close();
    }
  });

  it("explains a bad provisioning file or missing arguments (exit 2)", async () => {
    const bad = path.join(s.dirs.root, "bad.json");
    fs.writeFileSync(bad, JSON.stringify({ deviceId: "x", apiKey: "k", hmacKey: "nothex" }));
    expect(await runSim(["--server", s.url, "--device", bad, "--once"])).toBe(2);
    expect(err.join("")).toMatch(/hmacKey must be 64 hex digits/);
    expect(await runSim(["--once"])).toBe(2);
    expect(await runSim(["--device", path.join(s.dirs.root, "missing.json")])).toBe(2);
    expect(err.join("")).toMatch(/ota device provision/);
  });
});
