// Where the "postgres" project's databases live: OTA_TEST_DATABASE_URL when set (an admin URL on which the tests
// may create and drop databases), else a throwaway cluster of the run's own (initdb into a temporary folder,
// started on a free port of 127.0.0.1, removed in postgres-global-teardown.ts). As root the cluster runs as the
// postgres system user, since PostgreSQL refuses to run as root.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface Cluster {
  bin: string;
  dir: string;
  asUser: string | null;
}

declare global {
  // Shared with the global teardown, which runs in the same process (jest's documented way).
  var otaTestCluster: Cluster | undefined;
}

/** The newest installed PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<major>/bin). */
function serverBinaries(): string | null {
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

/** Runs a PostgreSQL program, as `user` when given (through runuser: we are root). */
export function pgRun(cluster: Cluster, program: string, args: string[]): void {
  const exe = path.join(cluster.bin, program);
  const [cmd, argv] = cluster.asUser ? ["runuser", ["-u", cluster.asUser, "--", exe, ...args]] : [exe, args];
  execFileSync(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], cwd: cluster.dir });
}

export default async function globalSetup(): Promise<void> {
  process.env.OTA_TEST_RUN = randomBytes(4).toString("hex");
  if (process.env.OTA_TEST_DATABASE_URL) {
    process.env.OTA_TEST_PG_ADMIN_URL = process.env.OTA_TEST_DATABASE_URL;
    return;
  }
  const bin = serverBinaries();
  if (!bin) {
    throw new Error(
      "the postgres tests need PostgreSQL: set OTA_TEST_DATABASE_URL to an admin URL on which they may create databases, or install PostgreSQL's server (Debian: apt-get install postgresql) for a throwaway cluster",
    );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-pg-"));
  const asUser = process.getuid?.() === 0 ? "postgres" : null;
  if (asUser) execFileSync("chown", ["-R", asUser, dir]);
  const cluster: Cluster = { bin, dir, asUser };
  const data = path.join(dir, "data");
  pgRun(cluster, "initdb", ["-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions"]);
  const port = await freePort();
  // fsync off: a throwaway cluster that no machine crash must survive (a killed server process loses nothing
  // committed either way); commits still wait for the WAL write (synchronous_commit stays on).
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300`;
  pgRun(cluster, "pg_ctl", ["-D", data, "-l", path.join(dir, "log"), "-o", options, "-w", "start"]);
  globalThis.otaTestCluster = cluster;
  // Also when jest exits without its global teardown (a crash, an interrupted run): the cluster must not outlive it.
  process.once("exit", () => {
    if (!fs.existsSync(data)) return;
    try {
      pgRun(cluster, "pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
    } catch {
      /* already stopped */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  process.env.OTA_TEST_PG_ADMIN_URL = `postgres://postgres@127.0.0.1:${port}/postgres`;
}
