// What only PostgreSQL has: migrations that several processes start at once, a database that is not there at
// start, and one that goes away while the server runs (a TCP hop between the server and PostgreSQL, under the
// test's control, stands for the network or the database going down). Runs in the "postgres" project only.
import net from "node:net";
import pino from "pino";
import { ConfigError, loadConfig } from "../../server/infra/config/config";
import { openStore, type Store } from "../../server/infra/store/db";
import { StaticMigrations } from "../../server/infra/store/migrations";
import { startServer } from "../../server/server";
import { dropDatabase, ensureDatabase, storageEnv, withTestDb } from "../helpers/database";
import { eventually, startTestServer, tempDirs, testEnv, type TestServer } from "../helpers/server";

/** Forwards TCP to a port; down() refuses new connections and cuts the open ones, up() listens again on the same port. */
class TcpHop {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    if (this.server) return;
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", resolve);
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

const silent = pino({ level: "silent" });

describe("configuration", () => {
  it("takes a postgres:// or postgresql:// URL and a pool size", () => {
    const c = loadConfig({ OTA_DATABASE_URL: "postgresql://ota:pw@db.example.com:5433/ota", OTA_DATABASE_POOL: "25" });
    expect(c.database).toEqual({ url: "postgresql://ota:pw@db.example.com:5433/ota", poolSize: 25 });
    expect(loadConfig({ OTA_DATABASE_URL: "postgres://db/ota" }).database).toEqual({ url: "postgres://db/ota", poolSize: 10 });
    expect(loadConfig({}).database).toBeNull();
  });

  it.each([
    ["another scheme", "mysql://ota:s3cret-pw@db/ota"],
    ["no host", "postgres://ota:s3cret-pw@/ota"],
    ["not a URL", "host=db password=s3cret-pw"],
  ])("refuses %s, naming the variable and never repeating the value (it holds the password)", (_what, url) => {
    let err: unknown;
    try {
      loadConfig({ OTA_DATABASE_URL: url });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/OTA_DATABASE_URL: must be a PostgreSQL URL such as postgres:\/\//);
    expect((err as Error).message).not.toContain("s3cret-pw");
  });

  it("refuses a pool size outside 1-1000", () => {
    expect(() => loadConfig({ OTA_DATABASE_POOL: "0" })).toThrow(/OTA_DATABASE_POOL: must be between 1 and 1000/);
  });
});

describe("migrations", () => {
  it("run once when several stores open a fresh database at the same time", async () => {
    const dirs = tempDirs();
    await ensureDatabase(dirs);
    const url = storageEnv(dirs).OTA_DATABASE_URL!;
    const applied: string[] = [];
    const log = pino(
      { level: "info" },
      {
        write(line: string) {
          const l = JSON.parse(line) as { msg: string; migration?: string };
          if (l.msg === "database migration applied" && l.migration) applied.push(l.migration);
        },
      },
    );
    const stores: Store[] = [];
    try {
      stores.push(...(await Promise.all(Array.from({ length: 5 }, () => openStore(dirs.data, log, { url, poolSize: 2 })))));
      const names = await withTestDb(dirs, (db) => db.rows<{ name: string }>("SELECT name FROM kysely_migration ORDER BY name"));
      expect(names.map((r) => r.name)).toEqual(Object.keys(await new StaticMigrations("postgres").getMigrations()).sort());
      // Each applied by exactly one of the five.
      expect(applied.sort()).toEqual(names.map((r) => r.name));
      // And every store works on the result.
      for (const s of stores) expect(await s.db.selectFrom("devices").select("id").execute()).toEqual([]);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
      await dropDatabase(dirs);
    }
  });
});

describe("a database out of reach", () => {
  const admin = new URL(process.env.OTA_TEST_PG_ADMIN_URL ?? "postgres://127.0.0.1:5432/postgres");

  it("at start: the server stops at once, saying where it tried and what to check, without the password", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dirs = tempDirs();
    const config = loadConfig({ ...testEnv(dirs), OTA_DATABASE_URL: `postgres://ota:s3cret-pw@127.0.0.1:${port}/ota` }, dirs.root);
    const started = Date.now();
    const err = await startServer(config, { log: silent }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(
      new RegExp(`cannot connect to PostgreSQL at ota@127\\.0\\.0\\.1:${port}/ota \\(OTA_DATABASE_URL\\): .*check that PostgreSQL is running and reachable`),
    );
    expect(err?.message).not.toContain("s3cret-pw");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  describe("while serving", () => {
    let hop: TcpHop;
    let s: TestServer;
    const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
    const dev = () => ({ "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": "aa-bb-cc-00-00-01" });

    beforeAll(async () => {
      hop = new TcpHop({ host: admin.hostname, port: Number(admin.port || 5432) });
      await hop.up();
      const dirs = tempDirs();
      await ensureDatabase(dirs);
      const through = new URL(storageEnv(dirs).OTA_DATABASE_URL!);
      through.host = `127.0.0.1:${hop.port}`;
      s = await startTestServer({ OTA_DATABASE_URL: through.toString() }, dirs);
    });
    afterAll(async () => {
      await hop.up();
      await s.close();
      await hop.down();
    });

    it("answers 503 database_unavailable with Retry-After, stays up, and serves again once the database is back", async () => {
      expect((await s.req("GET", "/api/v1/devices", { headers: op() })).status).toBe(200);
      await hop.down();

      const listed = await s.req("GET", "/api/v1/devices", { headers: op() });
      expect(listed.status).toBe(503);
      expect(listed.headers["retry-after"]).toBe("5");
      expect(listed.json()).toEqual({ error: { code: "database_unavailable", message: expect.stringMatching(/cannot reach its database.*retry later/) } });
      // The device poll looks the device up in the database too.
      const poll = await s.req("GET", "/firmware/manifest", { headers: dev() });
      expect(poll.status).toBe(503);
      expect(poll.json().error.code).toBe("database_unavailable");
      // A report is not acknowledged: the device sends it again later.
      const report = await s.req("POST", "/firmware/report", {
        headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" },
        body: JSON.stringify({ device_id: "aa-bb-cc-00-00-02", status: "checking", report_id: "r-1" }),
      });
      expect(report.status).toBe(503);
      expect(s.logs.join("")).not.toMatch(/"level":50,.*unhandled server error/);

      await hop.up();
      await eventually(async () => (await s.req("GET", "/api/v1/devices", { headers: op() })).status === 200, 15_000, 200);
      const again = await s.req("POST", "/firmware/report", {
        headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" },
        body: JSON.stringify({ device_id: "aa-bb-cc-00-00-02", status: "checking", report_id: "r-1" }),
      });
      expect(again.json()).toEqual({ ok: true, duplicate: false });
    });
  });
});
