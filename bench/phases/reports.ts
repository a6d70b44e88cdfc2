// Figure 4: device reports stored per second with durability on (the default: committed to disk before the
// answer), and a crash check: reports are sent flat out, the server is killed with SIGKILL mid-run, started
// again on the same data, and every acknowledged report must be in the database. With --compare, the reports
// are also measured on the baseline build (rounds alternating); the crash check is of our server only.
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Pool } from "undici";
import { alternate, best, round } from "../compare";
import type { ServerProcess } from "../processes";
import { runWrk, type WrkResult } from "../wrk";
import type { BenchContext } from "./context";
import { capacity } from "./polls";

export interface ReportFigures {
  reports_per_s: number;
  target: number;
  pass: boolean;
  connections: number;
  rounds: number[];
  errors: number;
  stored_check: { acknowledged: number; stored: number };
  /** Share of its core the server used in the best round. */
  server_busy: number;
}

/** With --compare: the baseline build under the same report load (its own database), and ours over it. */
export interface BaselineReports {
  baseline_reports_per_s: number;
  /** reports_per_s / baseline_reports_per_s (best rounds). */
  reports_per_s_vs_baseline: number;
  /** Reports stored per CPU-second of the server process, median over rounds (as capacity() for polls). */
  server_capacity_rps: number;
  baseline_capacity_rps: number;
  /** server_capacity_rps / baseline_capacity_rps. */
  capacity_vs_baseline: number;
  baseline_errors: number;
  baseline_rounds: number[];
  baseline_stored_check: { acknowledged: number; stored: number };
  baseline_busy: number;
}

export interface CrashFigures {
  acknowledged: number;
  lost: number;
  in_flight_at_kill: number;
  in_flight_stored: number;
  restarted: boolean;
  pass: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function countReports(dataDir: string, prefix: string): Set<string> {
  const db = new SqliteDatabase(path.join(dataDir, "ota.sqlite"), { readonly: true });
  try {
    const rows = db.prepare("SELECT report_id FROM reports WHERE report_id LIKE ?").all(`${prefix}%`) as { report_id: string }[];
    return new Set(rows.map((r) => r.report_id));
  } finally {
    db.close();
  }
}

/** Rates, acknowledged count, errors and busy share of one server's rounds. */
function tally(runs: WrkResult[]) {
  const rates = runs.map((r) => (r.requests - r.errors.status) / r.seconds);
  const rate = best(rates);
  return {
    rate,
    rates,
    acknowledged: runs.reduce((a, r) => a + r.requests - r.errors.status, 0),
    errors: runs.reduce((a, r) => a + r.errors.status + r.errors.timeout + r.errors.read, 0),
    busy: runs[rates.indexOf(rate)]?.serverBusy ?? 0,
  };
}

/** Rounds of reports against a server; each round sends new report_ids: `${prefix}${tag}${round}`. */
export function reportRounds(b: BenchContext, prefix: string): (server: ServerProcess, tag: string) => () => Promise<WrkResult> {
  return (server, tag) => {
    let i = 0;
    return () =>
      runWrk({
        serverPid: server.pid,
        wrk: b.tools.wrk,
        cpu: b.cpu.load,
        url: `https://127.0.0.1:${server.port}`,
        script: "report",
        threads: b.opts.loadThreads,
        connections: b.opts.reportConnections,
        seconds: b.opts.seconds,
        env: { BENCH_DEVICES: b.fleet.luaDevices, BENCH_REPORT_PREFIX: `${prefix}${tag}${i++}` },
      });
  };
}

export async function measureReports(b: BenchContext): Promise<ReportFigures & Partial<BaselineReports>> {
  const prefix = `w${Date.now().toString(36)}`;
  const load = reportRounds(b, prefix);
  const r = await alternate(b.opts.rounds, { server: load(b.server, "r"), baseline: b.baseline && load(b.baseline.server, "b") });
  const ours = tally(r.server);
  // The server must hold at least every report it acknowledged (wrk may count a reply it cut off at the end).
  const stored = countReports(b.fleet.dataDir, prefix).size;
  const figures: ReportFigures = {
    reports_per_s: round(ours.rate),
    target: 5000,
    pass: ours.rate >= 5000 && stored >= ours.acknowledged && ours.errors === 0,
    connections: b.opts.reportConnections,
    rounds: ours.rates.map((x) => round(x)),
    errors: ours.errors,
    stored_check: { acknowledged: ours.acknowledged, stored },
    server_busy: ours.busy,
  };
  if (!b.baseline) return figures;
  const base = tally(r.baseline);
  return {
    ...figures,
    baseline_reports_per_s: round(base.rate),
    reports_per_s_vs_baseline: round(ours.rate / base.rate, 3),
    server_capacity_rps: round(capacity(r.server)),
    baseline_capacity_rps: round(capacity(r.baseline)),
    capacity_vs_baseline: round(capacity(r.server) / capacity(r.baseline), 3),
    baseline_errors: base.errors,
    baseline_rounds: base.rates.map((x) => round(x)),
    baseline_stored_check: { acknowledged: base.acknowledged, stored: countReports(b.baseline.dataDir, prefix).size },
    baseline_busy: base.busy,
  };
}

/** With --compare, `baseline: null`: the check is of our server's durability, not a figure to compare. */
export async function crashCheck(b: BenchContext): Promise<CrashFigures & { baseline?: null }> {
  if (b.opts.profile) {
    // A CPU profile is written only at a clean exit: end the profiled run here, before the kill.
    await b.server.stop();
    b.server = await b.startServer();
  }
  const prefix = `k${Date.now().toString(36)}-`;
  const pool = new Pool(`https://127.0.0.1:${b.server.port}`, {
    connections: b.opts.reportConnections,
    pipelining: 1,
    connect: { ca: b.fleet.ca, servername: "localhost" },
  });
  const acked = new Set<string>();
  const sent = new Set<string>();
  let n = 0;
  let stop = false;
  const worker = async (w: number) => {
    while (!stop) {
      const d = b.fleet.devices[(n * 13 + w) % b.fleet.devices.length]!;
      const id = `${prefix}${n++}`;
      sent.add(id);
      try {
        const r = await pool.request({
          method: "POST",
          path: "/firmware/report",
          headers: { "x-api-key": d.apiKey, "x-device-id": d.id, "content-type": "application/json" },
          body: JSON.stringify({ device_id: d.id, status: "writing", bytes: n % 124416, total: 124416, report_id: id }),
        });
        const body = await r.body.text();
        if (r.statusCode === 200 && (JSON.parse(body) as { ok?: unknown }).ok === true) acked.add(id);
      } catch {
        return; // the server is gone
      }
    }
  };
  const workers = Array.from({ length: b.opts.reportConnections }, (_, w) => worker(w));
  await sleep(b.opts.killAfterMs);
  const ackedBeforeKill = acked.size;
  await b.server.kill9();
  stop = true;
  await Promise.all(workers);
  await pool.destroy().catch(() => undefined);
  if (acked.size === 0) throw new Error("no report was acknowledged before the kill: the crash check proves nothing");
  b.say(`  killed the server with SIGKILL after ${ackedBeforeKill} acknowledged reports; starting it again`);

  b.server = await b.startServer();
  const restarted = true;
  const stored = countReports(b.fleet.dataDir, prefix);
  let lost = 0;
  for (const id of acked) if (!stored.has(id)) lost++;
  const inFlight = [...sent].filter((id) => !acked.has(id));
  return {
    acknowledged: acked.size,
    lost,
    in_flight_at_kill: inFlight.length,
    in_flight_stored: inFlight.filter((id) => stored.has(id)).length,
    restarted,
    pass: lost === 0 && restarted,
    ...(b.baseline && { baseline: null }),
  };
}
