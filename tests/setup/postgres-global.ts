// Where the "postgres" project's databases live: OTA_TEST_DATABASE_URL when set (an admin URL on which the tests
// may create and drop databases), else a throwaway cluster of the run's own (bench/postgres.ts: initdb into a
// temporary folder, started on a free port of 127.0.0.1, removed in postgres-global-teardown.ts).
import { randomBytes } from "node:crypto";
import { serverBinaries, startCluster, stopCluster, type Cluster } from "../../bench/postgres";

declare global {
  // Shared with the global teardown, which runs in the same process (jest's documented way).
  var otaTestCluster: Cluster | undefined;
}

export default async function globalSetup(): Promise<void> {
  process.env.OTA_TEST_RUN = randomBytes(4).toString("hex");
  if (process.env.OTA_TEST_DATABASE_URL) {
    process.env.OTA_TEST_PG_ADMIN_URL = process.env.OTA_TEST_DATABASE_URL;
    return;
  }
  if (!serverBinaries()) {
    throw new Error(
      "the postgres tests need PostgreSQL: set OTA_TEST_DATABASE_URL to an admin URL on which they may create databases, or install PostgreSQL's server (Debian: apt-get install postgresql) for a throwaway cluster",
    );
  }
  // fsync off: a throwaway cluster that no machine crash must survive (a killed server process loses nothing
  // committed either way); commits still wait for the WAL write (synchronous_commit stays on).
  const cluster = await startCluster({ fsync: "off", full_page_writes: "off", max_connections: 300 });
  globalThis.otaTestCluster = cluster;
  // Also when jest exits without its global teardown (a crash, an interrupted run): the cluster must not outlive it.
  process.once("exit", () => stopCluster(cluster));
  process.env.OTA_TEST_PG_ADMIN_URL = cluster.adminUrl;
}
