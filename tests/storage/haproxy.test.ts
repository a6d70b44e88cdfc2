// The shipped HAProxy configurations (docs/haproxy/) in front of two OTA servers, each its own process, on one
// data folder and one PostgreSQL database: HAProxy (Debian's haproxy, /usr/sbin/haproxy) runs the files as
// shipped, with the addresses and files given by the environment variables they read. Runs in the "postgres"
// project; without haproxy installed it is skipped, except under CI=true, where that is a failure.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Agent, request } from "undici";
import { mac, nonce, type Bundle } from "../helpers/device-keys";
import { dropDatabase, withTestDb } from "../helpers/database";
import { HELLO_WORLD } from "../helpers/fixtures";
import { startServerProcess, type ServerProcess } from "../helpers/server-process";
import { eventually, ROOT, tempDirs, type Dirs, freePort } from "../helpers/server";

jest.setTimeout(60_000);

const HAPROXY = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].find((f) => fs.existsSync(f)) ?? null;
const CI = process.env.CI === "true";

/** A command on HAProxy's admin socket, and its answer. */
function adminCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let out = "";
    c.on("data", (d: Buffer) => (out += d.toString()));
    c.once("error", reject);
    c.once("end", () => resolve(out));
    c.write(command + "\n");
  });
}

/** HAProxy's statistics of each OTA server ("show stat" on the admin socket): { ota1: { status: "UP", ... } }. */
async function serverStats(socket: string): Promise<Record<string, Record<string, string>>> {
  const [header, ...rows] = (await adminCommand(socket, "show stat")).trim().split("\n");
  const cols = header!.replace(/^# /, "").split(",");
  const records = rows.map((r) => Object.fromEntries(r.split(",").map((v, i) => [cols[i]!, v])));
  return Object.fromEntries(records.filter((r) => r.pxname === "ota_servers" && r.svname!.startsWith("ota")).map((r) => [r.svname!, r]));
}

/** Each OTA server's state as HAProxy's checks see it: { ota1: "UP", ota2: "DOWN" }. */
async function serverStates(socket: string): Promise<Record<string, string>> {
  return Object.fromEntries(Object.entries(await serverStats(socket)).map(([name, r]) => [name, r.status!]));
}

interface Lb {
  child: ChildProcess;
  url: string;
  stats: string;
  output(): string;
  stop(): Promise<void>;
}

/** HAProxy on a shipped configuration, in the foreground, with the given environment. */
async function startHaproxy(cfg: string, dirs: Dirs, env: Record<string, string>): Promise<Lb> {
  const port = await freePort();
  const stats = path.join(dirs.root, `haproxy-${port}.sock`);
  const child = spawn(HAPROXY!, ["-db", "-f", path.join(ROOT, "docs/haproxy", cfg)], {
    env: {
      ...process.env,
      OTA_LB_BIND: `127.0.0.1:${port}`,
      OTA_LB_STATS: stats,
      OTA_LB_CA: path.join(dirs.certs, "ca.crt"),
      // Whom HAProxy runs as after binding: whoever runs the test (the default, haproxy, needs root).
      OTA_LB_USER: os.userInfo().username,
      OTA_LB_GROUP: execFileSync("id", ["-gn"], { encoding: "utf8" }).trim(),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`haproxy exited (${child.exitCode}):\n${out}`);
    return fs.existsSync(stats) && Object.values(await serverStates(stats)).every((s) => s === "UP");
  }, 20_000, 100);
  return {
    child,
    url: `https://localhost:${port}`,
    stats,
    output: () => out,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await gone;
    },
  };
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The OTA server whose log closed the request: 0 or 1 (null for /healthz, which is not logged). */
  backend: number | null;
}

describe("HAProxy in front of two OTA server processes", () => {
  const dirs = tempDirs("ota-haproxy-");
  const servers: ServerProcess[] = [];
  let ca: Buffer;

  /** A request through HAProxy on a connection of its own, and which server answered it (by its request id in that server's log). */
  const via = async (lb: Lb, method: string, urlPath: string, headers: Record<string, string> = {}, body?: string, from?: string): Promise<Answer> => {
    const agent = new Agent({ connect: { ca }, ...(from ? { localAddress: from } : {}) });
    const id = randomUUID();
    try {
      const r = await request(lb.url + urlPath, { method: method as "GET", headers: { ...headers, "X-Request-Id": id }, body, dispatcher: agent, reset: true });
      const bytes = Buffer.from(await r.body.arrayBuffer());
      // /healthz is not logged (load balancers ask it too often).
      const backend =
        urlPath === "/healthz"
          ? null
          : (await eventually(() => {
              const i = servers.findIndex((s) => s.output().includes(`"id":"${id}","method"`));
              return i >= 0 ? i + 1 : null;
            }, 5_000)) - 1;
      return { status: r.statusCode, headers: r.headers, body: bytes, backend };
    } finally {
      await agent.close();
    }
  };

  const poll = async (lb: Lb, d: Bundle) => {
    const n = nonce();
    const r = await via(lb, "GET", "/firmware/manifest", { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, "X-Nonce": n });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString("utf8"))).toMatchObject({ nonce: n, device_id: d.deviceId });
    expect(r.headers["x-manifest-hmac"]).toBe(mac(d.hmacKey, r.body));
    return r.backend!;
  };

  /** Provisions a device through HAProxy; `headers` and `from` (the client's own address) as the operator's request has them. */
  const provision = async (lb: Lb, id: string, headers: Record<string, string> = {}, from?: string) => {
    const r = await via(lb, "POST", `/api/v1/devices/${id}/provision`, { Authorization: `Bearer ${servers[0]!.creds.operatorToken}`, "Content-Type": "application/json", ...headers }, "{}", from);
    expect(r.status).toBe(201);
    return JSON.parse(r.body.toString("utf8")) as Bundle;
  };

  const backends = () => ({ OTA_BACKEND_1: `127.0.0.1:${servers[0]!.port}`, OTA_BACKEND_2: `127.0.0.1:${servers[1]!.port}` });

  beforeAll(async () => {
    if (!HAPROXY) {
      if (CI) throw new Error("haproxy is not installed (Debian package haproxy; .ci/run installs it)");
      return;
    }
    fs.mkdirSync(dirs.firmware, { recursive: true });
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "hello.bin"));
    // The first makes the certificate and the first-start credentials; the second finds them. Both take the
    // client's address from X-Forwarded-For, as they must behind haproxy-tls-terminated.cfg.
    servers.push(await startServerProcess(dirs, { env: { OTA_TRUST_PROXY: "true" } }));
    servers.push(await startServerProcess(dirs, { env: { OTA_TRUST_PROXY: "true" } }));
    ca = servers[0]!.ca;
  });

  afterAll(async () => {
    for (const s of servers) if (s.child.exitCode === null && s.child.signalCode === null) await s.stop();
    fs.rmSync(dirs.root, { recursive: true, force: true });
    await dropDatabase(dirs);
  });

  const withHaproxy = HAPROXY || CI ? it : (name: string) => it.skip(`${name} [skipped: haproxy is not installed (Debian package haproxy)]`, () => undefined);

  /** The address the audit log recorded for a device's provisioning. */
  const provisionedFrom = (id: string) =>
    withTestDb(dirs, async (db) => (await db.rows<{ ip: string | null }>("SELECT ip FROM audit_log WHERE action = 'device.provision' AND target = ?", [id]))[0]?.ip);

  withHaproxy("TLS terminated at HAProxy (haproxy-tls-terminated.cfg): the device API works through it on both servers, which learn the client's address and not one it claims", async () => {
    // HAProxy serves the servers' own certificate and key here, in the one PEM file it takes.
    const pem = path.join(dirs.root, "haproxy.pem");
    fs.writeFileSync(pem, Buffer.concat([fs.readFileSync(path.join(dirs.certs, "server.crt")), fs.readFileSync(path.join(dirs.certs, "server.key"))]), { mode: 0o600 });
    const lb = await startHaproxy("haproxy-tls-terminated.cfg", dirs, { ...backends(), OTA_LB_CERT: pem });
    try {
      // The client connects from 127.0.0.2 (HAProxy reaches the servers from 127.0.0.1) and claims another address.
      const device = await provision(lb, "lb-tls-dev-1", { "X-Forwarded-For": "203.0.113.9" }, "127.0.0.2");
      expect(await provisionedFrom("lb-tls-dev-1")).toBe("127.0.0.2");
      const seen = new Set<number>();
      for (let i = 0; i < 20 && seen.size < 2; i++) seen.add(await poll(lb, device));
      expect(seen).toEqual(new Set([0, 1]));
      expect((await via(lb, "GET", "/healthz")).status).toBe(200);
    } finally {
      await lb.stop();
    }
  });

  withHaproxy("TLS passed through (haproxy.cfg): the device API works through it on both servers, and one killed with SIGKILL is marked DOWN while requests keep succeeding", async () => {
    const lb = await startHaproxy("haproxy.cfg", dirs, backends());
    try {
      expect(await serverStates(lb.stats)).toEqual({ ota1: "UP", ota2: "UP" });
      const device = await provision(lb, "lb-dev-1", {}, "127.0.0.2");
      // The servers see HAProxy's connection, not the client's (see docs/operations.md).
      expect(await provisionedFrom("lb-dev-1")).toBe("127.0.0.1");
      // Devices see the servers' own certificate (HAProxy only forwards bytes), and both servers answer.
      const seen = new Set<number>();
      for (let i = 0; i < 20 && seen.size < 2; i++) seen.add(await poll(lb, device));
      expect(seen).toEqual(new Set([0, 1]));
      for (let i = 0; i < 4; i++) expect((await via(lb, "GET", "/healthz")).status).toBe(200);

      await servers[0]!.kill("SIGKILL");
      // Before the checks notice, a connection sent to the dead server is tried again on the other.
      const during: number[] = [];
      const until = Date.now() + 8_000;
      while (Date.now() < until && (await serverStates(lb.stats)).ota1 !== "DOWN") during.push(await poll(lb, device));
      expect(await serverStates(lb.stats)).toEqual({ ota1: "DOWN", ota2: "UP" });
      expect(lb.output()).toMatch(/Server ota_servers\/ota1 is DOWN/);
      expect(during.every((b) => b === 1)).toBe(true);
      // Some of them were sent to the dead server first, refused, and sent again to the other.
      expect(during.length).toBeGreaterThan(0);
      expect(Number((await serverStats(lb.stats)).ota1!.wredis)).toBeGreaterThan(0);
      for (let i = 0; i < 6; i++) expect(await poll(lb, device)).toBe(1);
      expect((await via(lb, "GET", "/healthz")).status).toBe(200);
    } finally {
      await lb.stop();
    }
  });
});
