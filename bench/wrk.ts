// Runs wrk with one of the bench's Lua scripts and reads the JSON summary the script prints at the end.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { projectRoot } from "../server/paths";
import { cpuSeconds, pinned } from "./processes";

export interface WrkResult {
  requests: number;
  seconds: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latencyUs: { p50: number; p99: number; max: number };
  /** requests per second */
  rate: number;
  /** bytes per second */
  throughput: number;
  /** Share of one core the measured server process used during the run (1 = fully busy), when known. */
  serverBusy: number | null;
}

/** The line bench/lua/common.lua prints after a run (after "WRK_JSON "). */
interface WrkSummary {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: WrkResult["errors"];
  latency_us: WrkResult["latencyUs"];
}

export interface WrkOptions {
  wrk: string;
  cpu: string | null;
  url: string;
  script: "poll" | "download" | "report";
  threads: number;
  connections: number;
  seconds: number;
  env: Record<string, string>;
  /** The server process under load: its CPU use is reported, to tell a server-bound run from a client-bound one. */
  serverPid?: number;
}

export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const cpu0 = o.serverPid ? cpuSeconds(o.serverPid) : 0;
  const t0 = performance.now();
  const r = await wrk(o);
  const busy = o.serverPid ? (cpuSeconds(o.serverPid) - cpu0) / ((performance.now() - t0) / 1000) : null;
  return { ...r, serverBusy: busy === null ? null : Math.round(busy * 100) / 100 };
}

function wrk(o: WrkOptions): Promise<Omit<WrkResult, "serverBusy">> {
  const luaDir = path.join(projectRoot(), "bench", "lua");
  const [cmd, args] = pinned(o.cpu, o.wrk, [
    `-t${o.threads}`,
    `-c${o.connections}`,
    `-d${o.seconds}s`,
    "--timeout",
    "10s",
    "-s",
    path.join(luaDir, `${o.script}.lua`),
    o.url,
  ]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, BENCH_LUA_DIR: luaDir, BENCH_RUN: randomBytes(4).toString("hex"), ...o.env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("exit", (code) => {
      const line = out.split("\n").find((l) => l.startsWith("WRK_JSON "));
      if (code !== 0 || !line) {
        reject(new Error(`wrk failed (${code}): ${(err || out).trim().slice(-2000)}`));
        return;
      }
      const j = JSON.parse(line.slice("WRK_JSON ".length)) as WrkSummary;
      const seconds = j.duration_us / 1e6;
      resolve({
        requests: j.requests,
        seconds,
        bytes: j.bytes,
        errors: j.errors,
        latencyUs: j.latency_us,
        rate: j.requests / seconds,
        throughput: j.bytes / seconds,
      });
    });
  });
}
