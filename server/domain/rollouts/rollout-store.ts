// Rollouts, their members and their counts in the database. A rollout's row is written when its state changes,
// before the change is acknowledged. A new member (a device offered the release) is written behind, batched once
// a second, so the poll path that makes members never waits on the disk; a member's move, caused by a report, is
// written in the report's own transaction (writeMembers), so it is on disk when the report is acknowledged.
//
// Members stay in the database: the poll path asks for one device's membership by key (memberStatus), and the
// counts (per stage and status, and the current window's outcomes) are a table kept in the same transactions
// that write the members. Kept there rather than in memory so that every server process on the database reads
// the same counts, they survive a crash with the members they count, and no process reads every member to
// rebuild them.
import type SqliteDatabase from "better-sqlite3";
import { PostgresAdapter, sql, type Kysely, type Transaction } from "kysely";
import type { Logger } from "pino";
import type { MaybePromise } from "../../infra/maybe-promise";
import { preparedQuery } from "../../infra/store/prepared";
import type { Database, RolloutDeviceRow, RolloutRow } from "../../infra/store/schema";
import { WriteBehind } from "../../infra/store/write-behind";
import type { NoteChange } from "../../infra/replicas/change-feed";
import { countChanges, WINDOW, type CountChange, type Member, type MemberStatus } from "./member-status";
import { rolloutPolicySchema } from "./policy";
import type { Rollout } from "./rollout-state";


function fromRow(row: RolloutRow): Rollout {
  return {
    id: row.id,
    releaseName: row.release_name,
    state: row.state,
    stage: row.stage,
    policy: rolloutPolicySchema.parse(JSON.parse(row.policy)),
    windowStartedAt: row.window_started_at,
    reason: row.state_reason,
    createdAt: row.created_at,
    createdBy: row.created_by,
    updatedAt: row.updated_at,
    version: row.version,
  };
}

function memberRow(rolloutId: string, deviceId: string, m: Member, at: string): RolloutDeviceRow {
  return {
    rollout_id: rolloutId,
    device_id: deviceId,
    stage: m.stage,
    status: m.status,
    joined_at: m.joinedAt,
    updated_at: at,
    finished_at: m.finishedAt === null ? null : new Date(m.finishedAt).toISOString(),
  };
}

function memberOf(row: Pick<RolloutDeviceRow, "stage" | "status" | "joined_at" | "finished_at">): Member {
  return { stage: row.stage, status: row.status as MemberStatus, joinedAt: row.joined_at, finishedAt: row.finished_at ? Date.parse(row.finished_at) : null };
}

/** The key of a device's record in a rollout, in members()'s answer. */
export const memberKey = (rolloutId: string, deviceId: string) => `${rolloutId}\u0000${deviceId}`;
const key = memberKey;

/** A device's record in a rollout as a report transaction sees it. */
export interface Found {
  member: Member;
  /** Whether its row is in the database (else it is a new member still waiting to be written). */
  stored: boolean;
}

/** A member's move, written in a report's transaction. */
export interface MemberWrite {
  rolloutId: string;
  deviceId: string;
  /** The record in the database before the move; null when it had no row yet. */
  before: Member | null;
  member: Member;
}

/**
 * On PostgreSQL, holds each rollout's lock until `trx` ends. A report's transaction reads its members and then
 * writes their moves; a batch of new members inserts rows beside it on another connection. Without the lock a
 * move could read "no row yet" just before the batch commits that row, and both would count the member. SQLite
 * runs one transaction at a time, so it needs none.
 */
async function lockRollouts(trx: Transaction<Database>, rolloutIds: readonly string[]): Promise<void> {
  if (!(trx.getExecutor().adapter instanceof PostgresAdapter)) return;
  // Always in the same order, so two transactions locking several rollouts cannot wait for each other.
  for (const id of [...new Set(rolloutIds)].sort()) {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${"rollout:" + id}))`.execute(trx);
  }
}

export class RolloutStore {
  /** New members not yet written, by rollout and device. */
  private readonly pending: WriteBehind<string, RolloutDeviceRow>;
  private readonly statusQuery;
  private readonly readStatus: ((rolloutId: string, deviceId: string) => string | undefined) | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    /** Tells other processes that a rollout's row changed. */
    private readonly noteChange: NoteChange,
    log: Logger,
    flushMs = 1000,
    /** A read-only SQLite connection (Store.reader) for the poll path's membership lookups; without it, Kysely. */
    reader?: SqliteDatabase.Database,
  ) {
    this.pending = new WriteBehind((batch) => this.writeOffers(batch.map(([, row]) => row)), log, "rollout members", flushMs);
    this.statusQuery = preparedQuery(["rollout", "device"], (p) =>
      db.selectFrom("rollout_devices").select("status").where("rollout_id", "=", p.rollout).where("device_id", "=", p.device),
    );
    if (reader) {
      const stmt = reader.prepare(this.statusQuery({ rollout: "", device: "" }).sql).pluck();
      this.readStatus = (rolloutId, deviceId) => stmt.get(...this.statusQuery({ rollout: rolloutId, device: deviceId }).parameters) as string | undefined;
    }
  }

  /** Whether memberStatus() answers without a promise (a reader was given). */
  get synchronous(): boolean {
    return this.readStatus !== null;
  }

  /** Every rollout, oldest first (their members stay in the database). */
  async load(): Promise<Rollout[]> {
    const rows = await this.db.selectFrom("rollouts").selectAll().orderBy("created_at").orderBy("id").execute();
    return rows.map(fromRow);
  }

  /** One rollout as the database has it now. */
  async get(id: string): Promise<Rollout | undefined> {
    const row = await this.db.selectFrom("rollouts").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  /**
   * A device's status in a rollout (a primary-key lookup; a member not yet written is found among the pending
   * ones): synchronous with a reader, a promise otherwise. A stored row is newer than a pending one (a move wrote it).
   */
  memberStatus(rolloutId: string, deviceId: string): MaybePromise<MemberStatus | undefined> {
    const pending = () => this.pending.get(key(rolloutId, deviceId))?.status as MemberStatus | undefined;
    if (this.readStatus) return (this.readStatus(rolloutId, deviceId) as MemberStatus | undefined) ?? pending();
    return this.db
      .executeQuery(this.statusQuery({ rollout: rolloutId, device: deviceId }))
      .then((r) => (r.rows[0]?.status as MemberStatus | undefined) ?? pending());
  }

  /** The devices' records in these rollouts (by memberKey), as `trx` sees them, with the pending new members laid under. */
  async members(trx: Transaction<Database>, rolloutIds: readonly string[], deviceIds: readonly string[]): Promise<Map<string, Found>> {
    const out = new Map<string, Found>();
    if (rolloutIds.length === 0 || deviceIds.length === 0) return out;
    await lockRollouts(trx, rolloutIds);
    for (let i = 0; i < deviceIds.length; i += 500) {
      const rows = await trx
        .selectFrom("rollout_devices")
        .select(["rollout_id", "device_id", "stage", "status", "joined_at", "finished_at"])
        .where("rollout_id", "in", [...rolloutIds])
        .where("device_id", "in", deviceIds.slice(i, i + 500))
        .execute();
      for (const row of rows) out.set(key(row.rollout_id, row.device_id), { member: memberOf(row), stored: true });
    }
    for (const r of rolloutIds) {
      for (const d of deviceIds) {
        const k = key(r, d);
        const p = out.has(k) ? undefined : this.pending.get(k);
        if (p) out.set(k, { member: memberOf(p), stored: false });
      }
    }
    return out;
  }

  /** Writes a new rollout; false when one with its id is there already (started by another process). */
  async insert(r: Rollout): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const done = await trx
        .insertInto("rollouts")
        .values({
          id: r.id,
          release_name: r.releaseName,
          state: r.state,
          stage: r.stage,
          policy: JSON.stringify(r.policy),
          window_started_at: r.windowStartedAt,
          state_reason: r.reason,
          created_at: r.createdAt,
          created_by: r.createdBy,
          updated_at: r.updatedAt,
          version: r.version,
        })
        .onConflict((oc) => oc.column("id").doNothing())
        .executeTakeFirst();
      if (Number(done.numInsertedOrUpdatedRows ?? 0n) === 0) return false;
      await this.noteChange(trx, "rollouts");
      return true;
    });
  }

  /**
   * Writes a rollout's state, stage, reason, window start and update time, if its row is still at the version
   * before `r` (else another process changed it first, and nothing is written: false); a new window starts with
   * no counts (in the same transaction).
   */
  async update(r: Rollout, newWindow: boolean): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const done = await trx
        .updateTable("rollouts")
        .set({ state: r.state, stage: r.stage, state_reason: r.reason, window_started_at: r.windowStartedAt, updated_at: r.updatedAt, version: r.version })
        .where("id", "=", r.id)
        .where("version", "=", r.version - 1)
        .executeTakeFirst();
      if (Number(done.numUpdatedRows) === 0) return false;
      if (newWindow) await trx.deleteFrom("rollout_counts").where("rollout_id", "=", r.id).where("stage", "=", WINDOW).execute();
      await this.noteChange(trx, "rollouts");
      return true;
    });
  }

  /** Deletes a rollout, its members and its counts, in `trx` (its release is being deleted). */
  async delete(trx: Transaction<Database>, rolloutId: string, noteChange: NoteChange): Promise<void> {
    this.pending.drop((k) => k.startsWith(`${rolloutId}\u0000`));
    await trx.deleteFrom("rollout_devices").where("rollout_id", "=", rolloutId).execute();
    await trx.deleteFrom("rollout_counts").where("rollout_id", "=", rolloutId).execute();
    await trx.deleteFrom("rollouts").where("id", "=", rolloutId).execute();
    await noteChange(trx, "rollouts");
  }

  /** Queues a new member's row; written within flushMs, unless a move (writeMembers) wrote the member first. */
  queueOffer(rolloutId: string, deviceId: string, m: Member, at: string): void {
    this.pending.set(key(rolloutId, deviceId), memberRow(rolloutId, deviceId, m, at));
  }

  /** Writes pending new members now. */
  flush(): Promise<void> {
    return this.pending.flush();
  }

  /** New members, and their counts: a row already there (written by a move, or by another process) stays, uncounted again. */
  private async writeOffers(rows: RolloutDeviceRow[]): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await lockRollouts(trx, rows.map((r) => r.rollout_id));
      const changes = new Map<string, CountChange[]>();
      for (const row of rows) {
        const r = await trx
          .insertInto("rollout_devices")
          .values(row)
          .onConflict((oc) => oc.columns(["rollout_id", "device_id"]).doNothing())
          .executeTakeFirst();
        if (Number(r.numInsertedOrUpdatedRows ?? 0n) === 0) continue;
        const list = changes.get(row.rollout_id) ?? [];
        list.push(...countChanges(null, memberOf(row), Number.POSITIVE_INFINITY));
        changes.set(row.rollout_id, list);
      }
      for (const [rolloutId, list] of changes) await this.addCounts(trx, rolloutId, list);
    });
  }

  /**
   * Writes members' moves within `trx` (the transaction of the reports that moved them), with what they change in
   * the counts: a move is counted in the transaction that writes it, so a report and its count are stored
   * together or not at all, and a report applied again (which moves nothing) counts nothing.
   */
  async writeMembers(trx: Transaction<Database>, moves: readonly MemberWrite[], at: string): Promise<void> {
    if (moves.length === 0) return;
    // The window as it is in the database now (another process may have resumed the rollout).
    const ids = [...new Set(moves.map((m) => m.rolloutId))];
    const windows = new Map(
      (await trx.selectFrom("rollouts").select(["id", "window_started_at"]).where("id", "in", ids).execute()).map((r) => [r.id, Date.parse(r.window_started_at)]),
    );
    const changes = new Map<string, CountChange[]>();
    for (const { rolloutId, deviceId, before, member } of moves) {
      const row = memberRow(rolloutId, deviceId, member, at);
      const { rollout_id: _r, device_id: _d, joined_at: _j, ...update } = row;
      await trx
        .insertInto("rollout_devices")
        .values(row)
        .onConflict((oc) => oc.columns(["rollout_id", "device_id"]).doUpdateSet(update))
        .execute();
      const list = changes.get(rolloutId) ?? [];
      list.push(...countChanges(before, member, windows.get(rolloutId) ?? Number.POSITIVE_INFINITY));
      changes.set(rolloutId, list);
    }
    for (const [rolloutId, list] of changes) await this.addCounts(trx, rolloutId, list);
  }

  /** Adds changes to a rollout's counts (summed first: one statement per count). */
  private async addCounts(trx: Transaction<Database>, rolloutId: string, list: readonly CountChange[]): Promise<void> {
    const sums = new Map<string, { stage: number; status: string; n: number }>();
    for (const c of list) {
      const k = `${c.stage}\u0000${c.status}`;
      const s = sums.get(k);
      if (s) s.n += c.n;
      else sums.set(k, { ...c });
    }
    for (const { stage, status, n } of sums.values()) {
      if (n === 0) continue;
      await trx
        .insertInto("rollout_counts")
        .values({ rollout_id: rolloutId, stage, status, n })
        .onConflict((oc) => oc.columns(["rollout_id", "stage", "status"]).doUpdateSet({ n: sql<number>`rollout_counts.n + excluded.n` }))
        .execute();
    }
  }

  /** A rollout's counts, as written (flush first for the pending new members): stage -1 (WINDOW) is the current window's. */
  async counts(rolloutId: string): Promise<{ stage: number; status: string; n: number }[]> {
    return this.db.selectFrom("rollout_counts").select(["stage", "status", "n"]).where("rollout_id", "=", rolloutId).execute();
  }

  /** Every rollout's counts of members by stage and status (the window's left out), in one query. */
  async allCounts(): Promise<{ rollout_id: string; stage: number; status: string; n: number }[]> {
    return this.db.selectFrom("rollout_counts").select(["rollout_id", "stage", "status", "n"]).where("stage", "<>", WINDOW).execute();
  }

  /** Stops the timer and writes pending new members. */
  close(): Promise<void> {
    return this.pending.close();
  }
}
