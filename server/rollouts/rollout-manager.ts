// Staged rollouts: which devices a release has reached, how they fared, and the state machine
//   running ──pause──► paused ──resume──► running ──advance (last stage)──► completed
//      └──────────────┴──abort──► aborted
// that advances itself when a stage succeeds and pauses itself when failures or rollbacks pass a threshold.
//
// The poll path asks includes() and noteOffer(): memory only (a keyed hash and a map lookup). Members (devices
// offered the release) are written behind, batched once a second; state changes are written before they are
// acknowledged and audited.
import { createHmac } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { AuditEntry, AuditLog } from "../audit/audit-log";
import type { ReportInput } from "../devices/registry";
import type { CompiledRelease, ReleaseStore } from "../releases/release-store";
import type { Database, RolloutDeviceRow, RolloutRow, RolloutState } from "../store/schema";
import { WriteBehind } from "../store/write-behind";
import { bucketOf, stageLimit } from "./bucket";
import { finished, pauseReason, readyToAdvance, rolloutPolicySchema, type Outcomes, type RolloutPolicy } from "./policy";

/** Where a device is in a rollout: offered → installing → rebooted → succeeded, or failed / rolled_back. */
export type MemberStatus = "offered" | "installing" | "rebooted" | "succeeded" | "failed" | "rolled_back";
const MEMBER_STATUSES: readonly MemberStatus[] = ["offered", "installing", "rebooted", "succeeded", "failed", "rolled_back"];

const TERMINAL: ReadonlySet<MemberStatus> = new Set(["succeeded", "failed", "rolled_back"]);
/** After an abort these devices keep the image: they have already rebooted into it. */
const KEPT_AFTER_ABORT: ReadonlySet<MemberStatus> = new Set(["rebooted", "succeeded"]);

interface Member {
  stage: number;
  status: MemberStatus;
  joinedAt: string;
  finishedAt: number | null;
}

export interface Rollout {
  id: string;
  releaseName: string;
  state: RolloutState;
  /** Index into policy.stages. */
  stage: number;
  policy: RolloutPolicy;
  /** Failure and rollback rates count devices that finished since this time (start or last resume). */
  windowStartedAt: string;
  reason: string | null;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
}

interface Live {
  rollout: Rollout;
  windowStart: number;
  members: Map<string, Member>;
  window: Outcomes;
  stages: Outcomes[];
}

/** Who did something: an operator (from the request) or the server itself. */
export type Actor = Omit<AuditEntry, "action" | "target" | "details" | "outcome">;
const SYSTEM: Actor = { actor: "system", source: "system" };

export class RolloutError extends Error {
  constructor(
    readonly code: "rollout_exists" | "invalid_transition" | "release_not_found" | "rollout_not_found",
    message: string,
  ) {
    super(message);
  }
}

const emptyOutcomes = (): Outcomes => ({ succeeded: 0, failed: 0, rolledBack: 0 });
const outcomeKey = (s: MemberStatus): keyof Outcomes | null =>
  s === "succeeded" ? "succeeded" : s === "failed" ? "failed" : s === "rolled_back" ? "rolledBack" : null;

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

/** How a report relates to a release: its own image, an intermediate step on its upgrade path, or neither. */
type Match = "own" | "step" | "unknown" | "other";

export class RolloutManager extends EventEmitter {
  private readonly byId = new Map<string, Live>();
  private readonly byRelease = new Map<string, Live>();
  /** Member changes not yet written, by rollout and device. */
  private readonly pending: WriteBehind<string, RolloutDeviceRow>;
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly releases: ReleaseStore,
    private readonly audit: AuditLog,
    private readonly bucketKey: Buffer,
    private readonly log: Logger,
    flushMs = 1000,
  ) {
    super();
    this.pending = new WriteBehind((batch) => this.writeMembers(batch.map(([, row]) => row)), log, "rollout progress", flushMs);
  }

  async load(): Promise<void> {
    const rows = await this.db.selectFrom("rollouts").selectAll().orderBy("created_at").execute();
    let members = 0;
    for (const row of rows) {
      const live = this.track(fromRow(row));
      if (row.state === "completed") continue;
      let q = this.db.selectFrom("rollout_devices").selectAll().where("rollout_id", "=", row.id);
      if (row.state === "aborted") q = q.where("status", "in", [...KEPT_AFTER_ABORT]);
      for (const m of await q.execute()) {
        this.addMember(live, m.device_id, {
          stage: m.stage,
          status: m.status as MemberStatus,
          joinedAt: m.joined_at,
          finishedAt: m.finished_at ? Date.parse(m.finished_at) : null,
        });
        members++;
      }
    }
    this.log.info({ rollouts: rows.length, members }, "rollouts loaded");
  }

  private track(rollout: Rollout): Live {
    const live: Live = {
      rollout,
      windowStart: Date.parse(rollout.windowStartedAt),
      members: new Map(),
      window: emptyOutcomes(),
      stages: rollout.policy.stages.map(emptyOutcomes),
    };
    this.byId.set(rollout.id, live);
    this.byRelease.set(rollout.releaseName, live);
    return live;
  }

  private addMember(live: Live, deviceId: string, m: Member): void {
    live.members.set(deviceId, m);
    this.count(live, m, 1);
  }

  private count(live: Live, m: Member, sign: 1 | -1): void {
    const k = outcomeKey(m.status);
    if (!k) return;
    const stage = live.stages[m.stage];
    if (stage) stage[k] += sign;
    if (m.finishedAt !== null && m.finishedAt >= live.windowStart) live.window[k] += sign;
  }

  // ---- the poll path -------------------------------------------------------------------------------------

  /** The rollout of a release, if it has one (a release without a rollout is a draft: offered to nobody). */
  get(idOrRelease: string): Rollout | undefined {
    return (this.byId.get(idOrRelease) ?? this.byRelease.get(idOrRelease))?.rollout;
  }

  /** Whether the release's rollout currently offers it to this device. */
  includes(release: CompiledRelease, deviceId: string | null, runningVersion: string | null): boolean {
    const live = this.byRelease.get(release.name);
    if (!live) return false;
    const r = live.rollout;
    switch (r.state) {
      case "completed":
        return true;
      case "running":
        if (!deviceId) return false;
        return live.members.has(deviceId) || this.bucket(r.id, deviceId) < stageLimit(r.policy.stages[r.stage]!);
      case "paused":
        // Devices already offered it keep it (their download resumes against the same manifest); no one else.
        return deviceId !== null && live.members.has(deviceId);
      case "aborted": {
        // Never pull an image from under a device that has rebooted into it, or runs it already.
        if (runningVersion !== null && runningVersion === release.version) return true;
        const m = deviceId ? live.members.get(deviceId) : undefined;
        return m !== undefined && KEPT_AFTER_ABORT.has(m.status);
      }
    }
  }

  bucket(rolloutId: string, deviceId: string): number {
    return bucketOf(this.bucketKey, rolloutId, deviceId);
  }

  /** Records that a running rollout offered its release to a device (it becomes a member of the current stage). */
  noteOffer(release: CompiledRelease, deviceId: string): void {
    const live = this.byRelease.get(release.name);
    if (!live || live.rollout.state !== "running" || live.members.has(deviceId)) return;
    const at = new Date().toISOString();
    const m: Member = { stage: live.rollout.stage, status: "offered", joinedAt: at, finishedAt: null };
    this.addMember(live, deviceId, m);
    this.queue(live.rollout.id, deviceId, m, at);
  }

  private queue(rolloutId: string, deviceId: string, m: Member, at: string): void {
    this.pending.set(`${rolloutId}\u0000${deviceId}`, {
      rollout_id: rolloutId,
      device_id: deviceId,
      stage: m.stage,
      status: m.status,
      joined_at: m.joinedAt,
      updated_at: at,
      finished_at: m.finishedAt === null ? null : new Date(m.finishedAt).toISOString(),
    });
  }

  /** Writes pending member changes now. */
  flush(): Promise<void> {
    return this.pending.flush();
  }

  private async writeMembers(rows: RolloutDeviceRow[]): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      for (const row of rows) {
        const { rollout_id: _r, device_id: _d, joined_at: _j, ...update } = row;
        await trx
          .insertInto("rollout_devices")
          .values(row)
          .onConflict((oc) => oc.columns(["rollout_id", "device_id"]).doUpdateSet(update))
          .execute();
      }
    });
  }

  // ---- reports ----------------------------------------------------------------------------------------------

  /** A device reported: move it along in the rollout that offered it the image, then apply the policy. */
  onReport(r: ReportInput): void {
    const lives = [...this.byId.values()]
      .filter((l) => l.rollout.state !== "completed" && l.members.has(r.deviceId))
      .sort((a, b) => (a.rollout.createdAt < b.rollout.createdAt ? 1 : -1));
    for (const live of lives) {
      const release = this.releases.get(live.rollout.releaseName);
      if (!release) continue;
      const match = this.match(release, r);
      if (match === "other") continue;
      const m = live.members.get(r.deviceId)!;
      const next = this.nextStatus(m.status, r, match, release);
      if (next && next !== m.status) this.transition(live, r.deviceId, m, next);
      return;
    }
  }

  private stepChain(release: CompiledRelease): CompiledRelease[] {
    const chain: CompiledRelease[] = [];
    let via = release.via;
    while (via && chain.length < 8) {
      const step = this.releases.get(via);
      if (!step) break;
      chain.push(step);
      via = step.via;
    }
    return chain;
  }

  private match(release: CompiledRelease, r: ReportInput): Match {
    const steps = this.stepChain(release);
    if (r.sha256) {
      if (r.sha256 === release.imageSha256) return "own";
      return steps.some((s) => s.imageSha256 === r.sha256) ? "step" : "other";
    }
    if (r.targetVersion) {
      if (r.targetVersion === release.version) return "own";
      return steps.some((s) => s.version === r.targetVersion) ? "step" : "other";
    }
    if (r.version && steps.some((s) => s.version === r.version) && r.version !== release.version) return "step";
    return "unknown";
  }

  private nextStatus(current: MemberStatus, r: ReportInput, match: Match, release: CompiledRelease): MemberStatus | null {
    let next: MemberStatus | null;
    switch (r.status) {
      case "downloading":
      case "verifying":
      case "writing":
        next = "installing";
        break;
      case "rebooting":
      case "confirming":
        next = match === "step" ? "installing" : "rebooted";
        break;
      case "confirmed":
        // Confirming an intermediate step is progress on the way, not the end.
        if (match === "step") next = "installing";
        else next = !r.version || r.version === release.version ? "succeeded" : null;
        break;
      case "up_to_date":
        next = r.version === release.version ? "succeeded" : null;
        break;
      case "failed":
      case "rejected":
        next = "failed";
        break;
      case "rolled_back":
        next = "rolled_back";
        break;
      default:
        next = null;
    }
    // A late or retried progress report never undoes a success; only a failure or a rollback can.
    if (current === "succeeded" && next !== "failed" && next !== "rolled_back") return null;
    return next;
  }

  private transition(live: Live, deviceId: string, m: Member, next: MemberStatus): void {
    this.count(live, m, -1);
    m.status = next;
    m.finishedAt = TERMINAL.has(next) ? Date.now() : null;
    this.count(live, m, 1);
    this.queue(live.rollout.id, deviceId, m, new Date().toISOString());
    if (TERMINAL.has(next) && live.rollout.state === "running") {
      void this.serially(() => this.evaluate(live)).catch((err) => this.log.error({ err, rollout: live.rollout.id }, "rollout policy check failed"));
    }
  }

  /** Applies the policy: pause on too many failures or rollbacks, else advance when the stage has succeeded. */
  private async evaluate(live: Live): Promise<void> {
    const r = live.rollout;
    if (r.state !== "running") return;
    const reason = pauseReason(r.policy, live.window);
    if (reason) {
      this.log.warn({ rollout: r.id, release: r.releaseName, reason }, "rollout paused itself");
      await this.setState(live, { state: "paused", reason }, SYSTEM, "rollout.pause", { reason, automatic: true });
      return;
    }
    if (r.policy.advance === "auto" && readyToAdvance(r.policy, live.stages[r.stage]!)) {
      await this.advanceNow(live, SYSTEM, true);
    }
  }

  // ---- operator actions -----------------------------------------------------------------------------------

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  list(): Rollout[] {
    return [...this.byId.values()].map((l) => l.rollout).sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  }

  start(releaseName: string, policy: RolloutPolicy, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      if (!this.releases.get(releaseName)) throw new RolloutError("release_not_found", `no release named ${releaseName}`);
      const existing = this.byRelease.get(releaseName);
      if (existing) {
        throw new RolloutError(
          "rollout_exists",
          `release ${releaseName} already has rollout ${existing.rollout.id} (${existing.rollout.state}); a release is rolled out once: create a new release to try again`,
        );
      }
      const at = new Date().toISOString();
      const rollout: Rollout = {
        // A release is rolled out once, so its name makes a unique id; keyed, so ids (and the stages they
        // seed) cannot be predicted from outside.
        id: `ro_${createHmac("sha256", this.bucketKey).update(`rollout-id\n${releaseName}`).digest("hex").slice(0, 12)}`,
        releaseName,
        state: "running",
        stage: 0,
        policy,
        windowStartedAt: at,
        reason: null,
        createdAt: at,
        createdBy: by.actor,
        updatedAt: at,
      };
      await this.db
        .insertInto("rollouts")
        .values({
          id: rollout.id,
          release_name: releaseName,
          state: rollout.state,
          stage: 0,
          policy: JSON.stringify(policy),
          window_started_at: at,
          state_reason: null,
          created_at: at,
          created_by: by.actor,
          updated_at: at,
        })
        .execute();
      this.track(rollout);
      await this.audit.record({ ...by, action: "rollout.start", target: rollout.id, details: { release: releaseName, policy } });
      this.log.info({ rollout: rollout.id, release: releaseName, stages: policy.stages, by: by.actor }, "rollout started");
      this.emit("changed");
      return rollout;
    });
  }

  private live(id: string): Live {
    const live = this.byId.get(id) ?? this.byRelease.get(id);
    if (!live) throw new RolloutError("rollout_not_found", `no rollout ${id}`);
    return live;
  }

  private refuse(live: Live, action: string): never {
    throw new RolloutError("invalid_transition", `cannot ${action} rollout ${live.rollout.id}: it is ${live.rollout.state}`);
  }

  pause(id: string, by: Actor, reason?: string): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.live(id);
      if (live.rollout.state !== "running") this.refuse(live, "pause");
      const why = reason ?? `paused by ${by.actor}`;
      await this.setState(live, { state: "paused", reason: why }, by, "rollout.pause", { reason: why });
      return live.rollout;
    });
  }

  /** Resuming starts a new window: failure and rollback rates then count devices that finish from now on. */
  resume(id: string, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.live(id);
      if (live.rollout.state !== "paused") this.refuse(live, "resume");
      await this.setState(live, { state: "running", reason: null, windowStartedAt: new Date().toISOString() }, by, "rollout.resume", {});
      return live.rollout;
    });
  }

  abort(id: string, by: Actor, reason?: string): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.live(id);
      if (live.rollout.state !== "running" && live.rollout.state !== "paused") this.refuse(live, "abort");
      const why = reason ?? `aborted by ${by.actor}`;
      await this.setState(live, { state: "aborted", reason: why }, by, "rollout.abort", { reason: why });
      // Only the devices that keep the image matter from now on.
      for (const [id, m] of live.members) if (!KEPT_AFTER_ABORT.has(m.status)) live.members.delete(id);
      return live.rollout;
    });
  }

  advance(id: string, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.live(id);
      if (live.rollout.state !== "running") this.refuse(live, "advance");
      await this.advanceNow(live, by, false);
      return live.rollout;
    });
  }

  private async advanceNow(live: Live, by: Actor, automatic: boolean): Promise<void> {
    const r = live.rollout;
    const from = r.policy.stages[r.stage]!;
    if (r.stage + 1 >= r.policy.stages.length) {
      await this.setState(live, { state: "completed", reason: automatic ? "the last stage met the success threshold" : `completed by ${by.actor}` }, by, "rollout.complete", { automatic });
      this.log.info({ rollout: r.id, release: r.releaseName, automatic }, "rollout completed");
      await this.flush();
      live.members.clear();
      return;
    }
    const to = r.policy.stages[r.stage + 1]!;
    await this.setState(live, { stage: r.stage + 1, reason: null }, by, "rollout.advance", { from, to, automatic });
    this.log.info({ rollout: r.id, release: r.releaseName, from, to, automatic }, "rollout advanced");
  }

  private async setState(
    live: Live,
    change: { state?: RolloutState; stage?: number; reason?: string | null; windowStartedAt?: string },
    by: Actor,
    action: string,
    details: Record<string, unknown>,
  ): Promise<void> {
    const r = live.rollout;
    const at = new Date().toISOString();
    const next: Rollout = {
      ...r,
      state: change.state ?? r.state,
      stage: change.stage ?? r.stage,
      reason: change.reason !== undefined ? change.reason : r.reason,
      windowStartedAt: change.windowStartedAt ?? r.windowStartedAt,
      updatedAt: at,
    };
    await this.db
      .updateTable("rollouts")
      .set({ state: next.state, stage: next.stage, state_reason: next.reason, window_started_at: next.windowStartedAt, updated_at: at })
      .where("id", "=", r.id)
      .execute();
    live.rollout = next;
    if (change.windowStartedAt) {
      live.windowStart = Date.parse(change.windowStartedAt);
      live.window = emptyOutcomes();
    }
    await this.audit.record({ ...by, action, target: r.id, details: { release: r.releaseName, state: next.state, stage: next.policy.stages[next.stage], ...details } });
    this.emit("changed");
  }

  // ---- status -----------------------------------------------------------------------------------------------

  /** Counts by status, overall and per stage (from the database, after pending progress is written). */
  async summary(id: string) {
    const live = this.live(id);
    await this.flush();
    const rows = await this.db
      .selectFrom("rollout_devices")
      .select((eb) => ["stage", "status", eb.fn.countAll<number>().as("n")])
      .where("rollout_id", "=", live.rollout.id)
      .groupBy(["stage", "status"])
      .execute();
    const r = live.rollout;
    const total = Object.fromEntries(MEMBER_STATUSES.map((s) => [s, 0])) as Record<MemberStatus, number>;
    const stages = r.policy.stages.map((percent) => ({ percent, ...Object.fromEntries(MEMBER_STATUSES.map((s) => [s, 0])) }) as { percent: number } & Record<MemberStatus, number>);
    for (const row of rows) {
      const status = row.status as MemberStatus;
      const n = Number(row.n);
      if (status in total) total[status] += n;
      const st = stages[row.stage];
      if (st && status in total) st[status] += n;
    }
    const devices = Object.values(total).reduce((a, b) => a + b, 0);
    const live_ = live.rollout.state === "running" || live.rollout.state === "paused";
    return {
      rollout: r,
      devices: { total: devices, ...total },
      stages,
      window: live_ ? { since: r.windowStartedAt, finished: finished(live.window), ...live.window } : null,
    };
  }

  async close(): Promise<void> {
    await this.lock.catch(() => undefined);
    await this.pending.close();
  }
}
