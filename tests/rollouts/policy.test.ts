// The rollout policy's own rules, at their edges: the stage list an operator may give, and when the failure and
// rollback rates of the current window pause a rollout (a rate must pass its threshold, and only once enough
// members have finished).
import { pauseReason, rolloutPolicySchema } from "../../server/domain/rollouts/policy";

const policy = (o: object = {}) => rolloutPolicySchema.parse(o);
const stagesError = (stages: number[]) => {
  const r = rolloutPolicySchema.safeParse({ stages });
  return r.success ? null : r.error.issues.map((i) => i.message);
};

describe("the stage list", () => {
  it("increases in steps of 0.01 % and ends at 100", () => {
    expect(policy().stages).toEqual([10, 50, 100]);
    for (const ok of [[100], [0.01, 33.33, 100], [1, 2, 100]]) expect([ok, stagesError(ok)]).toEqual([ok, null]);
    expect(stagesError([50, 50, 100])).toEqual(["stages must increase"]);
    expect(stagesError([60, 50, 100])).toEqual(["stages must increase"]);
    expect(stagesError([33.333, 100])).toEqual(["stages are in steps of 0.01 %"]);
    expect(stagesError([10, 50])).toEqual(["the last stage must be 100 (the whole target)"]);
  });
});

describe("pausing on failures and rollbacks", () => {
  const p = policy({ max_failure_rate: 10, max_rollback_rate: 20, failure_min_sample: 10 });

  it("a rate exactly at its threshold does not pause; one that passes it does, saying which", () => {
    expect(pauseReason(p, { succeeded: 9, failed: 1, rolledBack: 0 })).toBeNull();
    expect(pauseReason(p, { succeeded: 8, failed: 2, rolledBack: 0 })).toBe("failure rate 20% (2 of 10 finished devices) passed the 10% threshold");
    expect(pauseReason(p, { succeeded: 8, failed: 0, rolledBack: 2 })).toBeNull();
    expect(pauseReason(p, { succeeded: 7, failed: 0, rolledBack: 3 })).toBe("rollback rate 30% (3 of 10 finished devices) passed the 20% threshold");
  });

  it("judges nothing until failure_min_sample members have finished", () => {
    expect(pauseReason(p, { succeeded: 0, failed: 9, rolledBack: 0 })).toBeNull();
    expect(pauseReason(p, { succeeded: 0, failed: 10, rolledBack: 0 })).toBe("failure rate 100% (10 of 10 finished devices) passed the 10% threshold");
  });
});
