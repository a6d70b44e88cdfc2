// A million devices: `npm run bench:scale` (builds first; `--devices N` for another fleet size, `--keep` keeps
// the work folder). Makes a data folder with N provisioned devices, every one a member of a running rollout
// (rows inserted directly, in the shape the server writes them), starts the built server on it as a child
// process and measures what the fleet's size could make slow: the start (time to listen, memory after it), the
// rollout's status and its abort, every device-list filter and the audit log by target, each while a steady
// poller asks for its manifest beside them, whose worst latency says whether operator requests hold polls up.
// Progress on stderr, a table on stdout, then one JSON line.
//
// `--backend postgres` does the same on PostgreSQL: a database of its own on OTA_BENCH_DATABASE_URL (an admin URL
// on which the bench may create databases) or else on a throwaway cluster started for the run, filled with
// multi-row inserts (unnest of arrays, 50,000 rows a statement) and analyzed, then dropped after.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { Agent, request } from "undici";
import { loadConfig } from "../server/infra/config/config";
import { createLogger } from "../server/infra/logging/logger";
import { projectRoot } from "../server/paths";
import { openContextParts } from "../server/server";
import type SqliteDatabase from "better-sqlite3";
import { benchFolders } from "./fleet";
import { createDatabase, dropDatabase, startCluster, stopCluster, type Cluster } from "./postgres";
import { rssKiB, startServerProcess, type ServerProcess } from "./processes";

const V1 = "v1.4.1-2-g0296947-dirty"; // esp32_hello_world_idf5.2.2.bin: what the fleet runs
const TARGETS = { start_s: 3, rss_mib: 250, request_ms: 100, poll_delay_ms: 50 };
/**
 * Operator requests are each made this many times; the figure is the median (the machine is shared: a neighbour
 * only ever slows a request), and the slowest is reported beside it.
 */
const REPEAT = 5;
/** Seconds the poller runs alone first: the worst poll then is the machine's own noise, the reference for the rest. */
const ALONE_S = 3;
const POLL_EVERY_MS = 5;

type Json = Record<string, unknown>;
interface RolloutStatus {
  rollout: { id: string; state: string };
  devices: { total: number };
}

const say = (msg: string) => process.stderr.write(`[scale] ${msg}\n`);

function args(argv: string[]) {
  let devices = 1_000_000;
  let keep = false;
  let backend: "sqlite" | "postgres" = "sqlite";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--devices") {
      devices = Number(argv[++i]);
      if (!Number.isInteger(devices) || devices < 100) throw new Error("--devices needs a whole number of at least 100");
    } else if (a === "--keep") keep = true;
    else if (a === "--backend") {
      const v = argv[++i];
      if (v !== "sqlite" && v !== "postgres") throw new Error(`--backend takes sqlite or postgres, got ${v}`);
      backend = v;
    } else throw new Error(`unknown option ${a} (known: --devices N, --backend sqlite|postgres, --keep)`);
  }
  return { devices, keep, backend };
}

/** A MAC-style id, as ESP32 devices use (24:0a:c4 is an Espressif prefix); in id order as i grows. */
const deviceId = (i: number) => {
  const hex = i.toString(16).padStart(6, "0");
  return `24:0a:c4:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
};

/** What each device looks like: spread over groups, tags, channels, states and rollout statuses. */
function shape(i: number) {
  const status = i % 1000 === 7 ? "failed" : i % 100 === 3 ? "succeeded" : i % 100 === 5 ? "installing" : "offered";
  return {
    group: `g${i % 100}`,
    tag: `site-${i % 20}`,
    rare: i % 100_003 === 11, // about 10 per million
    channel: i % 100 === 99 ? "beta" : "stable",
    state: status === "failed" ? "failed" : status === "installing" ? "downloading" : status === "succeeded" ? "confirmed" : "idle",
    status,
  };
}

interface Env {
  dir: string;
  env: Record<string, string>;
  logFile: string;
}

function prepareFolders(dir: string): Env {
  const { firmwareDir, env } = benchFolders(dir, "https://ota.scale.example");
  fs.copyFileSync(path.join(projectRoot(), "tests/fixtures/esp32-images/esp32_hello-world_idf4.1-dev.bin"), path.join(firmwareDir, "v2.bin"));
  return { dir, logFile: path.join(dir, "server.log"), env };
}

class Api {
  readonly agent: Agent;
  constructor(
    private readonly url: string,
    ca: Buffer,
    private readonly token: string,
  ) {
    this.agent = new Agent({ connect: { ca }, connections: 1 });
  }
  /** An operator request; returns its status, body and time (ms). */
  async call(method: string, p: string, body?: unknown): Promise<{ status: number; json: Json; ms: number }> {
    const t0 = performance.now();
    const r = await request(`${this.url}/api/v1${p}`, {
      method: method as "GET",
      dispatcher: this.agent,
      headers: { Authorization: `Bearer ${this.token}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const json = (await r.body.json()) as Json;
    return { status: r.statusCode, json, ms: performance.now() - t0 };
  }
  async ok(method: string, p: string, body?: unknown) {
    const r = await this.call(method, p, body);
    if (r.status >= 300) throw new Error(`${method} ${p} answered ${r.status}: ${JSON.stringify(r.json).slice(0, 300)}`);
    return r;
  }
}

/** First start on the empty folder: schema, credentials, the image ingested, a release and its running rollout. */
async function firstStart(e: Env): Promise<{ rolloutId: string; release: string }> {
  const server = await startServerProcess({ env: e.env, cpu: null, logFile: e.logFile });
  try {
    const creds = JSON.parse(fs.readFileSync(path.join(e.env.OTA_DATA_DIR!, "dev-credentials.json"), "utf8")) as { operatorToken: string };
    const api = new Api(server.url, fs.readFileSync(e.env.OTA_TLS_CA!), creds.operatorToken);
    const until = Date.now() + 30_000;
    for (;;) {
      const r = await api.call("POST", "/releases", { name: "scale-2", image: "v2.bin" });
      if (r.status === 201 || r.status === 200) break;
      if ((r.json as { error?: { code?: string } }).error?.code !== "image_not_found" || Date.now() > until) throw new Error(`creating the release answered ${r.status}: ${JSON.stringify(r.json)}`);
      await new Promise((res) => setTimeout(res, 100)); // the firmware folder is ingested just after the start
    }
    const started = await api.ok("POST", "/releases/scale-2/rollout", { stages: [100], max_failure_rate: 50 });
    await api.agent.close();
    return { rolloutId: (started.json as unknown as RolloutStatus).rollout.id, release: "scale-2" };
  } finally {
    await server.stop();
  }
}

/** The poller's devices: members of the rollout on its channel (i % 100 === 0: stable, offered). */
function pollerDevices(n: number): number[] {
  return Array.from({ length: 50 }, (_, k) => Math.floor(((k * 100 * Math.max(1, Math.floor(n / 5000))) % n) / 100) * 100);
}

/** N provisioned devices, their tags, their membership in the rollout and its counts, and an audit log. */
async function fill(e: Env, n: number, rolloutId: string): Promise<{ keys: { id: string; apiKey: string }[] }> {
  const config = loadConfig({ ...e.env, PORT: "0" }, e.dir);
  const parts = await openContextParts(config, createLogger("warn", process.stderr));
  try {
    const row = await parts.store.db.selectFrom("rollouts").select("window_started_at").where("id", "=", rolloutId).executeTakeFirst();
    const windowStart = row?.window_started_at ?? new Date().toISOString();
    const counts = parts.store.sqlite ? fillSqlite(parts.store.sqlite, n, rolloutId, windowStart) : await fillPostgres(e.env.OTA_DATABASE_URL!, n, rolloutId, windowStart);
    await parts.store.db.transaction().execute(async (trx) => {
      for (const [k, v] of counts) {
        const [stage, status] = k.split("\u0000");
        await trx.insertInto("rollout_counts").values({ rollout_id: rolloutId, stage: Number(stage), status: status!, n: v }).execute();
      }
    });
    if (parts.store.sqlite) parts.store.sqlite.pragma("wal_checkpoint(TRUNCATE)");
    // Each poller device with its own key.
    const keys = pollerDevices(n).map((i) => {
      const id = deviceId(i + 1);
      return { id, apiKey: parts.credentials.deviceApiKey(id, 0) };
    });
    return { keys };
  } finally {
    await parts.devices.close();
    await parts.store.close();
  }
}

type Counts = Map<string, number>;
const STEP = 50_000;

/** Every device's rows, chunk by chunk, and the rollout's counts (stage and status -> members). */
function* chunks(n: number, windowStart: string) {
  const seen = new Date(Date.now() - 3600_000).toISOString(); // an hour ago: offline
  const finished = new Date(Date.parse(windowStart) + 1000).toISOString();
  for (let from = 0; from < n; from += STEP) {
    const rows = [];
    for (let i = from; i < Math.min(n, from + STEP); i++) {
      const s = shape(i);
      const done = s.status === "succeeded" || s.status === "failed";
      rows.push({ i, id: deviceId(i + 1), s, done, seen, updated: done ? finished : windowStart, finished: done ? finished : null, audit: i % 5 === 0 });
    }
    yield rows;
  }
}

type Chunk = ReturnType<typeof chunks> extends Iterable<infer R> ? R : never;

function count(counts: Counts, status: string, done: boolean) {
  const add = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
  add(`0\u0000${status}`);
  if (done) add(`-1\u0000${status}`);
}

function fillSqlite(db: SqliteDatabase.Database, n: number, rolloutId: string, windowStart: string): Counts {
  // The server's own statements' columns (sightings, provisioning, reports, tags, offers and moves, audit).
  const device = db.prepare(
    `INSERT INTO devices (id, chip, version, state, first_seen_at, last_seen_at, last_report_at, provisioned_at, key_generation, created_at, channel, group_name)
     VALUES (?, 'esp32', ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)`,
  );
  const tag = db.prepare("INSERT INTO device_tags (device_id, tag) VALUES (?, ?)");
  const member = db.prepare(
    "INSERT INTO rollout_devices (rollout_id, device_id, stage, status, joined_at, updated_at, finished_at) VALUES (?, ?, 0, ?, ?, ?, ?)",
  );
  const audit = db.prepare(
    `INSERT INTO audit_log (at, actor, role, token_id, source, ip, request_id, action, target, outcome, details)
     VALUES (?, 'admin', 'admin', NULL, 'api', '127.0.0.1', NULL, 'device.update', ?, 'ok', '{"add_tags":["site-1"],"remove_tags":[]}')`,
  );
  const counts: Counts = new Map();
  const write = db.transaction((rows: Chunk) => {
    for (const r of rows) {
      device.run(r.id, V1, r.s.state, r.seen, r.seen, r.s.state === "idle" ? null : r.seen, r.seen, r.seen, r.s.channel, r.s.group);
      tag.run(r.id, r.s.tag);
      if (r.s.rare) tag.run(r.id, "rare");
      member.run(rolloutId, r.id, r.s.status, windowStart, r.updated, r.finished);
      count(counts, r.s.status, r.done);
      if (r.audit) audit.run(r.seen, r.id);
    }
  });
  db.pragma("synchronous = OFF"); // a bulk load that is thrown away on failure
  let done = 0;
  for (const rows of chunks(n, windowStart)) {
    write(rows);
    done += rows.length;
    say(`rows: ${done.toLocaleString("en-US")} of ${n.toLocaleString("en-US")} devices`);
  }
  return counts;
}

/** The same rows as fillSqlite, 50,000 devices a statement (unnest of one array per column), then ANALYZE. */
async function fillPostgres(url: string, n: number, rolloutId: string, windowStart: string): Promise<Counts> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const counts: Counts = new Map();
  try {
    await c.query("SET synchronous_commit = off"); // a bulk load that is thrown away on failure
    let done = 0;
    for (const rows of chunks(n, windowStart)) {
      const col = <T>(f: (r: (typeof rows)[number]) => T) => rows.map(f);
      await c.query("BEGIN");
      await c.query(
        `INSERT INTO devices (id, chip, version, state, first_seen_at, last_seen_at, last_report_at, provisioned_at, key_generation, created_at, channel, group_name)
         SELECT id, 'esp32', $1, state, seen, seen, last_report, seen, 0, seen, channel, grp
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS t(id, state, seen, last_report, channel, grp)`,
        [V1, col((r) => r.id), col((r) => r.s.state), col((r) => r.seen), col((r) => (r.s.state === "idle" ? null : r.seen)), col((r) => r.s.channel), col((r) => r.s.group)],
      );
      const tagged = rows.flatMap((r) => (r.s.rare ? [[r.id, r.s.tag], [r.id, "rare"]] : [[r.id, r.s.tag]]));
      await c.query("INSERT INTO device_tags (device_id, tag) SELECT * FROM unnest($1::text[], $2::text[])", [tagged.map((t) => t[0]), tagged.map((t) => t[1])]);
      await c.query(
        `INSERT INTO rollout_devices (rollout_id, device_id, stage, status, joined_at, updated_at, finished_at)
         SELECT $1, id, 0, status, $2, updated, finished FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS t(id, status, updated, finished)`,
        [rolloutId, windowStart, col((r) => r.id), col((r) => r.s.status), col((r) => r.updated), col((r) => r.finished)],
      );
      const audited = rows.filter((r) => r.audit);
      await c.query(
        `INSERT INTO audit_log (at, actor, role, token_id, source, ip, request_id, action, target, outcome, details)
         SELECT at, 'admin', 'admin', NULL, 'api', '127.0.0.1', NULL, 'device.update', target, 'ok', '{"add_tags":["site-1"],"remove_tags":[]}'
         FROM unnest($1::text[], $2::text[]) AS t(at, target)`,
        [audited.map((r) => r.seen), audited.map((r) => r.id)],
      );
      await c.query("COMMIT");
      for (const r of rows) count(counts, r.s.status, r.done);
      done += rows.length;
      say(`rows: ${done.toLocaleString("en-US")} of ${n.toLocaleString("en-US")} devices`);
    }
    // Planner statistics, as autovacuum would gather them soon after such a load.
    say("ANALYZE");
    await c.query("ANALYZE");
  } finally {
    await c.end();
  }
  return counts;
}

/** Polls the manifest one at a time, as the given devices in turn, every POLL_EVERY_MS, until stopped. */
function startPoller(server: ServerProcess, ca: Buffer, keys: { id: string; apiKey: string }[]) {
  const agent = new Agent({ connect: { ca }, connections: 1 });
  let running = true;
  let worst = 0;
  let worstSinceReset = 0;
  let polls = 0;
  const statuses = new Map<number, number>();
  const loop = (async () => {
    for (let k = 0; running; k++) {
      const d = keys[k % keys.length]!;
      const t0 = performance.now();
      const r = await request(`${server.url}/firmware/manifest`, {
        dispatcher: agent,
        headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.id, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": V1 },
      });
      await r.body.dump();
      const ms = performance.now() - t0;
      worst = Math.max(worst, ms);
      worstSinceReset = Math.max(worstSinceReset, ms);
      polls++;
      statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
      await new Promise((res) => setTimeout(res, POLL_EVERY_MS));
    }
  })();
  return {
    /** Starts a new span for worstSinceReset(). */
    reset() {
      worstSinceReset = 0;
    },
    /** Forgets everything so far (the poller's figures are then of what runs from now on). */
    resetAll() {
      worstSinceReset = 0;
      worst = 0;
      polls = 0;
      statuses.clear();
    },
    worstSinceReset: () => worstSinceReset,
    async stop() {
      running = false;
      await loop;
      await agent.close();
      return { polls, worst_ms: worst, statuses: Object.fromEntries(statuses) };
    },
  };
}

async function main() {
  const opts = args(process.argv.slice(2));
  const dir = path.join(os.tmpdir(), `ota-scale-${process.pid}`);
  const e = prepareFolders(dir);
  let cluster: Cluster | null = null;
  let database: { admin: string; name: string } | null = null;
  try {
    if (opts.backend === "postgres") {
      const given = process.env.OTA_BENCH_DATABASE_URL;
      if (!given) {
        say("starting a throwaway PostgreSQL cluster (initdb, settings as installed)");
        const started = await startCluster({});
        cluster = started;
        // Interrupted, the run must not leave the cluster running (pg_ctl stop is synchronous: it runs at exit).
        process.once("exit", () => stopCluster(started));
        for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));
      }
      database = { admin: given ?? cluster!.adminUrl, name: `ota_scale_${randomBytes(4).toString("hex")}` };
      e.env.OTA_DATABASE_URL = await createDatabase(database.admin, database.name);
      say(`PostgreSQL database ${database.name}${given ? " on OTA_BENCH_DATABASE_URL" : ""}`);
    }
    say(`work folder ${dir}; first start on the empty folder`);
    const { rolloutId, release } = await firstStart(e);
    say(`filling ${opts.devices.toLocaleString("en-US")} devices, members of rollout ${rolloutId}`);
    const t0 = Date.now();
    const { keys } = await fill(e, opts.devices, rolloutId);
    say(`filled in ${((Date.now() - t0) / 1000).toFixed(1)} s; starting the server`);

    // The reference: a process that only loads the server's modules, the part of a start no data folder changes.
    const loadStart = Date.now();
    const load = spawnSync(process.execPath, ["-e", `require(${JSON.stringify(path.join(projectRoot(), "dist/server/server.js"))})`], { encoding: "utf8" });
    if (load.status !== 0) throw new Error(`loading the server's modules failed: ${load.stderr}`);
    const loadS = (Date.now() - loadStart) / 1000;
    const logStart = fs.statSync(e.logFile).size;
    const spawnedAt = Date.now();
    const server = await startServerProcess({ env: e.env, cpu: null, logFile: e.logFile });
    const listening = fs
      .readFileSync(e.logFile, "utf8")
      .slice(logStart)
      .split("\n")
      .find((l) => l.includes('"OTA server listening"'));
    const at = (JSON.parse(listening!) as { time: string | number }).time;
    const listenS = ((typeof at === "number" ? at : Date.parse(at)) - spawnedAt) / 1000;
    const rssMiB = rssKiB(server.pid) / 1024;
    say(`listening after ${listenS.toFixed(2)} s (node loading the server's modules alone: ${loadS.toFixed(2)} s), RSS ${rssMiB.toFixed(0)} MiB`);

    const ca = fs.readFileSync(e.env.OTA_TLS_CA!);
    const creds = JSON.parse(fs.readFileSync(path.join(e.env.OTA_DATA_DIR!, "dev-credentials.json"), "utf8")) as { operatorToken: string };
    const api = new Api(server.url, ca, creds.operatorToken);
    const poller = startPoller(server, ca, keys);
    const requests: { name: string; path: string; ms: number; max_ms: number; rows: number | null; poll_worst_ms: number }[] = [];
    const timed = async (name: string, method: string, p: string, rowsOf: ((json: Json) => number) | null, body?: unknown) => {
      const times: number[] = [];
      let json: Json = {};
      poller.reset();
      for (let i = 0; i < REPEAT; i++) {
        const r = await api.ok(method, p, body);
        times.push(r.ms);
        json = r.json;
        if (method !== "GET") break; // an action is taken once
      }
      times.sort((a, b) => a - b);
      const row = {
        name,
        path: `${method} ${p}`,
        ms: +times[Math.floor(times.length / 2)]!.toFixed(1),
        max_ms: +times.at(-1)!.toFixed(1),
        rows: rowsOf ? rowsOf(json) : null,
        poll_worst_ms: +poller.worstSinceReset().toFixed(1),
      };
      requests.push(row);
      say(`${name}: ${row.ms} ms (slowest ${row.max_ms})${row.rows !== null ? `, ${row.rows} rows` : ""}; worst poll meanwhile ${row.poll_worst_ms} ms`);
      return json;
    };
    // Warm: the first requests of a process pay for compiling its code, not for the fleet's size.
    await api.ok("GET", "/devices?limit=1");
    await api.ok("GET", `/rollouts/${release}`);
    poller.reset();
    await new Promise((res) => setTimeout(res, ALONE_S * 1000));
    const alone = poller.worstSinceReset();
    poller.resetAll();
    say(`worst poll with no operator request: ${alone.toFixed(1)} ms`);

    const devicesIn = (j: Json) => (j.devices as unknown[]).length;
    const entries = (j: Json) => (j.entries as unknown[]).length;
    const status = (await timed("rollout status", "GET", `/rollouts/${release}`, null)) as unknown as RolloutStatus;
    await timed("devices: first page", "GET", "/devices", devicesIn);
    await timed("devices: common tag", "GET", "/devices?tag=site-3", devicesIn);
    await timed("devices: rare tag", "GET", "/devices?tag=rare", devicesIn);
    await timed("devices: absent tag", "GET", "/devices?tag=nowhere", devicesIn);
    await timed("devices: group", "GET", "/devices?group=g42", devicesIn);
    await timed("devices: absent group", "GET", "/devices?group=nowhere", devicesIn);
    await timed("devices: rare channel", "GET", "/devices?channel=beta", devicesIn);
    await timed("devices: absent channel", "GET", "/devices?channel=nightly", devicesIn);
    await timed("devices: version", "GET", `/devices?version=${encodeURIComponent(V1)}`, devicesIn);
    await timed("devices: absent version", "GET", "/devices?version=v9.9.9", devicesIn);
    await timed("devices: rare state", "GET", "/devices?state=failed", devicesIn);
    await timed("devices: absent state", "GET", "/devices?state=rejected", devicesIn);
    await timed("devices: online (few)", "GET", "/devices?online=true", devicesIn);
    await timed("devices: offline (most)", "GET", "/devices?online=false", devicesIn);
    await timed("devices: search", "GET", `/devices?search=${encodeURIComponent(deviceId(Math.floor(opts.devices / 2)).slice(0, 14))}`, devicesIn);
    await timed("devices: absent search", "GET", "/devices?search=ff:ff", devicesIn);
    await timed("devices: tag and offline", "GET", "/devices?tag=site-3&online=false", devicesIn);
    await timed("audit by target (device)", "GET", `/audit?target=${encodeURIComponent(deviceId(1))}`, entries);
    await timed("audit by target (rollout)", "GET", `/audit?target=${rolloutId}`, entries);
    await timed("audit by absent target", "GET", "/audit?target=nobody", entries);
    await timed("rollout abort", "POST", `/rollouts/${release}/abort`, null, { reason: "scale bench" });
    const after = (await timed("rollout status, aborted", "GET", `/rollouts/${release}`, null)) as unknown as RolloutStatus;
    const polls = await poller.stop();
    await api.agent.close();
    await server.stop();

    const members = Number(status.devices.total);
    if (members !== opts.devices) throw new Error(`the rollout counts ${members} members, not ${opts.devices}: its counts are wrong`);
    if (after.rollout.state !== "aborted") throw new Error("the abort did not abort the rollout");
    if (!polls.statuses[200]) throw new Error(`no poll was answered 200: ${JSON.stringify(polls.statuses)}`);
    const slowest = Math.max(...requests.map((r) => r.ms));
    const result = {
      bench: "scale",
      backend: opts.backend,
      devices: opts.devices,
      rollout_members: members,
      listen_s: +listenS.toFixed(2),
      load_modules_s: +loadS.toFixed(2),
      rss_mib: +rssMiB.toFixed(1),
      requests,
      slowest_request_ms: slowest,
      polls: polls.polls,
      poll_statuses: polls.statuses,
      worst_poll_ms: +polls.worst_ms.toFixed(1),
      worst_poll_alone_ms: +alone.toFixed(1),
      targets: TARGETS,
      met: {
        start: listenS < TARGETS.start_s,
        rss: rssMiB < TARGETS.rss_mib,
        requests: slowest < TARGETS.request_ms,
        polls: polls.worst_ms <= TARGETS.poll_delay_ms,
      },
    };
    const mark = (ok: boolean) => (ok ? "ok" : "MISSED");
    const lines: string[][] = [
      ["figure", "value", "target", ""],
      ["time to listen", `${result.listen_s} s`, `< ${TARGETS.start_s} s`, mark(result.met.start)],
      ["  node loading the server's modules alone", `${result.load_modules_s} s`, "", ""],
      ["RSS after start", `${result.rss_mib} MiB`, `< ${TARGETS.rss_mib} MiB`, mark(result.met.rss)],
      ...requests.map((r) => [
        `${r.name}${r.rows !== null ? ` (${r.rows} rows)` : ""}`,
        `${r.ms} ms (slowest ${r.max_ms})`,
        `< ${TARGETS.request_ms} ms`,
        mark(r.ms < TARGETS.request_ms),
      ]),
      [`worst of ${polls.polls} polls beside them`, `${result.worst_poll_ms} ms`, `<= ${TARGETS.poll_delay_ms} ms`, mark(result.met.polls)],
      [`worst poll, ${ALONE_S} s alone before (the machine's noise)`, `${result.worst_poll_alone_ms} ms`, "", ""],
    ];
    const widths = lines[0]!.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
    process.stdout.write(`scale: ${opts.devices.toLocaleString("en-US")} devices, all members of a running rollout, on ${opts.backend === "postgres" ? "PostgreSQL" : "SQLite"}\n`);
    for (const l of lines) process.stdout.write(l.map((x, c) => x.padEnd(widths[c]!)).join("  ").trimEnd() + "\n");
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    if (database) await dropDatabase(database.admin, database.name).catch((err: unknown) => say(`could not drop ${database!.name}: ${String(err)}`));
    if (cluster) stopCluster(cluster);
    if (opts.keep) say(`kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[scale] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
