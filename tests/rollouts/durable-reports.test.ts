// What an acknowledged report did to a rollout survives the server being killed: the built server runs in a
// child process on one data folder and is killed with SIGKILL right after a report's 200, then started again on
// the same folder. Failures acknowledged before the kill still count toward the pause; a device that sends its
// report again after a crash gets `duplicate: true` and the report counts once; a report whose move cannot be
// written is not acknowledged at all.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { withTestDb, type TestDb } from "../helpers/database";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { mac, offered, Operator, report, writeMasterKey } from "../helpers/fleet";
import { eventually, tempDirs, type Dirs } from "../helpers/server";
import { spawnServer, type ChildServer } from "../helpers/server-process";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD
const SHA2 = sha(HELLO_WORLD_IDF41);
const asV1 = { chip: "esp32", version: V1 };

describe("rollout outcomes across a SIGKILL", () => {
  let dirs: Dirs;
  let s: ChildServer;
  let op: Operator;

  /** Kills the server (SIGKILL: nothing is flushed) or stops it (SIGTERM), then starts it again on the same folder. */
  const restart = async (signal: NodeJS.Signals, between?: (db: TestDb) => Promise<unknown>) => {
    await s.kill(signal);
    if (between) await withDb(between);
    s = await spawnServer(dirs);
    op = new Operator(s);
  };
  /** The server's database, opened as another process would. */
  const withDb = <T>(fn: (db: TestDb) => Promise<T>): Promise<T> => withTestDb(dirs, fn);
  const send = (body: Record<string, unknown>) =>
    s.req("POST", "/firmware/report", { headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const failed = (id: string, reportId: string) => ({ device_id: id, status: "failed", sha256: SHA2, reason: "write_failed", report_id: reportId });
  const rollout = (name: string) => op.ok("GET", `/rollouts/${name}`);
  /** A new release of image 2 and its rollout to every device, with this failure policy. */
  const startRollout = async (name: string, policy: Record<string, unknown>) => {
    await op.ok("POST", "/releases", { name, image: SHA2 });
    return (await op.ok("POST", `/releases/${name}/rollout`, { stages: [100], ...policy })).rollout;
  };
  /** Devices poll and are offered release 2 (each becomes a member of the newest running rollout). */
  const join = async (...ids: string[]) => {
    for (const id of ids) expect(await offered(s, id, asV1)).toBe(SHA2);
  };

  beforeAll(async () => {
    dirs = tempDirs();
    writeMasterKey(dirs);
    fs.mkdirSync(dirs.firmware, { recursive: true });
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "v2.bin"));
    s = await spawnServer(dirs);
    op = new Operator(s);
    await eventually(async () => (await op.call("GET", `/firmware/${SHA2}`)).status === 200);
  });
  afterAll(async () => {
    await s?.kill("SIGTERM");
    fs.rmSync(dirs.root, { recursive: true, force: true });
  });

  it("two failures acknowledged before a SIGKILL still count: the third, after the restart, pauses the rollout", async () => {
    await startRollout("r-kill", { max_failure_rate: 50, failure_min_sample: 3 });
    const [a, b, c] = [1, 2, 3].map((i) => mac(i, "e1:00:00"));
    await join(a!, b!);
    await report(s, failed(a!, "a-1"));
    await report(s, failed(b!, "b-1"));
    await restart("SIGKILL");

    // 2 failed of 2 finished: below the minimum sample of 3, nothing is judged yet.
    const after = await rollout("r-kill");
    expect(after.rollout.state).toBe("running");
    expect(after.devices).toMatchObject({ failed: 2 });
    await join(c!);
    await report(s, failed(c!, "c-1"));
    // The pause is written before the third report is acknowledged.
    const paused = await rollout("r-kill");
    expect(paused.rollout).toMatchObject({ state: "paused" });
    expect(paused.rollout.reason).toMatch(/failure rate 100% \(3 of 3 finished devices\) passed the 50% threshold/);
    expect(paused.devices).toMatchObject({ failed: 3 });
  });

  it("a pause that stored failures called for, but that was never written, is taken when the server starts", async () => {
    await startRollout("r-start", { max_failure_rate: 50, failure_min_sample: 2 });
    const [a, b] = [1, 2].map((i) => mac(i, "e2:00:00"));
    await join(a!, b!);
    // The pause cannot be written while this trigger is there; the reports still are, with their moves.
    await withDb((db) => db.refuse("test_no_pause", "rollouts", "UPDATE OF state", "NEW.state = 'paused'"));
    await report(s, failed(a!, "a-1"));
    await report(s, failed(b!, "b-1"));
    expect((await rollout("r-start")).rollout.state).toBe("running");
    await eventually(() => s.logs.some((l) => l.includes("rollout policy check failed")));
    await restart("SIGKILL", (db) => db.unrefuse("test_no_pause", "rollouts"));

    const after = await rollout("r-start");
    expect(after.rollout).toMatchObject({ state: "paused", reason: expect.stringMatching(/failure rate 100% \(2 of 2 finished devices\)/) });
    const audit = await op.ok("GET", `/audit?target=${after.rollout.id}&action=rollout.pause`);
    expect(audit.entries).toEqual([expect.objectContaining({ actor: "system", details: expect.objectContaining({ automatic: true }) })]);
  });

  describe("a report sent again after a crash", () => {
    const [d, f] = [1, 2].map((i) => mac(i, "e3:00:00"));
    beforeAll(async () => {
      // Thresholds that never pause, so counts can be read at leisure.
      await startRollout("r-again", { max_failure_rate: 100, max_rollback_rate: 100 });
    });

    it("is a duplicate that counts once, and an older one sent again moves nothing back", async () => {
      await join(d!);
      await report(s, { device_id: d, status: "downloading", sha256: SHA2, bytes: 0, total: 1, report_id: "d-1" });
      await report(s, failed(d!, "d-2"));
      await restart("SIGKILL");

      expect((await send(failed(d!, "d-2"))).json()).toEqual({ ok: true, duplicate: true });
      expect((await send(failed(d!, "d-2"))).json()).toEqual({ ok: true, duplicate: true });
      // The progress report came before the failure: sent again, it does not make the device installing again.
      expect((await send({ device_id: d, status: "downloading", sha256: SHA2, bytes: 0, total: 1, report_id: "d-1" })).json()).toEqual({ ok: true, duplicate: true });
      const now = await rollout("r-again");
      expect(now.devices).toMatchObject({ failed: 1, installing: 0 });
      expect(now.window).toMatchObject({ failed: 1, finished: 1 });
    });

    it("is applied when it was stored but its move was not (as a server before this one could leave it)", async () => {
      await join(f!);
      await rollout("r-again"); // writes the pending member
      const before = (await rollout("r-again")).devices;
      // Stopped, the report is put in the database the way it was stored, without its move in the rollout.
      await restart("SIGTERM", (db) =>
        db.rows("INSERT INTO reports (device_id, report_id, status, sha256, reason, received_at) VALUES (?, 'f-1', 'failed', ?, 'write_failed', ?)", [
          f,
          SHA2,
          new Date().toISOString(),
        ]),
      );
      expect((await rollout("r-again")).devices).toEqual(before);

      expect((await send(failed(f!, "f-1"))).json()).toEqual({ ok: true, duplicate: true });
      expect((await rollout("r-again")).devices).toMatchObject({ failed: before.failed + 1, offered: before.offered - 1 });
      expect((await send(failed(f!, "f-1"))).json()).toEqual({ ok: true, duplicate: true });
      const again = await rollout("r-again");
      expect(again.devices).toMatchObject({ failed: before.failed + 1, total: before.total });
      expect(again.window.failed).toBe(before.failed + 1);
    });
  });

  it("a report whose move in the rollout cannot be written is answered 503 and not stored", async () => {
    await startRollout("r-atomic", { max_failure_rate: 100, max_rollback_rate: 100 });
    const g = mac(1, "e4:00:00");
    await join(g);
    await rollout("r-atomic"); // writes the pending member: the report's move is then an update
    await withDb((db) => db.refuse("test_no_moves", "rollout_devices", "UPDATE"));
    const refused = await send(failed(g, "g-1"));
    expect(refused.status).toBe(503);
    expect(refused.json().error.code).toBe("report_not_stored");
    expect(await withDb((db) => db.rows("SELECT CAST(count(*) AS integer) AS n FROM reports WHERE device_id = ?", [g]))).toEqual([{ n: 0 }]);
    expect((await rollout("r-atomic")).devices).toMatchObject({ offered: 1, failed: 0 });

    await withDb((db) => db.unrefuse("test_no_moves", "rollout_devices"));
    expect((await send(failed(g, "g-1"))).json()).toEqual({ ok: true, duplicate: false });
    expect((await rollout("r-atomic")).devices).toMatchObject({ offered: 0, failed: 1 });
  });
});
