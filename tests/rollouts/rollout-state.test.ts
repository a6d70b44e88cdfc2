// The rollout state machine on its own: which operator actions each state allows, whom each state offers the
// release to, and what a running rollout does by itself once a member finishes.
import type { RolloutState } from "../../server/infra/store/schema";
import { newTally, type Tally } from "../../server/domain/rollouts/member-status";
import { rolloutPolicySchema } from "../../server/domain/rollouts/policy";
import { allows, isLastStage, offersTo, verdict, type Asker, type RolloutAction } from "../../server/domain/rollouts/rollout-state";

const STATES: RolloutState[] = ["running", "paused", "aborted", "completed"];

describe("operator actions", () => {
  it("pause a running rollout, resume a paused one, abort either, advance a running one; nothing else", () => {
    const table = Object.fromEntries(
      (["pause", "resume", "abort", "advance"] as RolloutAction[]).map((a) => [a, STATES.filter((s) => allows(s, a))]),
    );
    expect(table).toEqual({ pause: ["running"], resume: ["paused"], abort: ["running", "paused"], advance: ["running"] });
  });

  it("advancing from the last stage completes the rollout", () => {
    const p = rolloutPolicySchema.parse({ stages: [10, 50, 100] });
    expect([0, 1, 2].map((s) => isLastStage(p, s))).toEqual([false, false, true]);
    expect(isLastStage(rolloutPolicySchema.parse({ stages: [100] }), 0)).toBe(true);
  });
});

describe("whom a rollout offers its release to", () => {
  const asker = (o: Partial<Asker> = {}): Asker => ({ deviceId: "d1", member: undefined, runsRelease: false, ...o });
  const inStage = (answer: boolean) => jest.fn(() => answer);

  it("completed: everyone, even a client that does not say who it is", () => {
    expect(offersTo("completed", asker({ deviceId: null }), inStage(false))).toBe(true);
  });

  it("running: its members, and devices whose bucket is in the current stage; never an anonymous client", () => {
    const never = inStage(false);
    expect(offersTo("running", asker({ member: "failed" }), never)).toBe(true);
    expect(never).not.toHaveBeenCalled(); // a member is not bucketed again
    expect(offersTo("running", asker(), inStage(true))).toBe(true);
    expect(offersTo("running", asker(), inStage(false))).toBe(false);
    const anon = inStage(true);
    expect(offersTo("running", asker({ deviceId: null }), anon)).toBe(false);
    expect(anon).not.toHaveBeenCalled();
  });

  it("paused: only devices already offered it", () => {
    const bucket = inStage(true);
    expect(offersTo("paused", asker({ member: "installing" }), bucket)).toBe(true);
    expect(offersTo("paused", asker(), bucket)).toBe(false);
    expect(offersTo("paused", asker({ deviceId: null }), bucket)).toBe(false);
    expect(bucket).not.toHaveBeenCalled();
  });

  it("aborted: devices that rebooted into the image or run its version already, nobody else", () => {
    const bucket = inStage(true);
    expect(offersTo("aborted", asker({ member: "rebooted" }), bucket)).toBe(true);
    expect(offersTo("aborted", asker({ member: "succeeded" }), bucket)).toBe(true);
    for (const member of ["offered", "installing", "failed", "rolled_back"] as const) expect(offersTo("aborted", asker({ member }), bucket)).toBe(false);
    expect(offersTo("aborted", asker({ runsRelease: true }), bucket)).toBe(true);
    expect(offersTo("aborted", asker({ deviceId: null, runsRelease: true }), bucket)).toBe(true);
    expect(offersTo("aborted", asker(), bucket)).toBe(false);
    expect(bucket).not.toHaveBeenCalled();
  });
});

describe("what a running rollout does once a member finishes", () => {
  const auto = rolloutPolicySchema.parse({ stages: [10, 100], advance: "auto", success_threshold: 90, min_sample: 3, max_failure_rate: 20, max_rollback_rate: 10, failure_min_sample: 5 });
  const tally = (window: Partial<Tally["window"]>, stage0: Partial<Tally["window"]> = {}, stage1: Partial<Tally["window"]> = {}): Tally => {
    const t = newTally(2, 0);
    Object.assign(t.window, window);
    Object.assign(t.stages[0]!, stage0);
    Object.assign(t.stages[1]!, stage1);
    return t;
  };
  const running = { state: "running" as const, stage: 0, policy: auto };

  it("pauses when the failure rate over the window passes its threshold, with the reason", () => {
    expect(verdict(running, tally({ succeeded: 3, failed: 2 }))).toEqual({ action: "pause", reason: "failure rate 40% (2 of 5 finished devices) passed the 20% threshold" });
  });

  it("pauses when the rollback rate passes its threshold", () => {
    expect(verdict(running, tally({ succeeded: 8, rolledBack: 2 }))?.action).toBe("pause");
  });

  it("judges no rate below the minimum sample", () => {
    expect(verdict(running, tally({ failed: 4 }))).toBeNull();
  });

  it("a pause wins over an advance the stage has earned", () => {
    expect(verdict(running, tally({ succeeded: 3, failed: 2 }, { succeeded: 10 }))?.action).toBe("pause");
  });

  it("advances an auto rollout once the current stage meets the success threshold over its minimum sample", () => {
    expect(verdict(running, tally({ succeeded: 3 }, { succeeded: 3 }))).toEqual({ action: "advance" });
    expect(verdict(running, tally({ succeeded: 2 }, { succeeded: 2 }))).toBeNull();
    expect(verdict(running, tally({}, { succeeded: 8, failed: 1, rolledBack: 1 }))).toBeNull(); // 80 %
  });

  it("judges the current stage only", () => {
    expect(verdict(running, tally({}, {}, { succeeded: 10 }))).toBeNull();
    expect(verdict({ ...running, stage: 1 }, tally({}, {}, { succeeded: 10 }))).toEqual({ action: "advance" });
  });

  it("a manual rollout never advances by itself, but still pauses", () => {
    const manual = { ...running, policy: { ...auto, advance: "manual" as const } };
    expect(verdict(manual, tally({ succeeded: 3 }, { succeeded: 3 }))).toBeNull();
    expect(verdict(manual, tally({ succeeded: 3, failed: 2 }))?.action).toBe("pause");
  });

  it("a rollout that is not running does nothing by itself", () => {
    for (const state of ["paused", "aborted", "completed"] as const) {
      expect(verdict({ ...running, state }, tally({ succeeded: 3, failed: 2 }, { succeeded: 10 }))).toBeNull();
    }
  });
});
