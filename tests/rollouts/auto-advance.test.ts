// A rollout that advances itself stage by stage once each stage's success rate over its minimum sample
// reaches the threshold (judged before the report that finishes a device is answered), completes, and keeps its
// state and members across a restart.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { bucketOracle, inParallel, mac, offered, Operator, report, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type Dirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";
const SHA1 = sha(HELLO_WORLD);
const SHA2 = sha(HELLO_WORLD_IDF41);

describe("automatic advance", () => {
  let dirs: Dirs;
  let s: TestServer;
  let op: Operator;
  const fleet = Array.from({ length: 60 }, (_, i) => mac(i + 1, "ad:00:00"));
  const asV1 = { chip: "esp32", version: V1 };
  const rollout = async () => (await op.ok("GET", "/rollouts/r2")).rollout;
  /** Every device polls; those offered release 2 install it and confirm. Returns how many did. */
  const pollAndInstall = async () => {
    const got = await inParallel(fleet, 8, async (id) => [id, await offered(s, id, asV1)] as const);
    const takers = got.filter(([, h]) => h === SHA2).map(([id]) => id);
    for (const id of takers) {
      await report(s, { device_id: id, status: "downloading", sha256: SHA2, bytes: 0, total: 1 });
      await report(s, { device_id: id, status: "confirmed", version: V2 });
    }
    return takers;
  };

  beforeAll(async () => {
    dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2) && s.running.ctx.catalog.imageByName("v1.bin"));
    await op.ok("POST", "/releases", { name: "r1", image: "v1.bin" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await op.ok("POST", "/rollouts/r1/advance");
    await op.ok("POST", "/releases", { name: "r2", image: "v2.bin" });
  });
  afterAll(async () => s.close());

  it("advances through 20 % → 60 % → 100 % as each stage reaches 90 % success over 3 devices, then completes", async () => {
    const started = await op.ok("POST", "/releases/r2/rollout", { stages: [20, 60, 100], advance: "auto", success_threshold: 90, min_sample: 3 });
    const bucket = bucketOracle(dirs.data);
    const id = started.rollout.id;
    const expectAt20 = fleet.filter((d) => bucket(id, d) < 2000);
    expect(expectAt20.length).toBeGreaterThanOrEqual(3);
    expect((await pollAndInstall()).sort()).toEqual(expectAt20.sort());
    await eventually(async () => (await rollout()).stage.percent === 60);
    // The first stage's devices are still offered what they now run; the new ones are exactly the next 40 %.
    const second = await pollAndInstall();
    expect(second.sort()).toEqual(fleet.filter((d) => bucket(id, d) < 6000).sort());
    await eventually(async () => (await rollout()).stage.percent === 100);
    await pollAndInstall();
    await eventually(async () => (await rollout()).state === "completed");
    // Every device was offered it while the rollout ran; counting ends when it completes.
    const status = await op.ok("GET", "/rollouts/r2");
    expect(status.devices).toMatchObject({ total: fleet.length, failed: 0, rolled_back: 0 });
    expect(status.devices.succeeded).toBeGreaterThanOrEqual(second.length + 3);
    const audit = (await op.ok("GET", "/audit?target=" + id)).entries.map((e: any) => `${e.actor}:${e.action}`);
    expect(audit).toEqual(["system:rollout.complete", "system:rollout.advance", "system:rollout.advance", "admin:rollout.start"]);
  });

  it("a stage advances once its minimum sample has finished, not one device before, even at 100 % success", async () => {
    await op.ok("POST", "/releases", { name: "r3", image: "v1.bin", allow_downgrade: true });
    await op.ok("POST", "/releases/r3/rollout", { stages: [50, 100], advance: "auto", success_threshold: 100, min_sample: 4 });
    // The fleet runs release 2 now; release 3 takes the devices of its 50 % stage back to release 1.
    const got = await inParallel(fleet, 8, async (id) => [id, await offered(s, id, { chip: "esp32", version: V2 })] as const);
    const takers = got.filter(([, h]) => h === SHA1).map(([id]) => id);
    expect(takers.length).toBeGreaterThan(4);
    const install = async (id: string) => {
      await report(s, { device_id: id, status: "downloading", sha256: SHA1, bytes: 0, total: 1 });
      await report(s, { device_id: id, status: "confirmed", version: V1 });
    };
    for (const id of takers.slice(0, 3)) await install(id);
    // Every one of them succeeded, but 3 finished devices are one short of the sample: the policy, judged before
    // each report was answered, holds the stage.
    const held = await op.ok("GET", "/rollouts/r3");
    expect(held.rollout).toMatchObject({ state: "running", stage: { percent: 50 } });
    expect(held.stages[0]).toMatchObject({ succeeded: 3, failed: 0 });
    await install(takers[3]!);
    expect((await op.ok("GET", "/rollouts/r3")).rollout.stage.percent).toBe(100);
  });

  it("state, stage and members survive a restart", async () => {
    const before = await op.ok("GET", "/rollouts/r3");
    await s.close({ keepDirs: true });
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    const after = await op.ok("GET", "/rollouts/r3");
    expect(after.rollout).toEqual(before.rollout);
    expect(after.devices).toEqual(before.devices);
    expect((await op.ok("GET", "/rollouts/r2")).rollout.state).toBe("completed");
  });
});
