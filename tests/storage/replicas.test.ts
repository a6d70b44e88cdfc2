// Two server processes' worth of server (two in this test process) on one PostgreSQL database and one data and
// firmware folder: what one changes the other honours, a decision both take at once is written once, one of them
// indexes the folder and the other takes over when it stops, and a replayed nonce is refused by both. Runs in the
// "postgres" project only (tests/storage/).
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { mac, offered, Operator, poll, writeMasterKey } from "../helpers/fleet";
import { withTestDb } from "../helpers/database";
import { eventually, startTestServer, tempDirs, type Dirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const SHA1 = sha(HELLO_WORLD);
const SHA2 = sha(HELLO_WORLD_IDF41);
const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD
const asV1 = { chip: "esp32", version: V1 };

const leads = (s: TestServer) => s.logs.some((l) => l.includes("this process leads"));

describe("two server processes on one PostgreSQL database", () => {
  let dirs: Dirs;
  let a: TestServer;
  let b: TestServer;
  let opA: Operator;
  let opB: Operator;

  /** A and B; `interval` is OTA_SYNC_INTERVAL_MS (long: only notifications can tell B in time). */
  async function start(interval: number) {
    dirs = tempDirs();
    writeMasterKey(dirs);
    const env = { OTA_SYNC_INTERVAL_MS: String(interval) };
    a = await startTestServer(env, dirs);
    b = await startTestServer(env, dirs);
    opA = new Operator(a);
    opB = new Operator(b);
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "app-v2.bin"));
    for (const s of [a, b]) await eventually(() => s.running.ctx.catalog.image(SHA1) && s.running.ctx.catalog.image(SHA2), 10_000);
  }

  afterEach(async () => {
    await b?.close({ keepDirs: true });
    await a?.close();
  });

  it("one process indexes the folder; what it indexed, and a release and rollout made through it, the other serves at once (notified)", async () => {
    await start(600_000);
    expect([a, b].filter(leads)).toEqual([a]);
    expect(b.running.ctx.catalog.file("app-v2.bin")).toMatchObject({ status: "valid", sha256: SHA2 });

    await opA.ok("POST", "/releases", { name: "r1", image: "app-v1.bin", notes: "" });
    await opA.ok("POST", "/releases/r1/rollout", { stages: [100] });
    const t0 = Date.now();
    // B reloads the release and the rollout when A's commits notify it (its own check comes in ten minutes).
    await eventually(async () => (await offered(b, mac(1), { chip: "esp32" })) === SHA1, 5000);
    expect(Date.now() - t0).toBeLessThan(5000);

    // Made through B, seen by A: a pause and its reason.
    const rollout = (await opB.ok("GET", "/rollouts/r1")).rollout;
    await opB.ok("POST", "/rollouts/r1/pause", { reason: "checking something" });
    await eventually(() => a.running.ctx.rollouts.get(rollout.id)?.state === "paused");
    expect(await offered(a, mac(2), { chip: "esp32" })).toBeNull();
    // A refuses what no longer applies, however recently it heard.
    const again = await opA.call("POST", "/rollouts/r1/pause");
    expect(again.status).toBe(409);
    expect(again.json().error.code).toBe("invalid_transition");
  });

  it("a change whose notification was lost is taken at the next check (OTA_SYNC_INTERVAL_MS)", async () => {
    await start(300);
    await opA.ok("POST", "/releases", { name: "r1", image: "app-v1.bin", notes: "" });
    await opA.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await eventually(() => b.running.ctx.rollouts.get("r1")?.state === "running");
    // The pause written to the database as A would, without the NOTIFY: only the versions table says it changed.
    const id = b.running.ctx.rollouts.get("r1")!.id;
    await withTestDb(dirs, async (db) => {
      await db.rows("UPDATE rollouts SET state = 'paused', state_reason = 'lost note', version = version + 1 WHERE id = ?", [id]);
      await db.rows("UPDATE cache_versions SET version = version + 1 WHERE topic = 'rollouts'");
    });
    await eventually(() => a.running.ctx.rollouts.get(id)?.state === "paused" && b.running.ctx.rollouts.get(id)?.state === "paused", 3000);
  });

  /** Stored outcomes that call for a decision, written under both processes without telling them. */
  async function storeOutcomes(rolloutId: string, status: "succeeded" | "failed", n: number) {
    await withTestDb(dirs, async (db) => {
      for (const stage of [0, -1]) {
        await db.rows("INSERT INTO rollout_counts (rollout_id, stage, status, n) VALUES (?, ?, ?, ?)", [rolloutId, stage, status, n]);
      }
    });
  }
  const auditOf = (action: string, target: string) =>
    withTestDb(dirs, (db) => db.rows<{ details: string }>("SELECT details FROM audit_log WHERE action = ? AND target = ?", [action, target]));

  it("a stage both processes find met advances once, not twice", async () => {
    await start(600_000);
    await opA.ok("POST", "/releases", { name: "r2", image: "app-v2.bin", notes: "" });
    const id = (await opA.ok("POST", "/releases/r2/rollout", { stages: [10, 50, 100], advance: "auto", min_sample: 3, success_threshold: 90 })).rollout.id;
    await eventually(() => b.running.ctx.rollouts.get(id));
    await storeOutcomes(id, "succeeded", 5);
    // Both judge the same stored counts on the same version of the rollout at the same time (as after a report
    // to each, or two processes starting together).
    await Promise.all([a.running.ctx.rollouts.applyPolicies(), b.running.ctx.rollouts.applyPolicies()]);
    const r = await opA.ok("GET", `/rollouts/${id}`);
    expect(r.rollout.stage).toMatchObject({ index: 1, percent: 50 });
    expect(await auditOf("rollout.advance", id)).toHaveLength(1);
    await eventually(() => b.running.ctx.rollouts.get(id)?.stage === 1 && a.running.ctx.rollouts.get(id)?.stage === 1);
  });

  it("a failure rate both processes find past its threshold pauses the rollout once", async () => {
    await start(600_000);
    await opA.ok("POST", "/releases", { name: "r2", image: "app-v2.bin", notes: "" });
    const id = (await opA.ok("POST", "/releases/r2/rollout", { stages: [10, 100], max_failure_rate: 20, failure_min_sample: 3 })).rollout.id;
    await eventually(() => b.running.ctx.rollouts.get(id));
    await storeOutcomes(id, "failed", 4);
    await Promise.all([b.running.ctx.rollouts.applyPolicies(), a.running.ctx.rollouts.applyPolicies()]);
    expect(await auditOf("rollout.pause", id)).toHaveLength(1);
    expect((await opB.ok("GET", `/rollouts/${id}`)).rollout).toMatchObject({ state: "paused" });
  });

  it("a manifest request replayed to the other process is refused", async () => {
    await start(600_000);
    await opA.ok("POST", "/releases", { name: "r1", image: "app-v1.bin", notes: "" });
    await opA.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await eventually(() => b.running.ctx.rollouts.get("r1"));
    const headers = { "X-API-Key": a.creds.deviceApiKey, "X-Device-Id": mac(7), "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32" };
    expect((await a.req("GET", "/firmware/manifest", { headers })).status).toBe(200);
    const replayed = await b.req("GET", "/firmware/manifest", { headers });
    expect(replayed.status).toBe(409);
    expect(replayed.json().error.code).toBe("nonce_reused");
    // A fresh nonce is fine on either.
    expect((await poll(b, mac(7), asV1)).status).toBe(200);
  });

  it("when the leader stops, the other process takes over indexing the folder", async () => {
    await start(300);
    expect([a, b].filter(leads)).toEqual([a]);
    await a.running.close(); // afterEach closes the rest of it
    await eventually(() => leads(b), 5000);
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "late.bin"));
    await eventually(() => b.running.ctx.catalog.file("late.bin")?.status === "valid", 10_000);
  });
});
