// PostgreSQL for the benches and the test suite: a throwaway cluster (initdb into a temporary folder, started on
// a free port of 127.0.0.1; as root it runs as the postgres system user, since PostgreSQL refuses to run as
// root), databases made and dropped on an admin URL, and the CPU time the cluster's processes used, from /proc.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

export interface Cluster {
  /** PostgreSQL's server binaries. */
  bin: string;
  /** The temporary folder: the cluster's data folder is data/ in it, its socket and log beside. */
  dir: string;
  /** Who runs the cluster's programs (postgres when we are root), or null: ourselves. */
  asUser: string | null;
  port: number;
  /** postgres://postgres@127.0.0.1:PORT/postgres: trust authentication, on 127.0.0.1 only. */
  adminUrl: string;
}

/** The newest installed PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<major>/bin), or null. */
export function serverBinaries(): string | null {
  const base = "/usr/lib/postgresql";
  if (!fs.existsSync(base)) return null;
  const versions = fs
    .readdirSync(base)
    .filter((v) => fs.existsSync(path.join(base, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? path.join(base, versions[0]!, "bin") : null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs a PostgreSQL program of the cluster, as its user when it has one (through runuser: we are root). */
export function pgRun(cluster: Pick<Cluster, "bin" | "dir" | "asUser">, program: string, args: string[]): string {
  const exe = path.join(cluster.bin, program);
  const [cmd, argv] = cluster.asUser ? ["runuser", ["-u", cluster.asUser, "--", exe, ...args]] : [exe, args];
  return execFileSync(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], cwd: cluster.dir, encoding: "utf8" });
}

export const clusterDataDir = (cluster: Pick<Cluster, "dir">) => path.join(cluster.dir, "data");

/**
 * initdb and pg_ctl start: a new cluster in a temporary folder, listening on 127.0.0.1 and a socket in that
 * folder, with the given server settings (`-c name=value` each). Throws when PostgreSQL is not installed.
 */
export async function startCluster(settings: Record<string, string | number>): Promise<Cluster> {
  const bin = serverBinaries();
  if (!bin) throw new Error("PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-pg-"));
  const asUser = process.getuid?.() === 0 ? "postgres" : null;
  if (asUser) execFileSync("chown", ["-R", asUser, dir]);
  const data = clusterDataDir({ dir });
  const port = await freePort();
  const cluster: Cluster = { bin, dir, asUser, port, adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres` };
  try {
    pgRun(cluster, "initdb", ["-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions"]);
    const options = [`-p ${port}`, `-k ${dir}`, "-c listen_addresses=127.0.0.1", ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(" ");
    pgRun(cluster, "pg_ctl", ["-D", data, "-l", path.join(dir, "log"), "-o", options, "-w", "start"]);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return cluster;
}

/** pg_ctl stop -m immediate, then the folder is removed. Does nothing for a cluster already removed. */
export function stopCluster(cluster: Pick<Cluster, "bin" | "dir" | "asUser">): void {
  const data = clusterDataDir(cluster);
  if (!fs.existsSync(data)) return;
  try {
    pgRun(cluster, "pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
  } catch {
    /* already stopped */
  }
  fs.rmSync(cluster.dir, { recursive: true, force: true });
}

/** The same server and user as `adminUrl`, another database. */
export function databaseUrl(adminUrl: string, database: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function withClient<T>(url: string, f: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE "${name}"`));
  return databaseUrl(adminUrl, name);
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

function statFields(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
}

/**
 * The postmaster of the server behind `url`, when it runs on this machine and /proc shows it: the parent of the
 * backend serving a connection. Null otherwise (another host, another PID namespace).
 */
export async function postmasterPid(url: string): Promise<number | null> {
  // Read while the connection (and so its backend) is open.
  return withClient(url, async (c) => {
    const backend = Number((await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid);
    try {
      const parent = Number(statFields(backend)[1]);
      return /postgres|postmaster/.test(fs.readFileSync(`/proc/${parent}/comm`, "utf8")) ? parent : null;
    } catch {
      return null;
    }
  });
}

/**
 * CPU time (seconds) the cluster's processes have used so far: the postmaster's own, that of every child still
 * running (backends, WAL writer, checkpointer...) and, through the postmaster's cutime/cstime, that of every child
 * that has exited. Differences of two readings are what the cluster spent in between.
 */
export function clusterCpuSeconds(postmaster: number): number {
  const f = statFields(postmaster);
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]); // utime stime cutime cstime
  const children = fs.readdirSync(`/proc/${postmaster}/task`).flatMap((t) =>
    fs.readFileSync(`/proc/${postmaster}/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number),
  );
  for (const child of children) {
    try {
      const c = statFields(child);
      ticks += Number(c[11]) + Number(c[12]);
    } catch {
      /* exited between the two reads: counted in cutime from the next reading on */
    }
  }
  return ticks / 100; // clock ticks (100 Hz)
}
