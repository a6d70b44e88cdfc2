// Remembers (device, nonce) pairs for a while so a replayed manifest request is refused. The device makes
// a fresh random nonce per request, so it needs no clock; the server needs only bounded memory.
import { sql, type Kysely } from "kysely";
import type { Logger } from "pino";
import type { MaybePromise } from "../../infra/maybe-promise";
import type { Database } from "../../infra/store/schema";

const TTL_MS = 10 * 60_000;

export interface Nonces {
  /** False if this device already used this nonce within the time to live. */
  use(deviceId: string, nonce: string): MaybePromise<boolean>;
  close(): void;
}

/** One process: the nonces in its memory. */
export class NonceCache implements Nonces {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly ttlMs = TTL_MS,
    private readonly max = 200_000,
  ) {}

  use(deviceId: string, nonce: string, now = Date.now()): boolean {
    const key = `${deviceId}\u0000${nonce}`;
    const until = this.seen.get(key);
    if (until !== undefined && until > now) return false;
    this.seen.set(key, now + this.ttlMs);
    if (this.seen.size > this.max) this.evict(now);
    return true;
  }

  private evict(now: number): void {
    // Insertion order is expiry order: drop expired entries, then the oldest until under the cap.
    for (const [k, until] of this.seen) {
      if (until > now && this.seen.size <= this.max * 0.9) break;
      this.seen.delete(k);
    }
  }

  get size(): number {
    return this.seen.size;
  }

  close(): void {
    this.seen.clear();
  }
}

/**
 * Several processes on PostgreSQL: the nonces in one table, so a request replayed to another process is refused
 * too. A nonce is recorded by an insert that finds a live one already there; the table is unlogged (no write-ahead
 * log, no disk wait on the poll path), so a crash of the database forgets the nonces of the last ten minutes.
 */
export class SharedNonces implements Nonces {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly db: Kysely<Database>,
    log: Logger,
    private readonly ttlMs = TTL_MS,
  ) {
    this.timer = setInterval(() => {
      db.deleteFrom("nonces")
        .where("expires_at", "<=", Date.now())
        .execute()
        .catch((err: unknown) => log.debug({ err: (err as Error).message }, "could not delete expired nonces; trying again later"));
    }, 60_000);
    this.timer.unref();
  }

  use(deviceId: string, nonce: string): Promise<boolean> {
    const now = Date.now();
    return sql<{ fresh: number }>`INSERT INTO nonces (device_id, nonce, expires_at) VALUES (${deviceId}, ${nonce}, ${now + this.ttlMs})
      ON CONFLICT (device_id, nonce) DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at <= ${now}
      RETURNING 1 AS fresh`
      .execute(this.db)
      .then((r) => r.rows.length === 1);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
