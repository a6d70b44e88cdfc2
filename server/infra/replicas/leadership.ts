// Work that one process must do for all (indexing the firmware folder) runs in the leader. On PostgreSQL the
// leader is the process holding a session advisory lock on a connection of its own: when it dies, or its
// connection does, the database releases the lock and another process takes it at its next try (within
// OTA_SYNC_INTERVAL_MS). A leader checks its connection on the same interval and steps down when it is gone. On
// SQLite the one process is the leader from the start.
import type pg from "pg";
import type { Logger } from "pino";

/** Told when this process becomes the leader (true) and when it stops being one (false). */
export type LeaderChange = (leader: boolean) => Promise<void>;

export interface Leadership {
  readonly leader: boolean;
  /** Tries at once, then on the interval; `onChange` runs for every change, one at a time. */
  start(onChange: LeaderChange): Promise<void>;
  close(): Promise<void>;
}

export const soleProcess = (): Leadership => {
  let leader = false;
  let change: LeaderChange | null = null;
  return {
    get leader() {
      return leader;
    },
    async start(onChange) {
      change = onChange;
      leader = true;
      await onChange(true);
    },
    async close() {
      if (leader && change) await change(false);
      leader = false;
    },
  };
};

/** The advisory lock's key: any number of the server's own, the same in every process. */
const LEADER_LOCK = 0x0e5f_07a1;

export class PostgresLeadership implements Leadership {
  private client: pg.Client | null = null;
  private isLeader = false;
  private timer: NodeJS.Timeout | null = null;
  private onChange: LeaderChange = () => Promise.resolve();
  private turn: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly session: () => pg.Client,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  get leader(): boolean {
    return this.isLeader;
  }

  async start(onChange: LeaderChange): Promise<void> {
    this.onChange = onChange;
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** One try (or, as leader, one check of the connection), never two at once. */
  private tick(): Promise<void> {
    this.turn = this.turn.then(() => (this.isLeader ? this.checkConnection() : this.tryToLead()));
    return this.turn;
  }

  private async tryToLead(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.client) {
        const c = this.session();
        c.on("error", () => undefined); // a lost connection is found by the next check
        await c.connect();
        this.client = c;
      }
      const r = await this.client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [LEADER_LOCK]);
      if (!r.rows[0]?.ok) return;
    } catch (err) {
      this.drop();
      this.log.debug({ err: (err as Error).message }, "could not try for leadership; trying again");
      return;
    }
    this.isLeader = true;
    this.log.info("this process leads: it indexes the firmware folder");
    await this.onChange(true).catch((err: unknown) => this.log.error({ err }, "starting the leader's work failed"));
  }

  private async checkConnection(): Promise<void> {
    try {
      await this.client!.query("SELECT 1");
    } catch {
      this.log.warn("lost the database connection that holds leadership; stepping down until it can be taken again");
      await this.stepDown();
    }
  }

  /** Stops the leader's work, then lets the lock go (ending the connection releases it). */
  private async stepDown(): Promise<void> {
    if (this.isLeader) {
      this.isLeader = false;
      await this.onChange(false).catch((err: unknown) => this.log.error({ err }, "stopping the leader's work failed"));
    }
    this.drop();
  }

  private drop(): void {
    const c = this.client;
    this.client = null;
    c?.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.turn;
    await this.stepDown(); // another process takes over at its next try
  }
}
