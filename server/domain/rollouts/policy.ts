// When a rollout advances or stops itself: pure functions over outcome counts, so the rules are testable
// apart from the server.
import { z } from "zod";

const percent = z.number().min(0).max(100);

const stagesSchema = z
  .array(
    z
      .number()
      .gt(0, "a stage is more than 0 %")
      .max(100, "a stage is at most 100 %")
      .refine((n) => Math.abs(n * 100 - Math.round(n * 100)) < 1e-9, "stages are in steps of 0.01 %"),
  )
  .min(1)
  .max(20)
  .refine((s) => s.every((v, i) => i === 0 || v > s[i - 1]!), "stages must increase")
  .refine((s) => s[s.length - 1] === 100, "the last stage must be 100 (the whole target)");

export const rolloutPolicySchema = z
  .object({
    stages: stagesSchema.default([10, 50, 100]).describe("cumulative percentages of the targeted devices, increasing, ending at 100"),
    advance: z.enum(["manual", "auto"]).default("manual").describe("auto: move to the next stage once the current one meets success_threshold"),
    success_threshold: percent.default(95).describe("percent of the current stage's finished devices that must have succeeded to advance automatically"),
    min_sample: z.number().int().min(1).max(1_000_000).default(10).describe("finished devices of the current stage needed before it can advance automatically"),
    max_failure_rate: percent.default(10).describe("pause automatically when more than this percent of finished devices failed"),
    max_rollback_rate: percent.default(10).describe("pause automatically when more than this percent of finished devices rolled back"),
    failure_min_sample: z.number().int().min(1).max(1_000_000).default(5).describe("finished devices needed before the failure and rollback rates are judged"),
  })
  .strict();

export type RolloutPolicy = z.output<typeof rolloutPolicySchema>;

export interface Outcomes {
  succeeded: number;
  failed: number;
  rolledBack: number;
}

export const finished = (o: Outcomes) => o.succeeded + o.failed + o.rolledBack;

const pct = (n: number, of: number) => (of === 0 ? 0 : (n * 100) / of);
const fmt = (n: number) => `${Math.round(n * 10) / 10}%`;

/** A reason to pause, when the failure or rollback rate since the window started passes its threshold. */
export function pauseReason(p: RolloutPolicy, window: Outcomes): string | null {
  const n = finished(window);
  if (n < p.failure_min_sample) return null;
  const failRate = pct(window.failed, n);
  if (failRate > p.max_failure_rate) {
    return `failure rate ${fmt(failRate)} (${window.failed} of ${n} finished devices) passed the ${p.max_failure_rate}% threshold`;
  }
  const rbRate = pct(window.rolledBack, n);
  if (rbRate > p.max_rollback_rate) {
    return `rollback rate ${fmt(rbRate)} (${window.rolledBack} of ${n} finished devices) passed the ${p.max_rollback_rate}% threshold`;
  }
  return null;
}

/** Whether the current stage has earned the next one. */
export function readyToAdvance(p: RolloutPolicy, stage: Outcomes): boolean {
  const n = finished(stage);
  return n >= p.min_sample && pct(stage.succeeded, n) >= p.success_threshold;
}
