// Figures 1 and 2: manifest polls, keep-alive and with a full TLS handshake per request, against nginx
// serving a static manifest of the same size over the same TLS (and bare Node.js HTTPS doing the same).
import { alternate, best, round } from "../compare";
import { runWrk, type WrkResult } from "../wrk";
import type { BenchContext } from "./context";

export interface PollFigures {
  server_rps: number;
  nginx_rps: number;
  bare_node_rps: number;
  ratio: number;
  bare_node_ratio: number;
  target: number;
  pass: boolean;
  connections: number;
  rounds: { server: number[]; nginx: number[]; bare_node: number[] };
  server_p99_ms: number;
  nginx_p99_ms: number;
  server_errors: number;
  /**
   * Requests per second of CPU each server spent (median over rounds): its rate if it had a whole core to
   * itself. Independent of whether wrk or a neighbour on the machine set the pace.
   */
  capacity_rps: { server: number; nginx: number; bare_node: number };
  capacity_ratio: number;
  /** Share of its core each server used in its best round: near 1 means the server, not wrk, set the pace. */
  busy: { server: number | null; nginx: number | null; bare_node: number | null };
}

/** With --compare, added to every rate figure: the baseline build under the same load, and ours over it. */
export interface BaselineRates {
  /** The baseline's best round. */
  baseline_rps: number;
  /** server_rps / baseline_rps (best rounds). */
  rps_vs_baseline: number;
  /** Requests per CPU-second of the baseline's process, median over rounds (as capacity_rps). */
  baseline_capacity_rps: number;
  /** Ours per CPU-second over the baseline's. */
  capacity_vs_baseline: number;
  baseline_p99_ms: number;
  baseline_errors: number;
  baseline_rounds: number[];
  baseline_busy: number | null;
}

export const POLL_INTERVAL_S = 300;

function goodRate(r: WrkResult): number {
  return (r.requests - r.errors.status) / r.seconds;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Requests per CPU-second of the server process, median over rounds. */
export function capacity(runs: WrkResult[]): number {
  return median(runs.map((r) => (r.serverBusy ? goodRate(r) / r.serverBusy : 0)));
}

export function errorsOf(r: WrkResult): number {
  return r.errors.status + r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout;
}

/** The baseline's side of a comparison (its rounds of the same wrk load as ours), against ours. */
function baselineRates(ours: WrkResult[], baseline: WrkResult[]): BaselineRates {
  const s = ours.map(goodRate);
  const r = baseline.map(goodRate);
  const top = baseline[r.indexOf(best(r))]!;
  return {
    baseline_rps: round(best(r)),
    rps_vs_baseline: round(best(s) / best(r), 3),
    baseline_capacity_rps: round(capacity(baseline)),
    capacity_vs_baseline: round(capacity(ours) / capacity(baseline), 3),
    baseline_p99_ms: round(top.latencyUs.p99 / 1000, 2),
    baseline_errors: baseline.reduce((a, x) => a + errorsOf(x), 0),
    baseline_rounds: r.map((x) => round(x)),
    baseline_busy: top.serverBusy,
  };
}

export async function measurePolls(b: BenchContext, handshakeEach: boolean): Promise<PollFigures & Partial<BaselineRates>> {
  const connections = handshakeEach ? b.opts.handshakeConnections : b.opts.keepAliveConnections;
  const env = { BENCH_DEVICES: b.fleet.luaDevices, BENCH_CLOSE: handshakeEach ? "1" : "0" };
  const run = (port: number, serverPid: number) => () =>
    runWrk({
      serverPid,
      wrk: b.tools.wrk,
      cpu: b.cpu.load,
      url: `https://127.0.0.1:${port}`,
      script: "poll",
      threads: b.opts.loadThreads,
      connections,
      seconds: b.opts.seconds,
      env,
    });
  const r = await alternate(b.opts.rounds, {
    server: run(b.server.port, b.server.pid),
    baseline: b.baseline && run(b.baseline.server.port, b.baseline.server.pid),
    nginx: run(b.nginx.port, b.nginx.workerPid),
    bare: run(b.bare.port, b.bare.pid),
  });
  const s = r.server.map(goodRate);
  const n = r.nginx.map(goodRate);
  const bare = r.bare.map(goodRate);
  const target = handshakeEach ? 0.9 : 0.5;
  const ratio = best(s) / best(n);
  const bestServer = r.server[s.indexOf(best(s))]!;
  const bestNginx = r.nginx[n.indexOf(best(n))]!;
  return {
    server_rps: round(best(s)),
    nginx_rps: round(best(n)),
    bare_node_rps: round(best(bare)),
    ratio: round(ratio, 3),
    bare_node_ratio: round(best(bare) / best(n), 3),
    target,
    pass: ratio >= target && (!handshakeEach || best(s) >= 1000),
    connections,
    rounds: { server: s.map((x) => round(x)), nginx: n.map((x) => round(x)), bare_node: bare.map((x) => round(x)) },
    server_p99_ms: round(bestServer.latencyUs.p99 / 1000, 2),
    nginx_p99_ms: round(bestNginx.latencyUs.p99 / 1000, 2),
    server_errors: r.server.reduce((a, x) => a + errorsOf(x), 0),
    capacity_rps: { server: round(capacity(r.server)), nginx: round(capacity(r.nginx)), bare_node: round(capacity(r.bare)) },
    capacity_ratio: round(capacity(r.server) / capacity(r.nginx), 3),
    busy: { server: bestServer.serverBusy, nginx: bestNginx.serverBusy, bare_node: r.bare[bare.indexOf(best(bare))]!.serverBusy },
    ...(b.baseline && baselineRates(r.server, r.baseline)),
  };
}
