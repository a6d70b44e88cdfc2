// Figure 4: device reports stored per second with durability on (the default: committed to disk before the
// answer), and a crash check: reports are sent flat out, the server is killed with SIGKILL mid-run, started
// again on the same data, and every acknowledged report must be in the database.
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Pool } from "undici";
import { best, round } from "../compare";
import { runWrk } from "../wrk";
import type { BenchContext } from "./context";

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

export interface CrashFigures {
  acknowledged: number;
  lost: number;
  in_flight_at_kill: number;
  in_flight_stored: number;
  restarted: boolean;
  pass: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function countReports(dataDir: string, prefix: string): Set<string> {
  const db = new SqliteDatabase(path.join(dataDir, "ota.sqlite"), { readonly: true });
  try {
    const rows = db.prepare("SELECT report_id FROM reports WHERE report_id LIKE ?").all(`${prefix}%`) as { report_id: string }[];
    return new Set(rows.map((r) => r.report_id));
  } finally {
    db.close();
  }
}

export async function measureReports(b: BenchContext): Promise<ReportFigures> {
  const rates: number[] = [];
  const busy: number[] = [];
  let errors = 0;
  let acknowledged = 0;
  const prefix = `w${Date.now().toString(36)}`;
  for (let i = 0; i < b.opts.rounds; i++) {
    const r = await runWrk({
      serverPid: b.server.pid,
      wrk: b.tools.wrk,
      cpu: b.cpu.load,
      url: `https://127.0.0.1:${b.server.port}`,
      script: "report",
      threads: b.opts.loadThreads,
      connections: b.opts.reportConnections,
      seconds: b.opts.seconds,
      env: { BENCH_DEVICES: b.fleet.luaDevices, BENCH_REPORT_PREFIX: `${prefix}r${i}` },
    });
    const good = r.requests - r.errors.status;
    rates.push(good / r.seconds);
    busy.push(r.serverBusy ?? 0);
    acknowledged += good;
    errors += r.errors.status + r.errors.timeout + r.errors.read;
  }
  // The server must hold at least every report it acknowledged (wrk may count a reply it cut off at the end).
  const stored = countReports(b.fleet.dataDir, prefix).size;
  const rate = best(rates);
  return {
    reports_per_s: round(rate),
    target: 5000,
    pass: rate >= 5000 && stored >= acknowledged && errors === 0,
    connections: b.opts.reportConnections,
    rounds: rates.map((x) => round(x)),
    errors,
    stored_check: { acknowledged, stored },
    server_busy: busy[rates.indexOf(rate)] ?? 0,
  };
}

export async function crashCheck(b: BenchContext): Promise<CrashFigures> {
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
  };
}
