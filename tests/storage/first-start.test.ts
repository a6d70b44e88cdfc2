// Several servers (separate processes, as on several machines) started together on a new PostgreSQL database and
// one data folder: the first-start credentials are made once. Runs in the "postgres" project (on SQLite one
// process serves a data folder).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { dropDatabase, ensureDatabase, withTestDb } from "../helpers/database";
import { startServerProcess, type ServerProcess } from "../helpers/server-process";
import { ROOT, tempDirs } from "../helpers/server";

jest.setTimeout(60_000);

describe("three servers started together on a new database", () => {
  it("make one development key and one admin token, written once to dev-credentials.json", async () => {
    const dirs = tempDirs("ota-first-start-");
    let servers: ServerProcess[] = [];
    try {
      // The certificate is made beforehand: on several machines each has its own copy (docs/operations.md).
      execFileSync("bash", [path.join(ROOT, "generate-certs.sh"), "--dir", dirs.certs], { stdio: "ignore" });
      await ensureDatabase(dirs);
      servers = await Promise.all([0, 1, 2].map(() => startServerProcess(dirs)));
      const firstStarts = servers.filter((s) => s.output().includes('"msg":"first start:'));
      expect(firstStarts).toHaveLength(1);
      await withTestDb(dirs, async (db) => {
        expect(await db.rows("SELECT subject FROM operator_tokens")).toEqual([{ subject: "admin" }]);
        expect(await db.rows("SELECT label FROM api_keys")).toEqual([{ label: "development" }]);
      });
      // Every server accepts the credentials in the file.
      const creds = JSON.parse(fs.readFileSync(path.join(dirs.data, "dev-credentials.json"), "utf8")) as ServerProcess["creds"];
      for (const s of servers) {
        expect((await s.req("GET", "/api/v1/devices", { headers: { Authorization: `Bearer ${creds.operatorToken}` } })).status).toBe(200);
        expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": creds.deviceApiKey } })).json<{ error: { code: string } }>().error.code).toBe("no_firmware");
      }
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      fs.rmSync(dirs.root, { recursive: true, force: true });
      await dropDatabase(dirs);
    }
  });
});
