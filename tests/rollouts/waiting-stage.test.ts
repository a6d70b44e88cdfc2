// A device that a release targets but whose staged rollout has not reached it is told so: 404
// waiting_for_rollout_stage naming the release and the stage (or that the rollout is paused), not no_firmware;
// the operator's device view says the same, computed on request without enrolling the device.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { bucketOracle, mac, Operator, poll, report, writeMasterKey, type PollOpts } from "../helpers/fleet";
import { runOta } from "../helpers/ota-cli";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

jest.setTimeout(60_000);

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD
const V2 = "v4.1-dev-1935-g647cb62-dirty"; // HELLO_WORLD_IDF41
const asV1 = { chip: "esp32", version: V1 };

describe("a device outside its rollout's current stage", () => {
  let s: TestServer;
  let op: Operator;
  let rolloutId: string;
  let outside: string[];
  let inside: string[];
  /** inside[1]'s own key (provisioned). */
  let key: string;

  const error = async (id: string, o: PollOpts = asV1) => {
    const r = await poll(s, id, o);
    return { status: r.status, ...(r.json<{ error: { code: string; message: string } }>().error ?? {}) };
  };
  const offerOf = async (id: string) => (await op.ok("GET", `/devices/${encodeURIComponent(id)}`)).device.offer;
  const members = async () => (await op.ok("GET", `/rollouts/${rolloutId}`)).devices.total as number;

  beforeAll(async () => {
    const dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(sha(HELLO_WORLD)) && s.running.ctx.catalog.image(sha(HELLO_WORLD_IDF41)));
    await op.ok("POST", "/releases", { name: "r2", image: "app-v2.bin" });
    rolloutId = (await op.ok("POST", "/releases/r2/rollout", { stages: [10, 50, 100] })).rollout.id;
    const bucket = bucketOracle(s.dirs.data);
    const ids = Array.from({ length: 60 }, (_, i) => mac(i + 1, "cc:00:00"));
    // Outside even the 50 % stage, so they stay outside after one advance; inside the 10 % stage.
    outside = ids.filter((id) => bucket(rolloutId, id) >= 5000);
    inside = ids.filter((id) => bucket(rolloutId, id) < 1000);
    expect([outside.length >= 5, inside.length >= 2]).toEqual([true, true]);
  });
  afterAll(async () => s?.close());

  it("is answered 404 waiting_for_rollout_stage naming the release and the stage, while a device inside gets the release", async () => {
    const r = await error(outside[0]!);
    expect(r).toMatchObject({ status: 404, code: "waiting_for_rollout_stage" });
    expect(r.message).toBe(
      "release r2 is for this device, but its rollout's current stage (10 % of the devices it targets) does not include this device yet: keep polling; the release is offered when a later stage includes it",
    );
    const ok = await poll(s, inside[0]!, asV1);
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ release: "r2", version: V2 });
  });

  it("is not told so when the release is not for it: already running it, another chip, an unknown chip, another channel, no device id", async () => {
    expect(await error(outside[1]!, { chip: "esp32", version: V2 })).toMatchObject({ status: 404, code: "no_firmware", message: "no release is assigned to this device now" });
    expect(await error(outside[1]!, { chip: "esp32c3", version: V1 })).toMatchObject({ status: 404, code: "no_firmware" });
    expect(await error(outside[4]!, { version: V1 })).toMatchObject({ status: 404, code: "no_firmware", message: expect.stringMatching(/chip is unknown/) });
    expect(await error(outside[2]!)).toMatchObject({ status: 404, code: "waiting_for_rollout_stage" });
    await op.ok("PATCH", `/devices/${encodeURIComponent(outside[2]!)}`, { channel: "beta" });
    expect(await error(outside[2]!)).toMatchObject({ status: 404, code: "no_firmware" });
    const anonymous = await poll(s, null, asV1);
    expect([anonymous.status, anonymous.json().error.code]).toEqual([404, "no_firmware"]);
  });

  it("the device view says what a poll would be answered now, and looking enrolls nobody", async () => {
    // A device the registry knows (provisioned) but that never polled: offered r2 if it polled, not a member yet.
    key = (await op.ok("POST", `/devices/${encodeURIComponent(inside[1]!)}/provision`, {})).apiKey;
    await op.ok("PATCH", `/devices/${encodeURIComponent(inside[1]!)}`, { chip: "esp32" });
    const before = await members();
    expect(await offerOf(inside[1]!)).toEqual({ status: "offered", release: "r2", version: V2, sha256: sha(HELLO_WORLD_IDF41), message: null });
    expect(await offerOf(outside[0]!)).toMatchObject({ status: "waiting_for_rollout_stage", release: "r2", version: null, message: expect.stringMatching(/^release r2 is for this device.*\(10 %/) });
    expect(await offerOf(outside[2]!)).toMatchObject({ status: "no_firmware", release: null, message: "no release is assigned to this device now" });
    expect(await members()).toBe(before);
  });

  it("ota device list shows an idle device with the reason it last reported", async () => {
    await report(s, { device_id: outside[0]!, status: "idle", version: V1, reason: "waiting_for_rollout_stage" });
    const tokenFile = path.join(s.dirs.root, "admin.token");
    fs.writeFileSync(tokenFile, s.creds.operatorToken + "\n", { mode: 0o600 });
    const env = { PATH: process.env.PATH, HOME: s.dirs.root, OTA_CONFIG: path.join(s.dirs.root, "cli", "config.json") };
    expect((await runOta(env, "login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token-file", tokenFile)).status).toBe(0);
    const list = await runOta(env, "device", "list", "--search", outside[0]!);
    expect(list.stdout).toMatch(new RegExp(`^${outside[0]!}\\s+online\\s+esp32\\s+${V1.replace(/\./g, "\\.")}\\s+idle \\(waiting_for_rollout_stage\\)\\s`, "m"));
  });

  it("a paused rollout says so, to devices outside its stage and to devices of the stage it has not offered the release yet", async () => {
    await op.ok("POST", `/rollouts/${rolloutId}/pause`, { reason: "look first" });
    const paused =
      "release r2 is for this device, but its rollout is paused (at its stage of 10 %) before it reached this device: keep polling; the release is offered once the rollout is resumed and a stage includes this device";
    expect(await error(outside[0]!)).toEqual({ status: 404, code: "waiting_for_rollout_stage", message: paused });
    expect(await error(inside[1]!, { ...asV1, key })).toEqual({ status: 404, code: "waiting_for_rollout_stage", message: paused });
    // The member it was offered to keeps its offer.
    expect((await poll(s, inside[0]!, asV1)).status).toBe(200);
  });

  it("a device below the release's min_version waits for it too when the release's upgrade path reaches it", async () => {
    // "final" (V2) asks for 1.0.0 at least and leads through "step" (V1), a release of another channel.
    await op.ok("POST", "/releases", { name: "step", image: "app-v1.bin", channel: "steps" });
    await op.ok("POST", "/releases", { name: "final", image: "app-v2.bin", channel: "paths", min_version: "1.0.0", via: "step" });
    const pathRollout = (await op.ok("POST", "/releases/final/rollout", { stages: [10, 100] })).rollout.id as string;
    const bucket = bucketOracle(s.dirs.data);
    const id = Array.from({ length: 40 }, (_, i) => mac(i + 1, "dd:00:00")).find((d) => bucket(pathRollout, d) >= 1000)!;
    const old = { chip: "esp32", version: "0.9.0" };
    await poll(s, id, old);
    await op.ok("PATCH", `/devices/${encodeURIComponent(id)}`, { channel: "paths" });
    expect(await error(id, old)).toMatchObject({ status: 404, code: "waiting_for_rollout_stage", message: expect.stringMatching(/^release final is for this device/) });
  });

  it("advancing names the new stage; an aborted rollout leaves no_firmware", async () => {
    await op.ok("POST", `/rollouts/${rolloutId}/resume`);
    await op.ok("POST", `/rollouts/${rolloutId}/advance`);
    expect(await error(outside[3]!)).toMatchObject({ status: 404, code: "waiting_for_rollout_stage", message: expect.stringContaining("current stage (50 % of the devices it targets)") });
    await op.ok("POST", `/rollouts/${rolloutId}/abort`, { reason: "wrong image" });
    expect(await error(outside[3]!)).toMatchObject({ status: 404, code: "no_firmware" });
    expect(await offerOf(outside[3]!)).toMatchObject({ status: "no_firmware", release: null });
  });
});
