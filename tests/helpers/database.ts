// The storage backend a test's servers run on. The jest project "sqlite" leaves OTA_DATABASE_URL unset (a SQLite
// file in the data folder); the project "postgres" (tests/setup/) sets OTA_TEST_BACKEND=postgres, and every data
// folder then gets its own fresh PostgreSQL database, named after the folder, so a server started again on the
// same folder (or the `ota` command run on it) finds the same data. Databases are dropped when their folder is,
// and at the end of the test file at the latest.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import pg from "pg";

interface Folder {
  root: string;
  data: string;
}

export const onPostgres = () => process.env.OTA_TEST_BACKEND === "postgres";

function adminUrl(): string {
  const url = process.env.OTA_TEST_PG_ADMIN_URL;
  if (!url) throw new Error("OTA_TEST_PG_ADMIN_URL is not set: the postgres project's global setup (tests/setup/postgres-global.ts) did not run");
  return url;
}

/** The database of a data folder: one per folder, per test run (OTA_TEST_RUN), so runs sharing a server never meet. */
function databaseName(dirs: Folder): string {
  const run = process.env.OTA_TEST_RUN ?? "0";
  return `ota_test_${run}_${createHash("sha256").update(dirs.root).digest("hex").slice(0, 16)}`;
}

function urlOf(database: string): string {
  const u = new URL(adminUrl());
  u.pathname = `/${database}`;
  return u.toString();
}

/** Databases this test file created and has not dropped yet. */
const created = new Set<string>();

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** OTA_DATABASE_URL for the folder's servers and `ota` commands; nothing on SQLite. */
export function storageEnv(dirs: Folder): Record<string, string> {
  return onPostgres() ? { OTA_DATABASE_URL: urlOf(databaseName(dirs)) } : {};
}

/** Creates the folder's database unless it exists (PostgreSQL only). */
export async function ensureDatabase(dirs: Folder): Promise<void> {
  if (!onPostgres()) return;
  const name = databaseName(dirs);
  if (created.has(name)) return;
  await admin(async (c) => {
    try {
      await c.query(`CREATE DATABASE "${name}"`);
    } catch (e) {
      if ((e as { code?: string }).code !== "42P04") throw e; // duplicate_database: made by another process of this test
    }
  });
  created.add(name);
}

/** Drops the folder's database, if this file created it (connections still open are closed). */
export async function dropDatabase(dirs: Folder): Promise<void> {
  const name = databaseName(dirs);
  if (!created.delete(name)) return;
  await admin((c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** Drops every database this test file created and did not drop (run after the file's tests). */
export async function dropCreatedDatabases(): Promise<void> {
  const names = [...created];
  created.clear();
  if (names.length === 0) return;
  await admin(async (c) => {
    for (const name of names) await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  });
}

/** A server's database opened from outside, as another process would: on whichever backend the test runs. */
export interface TestDb {
  /** Rows of a query; parameters are written `?`. */
  rows<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** A trigger that makes every `event` ("INSERT", "UPDATE", "UPDATE OF state") on `table` fail, when `when` holds. */
  refuse(name: string, table: string, event: string, when?: string): Promise<void>;
  unrefuse(name: string, table: string): Promise<void>;
  /** Everything stored, as text (to check that a secret is not). */
  allText(): Promise<string>;
  close(): Promise<void>;
}

export async function openTestDb(dirs: Folder): Promise<TestDb> {
  if (onPostgres()) {
    const c = new pg.Client({ connectionString: urlOf(databaseName(dirs)) });
    await c.connect();
    const rows = async <T>(sql: string, params: unknown[] = []) => {
      let i = 0;
      return (await c.query(sql.replace(/\?/g, () => `$${++i}`), params)).rows as T[];
    };
    return {
      rows,
      async refuse(name, table, event, when) {
        await c.query(`CREATE FUNCTION ${name}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION '${name}'; END $$ LANGUAGE plpgsql`);
        await c.query(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} FOR EACH ROW ${when ? `WHEN (${when})` : ""} EXECUTE FUNCTION ${name}()`);
      },
      async unrefuse(name, table) {
        await c.query(`DROP TRIGGER IF EXISTS ${name} ON ${table}`);
        await c.query(`DROP FUNCTION IF EXISTS ${name}()`);
      },
      async allText() {
        const tables = await rows<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public'");
        const out: string[] = [];
        for (const { t } of tables) out.push(...(await rows<{ r: string }>(`SELECT x::text AS r FROM "${t}" x`)).map((r) => r.r));
        return out.join("\n");
      },
      close: () => c.end(),
    };
  }
  const file = path.join(dirs.data, "ota.sqlite");
  const db = new SqliteDatabase(file);
  db.pragma("busy_timeout = 5000");
  return {
    rows<T>(sql: string, params: unknown[] = []) {
      const stmt = db.prepare(sql);
      if (stmt.reader) return Promise.resolve(stmt.all(...params) as T[]);
      stmt.run(...params);
      return Promise.resolve([]);
    },
    refuse(name, table, event, when) {
      db.exec(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} ${when ? `WHEN ${when}` : ""} BEGIN SELECT RAISE(ABORT, '${name}'); END`);
      return Promise.resolve();
    },
    unrefuse(name) {
      db.exec(`DROP TRIGGER IF EXISTS ${name}`);
      return Promise.resolve();
    },
    allText() {
      const wal = `${file}-wal`;
      return Promise.resolve(fs.readFileSync(file).toString("latin1") + (fs.existsSync(wal) ? fs.readFileSync(wal).toString("latin1") : ""));
    },
    close() {
      db.close();
      return Promise.resolve();
    },
  };
}

/** Runs fn on the folder's database, opened for it and closed after. */
export async function withTestDb<T>(dirs: Folder, fn: (db: TestDb) => Promise<T>): Promise<T> {
  const db = await openTestDb(dirs);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}
