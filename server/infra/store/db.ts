// Opens the database (SQLite in WAL mode by default) and brings its schema up to date.
import fs from "node:fs";
import path from "node:path";
import { inspect } from "node:util";
import SqliteDatabase from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect, type SqliteDatabase as KyselySqliteDatabase, type SqliteStatement } from "kysely";
import type { Logger } from "pino";
import { StaticMigrations } from "./migrations";
import type { Database } from "./schema";

export interface Store {
  db: Kysely<Database>;
  /** The raw SQLite handle, for pragmas and checkpoints. */
  sqlite: SqliteDatabase.Database;
  /**
   * A second connection, for reads only, used by the per-request device lookup: synchronous (no wait for the
   * connection Kysely shares), and in WAL mode it sees exactly what has been committed, never a transaction of
   * the main connection that is still open.
   */
  reader: SqliteDatabase.Database;
  close(): Promise<void>;
}

/**
 * better-sqlite3 behind Kysely, with each statement prepared once and reused: the hot paths (device
 * lookups, sightings, reports) run the same few SQL texts thousands of times a second, and preparing
 * costs more than running them. Bounded, so queries whose text varies (IN lists) cannot grow it forever.
 */
function preparedStatementCache(sqlite: SqliteDatabase.Database, max = 256): KyselySqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string): SqliteStatement {
      let stmt = cache.get(sql);
      if (stmt) return stmt;
      stmt = sqlite.prepare(sql);
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(sql, stmt);
      return stmt;
    },
  };
}

export async function openStore(dataDir: string, log: Logger): Promise<Store> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, "ota.sqlite");
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma("journal_mode = WAL");
  // FULL: a commit is on disk before the caller is told it succeeded (reports must survive power loss).
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("foreign_keys = ON");
  sqlite.pragma("busy_timeout = 5000");
  fs.chmodSync(file, 0o600);

  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: preparedStatementCache(sqlite) }) });
  const migrator = new Migrator({ db, provider: new StaticMigrations("sqlite") });
  const { error, results } = await migrator.migrateToLatest();
  for (const r of results ?? []) {
    if (r.status === "Success") log.info({ migration: r.migrationName }, "database migration applied");
    else if (r.status === "Error") log.error({ migration: r.migrationName }, "database migration failed");
  }
  if (error) {
    await db.destroy();
    throw new Error(`database migration failed in ${file}: ${error instanceof Error ? error.message : inspect(error)}`, { cause: error });
  }
  const reader = new SqliteDatabase(file);
  reader.pragma("query_only = ON");
  reader.pragma("busy_timeout = 5000");
  return {
    db,
    sqlite,
    reader,
    async close() {
      await db.destroy();
      reader.close();
    },
  };
}
