// A smoke run of the bench harness (`npm run bench -- --quick`): tiny loads through every phase, against the
// real server, nginx and wrk. It checks the harness works end to end and that its figures are real
// measurements; the speed targets themselves are only judged by the full `npm run bench`. A second, shorter
// run (`--only` the load phases) exercises `--compare`, with this same build as the baseline. A third runs the
// PostgreSQL figures (6 and 7) on a throwaway cluster of the bench's own.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LARGE_SUBSTITUTE } from "../../bench/fleet";
import { serverBinaries } from "../../bench/postgres";
import { ESPHOME, HAS_ESPHOME } from "../helpers/fixtures";
import { runNode } from "../helpers/node-process";
import { ROOT } from "../helpers/server";

const has = (cmd: string) => ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].some((d) => fs.existsSync(path.join(d, cmd)));
const tools = has("nginx") && has("wrk");
const runnable = tools || process.env.CI === "true";
const why = "nginx and wrk are not installed (apt-get install nginx-light wrk; CI installs them)";
const maybe = runnable ? it : (name: string) => it.skip(`${name} [skipped: ${why}]`, () => undefined);
// CI installs PostgreSQL; elsewhere the PostgreSQL figures need its server programs or OTA_BENCH_DATABASE_URL.
const withPostgres = runnable && (serverBinaries() !== null || Boolean(process.env.OTA_BENCH_DATABASE_URL) || process.env.CI === "true");
const maybePg = withPostgres ? it : (name: string) => it.skip(`${name} [skipped: ${runnable ? "PostgreSQL is not installed" : why}]`, () => undefined);
// Without the 1.5 MB ESPHome image (GPL test data, only beside the repository), --quick downloads the 144 KB build.
const LARGE = HAS_ESPHOME ? path.basename(ESPHOME) : LARGE_SUBSTITUTE;

const harness = path.join(ROOT, "dist/bench/run.js");

async function quickRun(args: string[]) {
  if (!fs.existsSync(harness)) throw new Error("dist/bench/run.js is missing: run `npm run build` (npm test builds first)");
  const r = await runNode(harness, ["--quick", ...args], { cwd: ROOT, timeoutMs: 240_000 });
  expect(r.stderr).not.toMatch(/failed:/);
  expect(r.status).toBe(0);
  return { stdout: r.stdout, result: JSON.parse(r.stdout.trim().split("\n").at(-1)!) };
}

describe("bench harness (quick run)", () => {
  maybe(
    "prints the table and, last, one JSON line with every figure; no acknowledged report is lost to SIGKILL",
    async () => {
      const { stdout, result } = await quickRun(["--only", "polls,handshake,downloads,reports,pipeline"]);
      expect(stdout).toContain("1 manifest polls, keep-alive (req/s)");
      expect(result.baseline_build).toBeNull();
      expect(result.bare_reference).toBe("node");
      expect(result.polls_keepalive).not.toHaveProperty("baseline_capacity_rps");

      for (const k of ["polls_keepalive", "polls_handshake"]) {
        expect(result[k].server_rps).toBeGreaterThan(0);
        expect(result[k].nginx_rps).toBeGreaterThan(0);
        expect(result[k].bare_node_rps).toBeGreaterThan(0);
        expect(result[k].ratio).toBeCloseTo(result[k].server_rps / result[k].nginx_rps, 2);
        expect(result[k].server_errors).toBe(0); // every poll was a verified 200, no nonce replays
      }
      expect(result.polls_handshake.fleet_at_5min).toBe(Math.floor(result.polls_handshake.server_rps * 300));
      expect(result.downloads.image).toBe(LARGE);
      expect(result.downloads.server_mib_s).toBeGreaterThan(0);
      expect(result.downloads.nginx_mib_s).toBeGreaterThan(0);
      expect(result.downloads.server_errors).toBe(0);
      expect(result.slow_downloads.opened).toBe(result.slow_downloads.downloads);
      expect(result.slow_downloads.rss_peak_kib).toBeGreaterThan(0);
      expect(result.reports.reports_per_s).toBeGreaterThan(0);
      expect(result.reports.stored_check.stored).toBeGreaterThanOrEqual(result.reports.stored_check.acknowledged);
      expect(result.reports_sigkill.acknowledged).toBeGreaterThan(0);
      expect(result.reports_sigkill.lost).toBe(0);
      expect(result.reports_sigkill.restarted).toBe(true);
      expect(result.device_pipeline).toMatchObject({ status: "measured", rounds: 1 });
      expect(result.device_pipeline.kib_s).toBeGreaterThan(0);
      expect(result.device_pipeline.native_kib_s).toBeGreaterThan(0);
      expect(result.device_pipeline.peak_heap_kib).toBeGreaterThan(0);
    },
    300_000,
  );

  maybe(
    "--compare DIR measures that build as the baseline too and adds its figures and ratios; --bare express",
    async () => {
      const { stdout, result } = await quickRun(["--only", "polls,handshake,downloads,reports", "--compare", ROOT, "--bare", "express"]);
      expect(result.baseline_build).toBe(ROOT);
      expect(stdout).toMatch(/ours\s+baseline\s+nginx/);
      // The bare reference answered through an Express application, and said so.
      expect(result.bare_reference).toBe("express");
      expect(stdout).toContain("bare Express");
      const positive = (x: unknown) => {
        expect(typeof x).toBe("number");
        expect(x as number).toBeGreaterThan(0);
      };
      for (const k of ["polls_keepalive", "polls_handshake"]) {
        positive(result[k].server_rps);
        positive(result[k].bare_node_rps);
        for (const f of ["baseline_rps", "rps_vs_baseline", "baseline_capacity_rps", "capacity_vs_baseline"]) positive(result[k][f]);
        expect(result[k].capacity_vs_baseline).toBeCloseTo(result[k].capacity_rps.server / result[k].baseline_capacity_rps, 1);
        expect(result[k].baseline_errors).toBe(0);
      }
      for (const f of ["baseline_mib_s", "mib_s_vs_baseline", "capacity_vs_baseline"]) positive(result.downloads[f]);
      expect(result.downloads.baseline_errors).toBe(0);
      expect(result.slow_downloads.baseline_opened).toBe(result.slow_downloads.downloads);
      positive(result.slow_downloads.baseline_rss_peak_kib);
      expect(Number.isFinite(result.slow_downloads.kib_per_download_vs_baseline)).toBe(true);
      for (const f of ["baseline_reports_per_s", "baseline_capacity_rps", "server_capacity_rps", "capacity_vs_baseline"]) positive(result.reports[f]);
      expect(result.reports.baseline_stored_check.stored).toBeGreaterThanOrEqual(result.reports.baseline_stored_check.acknowledged);
      expect(result.reports_sigkill.lost).toBe(0);
      expect(result.reports_sigkill.baseline).toBeNull(); // the crash check is of our server only
      expect(result.device_pipeline).toBeNull(); // not in --only
    },
    300_000,
  );

  maybePg(
    "pg-polls and durable-reports: two PostgreSQL server processes against SQLite per CPU-second, reports beside fsyncs",
    async () => {
      const { stdout, result } = await quickRun(["--only", "pg-polls,durable-reports"]);
      expect(stdout).toContain("6 manifest polls, keep-alive");
      expect(stdout).toContain("7 durable reports");
      expect(result.polls_keepalive).toBeNull();
      expect(result.postgres).toMatchObject({ source: "throwaway cluster", server_processes: 2, fsync: "on", synchronous_commit: "on" });
      const q = result.pg_polls;
      expect(q.sqlite.polls_per_s).toBeGreaterThan(0);
      expect(q.postgres.polls_per_s).toBeGreaterThan(0);
      expect(q.sqlite.errors).toBe(0);
      expect(q.postgres.errors).toBe(0); // both processes answered verified 200s from the shared database
      // PostgreSQL's own CPU was read from /proc and counted: fewer polls per CPU-second with it than without.
      expect(q.postgres.database_cpu_share).toBeGreaterThan(0);
      expect(q.postgres.polls_per_cpu_s).toBeLessThan(q.postgres.polls_per_cpu_s_servers_only);
      expect(q.per_cpu_s_ratio).toBeCloseTo(q.postgres.polls_per_cpu_s / q.sqlite.polls_per_cpu_s, 1);
      const d = result.durable_reports;
      for (const side of [d.sqlite, d.postgres]) {
        expect(side.reports_per_s).toBeGreaterThan(0);
        expect(side.errors).toBe(0);
        expect(side.stored_check.acknowledged).toBeGreaterThan(0);
        expect(side.stored_check.stored).toBeGreaterThanOrEqual(side.stored_check.acknowledged);
        expect(side.fsync_samples).toHaveLength(2); // before and after the report rounds; the better one counts
        expect(side.fsyncs_per_s).toBe(Math.max(...side.fsync_samples));
        expect(side.reports_per_fsync).toBeCloseTo(side.reports_per_s / side.fsyncs_per_s, 1);
      }
      expect(d.postgres.folder).toMatch(/data$/); // the fsync loop ran in the cluster's data folder
      expect(d.postgres.pg_test_fsync).toBeNull(); // not run with --quick
    },
    120_000,
  );

  it("--compare refuses a folder that is not a build, saying what to do", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-compare-"));
    try {
      const r = await runNode(harness, ["--quick", "--compare", dir], { cwd: ROOT, timeoutMs: 30_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`--compare ${dir}: dist/server/main.js and node_modules missing`);
      expect(r.stderr).toContain(`run npm ci && npm run build in ${dir}`);
      expect(r.stdout).toBe("");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
