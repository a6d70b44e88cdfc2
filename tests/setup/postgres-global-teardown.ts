// Stops and removes the throwaway cluster of postgres-global.ts; with OTA_TEST_DATABASE_URL, drops what this run
// left there (a test file that crashed before its own cleanup).
import fs from "node:fs";
import pg from "pg";
import { pgRun } from "./postgres-global";

export default async function globalTeardown(): Promise<void> {
  const cluster = globalThis.otaTestCluster;
  if (cluster) {
    pgRun(cluster, "pg_ctl", ["-D", `${cluster.dir}/data`, "-m", "immediate", "-w", "stop"]);
    fs.rmSync(cluster.dir, { recursive: true, force: true });
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
