// A rollout's counts are a table kept in the transactions that write its members (no count over every member
// when its status is asked or its policy judged). Whatever offers, moves, duplicates and resumes happen, the
// counts equal a count of the members; a report and its count are stored together or not at all; a data folder
// from before the counts existed gets them from its members.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chooseImage } from "../../server/domain/releases/offer";
import { RolloutManager } from "../../server/domain/rollouts/rollout-manager";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { onPostgres, openTestDb, type TestDb } from "../helpers/database";
import { mac, offered, Operator, report, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type Dirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";
const SHA2 = sha(HELLO_WORLD_IDF41);
const asV1 = { chip: "esp32", version: V1 };

type Row = { stage: number; status: string; n: number };
const sorted = (rows: Row[]) => [...rows].sort((a, b) => a.stage - b.stage || a.status.localeCompare(b.status));

describe("rollout counts", () => {
  let dirs: Dirs;
  let s: TestServer;
  let op: Operator;
  let rolloutId: string;

  /** The server's database, opened as another process would (on whichever backend the test runs). */
  const withDb = async <T>(fn: (db: TestDb) => Promise<T>): Promise<T> => {
    const db = await openTestDb(dirs);
    try {
      return await fn(db);
    } finally {
      await db.close();
    }
  };
  /** The counts kept, and the same counts made from the members themselves. */
  const both = () =>
    withDb(async (db) => ({
      kept: sorted(await db.rows<Row>("SELECT stage, status, n FROM rollout_counts WHERE rollout_id = ? AND n <> 0", [rolloutId])),
      members: sorted([
        ...(await db.rows<Row>("SELECT stage, status, CAST(count(*) AS integer) AS n FROM rollout_devices WHERE rollout_id = ? GROUP BY stage, status", [rolloutId])),
        ...(await db.rows<Row>(
          `SELECT -1 AS stage, d.status, CAST(count(*) AS integer) AS n FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id
           WHERE d.rollout_id = ? AND d.status IN ('succeeded', 'failed', 'rolled_back') AND d.finished_at >= r.window_started_at
           GROUP BY d.status`,
          [rolloutId],
        )),
      ]),
    }));
  const expectCountsTrue = async () => {
    const { kept, members } = await both();
    expect(kept).toEqual(members);
    return kept;
  };
  const status = () => op.ok("GET", "/rollouts/r2");
  const send = (body: Record<string, unknown>) =>
    s.req("POST", "/firmware/report", { headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const fleet = Array.from({ length: 12 }, (_, i) => mac(i + 1, "c0:00:00"));

  beforeAll(async () => {
    dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2) && s.running.ctx.catalog.imageByName("v1.bin"));
    await op.ok("POST", "/releases", { name: "r2", image: "v2.bin" });
    rolloutId = (await op.ok("POST", "/releases/r2/rollout", { stages: [100], max_failure_rate: 100, max_rollback_rate: 100 })).rollout.id;
  });
  afterAll(async () => s.close());

  it("every offer and every move counts once: the counts always equal a count of the members", async () => {
    for (const id of fleet) expect(await offered(s, id, asV1)).toBe(SHA2);
    // Polling again makes no second member.
    for (const id of fleet.slice(0, 4)) expect(await offered(s, id, asV1)).toBe(SHA2);
    expect((await status()).devices).toMatchObject({ total: 12, offered: 12 });
    expect(await expectCountsTrue()).toEqual([{ stage: 0, status: "offered", n: 12 }]);

    const [a, b, c, d] = fleet;
    await report(s, { device_id: a, status: "downloading", sha256: SHA2, bytes: 0, total: 1, report_id: "a-1" });
    await report(s, { device_id: a, status: "confirmed", version: V2, report_id: "a-2" });
    await report(s, { device_id: b, status: "failed", sha256: SHA2, reason: "write_failed", report_id: "b-1" });
    await report(s, { device_id: c, status: "rolled_back", sha256: SHA2, report_id: "c-1" });
    await report(s, { device_id: d, status: "downloading", sha256: SHA2, bytes: 0, total: 1, report_id: "d-1" });
    expect(await expectCountsTrue()).toEqual([
      { stage: -1, status: "failed", n: 1 },
      { stage: -1, status: "rolled_back", n: 1 },
      { stage: -1, status: "succeeded", n: 1 },
      { stage: 0, status: "failed", n: 1 },
      { stage: 0, status: "installing", n: 1 },
      { stage: 0, status: "offered", n: 8 },
      { stage: 0, status: "rolled_back", n: 1 },
      { stage: 0, status: "succeeded", n: 1 },
    ]);

    // Reports sent again move nothing and count nothing.
    expect((await send({ device_id: b, status: "failed", sha256: SHA2, reason: "write_failed", report_id: "b-1" })).json()).toEqual({ ok: true, duplicate: true });
    expect((await send({ device_id: a, status: "confirmed", version: V2, report_id: "a-2" })).json()).toEqual({ ok: true, duplicate: true });
    // A success that fails later leaves the success count and joins the failures, in the stage and the window.
    await report(s, { device_id: a, status: "failed", sha256: SHA2, reason: "crashed", report_id: "a-3" });
    const now = await status();
    expect(now.devices).toMatchObject({ total: 12, offered: 8, installing: 1, succeeded: 0, failed: 2, rolled_back: 1 });
    expect(now.window).toMatchObject({ succeeded: 0, failed: 2, rolledBack: 1, finished: 3 });
    await expectCountsTrue();
  });

  it("a move of a member not yet written counts it once; its offer written afterwards adds nothing", async () => {
    const e = mac(100, "c0:00:00");
    expect(await offered(s, e, asV1)).toBe(SHA2);
    // The offer waits to be written (within a second); the failure writes the member first.
    await report(s, { device_id: e, status: "failed", sha256: SHA2, reason: "write_failed", report_id: "e-1" });
    await s.running.ctx.rollouts.flush();
    const now = await status();
    expect(now.devices).toMatchObject({ total: 13, offered: 8, failed: 3 });
    await expectCountsTrue();
  });

  it("without a synchronous reader (as on an asynchronous database) membership and the offer come as promises, with the same answers", async () => {
    const ctx = s.running.ctx;
    await ctx.rollouts.flush();
    const viaKysely = new RolloutManager(ctx.store.db, ctx.releases, ctx.audit, ctx.credentials.rolloutBucketKey(), ctx.log);
    await viaKysely.load();
    const outsider = mac(999, "c0:00:00");
    const before = (await status()).devices.total;
    for (const id of [fleet[0]!, fleet[1]!, outsider]) {
      const served = ctx.rollouts.membership(id);
      const later = viaKysely.membership(id);
      // SQLite answers the poll path synchronously, from its read-only connection; PostgreSQL cannot.
      if (!onPostgres()) expect(served).not.toBeInstanceOf(Promise);
      expect(later).toBeInstanceOf(Promise);
      expect((await later)(rolloutId)).toBe((await served)(rolloutId));
    }
    expect((await viaKysely.membership(outsider))(rolloutId)).toBeUndefined();
    expect((await viaKysely.membership(fleet[1]!))(rolloutId)).toBe("failed");
    for (const id of [fleet[0]!, outsider]) {
      const asker = { deviceId: id, chip: "esp32", version: V1, row: (await ctx.devices.get(id)) ?? null };
      const offer = chooseImage({ ...ctx, rollouts: viaKysely }, asker);
      expect(offer).toBeInstanceOf(Promise);
      expect((await offer)?.sha256).toBe(SHA2);
      expect((await chooseImage(ctx, asker))?.sha256).toBe(SHA2);
    }
    // Both made the outsider a member, as two processes on one database would: it is written, and counted, once.
    await Promise.all([viaKysely.flush(), ctx.rollouts.flush()]);
    expect((await status()).devices.total).toBe(before + 1);
    await expectCountsTrue();
    await viaKysely.close();
  });

  it("a report and its count are one transaction: when the count cannot be written, nothing of the report is", async () => {
    const f = fleet[5]!;
    const before = (await status()).devices;
    await withDb((db) => db.refuse("test_no_counts", "rollout_counts", "UPDATE"));
    const refused = await send({ device_id: f, status: "failed", sha256: SHA2, reason: "write_failed", report_id: "f-1" });
    expect(refused.status).toBe(503);
    expect(await withDb((db) => db.rows("SELECT CAST(count(*) AS integer) AS n FROM reports WHERE device_id = ?", [f]))).toEqual([{ n: 0 }]);
    expect(await withDb((db) => db.rows("SELECT status FROM rollout_devices WHERE rollout_id = ? AND device_id = ?", [rolloutId, f]))).toEqual([{ status: "offered" }]);
    expect((await status()).devices).toEqual(before);
    await expectCountsTrue();

    await withDb((db) => db.unrefuse("test_no_counts", "rollout_counts"));
    expect((await send({ device_id: f, status: "failed", sha256: SHA2, reason: "write_failed", report_id: "f-1" })).json()).toEqual({ ok: true, duplicate: false });
    expect((await status()).devices).toMatchObject({ failed: before.failed + 1, offered: before.offered - 1 });
    await expectCountsTrue();
  });

  it("a resume starts the window from nothing; the stages keep their counts", async () => {
    const before = await status();
    await op.ok("POST", "/rollouts/r2/pause");
    await op.ok("POST", "/rollouts/r2/resume");
    const resumed = await status();
    expect(resumed.window).toMatchObject({ succeeded: 0, failed: 0, rolledBack: 0, finished: 0 });
    expect(resumed.devices).toEqual(before.devices);
    await report(s, { device_id: fleet[6], status: "failed", sha256: SHA2, reason: "write_failed", report_id: "g-1" });
    expect((await status()).window).toMatchObject({ failed: 1, finished: 1 });
    await expectCountsTrue();
  });

  it("a data folder from before the counts existed gets them from its members when the server starts", async () => {
    const kept = await expectCountsTrue();
    await s.close({ keepDirs: true });
    // The database as the migrations before the counts left it (the members are all there).
    await withDb(async (db) => {
      for (const t of ["nonces", "cache_versions"]) await db.rows(`DROP TABLE ${t}`);
      await db.rows("ALTER TABLE rollouts DROP COLUMN version");
      await db.rows("DELETE FROM kysely_migration WHERE name = ?", ["0006_replicas"]);
      await db.rows("DROP TABLE rollout_counts");
      for (const i of ["devices_version", "devices_state", "devices_last_seen", "audit_log_target", "audit_log_actor"]) await db.rows(`DROP INDEX ${i}`);
      await db.rows("DELETE FROM kysely_migration WHERE name = ?", ["0005_rollout_counts_and_filters"]);
    });
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    expect(await expectCountsTrue()).toEqual(kept);
  });
});
