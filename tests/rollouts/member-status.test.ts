// The member-status rules on their own: how a report moves a device in a rollout, which rollout a report is
// about, and what a status counts toward (the HTTPS tests show the same rules end to end).
import type { CompiledRelease } from "../../server/domain/releases/release-store";
import {
  countChanges,
  countMember,
  isFinished,
  keepsImageAfterAbort,
  matchReport,
  MEMBER_STATUSES,
  moveMember,
  newTally,
  nextStatus,
  outcomeOf,
  restartWindow,
  routeReport,
  stepChain,
  summarizeStatuses,
  tallyOf,
  WINDOW,
  type Enrolment,
  type Member,
  type MemberStatus,
  type ReportFacts,
} from "../../server/domain/rollouts/member-status";
import { release } from "../helpers/releases";

const rel = release;
const lookup = (...releases: CompiledRelease[]) => (name: string) => releases.find((r) => r.name === name);

const SHA_STEP = "a".repeat(64);
const SHA_FINAL = "b".repeat(64);
const SHA_ELSE = "c".repeat(64);
const step = rel({ name: "step", version: "1.5.0", imageSha256: SHA_STEP });
const final = rel({ name: "final", version: "2.0.0", imageSha256: SHA_FINAL, via: "step" });
const steps = [step];

describe("statuses", () => {
  it("succeeded, failed and rolled_back are finished; the others are on the way", () => {
    expect(MEMBER_STATUSES.filter(isFinished)).toEqual(["succeeded", "failed", "rolled_back"]);
  });

  it("after an abort, only devices that rebooted into the image keep it", () => {
    expect(MEMBER_STATUSES.filter(keepsImageAfterAbort)).toEqual(["rebooted", "succeeded"]);
  });

  it("each finished status counts as one outcome, the others as none", () => {
    expect(MEMBER_STATUSES.map(outcomeOf)).toEqual([null, null, null, "succeeded", "failed", "rolledBack"]);
  });
});

describe("which release a report is about", () => {
  it("follows the upgrade path through via, stopping at a missing release and after 8 steps", () => {
    const a = rel({ name: "a", via: "b" });
    const b = rel({ name: "b", via: "gone" });
    expect(stepChain(a, lookup(a, b))).toEqual([b]);
    const x = rel({ name: "x", via: "y" });
    const y = rel({ name: "y", via: "x" });
    const loop = stepChain(x, lookup(x, y));
    expect(loop).toHaveLength(8);
    expect(loop.map((r) => r.name)).toEqual(["y", "x", "y", "x", "y", "x", "y", "x"]);
    expect(stepChain(step, lookup(step))).toEqual([]);
  });

  it("by image hash first: the release's own, a step's, or another image", () => {
    expect(matchReport(final, steps, { status: "downloading", sha256: SHA_FINAL })).toBe("own");
    expect(matchReport(final, steps, { status: "downloading", sha256: SHA_STEP })).toBe("step");
    // The hash wins over a target version that would match.
    expect(matchReport(final, steps, { status: "downloading", sha256: SHA_ELSE, targetVersion: "2.0.0" })).toBe("other");
  });

  it("a step is any of the path's steps, not only when all of them match", () => {
    const first = rel({ name: "first", version: "1.2.0", imageSha256: "d".repeat(64) });
    const two = [first, step];
    expect(matchReport(final, two, { status: "downloading", sha256: SHA_STEP })).toBe("step");
    expect(matchReport(final, two, { status: "downloading", sha256: "d".repeat(64) })).toBe("step");
    expect(matchReport(final, two, { status: "writing", targetVersion: "1.5.0" })).toBe("step");
    expect(matchReport(final, two, { status: "writing", targetVersion: "1.2.0" })).toBe("step");
    expect(matchReport(final, two, { status: "confirmed", version: "1.2.0" })).toBe("step");
  });

  it("then by target version", () => {
    expect(matchReport(final, steps, { status: "writing", targetVersion: "2.0.0" })).toBe("own");
    expect(matchReport(final, steps, { status: "writing", targetVersion: "1.5.0" })).toBe("step");
    expect(matchReport(final, steps, { status: "writing", targetVersion: "9.9.9" })).toBe("other");
  });

  it("else a running version that is a step's (and not the release's) marks a step; anything else cannot be told", () => {
    expect(matchReport(final, steps, { status: "confirmed", version: "1.5.0" })).toBe("step");
    expect(matchReport(final, steps, { status: "confirmed", version: "2.0.0" })).toBe("unknown");
    expect(matchReport(final, steps, { status: "confirmed", version: "0.1.0" })).toBe("unknown");
    expect(matchReport(final, steps, { status: "failed" })).toBe("unknown");
    const same = rel({ version: "1.5.0", via: "step" });
    expect(matchReport(same, steps, { status: "confirmed", version: "1.5.0" })).toBe("unknown");
  });
});

describe("how a report moves a member", () => {
  const next = (current: MemberStatus, r: ReportFacts, match: "own" | "step" | "unknown" = "own") => nextStatus(current, r, match, final);

  it("progress makes it installing, from any status but succeeded", () => {
    for (const status of ["downloading", "verifying", "writing"]) {
      expect(next("offered", { status })).toBe("installing");
      expect(next("rebooted", { status })).toBe("installing");
      // A device that failed or rolled back and tries again is on its way again.
      expect(next("failed", { status })).toBe("installing");
      expect(next("rolled_back", { status })).toBe("installing");
      expect(next("succeeded", { status })).toBeNull();
    }
  });

  it("rebooting or confirming makes it rebooted, or installing when it is about a step", () => {
    expect(next("installing", { status: "rebooting" })).toBe("rebooted");
    expect(next("installing", { status: "confirming" }, "unknown")).toBe("rebooted");
    expect(next("installing", { status: "rebooting" }, "step")).toBe("installing");
    expect(next("succeeded", { status: "rebooting" })).toBeNull();
  });

  it("confirmed is success with the release's version or none; a step's confirmation is progress", () => {
    expect(next("rebooted", { status: "confirmed", version: "2.0.0" })).toBe("succeeded");
    expect(next("rebooted", { status: "confirmed" })).toBe("succeeded");
    expect(next("offered", { status: "confirmed" }, "unknown")).toBe("succeeded");
    expect(next("rebooted", { status: "confirmed", version: "1.0.0" })).toBeNull();
    expect(next("rebooted", { status: "confirmed", version: "1.5.0" }, "step")).toBe("installing");
  });

  it("up_to_date is success only with the release's version", () => {
    expect(next("offered", { status: "up_to_date", version: "2.0.0" })).toBe("succeeded");
    expect(next("offered", { status: "up_to_date", version: "1.0.0" })).toBeNull();
    expect(next("offered", { status: "up_to_date" })).toBeNull();
  });

  it("failed and rejected make it failed, rolled_back rolled_back, even after a success", () => {
    expect(next("installing", { status: "failed" })).toBe("failed");
    expect(next("offered", { status: "rejected" })).toBe("failed");
    expect(next("rebooted", { status: "rolled_back" })).toBe("rolled_back");
    expect(next("succeeded", { status: "failed" })).toBe("failed");
    expect(next("succeeded", { status: "rolled_back" })).toBe("rolled_back");
  });

  it("a status it does not know moves nothing", () => {
    expect(next("installing", { status: "idle" })).toBeNull();
    expect(next("installing", { status: "" })).toBeNull();
  });

  it("a move records when a member finished, and clears it when it is on its way again", () => {
    const m: Member = { stage: 1, status: "installing", joinedAt: "2025-01-01T00:00:00.000Z", finishedAt: null };
    const failed = moveMember(m, "failed", 1000);
    expect(failed).toEqual({ stage: 1, status: "failed", joinedAt: m.joinedAt, finishedAt: 1000 });
    expect(m.status).toBe("installing"); // the member moved is a new one
    expect(moveMember(failed, "installing", 2000)).toEqual({ ...failed, status: "installing", finishedAt: null });
    expect(moveMember(failed, "rolled_back", 3000).finishedAt).toBe(3000);
  });
});

describe("which rollout a report is about", () => {
  const older = rel({ name: "older", version: "1.0.0", imageSha256: SHA_STEP });
  const newer = rel({ name: "newer", version: "2.0.0", imageSha256: SHA_FINAL });
  const releases = lookup(older, newer);
  const enrolment = (o: Partial<Enrolment> & Pick<Enrolment, "releaseName">): Enrolment => ({
    rolloutId: `ro_${o.releaseName}`,
    state: "running",
    createdAt: o.releaseName === "older" ? "2025-01-01T00:00:00.000Z" : "2025-02-01T00:00:00.000Z",
    status: "offered",
    ...o,
  });

  it("a device in no rollout moves nothing", () => {
    expect(routeReport([], { status: "failed" }, releases)).toBeNull();
  });

  it("the newest rollout takes a report that names no image, whatever order the rollouts come in", () => {
    const both = [enrolment({ releaseName: "older" }), enrolment({ releaseName: "newer" })];
    expect(routeReport(both, { status: "failed" }, releases)).toEqual({ rolloutId: "ro_newer", from: "offered", to: "failed" });
    expect(routeReport([...both].reverse(), { status: "failed" }, releases)).toEqual({ rolloutId: "ro_newer", from: "offered", to: "failed" });
  });

  it("two rollouts started in the same millisecond: the same one takes the report whatever order they come in", () => {
    const at = "2025-03-01T00:00:00.000Z";
    const both = [enrolment({ releaseName: "older", createdAt: at }), enrolment({ releaseName: "newer", createdAt: at })];
    const first = routeReport(both, { status: "failed" }, releases);
    expect(first).not.toBeNull();
    expect(routeReport([...both].reverse(), { status: "failed" }, releases)).toEqual(first);
  });

  it("a report about another image falls through to the rollout whose image it is", () => {
    const both = [enrolment({ releaseName: "newer" }), enrolment({ releaseName: "older" })];
    expect(routeReport(both, { status: "downloading", sha256: SHA_STEP }, releases)).toEqual({ rolloutId: "ro_older", from: "offered", to: "installing" });
    expect(routeReport(both, { status: "downloading", sha256: SHA_ELSE }, releases)).toBeNull();
  });

  it("the newest matching rollout takes the report even when it changes nothing there: an older one never sees it", () => {
    const both = [enrolment({ releaseName: "older" }), enrolment({ releaseName: "newer", status: "installing" })];
    expect(routeReport(both, { status: "writing" }, releases)).toBeNull();
  });

  it("skips completed rollouts and rollouts whose release is gone; paused and aborted ones still count", () => {
    expect(routeReport([enrolment({ releaseName: "newer", state: "completed" })], { status: "failed" }, releases)).toBeNull();
    expect(
      routeReport([enrolment({ releaseName: "gone", createdAt: "2026-01-01T00:00:00.000Z" }), enrolment({ releaseName: "older" })], { status: "failed" }, releases),
    ).toEqual({ rolloutId: "ro_older", from: "offered", to: "failed" });
    expect(routeReport([enrolment({ releaseName: "newer", state: "paused" })], { status: "failed" }, releases)?.to).toBe("failed");
    expect(routeReport([enrolment({ releaseName: "newer", state: "aborted", status: "rebooted" })], { status: "rolled_back" }, releases)?.to).toBe("rolled_back");
  });

  it("a duplicate report reaches the same status once: the second moves nothing", () => {
    let e = enrolment({ releaseName: "newer", status: "rebooted" });
    const confirmed: ReportFacts = { status: "confirmed", version: "2.0.0" };
    const first = routeReport([e], confirmed, releases);
    expect(first).toEqual({ rolloutId: "ro_newer", from: "rebooted", to: "succeeded" });
    e = { ...e, status: first!.to };
    expect(routeReport([e], confirmed, releases)).toBeNull();
    const failed = { ...e, status: "failed" as const };
    expect(routeReport([failed], { status: "failed" }, releases)).toBeNull();
  });

  it("out-of-order reports: a late progress report does not undo a success, a late failure does", () => {
    const done = enrolment({ releaseName: "newer", status: "succeeded" });
    expect(routeReport([done], { status: "downloading", sha256: SHA_FINAL }, releases)).toBeNull();
    expect(routeReport([done], { status: "rebooting" }, releases)).toBeNull();
    expect(routeReport([done], { status: "failed" }, releases)).toEqual({ rolloutId: "ro_newer", from: "succeeded", to: "failed" });
  });
});

describe("what a status counts toward", () => {
  const member = (status: MemberStatus, stage: number, finishedAt: number | null): Member => ({ stage, status, joinedAt: "", finishedAt });

  it("a finished member counts toward its stage, and toward the window when it finished inside it", () => {
    const t = newTally(3, 1000);
    countMember(t, member("succeeded", 0, 999), 1);
    countMember(t, member("failed", 1, 1000), 1);
    countMember(t, member("rolled_back", 1, 5000), 1);
    countMember(t, member("installing", 2, null), 1);
    expect(t.stages).toEqual([
      { succeeded: 1, failed: 0, rolledBack: 0 },
      { succeeded: 0, failed: 1, rolledBack: 1 },
      { succeeded: 0, failed: 0, rolledBack: 0 },
    ]);
    expect(t.window).toEqual({ succeeded: 0, failed: 1, rolledBack: 1 });
  });

  it("taking a member back undoes exactly what it counted", () => {
    const t = newTally(2, 0);
    const m = member("failed", 1, 10);
    countMember(t, m, 1);
    countMember(t, m, -1);
    expect(t).toEqual(newTally(2, 0));
  });

  it("a member of a stage the policy does not have counts toward the window only", () => {
    const t = newTally(1, 0);
    countMember(t, member("failed", 4, 10), 1);
    expect(t.stages).toEqual([{ succeeded: 0, failed: 0, rolledBack: 0 }]);
    expect(t.window.failed).toBe(1);
  });

  it("a new window forgets earlier outcomes, and a member that finished before it is not taken back from it", () => {
    const t = newTally(1, 0);
    const m = member("failed", 0, 10);
    countMember(t, m, 1);
    restartWindow(t, 100);
    expect(t.window).toEqual({ succeeded: 0, failed: 0, rolledBack: 0 });
    expect(t.stages[0]!.failed).toBe(1);
    // It retries and succeeds after the resume.
    const retrying = moveMember(m, "installing", 150);
    countMember(t, m, -1);
    countMember(t, retrying, 1);
    const done = moveMember(retrying, "succeeded", 200);
    countMember(t, retrying, -1);
    countMember(t, done, 1);
    expect(t.window).toEqual({ succeeded: 1, failed: 0, rolledBack: 0 });
    expect(t.stages[0]).toEqual({ succeeded: 1, failed: 0, rolledBack: 0 });
  });
});

describe("status summary", () => {
  it("counts members by status, overall and per stage, leaving out unknown statuses", () => {
    const s = summarizeStatuses(
      [10, 100],
      [
        { stage: 0, status: "succeeded", n: 3 },
        { stage: 0, status: "failed", n: "1" },
        { stage: 1, status: "offered", n: 2n },
        { stage: 1, status: "bogus", n: 7 },
        { stage: 5, status: "installing", n: 4 },
      ],
    );
    expect(s.devices).toEqual({ total: 10, offered: 2, installing: 4, rebooted: 0, succeeded: 3, failed: 1, rolled_back: 0 });
    expect(s.stages).toEqual([
      { percent: 10, offered: 0, installing: 0, rebooted: 0, succeeded: 3, failed: 1, rolled_back: 0 },
      { percent: 100, offered: 2, installing: 0, rebooted: 0, succeeded: 0, failed: 0, rolled_back: 0 },
    ]);
  });
});

describe("what the stored counts change by", () => {
  const at = (finishedAt: number | null, status: MemberStatus = "succeeded", stage = 0): Member => ({ stage, status, joinedAt: "2026-01-01T00:00:00.000Z", finishedAt });

  it("a member that finishes counts toward its stage, and toward the window from its very start on", () => {
    expect(countChanges(at(null, "installing"), at(1000), 1000)).toEqual([
      { stage: 0, status: "installing", n: -1 },
      { stage: 0, status: "succeeded", n: 1 },
      { stage: WINDOW, status: "succeeded", n: 1 },
    ]);
    // Finished a moment before the window started: its stage only.
    expect(countChanges(at(null, "installing"), at(999), 1000)).toEqual([
      { stage: 0, status: "installing", n: -1 },
      { stage: 0, status: "succeeded", n: 1 },
    ]);
    // Not finished, or finished with no time known: never the window.
    expect(countChanges(null, { ...at(5000, "installing") }, 1000)).toEqual([{ stage: 0, status: "installing", n: 1 }]);
    expect(countChanges(null, at(null, "failed"), 1000)).toEqual([{ stage: 0, status: "failed", n: 1 }]);
  });

  it("leaves out what cancels: a member stored again as it was changes no count", () => {
    expect(countChanges(at(2000, "failed"), at(2000, "failed"), 1000)).toEqual([]);
    // Failed, then rolled back: the window moves from one outcome to the other.
    expect(countChanges(at(2000, "failed"), at(3000, "rolled_back"), 1000)).toEqual([
      { stage: 0, status: "failed", n: -1 },
      { stage: WINDOW, status: "failed", n: -1 },
      { stage: 0, status: "rolled_back", n: 1 },
      { stage: WINDOW, status: "rolled_back", n: 1 },
    ]);
  });

  it("the tally from stored counts leaves out statuses it does not know and stages the policy does not have", () => {
    const t = tallyOf(2, 1000, [
      { stage: 0, status: "succeeded", n: 3 },
      { stage: 1, status: "failed", n: "2" },
      { stage: WINDOW, status: "rolled_back", n: 1n },
      { stage: 0, status: "offered", n: 9 },
      { stage: 0, status: "bogus", n: 7 },
      { stage: 5, status: "failed", n: 4 },
    ]);
    expect(t).toEqual({
      windowStart: 1000,
      window: { succeeded: 0, failed: 0, rolledBack: 1 },
      stages: [
        { succeeded: 3, failed: 0, rolledBack: 0 },
        { succeeded: 0, failed: 2, rolledBack: 0 },
      ],
    });
  });
});
