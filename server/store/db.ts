// Opens the database (SQLite in WAL mode by default) and brings its schema up to date.
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect } from "kysely";
import type { Logger } from "pino";
import { StaticMigrations } from "./migrations";
import type { Database } from "./schema";

export interface Store {
  db: Kysely<Database>;
  /** The raw SQLite handle, for pragmas and checkpoints. */
  sqlite: SqliteDatabase.Database;
  close(): Promise<void>;
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

  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  const migrator = new Migrator({ db, provider: new StaticMigrations("sqlite") });
  const { error, results } = await migrator.migrateToLatest();
  for (const r of results ?? []) {
    if (r.status === "Success") log.info({ migration: r.migrationName }, "database migration applied");
    else if (r.status === "Error") log.error({ migration: r.migrationName }, "database migration failed");
  }
  if (error) {
    await db.destroy();
    throw new Error(`database migration failed in ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return {
    db,
    sqlite,
    async close() {
      await db.destroy();
    },
  };
}
