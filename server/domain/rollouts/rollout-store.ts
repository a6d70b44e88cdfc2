// Rollouts and their members in the database. A rollout's row is written when its state changes, before the
// change is acknowledged. A new member (a device offered the release) is written behind, batched once a second,
// so the poll path that makes members never waits on the disk; a member's move, caused by a report, is written
// in the report's own transaction (writeMembers), so it is on disk when the report is acknowledged.
import type { Kysely, Transaction } from "kysely";
import type { Logger } from "pino";
import type { Database, RolloutDeviceRow, RolloutRow } from "../../infra/store/schema";
import { WriteBehind } from "../../infra/store/write-behind";
import { KEPT_AFTER_ABORT, type Member, type MemberStatus } from "./member-status";
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

export class RolloutStore {
  /** New members not yet written, by rollout and device. */
  private readonly pending: WriteBehind<string, RolloutDeviceRow>;

  constructor(
    private readonly db: Kysely<Database>,
    log: Logger,
    flushMs = 1000,
  ) {
    this.pending = new WriteBehind((batch) => this.writeOffers(batch.map(([, row]) => row)), log, "rollout members", flushMs);
  }

  /**
   * Every rollout, oldest first, with the members that still matter: none for a completed rollout, those that
   * keep the image for an aborted one, all for the others.
   */
  async load(): Promise<{ rollout: Rollout; members: [deviceId: string, member: Member][] }[]> {
    const rows = await this.db.selectFrom("rollouts").selectAll().orderBy("created_at").execute();
    const out: { rollout: Rollout; members: [string, Member][] }[] = [];
    for (const row of rows) {
      const members: [string, Member][] = [];
      out.push({ rollout: fromRow(row), members });
      if (row.state === "completed") continue;
      let q = this.db.selectFrom("rollout_devices").selectAll().where("rollout_id", "=", row.id);
      if (row.state === "aborted") q = q.where("status", "in", [...KEPT_AFTER_ABORT]);
      for (const m of await q.execute()) {
        members.push([
          m.device_id,
          {
            stage: m.stage,
            status: m.status as MemberStatus,
            joinedAt: m.joined_at,
            finishedAt: m.finished_at ? Date.parse(m.finished_at) : null,
          },
        ]);
      }
    }
    return out;
  }

  async insert(r: Rollout): Promise<void> {
    await this.db
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
      })
      .execute();
  }

  /** Writes a rollout's state, stage, reason, window start and update time. */
  async update(r: Rollout): Promise<void> {
    await this.db
      .updateTable("rollouts")
      .set({ state: r.state, stage: r.stage, state_reason: r.reason, window_started_at: r.windowStartedAt, updated_at: r.updatedAt })
      .where("id", "=", r.id)
      .execute();
  }

  /** Queues a new member's row; written within flushMs, unless a move (writeMembers) wrote the member first. */
  queueOffer(rolloutId: string, deviceId: string, m: Member, at: string): void {
    this.pending.set(`${rolloutId}\u0000${deviceId}`, memberRow(rolloutId, deviceId, m, at));
  }

  /** Writes pending new members now. */
  flush(): Promise<void> {
    return this.pending.flush();
  }

  /** New members: a row already there (written by a move) is newer, and stays. */
  private async writeOffers(rows: RolloutDeviceRow[]): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      for (const row of rows) {
        await trx
          .insertInto("rollout_devices")
          .values(row)
          .onConflict((oc) => oc.columns(["rollout_id", "device_id"]).doNothing())
          .execute();
      }
    });
  }

  /** Writes members' moves within `trx` (the transaction of the reports that moved them). */
  async writeMembers(trx: Transaction<Database>, moves: readonly { rolloutId: string; deviceId: string; member: Member }[], at: string): Promise<void> {
    for (const { rolloutId, deviceId, member } of moves) {
      const row = memberRow(rolloutId, deviceId, member, at);
      const { rollout_id: _r, device_id: _d, joined_at: _j, ...update } = row;
      await trx
        .insertInto("rollout_devices")
        .values(row)
        .onConflict((oc) => oc.columns(["rollout_id", "device_id"]).doUpdateSet(update))
        .execute();
    }
  }

  /** Members of a rollout counted by stage and status, as written (flush first for the pending ones). */
  async statusCounts(rolloutId: string): Promise<{ stage: number; status: string; n: number }[]> {
    return this.db
      .selectFrom("rollout_devices")
      .select((eb) => ["stage", "status", eb.fn.countAll<number>().as("n")])
      .where("rollout_id", "=", rolloutId)
      .groupBy(["stage", "status"])
      .execute();
  }

  /** Stops the timer and writes pending new members. */
  close(): Promise<void> {
    return this.pending.close();
  }
}
