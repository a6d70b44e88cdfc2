// Starts the real HTTPS server (real TLS, real SQLite or PostgreSQL: see database.ts, real folder watcher) in a temporary folder, in this
// process, and talks to it with the CA pinned, as a device or operator would. The built server in a child
// process (which a test can kill or watch from outside) is server-process.ts.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { Agent, request } from "undici";
import { loadConfig } from "../../server/infra/config/config";
import { createLogger } from "../../server/infra/logging/logger";
import { startServer, type RunningServer } from "../../server/server";
import { dropDatabase, ensureDatabase, storageEnv } from "./database";

export const ROOT = path.resolve(__dirname, "../..");

export interface Dirs {
  root: string;
  data: string;
  firmware: string;
  certs: string;
}

export function tempDirs(prefix = "ota-test-"): Dirs {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return {
    root,
    data: path.join(root, "data"),
    firmware: path.join(root, "firmware"),
    certs: path.join(root, "certs"),
  };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = any>(): T;
  text(): string;
}

/** What a test needs to talk to a server as its devices and operators do. */
export interface ServerClient {
  url: string;
  port: number;
  dirs: Dirs;
  ca: Buffer;
  creds: { deviceApiKey: string; operatorToken: string };
  agent: Agent;
  req(method: string, p: string, opts?: { headers?: Record<string, string>; body?: string | Buffer }): Promise<Reply>;
}

export interface TestServer extends ServerClient {
  running: RunningServer;
  logs: string[];
  close(opts?: { keepDirs?: boolean }): Promise<void>;
}

/** The HTTPS client of a server whose CA and first-start credentials are in `dirs`. */
export function clientOf(dirs: Dirs, port: number): ServerClient {
  const ca = fs.readFileSync(path.join(dirs.certs, "ca.crt"));
  const agent = new Agent({ connect: { ca } });
  const creds = JSON.parse(fs.readFileSync(path.join(dirs.data, "dev-credentials.json"), "utf8"));
  const url = `https://localhost:${port}`;
  return {
    url,
    port,
    dirs,
    ca,
    creds,
    agent,
    async req(method, p, opts = {}) {
      const r = await request(url + p, { method: method as any, headers: opts.headers, body: opts.body, dispatcher: agent });
      const body = Buffer.from(await r.body.arrayBuffer());
      return {
        status: r.statusCode,
        headers: r.headers,
        body,
        json: () => JSON.parse(body.toString("utf8")),
        text: () => body.toString("utf8"),
      };
    },
  };
}

/**
 * Environment every test server starts with (in this process or as a child): the temporary folders, the folder's
 * database on PostgreSQL, any port, a short ingest delay.
 */
export const testEnv = (dirs: Dirs): Record<string, string> => ({
  PORT: "0",
  HOST: "127.0.0.1",
  OTA_DATA_DIR: dirs.data,
  OTA_FIRMWARE_DIR: dirs.firmware,
  OTA_CERT_DIR: dirs.certs,
  OTA_PARTITIONS: path.join(ROOT, "partitions.csv"),
  OTA_INGEST_SETTLE_MS: "200",
  OTA_AUTH_FAILURE_LIMIT: "1000",
  ...storageEnv(dirs),
});

export async function startTestServer(env: Record<string, string> = {}, dirs: Dirs = tempDirs()): Promise<TestServer> {
  await ensureDatabase(dirs);
  const config = loadConfig({ ...testEnv(dirs), ...env }, dirs.root);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      const s = chunk.toString();
      logs.push(s);
      if (process.env.OTA_TEST_LOG) process.stderr.write(s);
      cb();
    },
  });
  const running = await startServer(config, { log: createLogger(env.OTA_LOG_LEVEL ?? "info", sink) });
  const client = clientOf(dirs, running.port);
  return {
    ...client,
    running,
    logs,
    async close(opts = {}) {
      await client.agent.close();
      await running.close();
      if (!opts.keepDirs) {
        fs.rmSync(dirs.root, { recursive: true, force: true });
        await dropDatabase(dirs);
      }
    },
  };
}

export async function eventually<T>(fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 5000, stepMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** A TCP port free on 127.0.0.1 just now (for a program the test starts on it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
