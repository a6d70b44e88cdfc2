// Staged rollouts: which devices a release has reached, how they fared, and the state machine
// (rollout-state.ts) that advances itself when a stage succeeds and pauses itself when failures or rollbacks
// pass a threshold. This module keeps the rollouts in memory and orchestrates: the rules are pure
// (member-status.ts, rollout-state.ts, policy.ts), the SQL is in rollout-store.ts.
//
// The poll path asks includes() and noteOffer(): memory only (a keyed hash and a map lookup). Members (devices
// offered the release) are written behind, batched once a second; state changes are written before they are
// acknowledged and audited.
import { createHmac } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { AuditEntry, AuditLog } from "../audit/audit-log";
import type { ReportInput } from "../devices/reports";
import type { CompiledRelease, ReleaseStore } from "../releases/release-store";
import type { Database, RolloutState } from "../../infra/store/schema";
import { bucketOf, stageLimit } from "./bucket";
import {
  countMember,
  isFinished,
  keepsImageAfterAbort,
  moveMember,
  newTally,
  restartWindow,
  routeReport,
  summarizeStatuses,
  type Enrolment,
  type Member,
  type Tally,
} from "./member-status";
import { finished, type RolloutPolicy } from "./policy";
import { allows, isLastStage, offersTo, verdict, type Rollout, type RolloutAction } from "./rollout-state";
import { RolloutStore } from "./rollout-store";

export type { Rollout } from "./rollout-state";

interface Live {
  rollout: Rollout;
  members: Map<string, Member>;
  tally: Tally;
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

export class RolloutManager extends EventEmitter {
  private readonly byId = new Map<string, Live>();
  private readonly byRelease = new Map<string, Live>();
  private readonly store: RolloutStore;
  private lock: Promise<unknown> = Promise.resolve();
  private readonly releaseNamed = (name: string) => this.releases.get(name);

  constructor(
    db: Kysely<Database>,
    private readonly releases: Pick<ReleaseStore, "get">,
    private readonly audit: Pick<AuditLog, "record">,
    private readonly bucketKey: Buffer,
    private readonly log: Logger,
    flushMs = 1000,
  ) {
    super();
    this.store = new RolloutStore(db, log, flushMs);
  }

  async load(): Promise<void> {
    const loaded = await this.store.load();
    let members = 0;
    for (const { rollout, members: ms } of loaded) {
      const live = this.track(rollout);
      for (const [deviceId, m] of ms) this.addMember(live, deviceId, m);
      members += ms.length;
    }
    this.log.info({ rollouts: loaded.length, members }, "rollouts loaded");
  }

  private track(rollout: Rollout): Live {
    const live: Live = { rollout, members: new Map(), tally: newTally(rollout.policy.stages.length, Date.parse(rollout.windowStartedAt)) };
    this.byId.set(rollout.id, live);
    this.byRelease.set(rollout.releaseName, live);
    return live;
  }

  private addMember(live: Live, deviceId: string, m: Member): void {
    live.members.set(deviceId, m);
    countMember(live.tally, m, 1);
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
    const asker = {
      deviceId,
      member: deviceId !== null ? live.members.get(deviceId)?.status : undefined,
      runsRelease: runningVersion !== null && runningVersion === release.version,
    };
    return offersTo(r.state, asker, () => this.bucket(r.id, deviceId!) < stageLimit(r.policy.stages[r.stage]!));
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
    this.store.queueMember(live.rollout.id, deviceId, m, at);
  }

  /** Writes pending member changes now. */
  flush(): Promise<void> {
    return this.store.flush();
  }

  // ---- reports ----------------------------------------------------------------------------------------------

  /** A device reported: move it along in the rollout that offered it the image, then apply the policy. */
  onReport(r: ReportInput): void {
    const enrolments: Enrolment[] = [];
    for (const live of this.byId.values()) {
      const m = live.members.get(r.deviceId);
      if (m) enrolments.push({ rolloutId: live.rollout.id, releaseName: live.rollout.releaseName, state: live.rollout.state, createdAt: live.rollout.createdAt, status: m.status });
    }
    if (enrolments.length === 0) return;
    const move = routeReport(enrolments, r, this.releaseNamed);
    if (!move) return;
    const live = this.byId.get(move.rolloutId)!;
    const before = live.members.get(r.deviceId)!;
    const after = moveMember(before, move.to, Date.now());
    countMember(live.tally, before, -1);
    live.members.set(r.deviceId, after);
    countMember(live.tally, after, 1);
    this.store.queueMember(live.rollout.id, r.deviceId, after, new Date().toISOString());
    if (isFinished(move.to) && live.rollout.state === "running") {
      void this.serially(() => this.evaluate(live)).catch((err) => this.log.error({ err, rollout: live.rollout.id }, "rollout policy check failed"));
    }
  }

  /** Applies the policy: pause on too many failures or rollbacks, else advance when the stage has succeeded. */
  private async evaluate(live: Live): Promise<void> {
    const v = verdict(live.rollout, live.tally);
    if (v?.action === "pause") {
      const r = live.rollout;
      this.log.warn({ rollout: r.id, release: r.releaseName, reason: v.reason }, "rollout paused itself");
      await this.setState(live, { state: "paused", reason: v.reason }, SYSTEM, "rollout.pause", { reason: v.reason, automatic: true });
    } else if (v?.action === "advance") {
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
      await this.store.insert(rollout);
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

  /** The rollout an operator action is on, if it is in a state that allows the action. */
  private liveFor(id: string, action: RolloutAction): Live {
    const live = this.live(id);
    if (!allows(live.rollout.state, action)) {
      throw new RolloutError("invalid_transition", `cannot ${action} rollout ${live.rollout.id}: it is ${live.rollout.state}`);
    }
    return live;
  }

  pause(id: string, by: Actor, reason?: string): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.liveFor(id, "pause");
      const why = reason ?? `paused by ${by.actor}`;
      await this.setState(live, { state: "paused", reason: why }, by, "rollout.pause", { reason: why });
      return live.rollout;
    });
  }

  /** Resuming starts a new window: failure and rollback rates then count devices that finish from now on. */
  resume(id: string, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.liveFor(id, "resume");
      await this.setState(live, { state: "running", reason: null, windowStartedAt: new Date().toISOString() }, by, "rollout.resume", {});
      return live.rollout;
    });
  }

  abort(id: string, by: Actor, reason?: string): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.liveFor(id, "abort");
      const why = reason ?? `aborted by ${by.actor}`;
      await this.setState(live, { state: "aborted", reason: why }, by, "rollout.abort", { reason: why });
      // Only the devices that keep the image matter from now on.
      for (const [id, m] of live.members) if (!keepsImageAfterAbort(m.status)) live.members.delete(id);
      return live.rollout;
    });
  }

  advance(id: string, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      const live = this.liveFor(id, "advance");
      await this.advanceNow(live, by, false);
      return live.rollout;
    });
  }

  private async advanceNow(live: Live, by: Actor, automatic: boolean): Promise<void> {
    const r = live.rollout;
    const from = r.policy.stages[r.stage]!;
    if (isLastStage(r.policy, r.stage)) {
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
    await this.store.update(next);
    live.rollout = next;
    if (change.windowStartedAt) restartWindow(live.tally, Date.parse(change.windowStartedAt));
    await this.audit.record({ ...by, action, target: r.id, details: { release: r.releaseName, state: next.state, stage: next.policy.stages[next.stage], ...details } });
    this.emit("changed");
  }

  // ---- status -----------------------------------------------------------------------------------------------

  /** Counts by status, overall and per stage (from the database, after pending progress is written). */
  async summary(id: string) {
    const live = this.live(id);
    await this.flush();
    const rows = await this.store.statusCounts(live.rollout.id);
    const r = live.rollout;
    const { devices, stages } = summarizeStatuses(r.policy.stages, rows);
    const open = r.state === "running" || r.state === "paused";
    return {
      rollout: r,
      devices,
      stages,
      window: open ? { since: r.windowStartedAt, finished: finished(live.tally.window), ...live.tally.window } : null,
    };
  }

  async close(): Promise<void> {
    await this.lock.catch(() => undefined);
    await this.store.close();
  }
}
