// Figure 6: manifest polls (keep-alive) per CPU-second, two server processes on PostgreSQL against one on SQLite,
// under the same wrk load alternated round by round. On PostgreSQL the pollers are split evenly between the two
// processes (one wrk each, half the connections). CPU-seconds are the server processes' and, on PostgreSQL, also
// those of the cluster's own processes (backends, WAL writer, checkpointer...; read from /proc), reported with
// and without them.
import { alternate, best, round } from "../compare";
import { clusterCpuSeconds } from "../postgres";
import { cpuSeconds } from "../processes";
import { runWrk, type WrkResult } from "../wrk";
import type { BenchContext } from "./context";
import { errorsOf } from "./polls";
import type { PostgresSide } from "./postgres-side";

interface Round {
  /** Good (non-error status) polls per second, all load generators together. */
  rate: number;
  polls: number;
  errors: number;
  /** CPU-seconds of the server processes during the round. */
  serverCpu: number;
  /** CPU-seconds of the PostgreSQL cluster's processes during the round (null: not measurable, or SQLite). */
  dbCpu: number | null;
}

export interface PgPollFigures {
  connections: number;
  sqlite: {
    processes: 1;
    polls_per_s: number;
    /** Polls per CPU-second of the server process, median over rounds. */
    polls_per_cpu_s: number;
    rounds: number[];
    errors: number;
  };
  postgres: {
    processes: number;
    polls_per_s: number;
    /** Polls per CPU-second of the server processes alone. */
    polls_per_cpu_s_servers_only: number;
    /** Polls per CPU-second of the server processes and PostgreSQL's own (null when its processes are not visible). */
    polls_per_cpu_s: number | null;
    /** Share of the CPU time on this side that PostgreSQL used (median over rounds). */
    database_cpu_share: number | null;
    rounds: number[];
    errors: number;
  };
  /** PostgreSQL's polls per CPU-second over SQLite's, PostgreSQL's own CPU counted (null when it is not visible). */
  per_cpu_s_ratio: number | null;
  /** The same, counting the server processes only. */
  per_cpu_s_ratio_servers_only: number;
  /** Best rounds' polls per second, PostgreSQL's over SQLite's (both sides' servers pinned to the same core). */
  rate_ratio: number;
}

const good = (r: WrkResult) => r.requests - r.errors.status;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export async function measurePgPolls(b: BenchContext, pg: PostgresSide): Promise<PgPollFigures> {
  const connections = b.opts.keepAliveConnections;
  const env = { BENCH_DEVICES: b.fleet.luaDevices, BENCH_CLOSE: "0" };
  const wrk = (port: number, threads: number, conns: number) =>
    runWrk({ wrk: b.tools.wrk, cpu: b.cpu.load, url: `https://127.0.0.1:${port}`, script: "poll", threads, connections: conns, seconds: b.opts.seconds, env });
  /** One round: the given ports loaded at once, connections and threads split evenly between them. */
  const side = (pids: number[], ports: number[], postmaster: number | null) => async (): Promise<Round> => {
    const cpu0 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
    const db0 = postmaster === null ? null : clusterCpuSeconds(postmaster);
    const threads = Math.max(1, Math.floor(b.opts.loadThreads / ports.length));
    const runs = await Promise.all(ports.map((port) => wrk(port, threads, Math.max(1, Math.floor(connections / ports.length)))));
    const polls = runs.reduce((a, r) => a + good(r), 0);
    return {
      rate: runs.reduce((a, r) => a + good(r) / r.seconds, 0),
      polls,
      errors: runs.reduce((a, r) => a + errorsOf(r), 0),
      serverCpu: pids.reduce((a, p) => a + cpuSeconds(p), 0) - cpu0,
      dbCpu: postmaster === null || db0 === null ? null : clusterCpuSeconds(postmaster) - db0,
    };
  };
  const r = await alternate(b.opts.rounds, {
    sqlite: side([b.server.pid], [b.server.port], null),
    postgres: side(
      pg.servers.map((s) => s.pid),
      pg.servers.map((s) => s.port),
      pg.postmaster,
    ),
  });
  const perCpu = (x: Round, withDb: boolean) => x.polls / (x.serverCpu + (withDb ? (x.dbCpu ?? 0) : 0));
  const sqlite = median(r.sqlite.map((x) => perCpu(x, false)));
  const pgServers = median(r.postgres.map((x) => perCpu(x, false)));
  const dbVisible = pg.postmaster !== null;
  const pgAll = dbVisible ? median(r.postgres.map((x) => perCpu(x, true))) : null;
  const sRates = r.sqlite.map((x) => x.rate);
  const pRates = r.postgres.map((x) => x.rate);
  return {
    connections,
    sqlite: {
      processes: 1,
      polls_per_s: round(best(sRates)),
      polls_per_cpu_s: round(sqlite),
      rounds: sRates.map((x) => round(x)),
      errors: r.sqlite.reduce((a, x) => a + x.errors, 0),
    },
    postgres: {
      processes: pg.servers.length,
      polls_per_s: round(best(pRates)),
      polls_per_cpu_s_servers_only: round(pgServers),
      polls_per_cpu_s: pgAll === null ? null : round(pgAll),
      database_cpu_share: dbVisible ? round(median(r.postgres.map((x) => (x.dbCpu ?? 0) / (x.serverCpu + (x.dbCpu ?? 0)))), 3) : null,
      rounds: pRates.map((x) => round(x)),
      errors: r.postgres.reduce((a, x) => a + x.errors, 0),
    },
    per_cpu_s_ratio: pgAll === null ? null : round(pgAll / sqlite, 3),
    per_cpu_s_ratio_servers_only: round(pgServers / sqlite, 3),
    rate_ratio: round(best(pRates) / best(sRates), 3),
  };
}
