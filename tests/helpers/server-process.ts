// The built server (dist/server/main.js) as its own process, the way `npm start` runs it: for tests that watch
// the process from outside (its memory, its system calls) or that must survive it going wrong.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Agent, request } from "undici";
import { ensureDatabase } from "./database";
import { clientOf, ROOT, testEnv, type Dirs, type Reply, type ServerClient } from "./server";

/** Whether a process with this pid still exists (signal 0 checks without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface ServerProcess {
  url: string;
  port: number;
  /** The process spawned: the server, or the wrapper named by `wrap` (strace) around it. */
  child: ChildProcess;
  ca: Buffer;
  creds: { deviceApiKey: string; operatorToken: string };
  /** Everything the process wrote to stdout and stderr so far (JSON log lines). */
  output(): string;
  /** Highest resident memory seen so far (KiB), when `rssLimitMiB` was given. */
  peakRssKiB(): number;
  req(method: string, p: string, opts?: { headers?: Record<string, string>; body?: string | Buffer }): Promise<Reply>;
  /** SIGTERM to the server (not to a wrapper, which then ends with it) and wait for the spawned process. */
  stop(): Promise<void>;
  /** The signal to the server, and wait for the spawned process; the folders stay. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

export interface ServerProcessOptions {
  env?: Record<string, string>;
  /** A command that runs the server, e.g. ["strace", "-f", "-o", file]: the node command line is appended. */
  wrap?: string[];
  /**
   * Samples the server's resident memory every 20 ms and kills it with SIGKILL past this many MiB, so that a
   * runaway read fails the test instead of eating the machine.
   */
  rssLimitMiB?: number;
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The pid of the first child of a process (the server under a wrapper). */
function childOf(pid: number): number | null {
  try {
    const first = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)[0];
    return first ? Number(first) : null;
  } catch {
    return null;
  }
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once("exit", () => r()));

export async function startServerProcess(dirs: Dirs, opts: ServerProcessOptions = {}): Promise<ServerProcess> {
  await ensureDatabase(dirs);
  const main = path.join(ROOT, "dist/server/main.js");
  const [cmd, ...args] = [...(opts.wrap ?? []), process.execPath, main];
  const child = spawn(cmd, args, {
    cwd: dirs.root,
    env: { ...process.env, ...testEnv(dirs), ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));

  const serverPid = () => (opts.wrap ? childOf(child.pid!) : child.pid!);
  let peak = 0;
  let killedAt = 0;
  const sampler =
    opts.rssLimitMiB === undefined
      ? null
      : setInterval(() => {
          const pid = serverPid();
          if (!pid) return;
          const rss = rssKiB(pid);
          peak = Math.max(peak, rss);
          if (rss > opts.rssLimitMiB! * 1024 && !killedAt) {
            killedAt = rss;
            process.kill(pid, "SIGKILL");
          }
        }, 20);
  child.once("exit", () => sampler && clearInterval(sampler));
  const killedNote = () => (killedAt ? ` (killed: resident memory reached ${Math.round(killedAt / 1024)} MiB)` : "");

  const line = await new Promise<string>((resolve, reject) => {
    const onData = () => {
      const l = out.split("\n").find((x) => x.includes('"OTA server listening"'));
      if (l) {
        child.stdout.off("data", onData);
        child.off("exit", onExit);
        resolve(l);
      }
    };
    const onExit = (code: number | null, signal: string | null) =>
      reject(new Error(`the server exited at start (${code ?? signal})${killedNote()}; its output ends with:\n${out.slice(-3000)}`));
    child.stdout.on("data", onData);
    child.once("exit", onExit);
  });
  const url = String((JSON.parse(line) as { url: string }).url);
  const port = Number(new URL(url).port);
  const ca = fs.readFileSync(path.join(dirs.certs, "ca.crt"));
  const creds = JSON.parse(fs.readFileSync(path.join(dirs.data, "dev-credentials.json"), "utf8")) as ServerProcess["creds"];
  const agent = new Agent({ connect: { ca } });

  const kill = async (signal: NodeJS.Signals) => {
    await agent.close();
    const pid = serverPid();
    if (child.exitCode === null && child.signalCode === null) {
      if (pid) process.kill(pid, signal);
      else child.kill(signal);
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited(child);
    clearTimeout(timer);
  };
  return {
    url,
    port,
    child,
    ca,
    creds,
    output: () => out,
    peakRssKiB: () => peak,
    async req(method, p, o = {}) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the server is gone${killedNote()}`);
      const r = await request(url + p, { method: method as "GET", headers: o.headers, body: o.body, dispatcher: agent }).catch((e: Error) => {
        throw new Error(`${method} ${p}: ${e.message}${killedNote()}`, { cause: e });
      });
      const body = Buffer.from(await r.body.arrayBuffer());
      return {
        status: r.statusCode,
        headers: r.headers,
        body,
        json: () => JSON.parse(body.toString("utf8")),
        text: () => body.toString("utf8"),
      };
    },
    stop: () => kill("SIGTERM"),
    kill,
  };
}

/** The built server as a child process, with the client the in-process helpers give (tests/helpers/fleet.ts takes either). */
export interface ChildServer extends ServerClient {
  child: ChildProcess;
  /** Its log lines so far (JSON). */
  readonly logs: string[];
  /** Sends the signal and waits for the process to exit; the folders stay. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

export async function spawnServer(dirs: Dirs, env: Record<string, string> = {}): Promise<ChildServer> {
  const p = await startServerProcess(dirs, { env });
  const client = clientOf(dirs, p.port);
  return {
    ...client,
    child: p.child,
    get logs() {
      return p.output().split("\n").filter(Boolean);
    },
    async kill(signal) {
      await p.kill(signal);
      await client.agent.close();
    },
  };
}
