// OTA_WORKERS: several server processes (node:cluster) on one port, the built server run as `npm start` runs it.
// Needs PostgreSQL (the processes share its database), so it runs in the "postgres" project (tests/storage/); the
// refusal of OTA_WORKERS > 1 without a PostgreSQL URL is checked here too.
import { spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { Agent, request } from "undici";
import { ConfigError, loadConfig } from "../../server/infra/config/config";
import { mac, nonce, type Bundle } from "../helpers/device-keys";
import { dropDatabase, ensureDatabase, withTestDb } from "../helpers/database";
import { HELLO_WORLD } from "../helpers/fixtures";
import { alive, startServerProcess, type ServerProcess } from "../helpers/server-process";
import { eventually, ROOT, tempDirs, testEnv, type Dirs } from "../helpers/server";

jest.setTimeout(60_000);

describe("OTA_WORKERS configuration", () => {
  it("defaults to 1 and takes 1 to 64", () => {
    expect(loadConfig({}).workers).toBe(1);
    expect(loadConfig({ OTA_WORKERS: "4", OTA_DATABASE_URL: "postgres://db/ota" }).workers).toBe(4);
    for (const bad of ["0", "65", "two", "-1"]) expect(() => loadConfig({ OTA_WORKERS: bad, OTA_DATABASE_URL: "postgres://db/ota" })).toThrow(ConfigError);
  });

  it("OTA_WORKERS=2 without OTA_DATABASE_URL: the server refuses to start, says what to do, exits 1 and creates nothing", () => {
    const dirs = tempDirs("ota-workers-sqlite-");
    try {
      const r = spawnSync(process.execPath, [path.join(ROOT, "dist/server/main.js")], {
        cwd: dirs.root,
        env: { ...process.env, ...testEnv(dirs), OTA_DATABASE_URL: "", OTA_WORKERS: "2" },
        encoding: "utf8",
        timeout: 20_000,
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("OTA_WORKERS: 2 server processes need PostgreSQL");
      expect(r.stderr).toContain("set OTA_DATABASE_URL, or OTA_WORKERS=1");
      expect(fs.existsSync(dirs.data)).toBe(false);
      expect(fs.existsSync(dirs.certs)).toBe(false);
    } finally {
      fs.rmSync(dirs.root, { recursive: true, force: true });
    }
  });
});

interface LogLine {
  msg: string;
  pid?: number;
  worker?: number;
  workerPid?: number;
  req?: { id: string; path: string };
}

const lines = (p: ServerProcess): LogLine[] =>
  p
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as LogLine);

/** The worker processes the primary runs now. */
const childrenOf = (pid: number): number[] =>
  fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);

describe("OTA_WORKERS=3 on PostgreSQL", () => {
  let dirs: Dirs;
  let p: ServerProcess;
  let device: Bundle;

  /** A request on a connection of its own (the primary hands each connection to the next worker); the pid that answered, from its log line. */
  const fresh = async (method: string, urlPath: string, headers: Record<string, string> = {}, body?: string) => {
    const agent = new Agent({ connect: { ca: p.ca } });
    const id = randomUUID();
    try {
      const r = await request(p.url + urlPath, { method: method as "GET", headers: { ...headers, "X-Request-Id": id }, body, dispatcher: agent, reset: true });
      const bytes = Buffer.from(await r.body.arrayBuffer());
      return { status: r.statusCode, headers: r.headers, body: bytes, id };
    } finally {
      await agent.close();
    }
  };
  /** The pid whose log line closed request `id` (lines are written within a quarter second). */
  const answeredBy = (id: string) => eventually(() => lines(p).find((l) => l.req?.id === id && l.msg === "request completed")?.pid, 5_000);

  const poll = async () => {
    const n = nonce();
    const r = await fresh("GET", "/firmware/manifest", { "X-API-Key": device.apiKey, "X-Device-Id": device.deviceId, "X-Nonce": n });
    expect(r.status).toBe(200);
    const m = JSON.parse(r.body.toString("utf8")) as { nonce: string; device_id: string };
    expect(m).toMatchObject({ nonce: n, device_id: device.deviceId });
    expect(r.headers["x-manifest-hmac"]).toBe(mac(device.hmacKey, r.body));
    return answeredBy(r.id);
  };

  /** Polls until every pid of `want` has answered one; fails after `max` polls. */
  const pollUntilAnsweredBy = async (want: number[], max = 40) => {
    const seen = new Set<number>();
    for (let i = 0; i < max && !want.every((w) => seen.has(w)); i++) seen.add(await poll());
    return seen;
  };

  beforeAll(async () => {
    dirs = tempDirs("ota-workers-");
    fs.mkdirSync(dirs.firmware, { recursive: true });
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "hello.bin"));
    p = await startServerProcess(dirs, { env: { OTA_WORKERS: "3" } });
    await eventually(() => lines(p).some((l) => l.msg === "all server processes listening"), 30_000);
    const r = await fresh("POST", "/api/v1/devices/workers-dev-1/provision", { Authorization: `Bearer ${p.creds.operatorToken}`, "Content-Type": "application/json" }, "{}");
    expect(r.status).toBe(201);
    device = JSON.parse(r.body.toString("utf8")) as Bundle;
    // Each worker reads the firmware folder at its start: wait until every one offers the image.
    await eventually(async () => (await fresh("GET", "/firmware/manifest", { "X-API-Key": p.creds.deviceApiKey })).status === 200 &&
      (await fresh("GET", "/firmware/manifest", { "X-API-Key": p.creds.deviceApiKey })).status === 200 &&
      (await fresh("GET", "/firmware/manifest", { "X-API-Key": p.creds.deviceApiKey })).status === 200, 20_000, 200);
  });

  afterAll(async () => {
    if (p && p.child.exitCode === null && p.child.signalCode === null) await p.kill("SIGKILL");
    fs.rmSync(dirs.root, { recursive: true, force: true });
    await dropDatabase(dirs);
  });

  it("the first start is done once, by the primary: one certificate, one admin token, one development key", async () => {
    const out = lines(p);
    expect(out.filter((l) => l.msg.startsWith("no TLS certificate yet"))).toHaveLength(1);
    const firstStart = out.filter((l) => l.msg.startsWith("first start:"));
    expect(firstStart).toHaveLength(1);
    expect(firstStart[0]!.pid).toBe(p.child.pid);
    expect(firstStart[0]!.worker).toBeUndefined();
    await withTestDb(dirs, async (db) => {
      expect(await db.rows("SELECT subject FROM operator_tokens")).toEqual([{ subject: "admin" }]);
      expect(await db.rows("SELECT label FROM api_keys")).toEqual([{ label: "development" }]);
    });
    // Three workers, each listening once, none of them the primary. A worker's log is buffered (flushed every 250
    // ms), so its line may come after the primary's "all server processes listening".
    const listening = () => lines(p).filter((l) => l.msg === "OTA server listening");
    await eventually(() => listening().length >= 3, 10_000);
    const started = listening();
    expect(started.map((l) => l.worker).sort()).toEqual([1, 2, 3]);
    expect(started.every((l) => l.pid !== p.child.pid)).toBe(true);
  });

  it("/healthz and device polls are answered by the 3 worker processes in turn", async () => {
    for (let i = 0; i < 6; i++) expect((await fresh("GET", "/healthz")).status).toBe(200);
    const workers = childrenOf(p.child.pid!);
    expect(workers).toHaveLength(3);
    expect(await pollUntilAnsweredBy(workers)).toEqual(new Set(workers));
  });

  it("a worker killed with SIGKILL is started again, and requests keep succeeding meanwhile", async () => {
    const before = childrenOf(p.child.pid!);
    const victim = before[0]!;
    process.kill(victim, "SIGKILL");
    const died = await eventually(() => lines(p).find((l) => l.msg === "server process stopped unexpectedly; starting a new one" && l.workerPid === victim), 10_000);
    expect(died).toMatchObject({ signal: "SIGKILL", restartInMs: 500 });
    // While it is away, the other two answer everything.
    for (let i = 0; i < 6; i++) {
      expect((await fresh("GET", "/healthz")).status).toBe(200);
      expect(await poll()).not.toBe(victim);
    }
    const replacement = await eventually(() => lines(p).find((l) => l.msg === "OTA server listening" && l.worker === 4)?.pid, 20_000);
    expect(alive(victim)).toBe(false);
    const now = childrenOf(p.child.pid!);
    expect(now.sort()).toEqual([...before.filter((x) => x !== victim), replacement].sort());
    expect(await pollUntilAnsweredBy(now)).toEqual(new Set(now));
  });

  it("SIGTERM to the primary stops every worker cleanly and the primary exits 0", async () => {
    const workers = childrenOf(p.child.pid!);
    await p.stop();
    expect(p.child.exitCode).toBe(0);
    expect(workers.filter(alive)).toEqual([]);
    const out = lines(p);
    expect(out.filter((l) => l.msg === "server process stopped").map((l) => l.workerPid).sort()).toEqual([...workers].sort());
    expect(out.find((l) => l.msg === "stopped")).toMatchObject({ pid: p.child.pid, exitCode: 0 });
  });
});

describe("OTA_WORKERS=2 on PostgreSQL, going wrong", () => {
  const dirs: Dirs[] = [];
  const folder = () => {
    const d = tempDirs("ota-workers-");
    dirs.push(d);
    return d;
  };
  afterAll(async () => {
    for (const d of dirs) {
      fs.rmSync(d.root, { recursive: true, force: true });
      await dropDatabase(d);
    }
  });

  it("a server process that cannot start stops the start: the primary stops the other and exits 1", async () => {
    const d = folder();
    await ensureDatabase(d);
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const child = spawn(process.execPath, [path.join(ROOT, "dist/server/main.js")], {
        cwd: d.root,
        env: { ...process.env, ...testEnv(d), OTA_WORKERS: "2", PORT: String(port) },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (c: Buffer) => (out += c.toString()));
      child.stderr.on("data", (c: Buffer) => (out += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
      expect(code).toBe(1);
      expect(out).toContain("EADDRINUSE");
      expect(out).toContain("a server process stopped before all were listening; stopping the others");
      expect(out).not.toContain('"msg":"OTA server listening"');
    } finally {
      taken.close();
    }
  });

  it("SIGINT to the primary and its server processes at once (Ctrl-C in a terminal): each stops once, the primary exits 0", async () => {
    const p = await startServerProcess(folder(), { env: { OTA_WORKERS: "2" } });
    await eventually(() => lines(p).some((l) => l.msg === "all server processes listening"), 30_000);
    const workers = childrenOf(p.child.pid!);
    const exited = new Promise<number | null>((resolve) => p.child.once("exit", (code) => resolve(code)));
    for (const pid of [p.child.pid!, ...workers]) process.kill(pid, "SIGINT");
    expect(await exited).toBe(0);
    expect(workers.filter(alive)).toEqual([]);
    const out = lines(p);
    for (const w of workers) expect(out.filter((l) => l.pid === w && l.msg === "shutting down")).toHaveLength(1);
    expect(out.filter((l) => l.msg === "server process stopped").map((l) => l.workerPid).sort()).toEqual([...workers].sort());
  });

  it("the primary killed with SIGKILL: its server processes exit", async () => {
    const d = folder();
    const p = await startServerProcess(d, { env: { OTA_WORKERS: "2" } });
    await eventually(() => lines(p).some((l) => l.msg === "all server processes listening"), 30_000);
    const workers = childrenOf(p.child.pid!);
    expect(workers).toHaveLength(2);
    await p.kill("SIGKILL");
    await eventually(() => workers.every((w) => !alive(w)), 10_000);
  });
});
