// The report log on its own, over the real store (SQLite, or PostgreSQL in the postgres project): how reports are
// grouped into commits, what a failed commit leaves behind, and what a report stores beside its status.
import fs from "node:fs";
import pino from "pino";
import { DeviceRegistry } from "../../server/domain/devices/registry";
import type { ReportEffect, StoredReport } from "../../server/domain/devices/reports";
import { openStore, type Store } from "../../server/infra/store/db";
import { dropDatabase, ensureDatabase, storageEnv } from "../helpers/database";
import { eventually, tempDirs, type Dirs } from "../helpers/server";

const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * An effect that records the batches it is given and holds the first one's transaction open until `release()`;
 * `mostOpen` is the most transactions it saw open at once, `secondWrite` settles when a second batch arrives.
 */
function gatedEffect() {
  let open = 0;
  let release!: () => void;
  let secondBegun!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const batches: string[][] = [];
  const seen = { mostOpen: 0 };
  const effect: ReportEffect = {
    async write(_trx, reports: readonly StoredReport[]) {
      open++;
      seen.mostOpen = Math.max(seen.mostOpen, open);
      batches.push(reports.map((r) => r.deviceId));
      if (batches.length === 2) secondBegun();
      if (batches.length === 1) await gate;
      open--;
      return () => Promise.resolve();
    },
  };
  return {
    effect,
    batches,
    get mostOpen() {
      return seen.mostOpen;
    },
    release: () => release(),
    secondWrite: new Promise<void>((r) => (secondBegun = r)),
  };
}

describe("device reports", () => {
  let dirs: Dirs;
  let store: Store;
  let registry: DeviceRegistry;
  let logged: { level: number; msg: string; reports?: number; err?: { message: string } }[];

  beforeEach(async () => {
    dirs = tempDirs();
    fs.mkdirSync(dirs.data, { recursive: true });
    await ensureDatabase(dirs);
    logged = [];
    const log = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    const url = storageEnv(dirs).OTA_DATABASE_URL;
    store = await openStore(dirs.data, log, url ? { url, poolSize: 4 } : null);
    // Sightings are written only when flushed: the tests decide when.
    registry = new DeviceRegistry(store.db, log, 60_000, 60_000, store.sqlite && store.reader ? { writer: store.sqlite, reader: store.reader } : undefined);
  });
  afterEach(async () => {
    await store.close();
    await dropDatabase(dirs);
    fs.rmSync(dirs.root, { recursive: true, force: true });
  });

  it("reports that come while a commit is on its way go together into the next one, never into a second transaction at once", async () => {
    const g = gatedEffect(); // the first commit stays open while the others arrive
    registry.setReportEffect(g.effect);
    const first = registry.recordReport({ deviceId: "d1", status: "downloading" });
    await eventually(() => g.batches.length === 1);
    const later: Promise<{ duplicate: boolean }>[] = [];
    for (const id of ["d2", "d3", "d4"]) {
      later.push(registry.recordReport({ deviceId: id, status: "downloading" }));
      // Turns of the event loop between them: each would have been committed alone had nothing been on its way.
      await turn();
      await turn();
    }
    expect(g.batches).toEqual([["d1"]]);
    g.release();
    await expect(Promise.all([first, ...later])).resolves.toEqual(Array(4).fill({ duplicate: false }));
    expect(g.batches).toEqual([["d1"], ["d2", "d3", "d4"]]);
    expect(g.mostOpen).toBe(1);
  });

  it("closing while a commit is on its way waits for it, then commits what queued meanwhile, one transaction at a time", async () => {
    const g = gatedEffect();
    registry.setReportEffect(g.effect);
    const first = registry.recordReport({ deviceId: "c1", status: "downloading" });
    await eventually(() => g.batches.length === 1);
    const second = registry.recordReport({ deviceId: "c2", status: "downloading" });
    let closed = false;
    const closing = registry.close().then(() => (closed = true));
    // What must not happen (a second transaction beside the open one) has no event to wait for: give it time.
    await Promise.race([g.secondWrite, new Promise((r) => setTimeout(r, 300))]);
    expect(closed).toBe(false);
    g.release();
    await closing;
    await expect(Promise.all([first, second])).resolves.toEqual([{ duplicate: false }, { duplicate: false }]);
    expect(g.batches).toEqual([["c1"], ["c2"]]);
    expect(g.mostOpen).toBe(1);
    expect((await registry.reports("c2", { limit: 10 })).map((r) => r.status)).toEqual(["downloading"]);
  });

  it("closing waits for a commit on its way even when nothing more is queued", async () => {
    const g = gatedEffect();
    registry.setReportEffect(g.effect);
    const only = registry.recordReport({ deviceId: "w1", status: "failed", error: "boom" });
    await eventually(() => g.batches.length === 1);
    let closed = false;
    const closing = registry.close().then(() => (closed = true));
    await turn();
    await turn();
    expect(closed).toBe(false);
    g.release();
    await closing;
    await expect(only).resolves.toEqual({ duplicate: false });
    expect((await registry.reports("w1", { limit: 10 })).map((r) => r.status)).toEqual(["failed"]);
  });

  it("a commit that fails stores nothing of its reports, rejects each and says so in the log", async () => {
    registry.setReportEffect({
      write: () => Promise.reject(new Error("the effect could not be written")),
    });
    const a = registry.recordReport({ deviceId: "f1", status: "failed", error: "boom" });
    const b = registry.recordReport({ deviceId: "f2", status: "confirmed", version: "v2" });
    await expect(a).rejects.toThrow("the effect could not be written");
    await expect(b).rejects.toThrow("the effect could not be written");
    expect(await registry.reports("f1", { limit: 10 })).toEqual([]);
    expect(await registry.get("f2")).toBeUndefined();
    const line = logged.find((l) => l.msg === "could not store device reports");
    expect(line).toMatchObject({ level: 50, reports: 2, err: { message: "the effect could not be written" } });
  });

  it("what follows a stored report may fail: the report is acknowledged and kept, and the failure logged", async () => {
    registry.setReportEffect({
      write: () => Promise.resolve(() => Promise.reject(new Error("the rollout could not decide"))),
    });
    await expect(registry.recordReport({ deviceId: "g1", status: "failed", error: "boom" })).resolves.toEqual({ duplicate: false });
    expect((await registry.reports("g1", { limit: 10 })).map((r) => r.status)).toEqual(["failed"]);
    const line = logged.find((l) => l.msg === "what follows from stored reports failed");
    expect(line).toMatchObject({ level: 50, reports: 1, err: { message: "the rollout could not decide" } });
  });

  it("a version reported wins over the poll before it that said the old one, though that poll is written later", async () => {
    // The device polled saying v1 (written behind), then updated and reported v2 before the poll was written.
    registry.seen("h1", { version: "v1", chip: "esp32" });
    await registry.recordReport({ deviceId: "h1", status: "confirmed", version: "v2" });
    await registry.flush();
    expect(await registry.get("h1")).toMatchObject({ version: "v2", chip: "esp32", state: "confirmed" });
    // A report that says no version leaves the poll's version to be written.
    registry.seen("h2", { version: "v1", chip: "esp32" });
    await registry.recordReport({ deviceId: "h2", status: "downloading", bytes: 0, total: 10 });
    await registry.flush();
    expect(await registry.get("h2")).toMatchObject({ version: "v1", state: "downloading" });
  });

  it("stores the sender's address with the report and as the device's last, keeping the last one known when a report has none", async () => {
    await registry.recordReport({ deviceId: "i1", status: "downloading", ip: "203.0.113.7" });
    expect(await registry.get("i1")).toMatchObject({ last_ip: "203.0.113.7" });
    await registry.recordReport({ deviceId: "i1", status: "verifying" });
    expect(await registry.get("i1")).toMatchObject({ last_ip: "203.0.113.7", state: "verifying" });
    expect((await registry.reports("i1", { limit: 10 })).map((r) => [r.status, r.remote_ip])).toEqual([
      ["verifying", null],
      ["downloading", "203.0.113.7"],
    ]);
  });
});
