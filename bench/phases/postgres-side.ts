// The PostgreSQL side of figures 6 and 7: a database of its own (on OTA_BENCH_DATABASE_URL, an admin URL on which
// the bench may create databases, or else on a throwaway cluster started for the run), holding the same devices as
// the SQLite side under the same master secret, and two server processes on it, each with its own copy of the
// data folder (certificates and firmware are shared). The database is dropped, and the cluster removed, after.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { verifiedManifest } from "../client";
import { addDevices, type Fleet } from "../fleet";
import { clusterDataDir, createDatabase, dropDatabase, postmasterPid, serverBinaries, startCluster, stopCluster, withClient, type Cluster } from "../postgres";
import { startServerProcess, type CpuPlan, type ServerProcess } from "../processes";

export interface PostgresSide {
  /** "throwaway cluster" or "OTA_BENCH_DATABASE_URL". */
  source: string;
  version: string;
  url: string;
  servers: ServerProcess[];
  /** The postmaster, whose processes' CPU time is counted; null when /proc does not show it (another host). */
  postmaster: number | null;
  /** The cluster's data folder when this machine can write to it (for the fsync references), else null. */
  dataDir: string | null;
  /** Server settings that decide what a commit costs. */
  settings: { fsync: string; synchronous_commit: string; wal_sync_method: string; shared_buffers: string };
  /** PostgreSQL's programs (for pg_test_fsync), and the user to run them as. */
  bin: string | null;
  asUser: string | null;
  stop(): Promise<void>;
}

/** Can the PostgreSQL figures run here? */
export function postgresAvailable(): boolean {
  return Boolean(process.env.OTA_BENCH_DATABASE_URL) || serverBinaries() !== null;
}

export async function startPostgresSide(o: {
  dir: string;
  fleet: Fleet;
  serverEnv: Record<string, string>;
  cpu: CpuPlan;
  processes: number;
  /** The build to run (--server-root), as for the SQLite side; default: this one. */
  serverRoot: string | undefined;
  say(msg: string): void;
}): Promise<PostgresSide> {
  const given = process.env.OTA_BENCH_DATABASE_URL;
  let cluster: Cluster | null = null;
  if (!given) {
    o.say("starting a throwaway PostgreSQL cluster (initdb, fsync and synchronous_commit on, as installed)");
    cluster = await startCluster({ max_connections: 200 });
  }
  const admin = given ?? cluster!.adminUrl;
  const name = `ota_bench_${randomBytes(4).toString("hex")}`;
  const servers: ServerProcess[] = [];
  let created = false;
  const stop = async () => {
    for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
    if (created) await dropDatabase(admin, name).catch(() => undefined);
    if (cluster) stopCluster(cluster);
  };
  try {
    const url = await createDatabase(admin, name);
    created = true;
    // Each server process its own data folder, copied from the SQLite side's before its database: the same master
    // secret, so the same device keys.
    const dataDirs = Array.from({ length: o.processes }, (_, i) => path.join(o.dir, "postgres", `data-${i}`));
    for (const d of dataDirs) {
      fs.cpSync(o.fleet.dataDir, d, { recursive: true, filter: (src) => !/ota\.sqlite/.test(path.basename(src)) });
    }
    const env = (i: number) => ({ ...o.serverEnv, OTA_DATA_DIR: dataDirs[i]!, OTA_DATABASE_URL: url });
    o.say(`provisioning the ${o.fleet.devices.length} devices in PostgreSQL database ${name}`);
    const added = await addDevices(env(0), path.join(o.dir, "postgres"), o.fleet.devices.length);
    if (added.some((d, i) => d.apiKey !== o.fleet.devices[i]!.apiKey)) throw new Error("the PostgreSQL side derived other device keys than the SQLite side");
    for (let i = 0; i < o.processes; i++) {
      o.say(`starting server process ${i + 1} of ${o.processes} on PostgreSQL`);
      const s = await startServerProcess({ env: env(i), cpu: o.cpu.server, logFile: path.join(o.dir, "postgres", `server-${i}.log`), serverRoot: o.serverRoot });
      servers.push(s);
      await verifiedManifest(s.port, o.fleet.ca, o.fleet.devices[i % o.fleet.devices.length]!);
    }
    const show = (c: { query: (q: string) => Promise<{ rows: Record<string, string>[] }> }, setting: string) =>
      c.query(`SHOW ${setting}`).then((r) => String(Object.values(r.rows[0]!)[0]));
    const info = await withClient(url, async (c) => ({
      version: await show(c, "server_version"),
      fsync: await show(c, "fsync"),
      synchronous_commit: await show(c, "synchronous_commit"),
      wal_sync_method: await show(c, "wal_sync_method"),
      shared_buffers: await show(c, "shared_buffers"),
      dataDir: await show(c, "data_directory").catch(() => null),
    }));
    const dataDir = cluster ? clusterDataDir(cluster) : info.dataDir && fs.existsSync(info.dataDir) ? info.dataDir : null;
    const { fsync, synchronous_commit, wal_sync_method, shared_buffers } = info;
    return {
      source: given ? "OTA_BENCH_DATABASE_URL" : "throwaway cluster",
      version: info.version,
      url,
      servers,
      postmaster: await postmasterPid(url),
      dataDir,
      settings: { fsync, synchronous_commit, wal_sync_method, shared_buffers },
      bin: cluster?.bin ?? serverBinaries(),
      asUser: cluster?.asUser ?? null,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Report ids stored in the PostgreSQL database that start with `prefix`. */
export async function countPostgresReports(url: string, prefix: string): Promise<Set<string>> {
  const rows = await withClient(url, (c) => c.query<{ report_id: string }>("SELECT report_id FROM reports WHERE report_id LIKE $1", [`${prefix}%`]));
  return new Set(rows.rows.map((r) => r.report_id));
}
