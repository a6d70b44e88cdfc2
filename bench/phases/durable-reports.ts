// Figure 7: durable reports per second (a report is acknowledged once committed) on each backend, one server
// process each, rounds alternating, beside what the disk sustains, measured in the same run on the same disk:
// flushes per second of a small file in each backend's data folder (bench/fsync.ts) and, for PostgreSQL,
// pg_test_fsync on its data folder (skipped with --quick). The server commits reports in groups (those that
// arrive while a commit is on its way to the disk go in the next one), so reports per flush may exceed 1.
import { alternate, best, round } from "../compare";
import { fsyncsPerSecond, pgTestFsync, type PgTestFsync } from "../fsync";
import type { WrkResult } from "../wrk";
import type { BenchContext } from "./context";
import { countPostgresReports, type PostgresSide } from "./postgres-side";
import { countReports, reportRounds } from "./reports";

interface Backend {
  reports_per_s: number;
  rounds: number[];
  errors: number;
  /** Every acknowledged report must be stored (wrk may count a reply it cut off at the end: stored >= acknowledged). */
  stored_check: { acknowledged: number; stored: number };
  /** Our fsync loop in this backend's data folder (appends of 512 bytes, each flushed): the better of two samples. */
  fsyncs_per_s: number;
  /** The two samples: before the report rounds and after them. */
  fsync_samples: number[];
  /** reports_per_s / fsyncs_per_s: above 1 when commits carry several reports (group commit). */
  reports_per_fsync: number;
  /** Share of its core the server process used in the best round (near 1: its CPU, not the disk, set the pace). */
  server_busy: number | null;
}

export interface DurableReportFigures {
  connections: number;
  sqlite: Backend & { folder: string };
  postgres: Backend & {
    /** Where the fsync loop ran: the cluster's data folder, or null (not writable here: the SQLite folder's figure is used). */
    folder: string | null;
    /** pg_test_fsync on the cluster's data folder, one 8 kB write, the cluster's wal_sync_method; null when not run. */
    pg_test_fsync: PgTestFsync | null;
    reports_per_pg_test_fsync: number | null;
  };
  /** PostgreSQL's reports per second over SQLite's. */
  postgres_vs_sqlite: number;
}

const good = (r: WrkResult) => r.requests - r.errors.status;

export async function measureDurableReports(b: BenchContext, pg: PostgresSide, quick: boolean): Promise<DurableReportFigures> {
  const probeSeconds = quick ? 0.5 : 3;
  const pgFolder = pg.dataDir;
  // Sampled before the report rounds and again after them; each keeps its better sample (a neighbour on the
  // machine only ever slows a flush down).
  const sqliteFsyncs: number[] = [];
  const pgFsyncs: number[] = [];
  const probe = () => {
    b.say(`  fsync loop in the SQLite data folder${pgFolder ? " and in PostgreSQL's" : ""} (${probeSeconds} s each)`);
    sqliteFsyncs.push(fsyncsPerSecond(b.fleet.dataDir, probeSeconds));
    if (pgFolder) pgFsyncs.push(fsyncsPerSecond(pgFolder, probeSeconds));
  };
  probe();
  let pgTest: PgTestFsync | null = null;
  if (!quick && pgFolder && pg.bin) {
    b.say("  pg_test_fsync on PostgreSQL's data folder (1 s per test)");
    pgTest = pgTestFsync(pg.bin, pgFolder, pg.settings.wal_sync_method, 1, pg.asUser);
  }

  const prefix = `d${Date.now().toString(36)}`;
  const load = reportRounds(b, prefix);
  const r = await alternate(b.opts.rounds, { sqlite: load(b.server, "s"), postgres: load(pg.servers[0]!, "p") });
  probe();
  const backend = (runs: WrkResult[], stored: number, samples: number[]): Backend => {
    const rates = runs.map((x) => good(x) / x.seconds);
    const fsyncs = best(samples);
    return {
      reports_per_s: round(best(rates)),
      rounds: rates.map((x) => round(x)),
      errors: runs.reduce((a, x) => a + x.errors.status + x.errors.timeout + x.errors.read, 0),
      stored_check: { acknowledged: runs.reduce((a, x) => a + good(x), 0), stored },
      fsyncs_per_s: round(fsyncs),
      fsync_samples: samples.map((x) => round(x)),
      reports_per_fsync: round(best(rates) / fsyncs, 2),
      server_busy: runs[rates.indexOf(best(rates))]?.serverBusy ?? null,
    };
  };
  const sqlite = { ...backend(r.sqlite, countReports(b.fleet.dataDir, `${prefix}s`).size, sqliteFsyncs), folder: b.fleet.dataDir };
  const pgStored = (await countPostgresReports(pg.url, `${prefix}p`)).size;
  // Without a folder of the cluster's to write in, the SQLite folder's flushes stand for the disk (same machine).
  const pgBackend = backend(r.postgres, pgStored, pgFolder ? pgFsyncs : sqliteFsyncs);
  return {
    connections: b.opts.reportConnections,
    sqlite,
    postgres: {
      ...pgBackend,
      folder: pgFolder,
      pg_test_fsync: pgTest,
      reports_per_pg_test_fsync: pgTest ? round(pgBackend.reports_per_s / pgTest.ops_per_s, 2) : null,
    },
    postgres_vs_sqlite: round(pgBackend.reports_per_s / sqlite.reports_per_s, 3),
  };
}
