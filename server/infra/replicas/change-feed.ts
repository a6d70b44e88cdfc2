// What one server process changes in the tables others keep in memory (releases, rollouts, the catalog), every
// other process sharing the database reloads. On PostgreSQL a change bumps its topic's row in cache_versions and
// sends NOTIFY in the transaction that makes it, so others hear of it once it commits; each process also reads
// cache_versions every OTA_SYNC_INTERVAL_MS, so a notification lost (a dropped LISTEN connection, a restart of the
// database) delays a reload by at most that long. On SQLite one process owns the file: there is nothing to tell.
import { randomBytes } from "node:crypto";
import { sql, type Kysely } from "kysely";
import type pg from "pg";
import type { Logger } from "pino";
import type { Database } from "../store/schema";
import { ThrottledWarning } from "../logging/throttled-warning";

export type CacheTopic = "releases" | "rollouts" | "catalog";
const TOPICS: readonly CacheTopic[] = ["releases", "rollouts", "catalog"];
const CHANNEL = "ota_changes";

/** Records, in the caller's transaction, that a topic changed: other processes reload it once that commits. */
export type NoteChange = (db: Kysely<Database>, topic: CacheTopic) => Promise<void>;

export interface ChangeFeed {
  readonly note: NoteChange;
  /** Reloads a topic when another process changed it. */
  onChange(topic: CacheTopic, reload: () => Promise<void>): void;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** One process on its own database: nobody else to tell, nothing to hear. */
export const localChangeFeed = (): ChangeFeed => ({
  note: () => Promise.resolve(),
  onChange: () => undefined,
  start: () => Promise.resolve(),
  close: () => Promise.resolve(),
});

export class PostgresChangeFeed implements ChangeFeed {
  /** Names this process in its notifications, so it does not reload what it changed itself. */
  private readonly self = randomBytes(8).toString("hex");
  private readonly reloads = new Map<CacheTopic, () => Promise<void>>();
  private readonly seen = new Map<CacheTopic, number>();
  private readonly running = new Map<CacheTopic, Promise<void>>();
  private readonly again = new Set<CacheTopic>();
  private listener: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly failing: ThrottledWarning;

  constructor(
    private readonly db: Kysely<Database>,
    /** A new connection of its own (LISTEN needs one that the pool does not hand to others). */
    private readonly session: () => pg.Client,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {
    this.failing = new ThrottledWarning(log, "cannot check the database for changes made by other server processes; retrying", {});
  }

  readonly note: NoteChange = async (db, topic) => {
    await sql`UPDATE cache_versions SET version = version + 1 WHERE topic = ${topic}`.execute(db);
    await sql`SELECT pg_notify(${CHANNEL}, ${`${topic}:${this.self}`})`.execute(db);
  };

  onChange(topic: CacheTopic, reload: () => Promise<void>): void {
    this.reloads.set(topic, reload);
  }

  /** Reads the versions now (what is loaded after this is current), then listens and checks on the interval. */
  async start(): Promise<void> {
    await this.check(false);
    await this.listen();
    this.timer = setInterval(() => void this.check(true), this.intervalMs);
    this.timer.unref();
  }

  /** Reloads every topic whose version moved since it was last read (`reload` false: only remember them). */
  private async check(reload: boolean): Promise<void> {
    let rows: { topic: string; version: number }[];
    try {
      rows = await this.db.selectFrom("cache_versions").select(["topic", "version"]).execute();
    } catch (err) {
      if (!reload) throw err;
      this.failing.note({ reason: (err as Error).message });
      return;
    }
    for (const row of rows) {
      const topic = row.topic as CacheTopic;
      if (!TOPICS.includes(topic)) continue;
      const before = this.seen.get(topic);
      this.seen.set(topic, Number(row.version));
      if (reload && before !== Number(row.version)) this.trigger(topic);
    }
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = this.session();
    const retry = () => {
      if (this.listener !== client) return;
      this.listener = null;
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.log.warn("lost the database connection that hears of other processes' changes; reconnecting");
      setTimeout(() => void this.listen().then(() => this.check(true)).catch(() => undefined), Math.min(this.intervalMs, 1000)).unref();
    };
    client.on("error", retry);
    client.on("end", retry);
    client.on("notification", (msg) => {
      const [topic, from] = (msg.payload ?? "").split(":");
      if (from !== this.self && TOPICS.includes(topic as CacheTopic)) this.trigger(topic as CacheTopic);
    });
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      this.failing.note({ reason: (err as Error).message });
      retry();
    }
  }

  /** Runs a topic's reload; a change heard while one runs makes it run once more after. */
  private trigger(topic: CacheTopic): void {
    const reload = this.reloads.get(topic);
    if (!reload || this.closed) return;
    if (this.running.has(topic)) {
      this.again.add(topic);
      return;
    }
    const run = reload()
      .catch((err: unknown) => {
        this.log.error({ err, topic }, "reloading what another server process changed failed; trying again at the next check");
        this.seen.delete(topic);
      })
      .finally(() => {
        this.running.delete(topic);
        if (this.again.delete(topic)) this.trigger(topic);
      });
    this.running.set(topic, run);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.failing.stop();
    const l = this.listener;
    this.listener = null;
    await l?.end().catch(() => undefined);
    await Promise.all(this.running.values());
  }
}
