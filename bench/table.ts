// The human-readable summary printed before the JSON line.
import type { BaselineReports, CrashFigures, ReportFigures } from "./phases/reports";
import type { BaselineDownloads, BaselineSlowDownloads, DownloadFigures, SlowDownloadFigures } from "./phases/downloads";
import type { BaselinePipeline, PipelineFigures } from "./phases/pipeline";
import type { BaselineRates, PollFigures } from "./phases/polls";
import type { PgPollFigures } from "./phases/pg-polls";
import type { DurableReportFigures } from "./phases/durable-reports";

export interface TableInput {
  pinning: string;
  /** --compare: the baseline build's folder; its figures get a column of their own. */
  baseline_build: string | null;
  bare_reference: "node" | "express";
  polls_keepalive: (PollFigures & Partial<BaselineRates>) | null;
  polls_handshake: (PollFigures & Partial<BaselineRates> & { fleet_at_5min: number }) | null;
  downloads: (DownloadFigures & Partial<BaselineDownloads>) | null;
  slow_downloads: (SlowDownloadFigures & Partial<BaselineSlowDownloads>) | null;
  reports: (ReportFigures & Partial<BaselineReports>) | null;
  reports_sigkill: CrashFigures | null;
  device_pipeline: (PipelineFigures & Partial<BaselinePipeline>) | null;
  pg_polls: PgPollFigures | null;
  durable_reports: DurableReportFigures | null;
}

/** Figures 6 and 7: SQLite against PostgreSQL, a small table of their own. */
function backendTable(r: TableInput): string[] {
  const rows: string[][] = [["figure (SQLite vs PostgreSQL)", "SQLite", "PostgreSQL", "PG/SQLite"]];
  const q = r.pg_polls;
  if (q) {
    rows.push([`6 manifest polls, keep-alive (req/s; 1 vs ${q.postgres.processes} processes)`, fmt(q.sqlite.polls_per_s), fmt(q.postgres.polls_per_s), q.rate_ratio.toFixed(2)]);
    rows.push(["  per CPU-second, PostgreSQL's own CPU counted", fmt(q.sqlite.polls_per_cpu_s), q.postgres.polls_per_cpu_s === null ? "?" : fmt(q.postgres.polls_per_cpu_s), num(q.per_cpu_s_ratio, 2) || "?"]);
    rows.push(["  per CPU-second, server processes only", fmt(q.sqlite.polls_per_cpu_s), fmt(q.postgres.polls_per_cpu_s_servers_only), q.per_cpu_s_ratio_servers_only.toFixed(2)]);
    if (q.postgres.database_cpu_share !== null) rows.push(["  PostgreSQL's share of the CPU used", "", `${(q.postgres.database_cpu_share * 100).toFixed(0)}%`, ""]);
  }
  const d = r.durable_reports;
  if (d) {
    rows.push(["7 durable reports (acknowledged = committed, /s)", fmt(d.sqlite.reports_per_s), fmt(d.postgres.reports_per_s), d.postgres_vs_sqlite.toFixed(2)]);
    rows.push(["  fsyncs/s of a small file in the data folder", fmt(d.sqlite.fsyncs_per_s), fmt(d.postgres.fsyncs_per_s), ""]);
    rows.push(["  reports per fsync (> 1: group commit)", d.sqlite.reports_per_fsync.toFixed(2), d.postgres.reports_per_fsync.toFixed(2), ""]);
    rows.push(["  busy: share of its core the server used", num(d.sqlite.server_busy, 2), num(d.postgres.server_busy, 2), ""]);
    const t = d.postgres.pg_test_fsync;
    if (t) rows.push([`  pg_test_fsync ${t.method} (ops/s), reports per op`, "", `${fmt(t.ops_per_s)}, ${num(d.postgres.reports_per_pg_test_fsync, 2)}`, ""]);
  }
  if (rows.length === 1) return [];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return ["", line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)];
}

const fmt = (n: number) => n.toLocaleString("en-US");
const mark = (pass: boolean) => (pass ? "ok" : "MISSED");

/** Columns 0 and 1 (figure, ours), then the baseline's column when comparing, then the rest. */
const BASELINE_COLUMN = 2;
const num = (x: number | null | undefined, digits: number) => (typeof x === "number" ? x.toFixed(digits) : "");

export function printTable(r: TableInput): void {
  const compare = r.baseline_build !== null;
  const rows: string[][] = [["figure", "ours", "nginx", "ratio", r.bare_reference === "express" ? "bare Express" : "bare Node", "target", "", "busy ours/nginx", "per CPU-second ratio"]];
  // With --compare: [baseline's figure, ours over the baseline's] for the row pushed just before.
  const vs: [string, string][] = [["baseline", "vs baseline"]];
  const base = (figure: string, ratio: string) => {
    while (vs.length < rows.length - 1) vs.push(["", ""]);
    vs.push([figure, ratio]);
  };
  const busy = (b: { server: number | null; nginx: number | null }) => `${b.server?.toFixed(2) ?? "?"}/${b.nginx?.toFixed(2) ?? "?"}`;
  const k = r.polls_keepalive;
  if (k) {
    rows.push(["1 manifest polls, keep-alive (req/s)", fmt(k.server_rps), fmt(k.nginx_rps), k.ratio.toFixed(2), fmt(k.bare_node_rps), ">= 0.5 of nginx", mark(k.pass), busy(k.busy), k.capacity_ratio.toFixed(2)]);
    if (k.baseline_rps !== undefined) base(fmt(k.baseline_rps), num(k.capacity_vs_baseline, 2));
  }
  const h = r.polls_handshake;
  if (h) {
    rows.push(["2 manifest polls, handshake each (req/s)", fmt(h.server_rps), fmt(h.nginx_rps), h.ratio.toFixed(2), fmt(h.bare_node_rps), ">= 0.9, >= 1,000/s", mark(h.pass), busy(h.busy), h.capacity_ratio.toFixed(2)]);
    if (h.baseline_rps !== undefined) base(fmt(h.baseline_rps), num(h.capacity_vs_baseline, 2));
    rows.push(["  fleet served at one poll per 5 min", fmt(h.fleet_at_5min), "", "", "", ">= 300,000", mark(h.fleet_at_5min >= 300_000)]);
  }
  const d = r.downloads;
  if (d) {
    rows.push(["3 firmware downloads (MiB/s)", d.server_mib_s.toFixed(1), d.nginx_mib_s.toFixed(1), d.ratio.toFixed(2), d.bare_node_mib_s.toFixed(1), ">= 0.8 of nginx", mark(d.pass), busy(d.busy), d.capacity_ratio.toFixed(2)]);
    if (d.baseline_mib_s !== undefined) base(d.baseline_mib_s.toFixed(1), num(d.capacity_vs_baseline, 2));
  }
  const s = r.slow_downloads;
  if (s) {
    rows.push([`  RSS per slow download (${fmt(s.downloads)} open, KiB)`, s.kib_per_download.toFixed(1), "", "", "", "<= 64 KiB", mark(s.pass)]);
    if (s.baseline_kib_per_download !== undefined) base(s.baseline_kib_per_download.toFixed(1), num(s.kib_per_download_vs_baseline, 2));
    rows.push(["    of which an idle TLS connection in bare Node", s.bare_node_kib_per_idle_connection.toFixed(1), "", "", "", "", ""]);
  }
  const rep = r.reports;
  if (rep) {
    rows.push(["4 durable reports (stored/s)", fmt(rep.reports_per_s), "", "", "", ">= 5,000/s", mark(rep.pass)]);
    if (rep.baseline_reports_per_s !== undefined) base(fmt(rep.baseline_reports_per_s), num(rep.capacity_vs_baseline, 2));
  }
  const c = r.reports_sigkill;
  if (c) {
    rows.push([`  acknowledged then lost on SIGKILL (of ${fmt(c.acknowledged)})`, fmt(c.lost), "", "", "", "0", mark(c.pass)]);
    if (compare) base("-", "");
  }
  const p = r.device_pipeline;
  const pb = p && "baseline_kib_s" in p ? p : null;
  const pipelineBase = p && compare ? (pb ? num(pb.baseline_kib_s, 1) : "failed") : null;
  if (!p) {
    // not run (--only)
  } else if (p.status === "failed") {
    rows.push(["5 device pipeline in the VM", "failed", "", "", "", ">= 64 KiB/s, <= 24 KiB heap", mark(false)]);
    if (pipelineBase !== null) base(pipelineBase, "");
  } else {
    rows.push(["5 device pipeline in the VM (KiB/s)", p.kib_s.toFixed(1), "", p.ratio_vs_native.toFixed(3), p.native_kib_s.toFixed(1), ">= 64 KiB/s", mark(p.kib_s >= 64)]);
    if (pipelineBase !== null) base(pipelineBase, num(pb?.kib_s_vs_baseline, 2));
    rows.push(["  peak VM heap (KiB)", p.peak_heap_kib.toFixed(1), "", "", "", "<= 24 KiB", mark(p.peak_heap_kib <= 24)]);
    if (pb) base(num(pb.baseline_peak_heap_kib, 1), "");
  }
  for (const row of rows) while (row.length < rows[0]!.length) row.push("");
  if (compare) {
    rows.forEach((row, i) => {
      const [figure, ratio] = vs[i] ?? ["", ""];
      row.splice(BASELINE_COLUMN, 0, figure);
      row.push(ratio);
    });
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const out = [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)];
  out.push("", `pinning: ${r.pinning}`, "busy: share of its core each server used in its best round (near 1: the server, not wrk, set the pace)",
    "per CPU-second ratio: requests per CPU-second of ours over nginx's (median of rounds), whoever set the pace");
  if (compare) {
    out.push(`baseline: ${r.baseline_build}, started the same way on its own copy of the data (rounds of 1-4 alternate with ours)`,
      "vs baseline: ours over the baseline's: requests (MiB for 3) per CPU-second, KiB per slow download, pipeline KiB/s");
  }
  if (p?.status === "failed") out.push(`5 failed: ${p.reason}`);
  if (p && "baseline_reason" in p) out.push(`5 baseline failed: ${p.baseline_reason}`);
  if (p?.status === "measured") out.push("5: the agent in the VM (bulk writes); ratio and bare Node columns: Node.js doing the same Range requests and hashing, no VM");
  out.push(...backendTable(r));
  process.stdout.write(out.join("\n") + "\n\n");
}
