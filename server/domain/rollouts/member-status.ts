// How a device's reports move it along in a rollout, and what its status counts toward: pure functions over
// plain data (no database, no clock, no logging), so each rule is testable on its own.
//
// A progress report (downloading, verifying, writing) makes a member installing; rebooting or confirming makes
// it rebooted; confirmed (or up_to_date) with the release's version makes it succeeded; failed or rejected makes
// it failed; rolled_back makes it rolled_back. A report about an intermediate step on the release's upgrade
// path is progress: installing. Only a failure or a rollback moves a member out of succeeded.
//
// A finished status (succeeded, failed, rolled_back) counts toward its stage, and toward the rollout's current
// window when it finished inside it; the window's counts drive pausing, the stage's drive advancing
// (rollout-state.ts).
import type { ReportInput } from "../devices/reports";
import type { CompiledRelease } from "../releases/release-store";
import type { RolloutState } from "../../infra/store/schema";
import type { Outcomes } from "./policy";

/** Where a device is in a rollout: offered → installing → rebooted → succeeded, or failed / rolled_back. */
export type MemberStatus = "offered" | "installing" | "rebooted" | "succeeded" | "failed" | "rolled_back";
export const MEMBER_STATUSES: readonly MemberStatus[] = ["offered", "installing", "rebooted", "succeeded", "failed", "rolled_back"];

/** A device the rollout has offered its release to. */
export interface Member {
  /** The stage (index into policy.stages) it joined in. */
  stage: number;
  status: MemberStatus;
  joinedAt: string;
  /** When it reached a finished status (ms since the epoch); null while it is not finished. */
  finishedAt: number | null;
}

const FINISHED: ReadonlySet<MemberStatus> = new Set(["succeeded", "failed", "rolled_back"]);

/** The statuses of devices that keep the image after an abort: they have already rebooted into it. */
const KEPT: ReadonlySet<MemberStatus> = new Set<MemberStatus>(["rebooted", "succeeded"]);

/** Whether a status ends the device's part in the rollout (and counts toward the thresholds). */
export const isFinished = (s: MemberStatus): boolean => FINISHED.has(s);

/** Whether a device in this status keeps the image when the rollout is aborted. */
export const keepsImageAfterAbort = (s: MemberStatus): boolean => KEPT.has(s);

// ---- what a status counts toward --------------------------------------------------------------------------

const emptyOutcomes = (): Outcomes => ({ succeeded: 0, failed: 0, rolledBack: 0 });

/** The outcome a status counts as, or null for a device still on its way. */
export function outcomeOf(s: MemberStatus): keyof Outcomes | null {
  return s === "succeeded" ? "succeeded" : s === "failed" ? "failed" : s === "rolled_back" ? "rolledBack" : null;
}

/** A rollout's outcome counts: per stage, and over the window (devices that finished since windowStart). */
export interface Tally {
  /** ms since the epoch: the rollout's start or last resume. */
  windowStart: number;
  window: Outcomes;
  stages: Outcomes[];
}

export function newTally(stageCount: number, windowStart: number): Tally {
  return { windowStart, window: emptyOutcomes(), stages: Array.from({ length: stageCount }, emptyOutcomes) };
}

/** Adds (sign 1) or takes back (sign -1) what a member counts toward; updates the tally in place. */
export function countMember(t: Tally, m: Member, sign: 1 | -1): void {
  const k = outcomeOf(m.status);
  if (!k) return;
  const stage = t.stages[m.stage];
  if (stage) stage[k] += sign;
  if (m.finishedAt !== null && m.finishedAt >= t.windowStart) t.window[k] += sign;
}

/** Starts a new window: only devices that finish from windowStart on count toward it. Updates the tally in place. */
export function restartWindow(t: Tally, windowStart: number): void {
  t.windowStart = windowStart;
  t.window = emptyOutcomes();
}

// ---- counts kept in the database ------------------------------------------------------------------------------

/** The stage under which a rollout's counts of its current window are kept, beside its real stages 0..n-1. */
export const WINDOW = -1;

/** A change of one count: members of `stage` (or of the WINDOW) in `status`. */
export interface CountChange {
  stage: number;
  status: MemberStatus;
  n: number;
}

/**
 * What replacing a member's stored record `before` (null: there was none) by `after` changes in the counts:
 * it leaves its stage and status and joins the new ones, and a finished status counts toward the window when
 * it finished at or after windowStart (ms since the epoch). Changes that cancel out are left out.
 */
export function countChanges(before: Member | null, after: Member, windowStart: number): CountChange[] {
  const sums = new Map<string, CountChange>();
  const add = (stage: number, status: MemberStatus, n: number) => {
    const key = `${stage}\u0000${status}`;
    const c = sums.get(key);
    if (c) c.n += n;
    else sums.set(key, { stage, status, n });
  };
  const count = (m: Member, n: 1 | -1) => {
    add(m.stage, m.status, n);
    if (isFinished(m.status) && m.finishedAt !== null && m.finishedAt >= windowStart) add(WINDOW, m.status, n);
  };
  if (before) count(before, -1);
  count(after, 1);
  return [...sums.values()].filter((c) => c.n !== 0);
}

/** The tally the policy judges, from a rollout's stored counts (stage, status, n); unknown statuses are left out. */
export function tallyOf(stageCount: number, windowStart: number, rows: readonly { stage: number; status: string; n: number | string | bigint }[]): Tally {
  const t = newTally(stageCount, windowStart);
  for (const row of rows) {
    const k = (MEMBER_STATUSES as readonly string[]).includes(row.status) ? outcomeOf(row.status as MemberStatus) : null;
    const into = row.stage === WINDOW ? t.window : t.stages[row.stage];
    if (k && into) into[k] += Number(row.n);
  }
  return t;
}

// ---- how a report moves a member ------------------------------------------------------------------------------

/** What the rules read from a report. */
export type ReportFacts = Pick<ReportInput, "status" | "version" | "targetVersion" | "sha256">;

/** How a report relates to a release: its own image, an intermediate step on its upgrade path, or neither. */
export type Match = "own" | "step" | "unknown" | "other";

export type ReleaseLookup = (name: string) => CompiledRelease | undefined;

/** The intermediate releases a device passes through on its way to `release` (release.via, its via, …; at most 8). */
export function stepChain(release: CompiledRelease, releaseNamed: ReleaseLookup): CompiledRelease[] {
  const chain: CompiledRelease[] = [];
  let via = release.via;
  while (via && chain.length < 8) {
    const step = releaseNamed(via);
    if (!step) break;
    chain.push(step);
    via = step.via;
  }
  return chain;
}

/**
 * By the image hash when the report names one, else by the target version; a report naming neither is about a
 * step when the version it runs is a step's (and not the release's), else it cannot be told ("unknown").
 */
export function matchReport(release: CompiledRelease, steps: readonly CompiledRelease[], r: ReportFacts): Match {
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

/** The status a report moves a member to, or null when it leaves it as it is. */
export function nextStatus(current: MemberStatus, r: ReportFacts, match: Match, release: CompiledRelease): MemberStatus | null {
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

/** A device's place in one rollout, as routeReport sees it. */
export interface Enrolment {
  rolloutId: string;
  releaseName: string;
  state: RolloutState;
  createdAt: string;
  status: MemberStatus;
}

export interface Move {
  rolloutId: string;
  from: MemberStatus;
  to: MemberStatus;
}

/**
 * Which of the device's rollouts a report is about, and the status it moves the device to there; null when it
 * moves nothing. The newest rollout (not completed) whose release the report does not contradict takes the
 * report, even when it leaves the status as it is: an older rollout never sees it then.
 */
export function routeReport(enrolments: readonly Enrolment[], r: ReportFacts, releaseNamed: ReleaseLookup): Move | null {
  const newestFirst = enrolments.filter((e) => e.state !== "completed").sort(newerFirst);
  for (const e of newestFirst) {
    const release = releaseNamed(e.releaseName);
    if (!release) continue;
    const match = matchReport(release, stepChain(release, releaseNamed), r);
    if (match === "other") continue;
    const next = nextStatus(e.status, r, match, release);
    return next && next !== e.status ? { rolloutId: e.rolloutId, from: e.status, to: next } : null;
  }
  return null;
}

/**
 * Newest rollout first. Two rollouts started in the same millisecond are ordered by id, so that every server
 * process routes a report the same way whatever order it loaded them in.
 */
function newerFirst(a: Enrolment, b: Enrolment): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.rolloutId < b.rolloutId ? 1 : a.rolloutId > b.rolloutId ? -1 : 0;
}

/** The member after a move: a finished status records when (now, ms since the epoch); any other clears it. */
export function moveMember(m: Member, to: MemberStatus, now: number): Member {
  return { ...m, status: to, finishedAt: isFinished(to) ? now : null };
}

// ---- status summary ---------------------------------------------------------------------------------------------

export type StatusCounts = Record<MemberStatus, number>;

const noCounts = (): StatusCounts => Object.fromEntries(MEMBER_STATUSES.map((s) => [s, 0])) as StatusCounts;

/** Members by status, overall and per stage, from (stage, status, count) rows; rows of unknown statuses are left out. */
export function summarizeStatuses(stagePercents: readonly number[], rows: readonly { stage: number; status: string; n: number | string | bigint }[]) {
  const total = noCounts();
  const stages = stagePercents.map((percent) => ({ percent, ...noCounts() }));
  for (const row of rows) {
    const status = row.status as MemberStatus;
    const n = Number(row.n);
    if (status in total) total[status] += n;
    const st = stages[row.stage];
    if (st && status in total) st[status] += n;
  }
  const devices = Object.values(total).reduce((a, b) => a + b, 0);
  return { devices: { total: devices, ...total }, stages };
}
