// On PostgreSQL a batch of new rollout members (written behind the polls that made them) and a report that moves
// one of those members run on two connections at once. The report must wait for the batch: if it read "no row
// yet" while the batch's row was inserted but not committed, both would count the member. A trigger holds the batch's
// transaction open for a second after each insert, so the report always arrives in the middle of it. Runs in the "postgres" project only.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { openTestDb } from "../helpers/database";
import { mac, offered, Operator, report, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const SHA2 = createHash("sha256").update(fs.readFileSync(HELLO_WORLD_IDF41)).digest("hex");
const asV1 = { chip: "esp32", version: "v1.4.1-2-g0296947-dirty" };

it("a report that moves a member whose batch is being written counts it once", async () => {
  const dirs = tempDirs();
  writeMasterKey(dirs);
  const s: TestServer = await startTestServer({}, dirs);
  const db = await openTestDb(dirs);
  try {
    const op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2) && s.running.ctx.catalog.imageByName("v1.bin"));
    await op.ok("POST", "/releases", { name: "r2", image: "v2.bin" });
    const rolloutId = (await op.ok("POST", "/releases/r2/rollout", { stages: [100], max_failure_rate: 100 })).rollout.id as string;
    await db.rows(`CREATE FUNCTION slow_offer() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$ LANGUAGE plpgsql`);
    await db.rows(`CREATE TRIGGER slow_offer AFTER INSERT ON rollout_devices FOR EACH ROW WHEN (NEW.status = 'offered') EXECUTE FUNCTION slow_offer()`);

    const fleet = [mac(1, "c1:00:00"), mac(2, "c1:00:00")];
    for (const id of fleet) expect(await offered(s, id, asV1)).toBe(SHA2);
    // The batch is written (held after its first insert by the trigger); the report comes while it is held.
    const batch = s.running.ctx.rollouts.flush();
    await eventually(async () => (await db.rows<{ n: number }>("SELECT CAST(count(*) AS integer) AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep'"))[0]!.n > 0);
    await report(s, { device_id: fleet[0], status: "failed", sha256: SHA2, reason: "write_failed", report_id: "race-1" });
    await batch;

    const kept = await db.rows<{ stage: number; status: string; n: number }>(
      "SELECT stage, status, n FROM rollout_counts WHERE rollout_id = ? AND n <> 0 ORDER BY stage, status",
      [rolloutId],
    );
    expect(kept).toEqual([
      { stage: -1, status: "failed", n: 1 },
      { stage: 0, status: "failed", n: 1 },
      { stage: 0, status: "offered", n: 1 },
    ]);
    expect((await op.ok("GET", `/rollouts/${rolloutId}`)).devices).toMatchObject({ total: 2, offered: 1, failed: 1 });
  } finally {
    await db.close();
    await s.close();
  }
});
