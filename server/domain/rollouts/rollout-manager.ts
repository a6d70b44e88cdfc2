// Staged rollouts: which devices a release has reached, how they fared, and the state machine
// (rollout-state.ts) that advances itself when a stage succeeds and pauses itself when failures or rollbacks
// pass a threshold. This module keeps the rollouts (not their members) in memory and orchestrates: the rules are
// pure (member-status.ts, rollout-state.ts, policy.ts), the SQL is in rollout-store.ts.
//
// The poll path asks membership() once, then includes() and noteOffer(): the rollout in memory, and at most one
// primary-key lookup of the device's membership (synchronous on SQLite). New members (devices offered the
// release) are written behind, batched once a second. A report's move of its device, and what it changes in the
// rollout's counts, are written in the report's own transaction (applyReports), and the policy decision it
// calls for is taken, on the stored counts, before the report is acknowledged; at start, each running rollout
// applies its policy to what was stored (applyPolicies), so no decision is lost to a crash. State changes are
// written before they are acknowledged and audited.
//
// Several server processes may share the database (PostgreSQL). Each keeps the rollouts in memory and reloads
// those another changed (reload(), from the change feed); every state change is written over the version it was
// decided on, so of two processes taking the same decision at once (a pause, an advance) one writes it, and the
// other finds the rollout changed: the policy decides again on what was written, an operator is told.
import { createHmac } from "node:crypto";
import type SqliteDatabase from "better-sqlite3";
import { EventEmitter } from "node:events";
import type { Kysely, Transaction } from "kysely";
import type { Logger } from "pino";
import type { AuditEntry, AuditLog } from "../audit/audit-log";
import type { StoredReport } from "../devices/reports";
import type { CompiledRelease, ReleaseStore } from "../releases/release-store";
import type { MaybePromise } from "../../infra/maybe-promise";
import type { Database, RolloutState } from "../../infra/store/schema";
import { bucketOf, stageLimit } from "./bucket";
import {
  isFinished,
  keepsImageAfterAbort,
  moveMember,
  routeReport,
  summarizeStatuses,
  tallyOf,
  WINDOW,
  type Enrolment,
  type Member,
  type MemberStatus,
} from "./member-status";
import { finished, type RolloutPolicy } from "./policy";
import { allows, isLastStage, offersTo, verdict, type Rollout, type RolloutAction } from "./rollout-state";
import { memberKey, RolloutStore, type MemberWrite } from "./rollout-store";
import type { NoteChange } from "../../infra/replicas/change-feed";

export type { Rollout } from "./rollout-state";

interface Live {
  rollout: Rollout;
}

/** A device's member record after a report moved it, and its record in the database before. */
interface MemberMove extends MemberWrite {
  live: Live;
}

/**
 * One device's status in the rollouts, as the poll path asks it: a function of the rollout id, synchronous
 * (looked up on demand on SQLite; asked of the database beforehand, in one query, otherwise).
 */
export type Membership = (rolloutId: string) => MemberStatus | undefined;
const NO_MEMBERSHIP: Membership = () => undefined;

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

/** A change decided on a rollout that another process changed first: nothing was written. */
class StaleRollout extends Error {}

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
    opts: {
      /** Tells other server processes that a rollout changed (nothing to tell with one process). */
      noteChange?: NoteChange;
      flushMs?: number;
      /** On SQLite, the read-only connection (Store.reader) for the poll path's membership lookups. */
      reader?: SqliteDatabase.Database | undefined;
    } = {},
  ) {
    super();
    this.store = new RolloutStore(db, opts.noteChange ?? (() => Promise.resolve()), log, opts.flushMs ?? 1000, opts.reader);
  }

  /** Loads the rollouts; their members and counts stay in the database. */
  async load(): Promise<void> {
    const loaded = await this.store.load();
    for (const rollout of loaded) this.track(rollout);
    this.log.info({ rollouts: loaded.length }, "rollouts loaded");
  }

  /**
   * Takes what other processes changed: rollouts they started, and newer versions of those known here (a version
   * never goes back, so a reload that read before a change of this process was written cannot undo it).
   */
  async reload(): Promise<void> {
    let changed = false;
    for (const rollout of await this.store.load()) changed = this.adopt(rollout) || changed;
    if (changed) this.emit("changed");
  }

  /** Keeps a rollout read from the database, if it is new here or newer than what is here. */
  private adopt(rollout: Rollout): boolean {
    const live = this.byId.get(rollout.id);
    if (!live) {
      this.track(rollout);
      return true;
    }
    if (rollout.version <= live.rollout.version) return false;
    live.rollout = rollout;
    return true;
  }

  private track(rollout: Rollout): Live {
    const live: Live = { rollout };
    this.byId.set(rollout.id, live);
    this.byRelease.set(rollout.releaseName, live);
    return live;
  }

  // ---- the poll path -------------------------------------------------------------------------------------

  /** The rollout of a release, if it has one (a release without a rollout is a draft: offered to nobody). */
  get(idOrRelease: string): Rollout | undefined {
    return (this.byId.get(idOrRelease) ?? this.byRelease.get(idOrRelease))?.rollout;
  }

  /**
   * A device's status in the rollouts that are not completed, for includes() and noteOffer() of one poll. With a
   * synchronous store (SQLite) each status is looked up when first asked (a primary-key lookup) and kept for
   * the poll; otherwise all of them are read beforehand.
   */
  membership(deviceId: string | null): MaybePromise<Membership> {
    if (deviceId === null) return NO_MEMBERSHIP;
    const open = [...this.byId.values()].filter((l) => l.rollout.state !== "completed").map((l) => l.rollout.id);
    if (open.length === 0) return NO_MEMBERSHIP;
    const known = new Map<string, MemberStatus | undefined>();
    if (this.store.synchronous) {
      return (rolloutId) => {
        if (known.has(rolloutId)) return known.get(rolloutId);
        const s = this.store.memberStatus(rolloutId, deviceId) as MemberStatus | undefined;
        known.set(rolloutId, s);
        return s;
      };
    }
    return Promise.all(open.map((id) => Promise.resolve(this.store.memberStatus(id, deviceId)))).then((statuses) => {
      open.forEach((id, i) => known.set(id, statuses[i]));
      return (rolloutId) => known.get(rolloutId);
    });
  }

  /** Whether the release's rollout currently offers it to this device (`membership`: the device's, from membership()). */
  includes(release: CompiledRelease, deviceId: string | null, runningVersion: string | null, membership: Membership): boolean {
    const live = this.byRelease.get(release.name);
    if (!live) return false;
    const r = live.rollout;
    const asker = {
      deviceId,
      // Looked up only when the rule asks (a completed rollout, or an aborted one for a device that runs the release, does not).
      get member() {
        return deviceId !== null ? membership(r.id) : undefined;
      },
      runsRelease: runningVersion !== null && runningVersion === release.version,
    };
    return offersTo(r.state, asker, () => this.bucket(r.id, deviceId!) < stageLimit(r.policy.stages[r.stage]!));
  }

  bucket(rolloutId: string, deviceId: string): number {
    return bucketOf(this.bucketKey, rolloutId, deviceId);
  }

  /** Records that a running rollout offered its release to a device (it becomes a member of the current stage). */
  noteOffer(release: CompiledRelease, deviceId: string, membership: Membership): void {
    const live = this.byRelease.get(release.name);
    if (!live || live.rollout.state !== "running" || membership(live.rollout.id) !== undefined) return;
    const at = new Date().toISOString();
    const m: Member = { stage: live.rollout.stage, status: "offered", joinedAt: at, finishedAt: null };
    this.store.queueOffer(live.rollout.id, deviceId, m, at);
  }

  /** Writes pending new members now. */
  flush(): Promise<void> {
    return this.store.flush();
  }

  // ---- reports ----------------------------------------------------------------------------------------------

  /**
   * Moves the reporting devices along in the rollouts that offered them an image, as the effect of the reports
   * (ReportEffect): the moves and what they change in the counts are written through `trx`, the transaction that
   * stores the reports; once it has committed, each running rollout a device finished in applies its policy,
   * before the reports are acknowledged. A member's status follows from the report, not a count, so a report
   * applied again (sent again after a crash) moves nothing that it moved already, and counts nothing.
   */
  async applyReports(trx: Transaction<Database>, reports: readonly StoredReport[]): Promise<() => Promise<void>> {
    // A completed rollout takes no reports; an aborted one only those of devices that kept its image.
    const open = [...this.byId.values()].filter((l) => l.rollout.state !== "completed");
    if (open.length === 0) return () => Promise.resolve();
    const found = await this.store.members(
      trx,
      open.map((l) => l.rollout.id),
      [...new Set(reports.map((r) => r.deviceId))],
    );
    const moved = new Map<string, MemberMove>();
    const now = Date.now();
    for (const r of reports) {
      const memberIn = (live: Live) => {
        const k = memberKey(live.rollout.id, r.deviceId);
        return moved.get(k)?.member ?? found.get(k)?.member;
      };
      const enrolments: Enrolment[] = [];
      for (const live of open) {
        const m = memberIn(live);
        // A report sent again is about the rollouts the device was in when it was first received.
        if (!m || (r.resent && m.joinedAt > r.receivedAt)) continue;
        if (live.rollout.state === "aborted" && !keepsImageAfterAbort(m.status)) continue;
        enrolments.push({ rolloutId: live.rollout.id, releaseName: live.rollout.releaseName, state: live.rollout.state, createdAt: live.rollout.createdAt, status: m.status });
      }
      if (enrolments.length === 0) continue;
      const move = routeReport(enrolments, r, this.releaseNamed);
      if (!move) continue;
      const live = this.byId.get(move.rolloutId)!;
      const k = memberKey(live.rollout.id, r.deviceId);
      const stored = found.get(k);
      moved.set(k, {
        live,
        rolloutId: live.rollout.id,
        deviceId: r.deviceId,
        before: stored?.stored ? stored.member : null,
        member: moveMember(memberIn(live)!, move.to, now),
      });
    }
    if (moved.size === 0) return () => Promise.resolve();
    const changes = [...moved.values()];
    await this.store.writeMembers(trx, changes, new Date(now).toISOString());
    return () => this.followMoves(changes);
  }

  /** Once moves are on disk: each running rollout a device finished in applies its policy. */
  private followMoves(changes: readonly MemberMove[]): Promise<void> {
    const finishedIn = new Set<Live>();
    for (const { live, member } of changes) if (isFinished(member.status)) finishedIn.add(live);
    return Promise.all([...finishedIn].map((live) => this.judge(live))).then(() => undefined);
  }

  /**
   * At start: each running rollout applies its policy to the outcomes stored, so a pause or an advance that
   * acknowledged reports called for, and that a crash kept from being written, is taken now.
   */
  async applyPolicies(): Promise<void> {
    for (const live of this.byId.values()) if (live.rollout.state === "running") await this.judge(live);
  }

  /** Applies the policy after the operator actions already queued; a failure is logged (and judged again later). */
  private judge(live: Live): Promise<void> {
    return this.serially(() => this.onceMore(() => this.evaluate(live))).catch((err: unknown) =>
      this.log.error({ err, rollout: live.rollout.id }, "rollout policy check failed; it runs again when a device finishes or the server starts"),
    );
  }

  /** Applies the policy, on the stored counts: pause on too many failures or rollbacks, else advance when the stage has succeeded. */
  private async evaluate(live: Live): Promise<void> {
    if (live.rollout.state !== "running") return;
    const r = live.rollout;
    const tally = tallyOf(r.policy.stages.length, Date.parse(r.windowStartedAt), await this.store.counts(r.id));
    const v = verdict(live.rollout, tally);
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

  /**
   * Runs the policy's decision; if another process changed the rollout first (nothing was written, and the
   * rollout here is now the one it wrote), decides once more on that: the decision may no longer apply.
   */
  private async onceMore(decide: () => Promise<void>): Promise<void> {
    try {
      await decide();
    } catch (e) {
      if (!(e instanceof StaleRollout)) throw e;
      await decide();
    }
  }

  list(): Rollout[] {
    return [...this.byId.values()].map((l) => l.rollout).sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  }

  start(releaseName: string, policy: RolloutPolicy, by: Actor): Promise<Rollout> {
    return this.serially(async () => {
      await this.refresh(releaseName);
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
        version: 0,
      };
      if (!(await this.store.insert(rollout))) {
        await this.reload();
        throw new RolloutError("rollout_exists", `release ${releaseName} already has a rollout, started by another server process just now`);
      }
      this.track(rollout);
      await this.audit.record({ ...by, action: "rollout.start", target: rollout.id, details: { release: releaseName, policy } });
      this.log.info({ rollout: rollout.id, release: releaseName, stages: policy.stages, by: by.actor }, "rollout started");
      this.emit("changed");
      return rollout;
    });
  }

  /**
   * An operator action, after those queued here, decided on the rollout as the database has it now. If another
   * process changes it between that read and the write, nothing is written and the operator is told: the action
   * was meant for the rollout as it was (two "advance" at once must not advance twice).
   */
  private act(id: string, decide: () => Promise<Rollout>): Promise<Rollout> {
    return this.serially(async () => {
      await this.refresh(id);
      try {
        return await decide();
      } catch (e) {
        if (!(e instanceof StaleRollout)) throw e;
        const r = this.live(id).rollout;
        throw new RolloutError(
          "invalid_transition",
          `rollout ${r.id} was changed by another server process at the same time (it is now ${r.state}, stage ${r.stage + 1} of ${r.policy.stages.length}); look at it and try again`,
        );
      }
    });
  }

  /** Reads one rollout (by id or release name) from the database, if another process changed or started it. */
  private async refresh(idOrRelease: string): Promise<void> {
    const live = this.byId.get(idOrRelease) ?? this.byRelease.get(idOrRelease);
    if (!live) return this.reload();
    const now = await this.store.get(live.rollout.id);
    if (now && this.adopt(now)) this.emit("changed");
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
    return this.act(id, async () => {
      const live = this.liveFor(id, "pause");
      const why = reason ?? `paused by ${by.actor}`;
      await this.setState(live, { state: "paused", reason: why }, by, "rollout.pause", { reason: why });
      return live.rollout;
    });
  }

  /** Resuming starts a new window: failure and rollback rates then count devices that finish from now on. */
  resume(id: string, by: Actor): Promise<Rollout> {
    return this.act(id, async () => {
      const live = this.liveFor(id, "resume");
      await this.setState(live, { state: "running", reason: null, windowStartedAt: new Date().toISOString() }, by, "rollout.resume", {});
      return live.rollout;
    });
  }

  abort(id: string, by: Actor, reason?: string): Promise<Rollout> {
    return this.act(id, async () => {
      const live = this.liveFor(id, "abort");
      const why = reason ?? `aborted by ${by.actor}`;
      // From now on only its members that keep the image count as members (see includes and applyReports).
      await this.setState(live, { state: "aborted", reason: why }, by, "rollout.abort", { reason: why });
      return live.rollout;
    });
  }

  advance(id: string, by: Actor): Promise<Rollout> {
    return this.act(id, async () => {
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
      version: r.version + 1,
    };
    if (!(await this.store.update(next, change.windowStartedAt !== undefined))) {
      const now = await this.store.get(r.id);
      if (now) this.adopt(now);
      throw new StaleRollout();
    }
    live.rollout = next;
    await this.audit.record({ ...by, action, target: r.id, details: { release: r.releaseName, state: next.state, stage: next.policy.stages[next.stage], ...details } });
    this.emit("changed");
  }

  // ---- status -----------------------------------------------------------------------------------------------

  /** Counts by status, overall and per stage, and the window's outcomes (the stored counts, after pending new members are written). */
  async summary(id: string) {
    await this.refresh(id);
    const live = this.live(id);
    await this.flush();
    const rows = await this.store.counts(live.rollout.id);
    const r = live.rollout;
    const { devices, stages } = summarizeStatuses(
      r.policy.stages,
      rows.filter((row) => row.stage !== WINDOW),
    );
    const window = tallyOf(r.policy.stages.length, Date.parse(r.windowStartedAt), rows).window;
    const open = r.state === "running" || r.state === "paused";
    return {
      rollout: r,
      devices,
      stages,
      window: open ? { since: r.windowStartedAt, finished: finished(window), ...window } : null,
    };
  }

  async close(): Promise<void> {
    await this.lock.catch(() => undefined);
    await this.store.close();
  }
}
