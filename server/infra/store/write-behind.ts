// Rows written behind the request that produced them: kept in memory by key (a later value replaces an earlier
// one), written together in one batch at most `delayMs` after the first, and kept for the next batch when a
// write fails. For data that may lag by a second but must not cost a disk write per request (poll sightings,
// new rollout members).
import type { Logger } from "pino";

export class WriteBehind<K, V> {
  private pending = new Map<K, V>();
  private writing = new Map<K, V>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly write: (batch: [K, V][]) => Promise<void>,
    private readonly log: Logger,
    /** what the rows are, for the error line */
    private readonly what: string,
    private readonly delayMs: number,
  ) {}

  /** A queued row, or one of the batch being written (not yet visible to other connections). */
  get(key: K): V | undefined {
    return this.pending.get(key) ?? this.writing.get(key);
  }

  /** Queues a row; written within delayMs. */
  set(key: K, value: V): void {
    this.pending.set(key, value);
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flush();
      }, this.delayMs);
      this.timer.unref();
    }
  }

  /** Forgets queued rows whose key matches (what they belong to is being deleted). */
  drop(matches: (key: K) => boolean): void {
    for (const k of [...this.pending.keys()]) if (matches(k)) this.pending.delete(k);
  }

  /** Writes what is queued now; resolves once written (or logged as failed, to be retried with the next batch). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pending.size === 0) return;
      const batch = [...this.pending];
      this.writing = this.pending;
      this.pending = new Map();
      try {
        await this.write(batch);
      } catch (err) {
        this.log.error({ err, rows: batch.length }, `could not record ${this.what}; will retry`);
        // Newer values queued meanwhile win over the failed ones.
        for (const [k, v] of batch) if (!this.pending.has(k)) this.pending.set(k, v);
      } finally {
        this.writing = new Map();
      }
    });
    return this.flushing;
  }

  /** Stops the timer and writes what is queued. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
  }
}
