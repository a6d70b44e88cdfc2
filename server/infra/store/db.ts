// Opens the database (SQLite in WAL mode by default, PostgreSQL when OTA_DATABASE_URL names one) and brings its
// schema up to date.
import fs from "node:fs";
import path from "node:path";
import { inspect } from "node:util";
import SqliteDatabase from "better-sqlite3";
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  type SqliteDatabase as KyselySqliteDatabase,
  type SqliteStatement,
} from "kysely";
import pg from "pg";
import type { Logger } from "pino";
import { StaticMigrations } from "./migrations";
import { describeDatabaseUrl, errorMessage, isDatabaseUnavailable } from "./postgres-errors";
import type { Database } from "./schema";

export interface Store {
  db: Kysely<Database>;
  dialect: "sqlite" | "postgres";
  /** The raw SQLite handle, for pragmas and checkpoints (SQLite only). */
  sqlite?: SqliteDatabase.Database;
  /**
   * A second connection, for reads only, used by the per-request device lookup: synchronous (no wait for the
   * connection Kysely shares), and in WAL mode it sees exactly what has been committed, never a transaction of
   * the main connection that is still open (SQLite only).
   */
  reader?: SqliteDatabase.Database;
  /** A new connection outside the pool, for LISTEN and session locks (PostgreSQL only); the caller connects and ends it. */
  session?: () => pg.Client;
  close(): Promise<void>;
}

/** OTA_DATABASE_URL and OTA_DATABASE_POOL. */
export interface PostgresOptions {
  url: string;
  poolSize: number;
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

async function migrate(db: Kysely<Database>, dialect: Store["dialect"], log: Logger, where: string): Promise<void> {
  // On PostgreSQL the Migrator runs the pending migrations in one transaction under an advisory lock: servers
  // and `ota` commands that start together migrate once, and a failed migration leaves nothing behind.
  const migrator = new Migrator({ db, provider: new StaticMigrations(dialect) });
  const { error, results } = await migrator.migrateToLatest();
  for (const r of results ?? []) {
    if (r.status === "Success") log.info({ migration: r.migrationName }, "database migration applied");
    else if (r.status === "Error") log.error({ migration: r.migrationName }, "database migration failed");
  }
  if (error) {
    await db.destroy();
    throw new Error(`database migration failed in ${where}: ${error instanceof Error ? error.message : inspect(error)}`, { cause: error });
  }
}

export async function openStore(dataDir: string, log: Logger, postgres?: PostgresOptions | null): Promise<Store> {
  return postgres ? openPostgres(postgres, log) : openSqlite(dataDir, log);
}

async function openSqlite(dataDir: string, log: Logger): Promise<Store> {
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
  await migrate(db, "sqlite", log, file);
  const reader = new SqliteDatabase(file);
  reader.pragma("query_only = ON");
  reader.pragma("busy_timeout = 5000");
  return {
    db,
    dialect: "sqlite",
    sqlite,
    reader,
    async close() {
      await db.destroy();
      reader.close();
    },
  };
}

const PG_INT8 = 20;
const PG_NUMERIC = 1700;

/**
 * pg returns int8 (bigint columns, count(*)) and numeric as strings, to keep precision a JavaScript number may
 * lose; every such value here (file mtimes in ms, row counts) is well inside 2^53, and the code expects numbers as
 * SQLite gives them.
 */
const defaultParser = pg.types.getTypeParser as (oid: number) => (value: string) => unknown;
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: (oid: number) => (oid === PG_INT8 || oid === PG_NUMERIC ? Number : defaultParser(oid)),
};

async function openPostgres(opts: PostgresOptions, log: Logger): Promise<Store> {
  const where = describeDatabaseUrl(opts.url);
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize,
    types: pgTypes,
    // A request waits at most this long for a connection, then fails (503 database_unavailable) instead of hanging.
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle connection that the database closes (restart, failover) is reported here; without a listener the
  // process would exit. The pool opens a new one for the next query.
  pool.on("error", (err) => log.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, "PostgreSQL closed an idle connection"));
  // A connection lost while checked out (between two queries of a transaction, or just handed out) reports it
  // here too; the query on it fails with the same error, which its caller handles. Unhandled, it would end the
  // process.
  pool.on("connect", (client) => client.on("error", () => undefined));
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    await pool.end().catch(() => undefined);
    const reason = errorMessage(err);
    const hint = isDatabaseUnavailable(err)
      ? "check that PostgreSQL is running and reachable at that host and port"
      : "check the user, password, database name and that pg_hba.conf lets this host in";
    // The message names host, port, database and user, never the password.
    throw new Error(`cannot connect to PostgreSQL at ${where} (OTA_DATABASE_URL): ${reason}; ${hint}`, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  await migrate(db, "postgres", log, where);
  log.info({ database: where, pool: opts.poolSize }, "PostgreSQL database open");
  return {
    db,
    dialect: "postgres",
    session: () => new pg.Client({ connectionString: opts.url, types: pgTypes, connectionTimeoutMillis: 10_000, keepAlive: true }),
    async close() {
      await db.destroy();
    },
  };
}
