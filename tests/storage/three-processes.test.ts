// Three server processes on one PostgreSQL database (a cluster of this test's own, so it can restart it) behind
// HAProxy with the shipped configuration (docs/haproxy/haproxy.cfg, TLS passed through), 300 plain HTTPS pollers
// and three device agents in DeviceScript's VM, all through the balancer:
//   - a release made through one process is offered by all three within OTA_SYNC_INTERVAL_MS;
//   - a staged rollout advances itself once and pauses itself once, whichever processes the reports reach;
//   - one process killed with SIGKILL in the middle of a report flood: every acknowledged report is stored, and
//     the agents finish their update through the other two;
//   - PostgreSQL restarted: requests are answered 503 with Retry-After meanwhile, no process dies, and they
//     succeed again after.
// Runs in the "postgres" project only (tests/storage/).
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Agent, request } from "undici";
import { clusterDataDir, createDatabase, pgRun, startCluster, stopCluster, withClient, type Cluster } from "../../bench/postgres";
import type { EmulatedDevice } from "../../device/host/device";
import { deviceWith, HELLO_VERSION, reported, TEST_SETTINGS, useFastClock } from "../helpers/device";
import { HELLO_WORLD, HELLO_WORLD_IDF41, read } from "../helpers/fixtures";
import { bucketOracle, inParallel, mac, writeMasterKey } from "../helpers/fleet";
import { startServerProcess, type ServerProcess } from "../helpers/server-process";
import { eventually, freePort, ROOT, tempDirs, type Dirs, type Reply } from "../helpers/server";

jest.setTimeout(240_000);

const SHA1 = createHash("sha256").update(read(HELLO_WORLD)).digest("hex");
const SHA2 = createHash("sha256").update(read(HELLO_WORLD_IDF41)).digest("hex");
const V1 = HELLO_VERSION;
const V2 = "v4.1-dev-1935-g647cb62-dirty";
const SYNC_MS = 1000;
const POLLERS = Array.from({ length: 300 }, (_, i) => mac(i + 1, "ee:00:00"));

/** HAProxy with the shipped configuration, a `server` line added for the third process, as the file says to. */
async function startHaproxy(dirs: Dirs, backends: number[]): Promise<{ port: number; child: ChildProcess; log: () => string }> {
  const shipped = fs.readFileSync(path.join(ROOT, "docs/haproxy/haproxy.cfg"), "utf8");
  const cfg = shipped.replace(/^(\s*)server ota2 "\$\{OTA_BACKEND_2\}"$/m, '$&\n$1server ota3 "${OTA_BACKEND_3}"');
  expect(cfg).toContain("OTA_BACKEND_3");
  const file = path.join(dirs.root, "haproxy.cfg");
  fs.writeFileSync(file, cfg);
  const port = await freePort();
  const me = os.userInfo();
  const env = {
    ...process.env,
    OTA_BACKEND_1: `127.0.0.1:${backends[0]}`,
    OTA_BACKEND_2: `127.0.0.1:${backends[1]}`,
    OTA_BACKEND_3: `127.0.0.1:${backends[2]}`,
    OTA_LB_CA: path.join(dirs.certs, "ca.crt"),
    OTA_LB_BIND: `127.0.0.1:${port}`,
    OTA_LB_STATS: path.join(dirs.root, "haproxy.sock"),
    OTA_LB_USER: me.username,
    OTA_LB_GROUP: fs.readFileSync("/etc/group", "utf8").split("\n").find((l) => l.split(":")[2] === String(process.getgid!()))!.split(":")[0]!,
  };
  const child = spawn("haproxy", ["-db", "-f", file], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));
  return { port, child, log: () => out };
}

describe("three server processes on one PostgreSQL behind HAProxy", () => {
  let cluster: Cluster;
  let clusterOptions: string;
  let dbUrl: string;
  let dirs: Dirs;
  const procs: ServerProcess[] = [];
  let lb: Awaited<ReturnType<typeof startHaproxy>>;
  let lbAgent: Agent;
  let ca: Buffer;
  let creds: { deviceApiKey: string; operatorToken: string };
  const devices: EmulatedDevice[] = [];

  /** A request through the balancer. */
  async function viaLb(method: string, p: string, opts: { headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
    const r = await request(`https://localhost:${lb.port}${p}`, { method: method as "GET", headers: opts.headers, body: opts.body, dispatcher: lbAgent });
    const body = Buffer.from(await r.body.arrayBuffer());
    return { status: r.statusCode, headers: r.headers, body, json: () => JSON.parse(body.toString()), text: () => body.toString() };
  }
  const operator = (s: { req: ServerProcess["req"] }) => async (method: string, p: string, body?: unknown) => {
    const r = await s.req(method, `/api/v1${p}`, {
      headers: { Authorization: `Bearer ${creds.operatorToken}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.text()}`);
    return r.json();
  };
  const pollHeaders = (id: string, version: string | null = V1): Record<string, string> => ({
    "X-API-Key": creds.deviceApiKey,
    "X-Device-Id": id,
    "X-Nonce": randomBytes(12).toString("base64url"),
    "X-Device-Chip": "esp32",
    ...(version ? { "X-Device-Version": version } : {}),
  });
  /** The sha256 a device is offered through the balancer, null for nothing. */
  async function offeredViaLb(id: string): Promise<string | null> {
    const r = await viaLb("GET", "/firmware/manifest", { headers: pollHeaders(id) });
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`poll ${id}: ${r.status} ${r.text()}`);
    return r.json().sha256 as string;
  }
  /** A report through the balancer, sent again until acknowledged (a process going away mid-request). */
  async function reportViaLb(body: Record<string, unknown>): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        const r = await viaLb("POST", "/firmware/report", { headers: { "X-API-Key": creds.deviceApiKey, "Content-Type": "application/json" }, body: JSON.stringify(body) });
        if (r.status === 200) return;
        if (r.status !== 503 || i > 20) throw new Error(`report: ${r.status} ${r.text()}`);
      } catch (e) {
        if (i > 20 || (e as Error).message.startsWith("report:")) throw e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const db = <T>(f: (c: import("pg").Client) => Promise<T>) => withClient(dbUrl, f);
  const audit = (target: string) =>
    db(async (c) => (await c.query<{ action: string; details: string }>("SELECT action, details FROM audit_log WHERE target = $1 ORDER BY id", [target])).rows);

  beforeAll(async () => {
    useFastClock();
    cluster = await startCluster({ fsync: "off", max_connections: 200 });
    clusterOptions = `-p ${cluster.port} -k ${cluster.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
    dbUrl = await createDatabase(cluster.adminUrl, "ota");
    dirs = tempDirs();
    writeMasterKey(dirs);
    fs.mkdirSync(dirs.firmware, { recursive: true });
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "app-v2.bin"));
    const env = { OTA_DATABASE_URL: dbUrl, OTA_SYNC_INTERVAL_MS: String(SYNC_MS), OTA_POLL_INTERVAL: "10", OTA_AUTH_FAILURE_LIMIT: "1000000" };
    // The first start of a data folder makes its certificates and first credentials: one process first.
    procs.push(await startServerProcess(dirs, { env }));
    procs.push(...(await Promise.all([startServerProcess(dirs, { env }), startServerProcess(dirs, { env })])));
    ca = procs[0]!.ca;
    creds = procs[0]!.creds;
    lb = await startHaproxy(
      dirs,
      procs.map((p) => p.port),
    );
    lbAgent = new Agent({ connect: { ca, servername: "localhost" }, connections: 24 });
    await eventually(async () => (await viaLb("GET", "/healthz").catch(() => null))?.status === 200, 15_000, 200);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.powerOff()));
    await lbAgent?.close();
    // Waited for, as tests/storage/haproxy.test.ts does: the killed balancer is gone before the file ends.
    if (lb && lb.child.exitCode === null && lb.child.signalCode === null) {
      const gone = new Promise((r) => lb.child.once("exit", r));
      lb.child.kill("SIGKILL");
      await gone;
    }
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) await p.kill("SIGKILL");
    if (cluster) stopCluster(cluster);
    if (dirs) fs.rmSync(dirs.root, { recursive: true, force: true });
  });

  it("a release made through one process is offered by all three within OTA_SYNC_INTERVAL_MS", async () => {
    const op1 = operator(procs[0]!);
    await eventually(async () => (await op1("GET", "/firmware")).images.length === 2, 15_000, 200);
    await op1("POST", "/releases", { name: "r1", image: "app-v1.bin" });
    await op1("POST", "/releases/r1/rollout", { stages: [100] });
    const made = Date.now();
    const seen = await Promise.all(
      procs.map(async (p) => {
        await eventually(async () => {
          const r = await p.req("GET", "/firmware/manifest", { headers: pollHeaders(mac(9, "ff:00:00"), null) });
          return r.status === 200 && r.json().sha256 === SHA1;
        }, SYNC_MS + 4000, 25);
        return Date.now() - made;
      }),
    );
    expect(Math.max(...seen)).toBeLessThan(SYNC_MS + 4000);
    await op1("POST", "/rollouts/r1/advance");
  });

  it("a staged rollout reported through the balancer advances itself once, then pauses itself once", async () => {
    const op2 = operator(procs[1]!);
    await op2("POST", "/releases", { name: "r2", image: "app-v2.bin" });
    const { rollout } = await op2("POST", "/releases/r2/rollout", {
      stages: [10, 50, 100],
      advance: "auto",
      min_sample: 5,
      success_threshold: 90,
      max_failure_rate: 20,
      failure_min_sample: 10,
    });
    const bucket = bucketOracle(dirs.data);
    const inStage = (pct: number) => POLLERS.filter((id) => bucket(rollout.id, id) < pct * 100).sort();

    // The 10 % stage: exactly its devices are offered release 2, whichever process each poll reaches; they all update.
    const offered = async () => (await inParallel(POLLERS, 24, async (id) => [id, await offeredViaLb(id)] as const)).filter(([, h]) => h === SHA2).map(([id]) => id).sort();
    const stage10 = await offered();
    expect(stage10).toEqual(inStage(10));
    await inParallel(stage10, 12, async (id) => {
      await reportViaLb({ device_id: id, status: "downloading", target_version: V2, bytes: 8192, total: 144672 });
      await reportViaLb({ device_id: id, status: "rebooting", target_version: V2 });
      await reportViaLb({ device_id: id, status: "confirmed", version: V2 });
    });
    await eventually(async () => (await op2("GET", `/rollouts/${rollout.id}`)).rollout.stage.percent === 50, 10_000, 100);

    // The 50 % stage: every other new member fails, until the failure rate passes 20 % and the rollout pauses itself.
    const stage50 = (await offered()).filter((id) => !stage10.includes(id));
    expect(stage50).toEqual(inStage(50).filter((id) => !stage10.includes(id)));
    await inParallel(stage50, 12, async (id) => {
      const i = stage50.indexOf(id);
      if (i % 2 === 0) await reportViaLb({ device_id: id, status: "failed", target_version: V2, reason: "write_failed" });
      else await reportViaLb({ device_id: id, status: "confirmed", version: V2 });
    });
    const paused = await eventually(async () => {
      const r = (await op2("GET", `/rollouts/${rollout.id}`)).rollout;
      return r.state === "paused" && r;
    }, 10_000, 100);
    expect(paused.reason).toMatch(/failure rate/);

    // Once each, though reports reached all three processes and each judged what it stored.
    const actions = (await audit(rollout.id)).map((e) => `${e.action}${JSON.parse(e.details).automatic ? " (automatic)" : ""}`);
    expect(actions).toEqual(["rollout.start", "rollout.advance (automatic)", "rollout.pause (automatic)"]);
  });

  it("one process killed with SIGKILL during a report flood loses no acknowledged report; agents in the VM finish through the others", async () => {
    const op1 = operator(procs[0]!);
    const ids = [mac(1, "ab:00:00"), mac(2, "ab:00:00"), mac(3, "ab:00:00")];
    await op1("POST", "/releases", { name: "r3", image: "app-v2.bin", targets: { devices: ids } });
    await op1("POST", "/releases/r3/rollout", { stages: [100] });
    for (const id of ids) {
      const bundle = await op1("POST", `/devices/${encodeURIComponent(id)}/provision`, { server_url: `https://localhost:${lb.port}` });
      const dev = deviceWith(bundle, ca, { id, url: `https://localhost:${lb.port}`, factoryVersion: V1, settings: TEST_SETTINGS });
      devices.push(dev);
    }
    await Promise.all(devices.map((d) => d.powerOn()));

    // The flood: ten reports from each of the 300 pollers, each with its own id, each sent until acknowledged.
    const acked: string[] = [];
    const victim = procs[2]!;
    let sent = 0;
    const flood = inParallel(
      POLLERS.flatMap((id) => Array.from({ length: 10 }, (_, k) => [id, `flood-${id}-${k}`] as const)),
      24,
      async ([id, reportId]) => {
        if (++sent === 600) void victim.kill("SIGKILL");
        await reportViaLb({ device_id: id, status: "downloading", target_version: V2, bytes: 8192, total: 144672, report_id: reportId });
        acked.push(reportId);
      },
    );
    await flood;
    expect(victim.child.signalCode).toBe("SIGKILL");
    expect(acked).toHaveLength(3000);
    const stored = await db(async (c) => (await c.query<{ report_id: string }>("SELECT report_id FROM reports WHERE report_id LIKE 'flood-%'")).rows.map((r) => r.report_id));
    expect(new Set(stored)).toEqual(new Set(acked));

    // The agents update through the two processes left.
    for (const dev of devices) {
      const e = await reported(dev, "confirmed", 90_000);
      expect(e).toMatchObject({ version: V2 });
      expect(dev.running!.image.app.version).toBe(V2);
    }
    for (const p of procs.slice(0, 2)) expect(p.child.exitCode).toBeNull();
  });

  it("PostgreSQL restarted: requests are answered 503 with Retry-After meanwhile, no process dies, and they succeed again after", async () => {
    const alive = procs.slice(0, 2);
    pgRun(cluster, "pg_ctl", ["-D", clusterDataDir(cluster), "-m", "fast", "-w", "stop"]);
    try {
      for (const p of alive) {
        const r = await p.req("GET", "/firmware/manifest", { headers: pollHeaders(POLLERS[0]!) });
        expect(r.status).toBe(503);
        expect(r.headers["retry-after"]).toBeDefined();
        expect(JSON.parse(r.body.toString()).error.code).toBe("database_unavailable");
        const rep = await p.req("POST", "/firmware/report", {
          headers: { "X-API-Key": creds.deviceApiKey, "Content-Type": "application/json" },
          body: JSON.stringify({ device_id: POLLERS[1], status: "downloading", target_version: V2, bytes: 1, total: 2 }),
        });
        expect(rep.status).toBe(503);
      }
    } finally {
      pgRun(cluster, "pg_ctl", ["-D", clusterDataDir(cluster), "-l", path.join(cluster.dir, "log"), "-o", clusterOptions, "-w", "start"]);
    }
    for (const p of alive) {
      await eventually(async () => (await p.req("GET", "/firmware/manifest", { headers: pollHeaders(POLLERS[0]!) })).status === 200, 15_000, 200);
      expect(p.child.exitCode).toBeNull();
    }
    // And through the balancer, for the whole fleet.
    const statuses = await inParallel(POLLERS, 24, async (id) => (await viaLb("GET", "/firmware/manifest", { headers: pollHeaders(id) })).status);
    expect(statuses.every((s) => s === 200 || s === 404)).toBe(true);
  });
});
