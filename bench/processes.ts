// Child processes the bench starts: our server (production mode, one process) and nginx (one worker), each
// pinned to the "server" core with taskset when there is more than one, the load generator to the other.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { projectRoot } from "../server/paths";

export interface CpuPlan {
  server: string | null;
  load: string | null;
  description: string;
}

export function cpuPlan(taskset: string | null): CpuPlan {
  const n = os.availableParallelism();
  if (!taskset || n < 2) return { server: null, load: null, description: `no pinning (${n} core${n === 1 ? "" : "s"}${taskset ? "" : ", no taskset"})` };
  // The last core serves, the first generates load; with more cores the load generator gets all the others.
  const server = String(n - 1);
  const load = n === 2 ? "0" : `0-${n - 2}`;
  return { server, load, description: `server and nginx on core ${server}, load generator on core ${load} (taskset)` };
}

export function pinned(cpu: string | null, cmd: string, args: string[]): [string, string[]] {
  return cpu ? ["taskset", ["-c", cpu, cmd, ...args]] : [cmd, args];
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Resident set size of a process, from /proc (KiB). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** CPU time a process has used so far (seconds), from /proc. */
export function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (100 Hz)
}

export interface ServerProcess {
  pid: number;
  port: number;
  url: string;
  logFile: string;
  /** SIGTERM and wait: the server finishes requests in flight and closes the database. */
  stop(): Promise<void>;
  /** SIGKILL and wait: nothing gets to run. */
  kill9(): Promise<void>;
}

export interface ServerOptions {
  env: Record<string, string>;
  cpu: string | null;
  logFile: string;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  /** Another build of the server to measure (a folder with dist/server/main.js); default: this one. */
  serverRoot?: string;
}

/** Starts `node dist/server/main.js` in production mode and waits for its "listening" log line. */
export async function startServerProcess(opts: ServerOptions): Promise<ServerProcess> {
  const root = opts.serverRoot ?? projectRoot();
  const out = fs.openSync(opts.logFile, "a");
  const startAt = fs.statSync(opts.logFile).size;
  const [cmd, args] = pinned(opts.cpu, process.execPath, [...(opts.nodeArgs ?? []), path.join(root, "dist/server/main.js")]);
  const child = spawn(cmd, args, {
    cwd: root,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NODE_ENV: "production", OTA_LOG_LEVEL: "info", HOST: "127.0.0.1", PORT: "0", ...opts.env },
    stdio: ["ignore", out, out],
  });
  fs.closeSync(out);
  const until = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = fs.readFileSync(opts.logFile, "utf8").slice(startAt).slice(-3000);
      throw new Error(`the server exited at start (${child.exitCode ?? child.signalCode}); its log ends with:\n${tail}`);
    }
    const text = fs.readFileSync(opts.logFile, "utf8").slice(startAt);
    const line = text.split("\n").find((l) => l.includes('"OTA server listening"'));
    if (line) {
      const url = String((JSON.parse(line) as { url?: unknown }).url);
      const port = Number(new URL(url).port);
      return {
        pid: child.pid!,
        port,
        url,
        logFile: opts.logFile,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          await Promise.race([exited(child), sleep(15_000).then(() => child.kill("SIGKILL"))]);
          await exited(child);
        },
        async kill9() {
          child.kill("SIGKILL");
          await exited(child);
        },
      };
    }
    if (Date.now() > until) {
      child.kill("SIGKILL");
      throw new Error(`the server did not report listening within 120 s; see ${opts.logFile}`);
    }
    await sleep(50);
  }
}

export interface NginxProcess {
  port: number;
  workerPid: number;
  stop(): Promise<void>;
}

export interface NginxOptions {
  nginx: string;
  dir: string;
  cert: string;
  key: string;
  cpu: string | null;
  /** Same settings as our server's TLS (see phases): protocols, ciphers, session resumption. */
  ciphers: string;
  sessionResumption: boolean;
  /** location -> file or folder it serves. */
  manifestFile: string;
  firmwareDir: string;
}

/** One master and ONE worker, serving a static manifest and the firmware files over the same TLS. */
export async function startNginx(opts: NginxOptions): Promise<NginxProcess> {
  fs.mkdirSync(path.join(opts.dir, "tmp"), { recursive: true });
  const port = await freePort();
  const conf = path.join(opts.dir, "nginx.conf");
  fs.writeFileSync(
    conf,
    `# Reference server for the bench: the same certificate, protocols, ciphers and resumption as ours.
worker_processes 1;
daemon off;
pid ${opts.dir}/nginx.pid;
error_log ${opts.dir}/error.log warn;
events { worker_connections 8192; }
http {
  access_log ${opts.dir}/access.log;
  client_body_temp_path ${opts.dir}/tmp/body;
  proxy_temp_path ${opts.dir}/tmp/proxy;
  fastcgi_temp_path ${opts.dir}/tmp/fastcgi;
  uwsgi_temp_path ${opts.dir}/tmp/uwsgi;
  scgi_temp_path ${opts.dir}/tmp/scgi;
  types { application/json json; application/octet-stream bin; }
  sendfile on;
  keepalive_timeout 5s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${opts.cert};
    ssl_certificate_key ${opts.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ${opts.ciphers};
    ssl_session_tickets ${opts.sessionResumption ? "on" : "off"};
    ssl_session_cache ${opts.sessionResumption ? "shared:SSL:10m" : "off"};
    location = /firmware/manifest { default_type application/json; alias ${opts.manifestFile}; }
    location /firmware/ { alias ${opts.firmwareDir}/; }
  }
}
`,
  );
  const [cmd, args] = pinned(opts.cpu, opts.nginx, ["-c", conf, "-p", opts.dir]);
  const err = fs.openSync(path.join(opts.dir, "stderr.log"), "a");
  const child = spawn(cmd, args, { stdio: ["ignore", err, err] });
  fs.closeSync(err);
  const until = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`nginx exited at start: ${fs.readFileSync(path.join(opts.dir, "stderr.log"), "utf8").slice(-2000)}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > until) {
      child.kill("SIGKILL");
      throw new Error(`nginx did not listen within 20 s; see ${opts.dir}`);
    }
    await sleep(50);
  }
  const master = child.pid!;
  const children = fs.readFileSync(`/proc/${master}/task/${master}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return {
    port,
    workerPid: children[0] ?? master,
    async stop() {
      if (child.exitCode === null) child.kill("SIGQUIT");
      await Promise.race([exited(child), sleep(10_000).then(() => child.kill("SIGKILL"))]);
      await exited(child);
    },
  };
}

export interface BareProcess {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Bare Node.js HTTPS serving the static manifest (see bare-https.ts), pinned like the servers. */
export async function startBareHttps(opts: {
  cert: string;
  key: string;
  manifestFile: string;
  firmwareDir: string;
  cpu: string | null;
  /** "express": the same answers through an Express application with one route. */
  app?: "node" | "express";
}): Promise<BareProcess> {
  const script = path.join(projectRoot(), "dist/bench/bare-https.js");
  const [cmd, args] = pinned(opts.cpu, process.execPath, [script, opts.cert, opts.key, opts.manifestFile, opts.firmwareDir]);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NODE_ENV: "production", BARE_APP: opts.app ?? "node" } });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(Number(out.trim()));
    });
    child.once("exit", (code) => reject(new Error(`bare-https exited at start (${code})`)));
  });
  return {
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await Promise.race([exited(child), sleep(5000).then(() => child.kill("SIGKILL"))]);
    },
  };
}
