// Stops and removes the throwaway cluster of postgres-global.ts; with OTA_TEST_DATABASE_URL, drops what this run
// left there (a test file that crashed before its own cleanup).
import pg from "pg";
import { stopCluster } from "../../bench/postgres";

export default async function globalTeardown(): Promise<void> {
  const cluster = globalThis.otaTestCluster;
  if (cluster) {
    stopCluster(cluster);
    return;
  }
  const url = process.env.OTA_TEST_PG_ADMIN_URL;
  if (!url) return;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const left = await c.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE $1", [`ota_test_${process.env.OTA_TEST_RUN}_%`]);
    for (const { datname } of left.rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
}
