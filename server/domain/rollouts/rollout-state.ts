// A rollout's state machine, as pure functions over plain data:
//   running ──pause──► paused ──resume──► running ──advance (last stage)──► completed
//      └──────────────┴──abort──► aborted
// which operator actions each state allows, whom each state offers the release to, and what a running rollout
// does by itself once a member finishes (pause past a failure or rollback threshold, else advance when the
// stage has succeeded). The thresholds themselves are in policy.ts.
import type { RolloutState } from "../../infra/store/schema";
import { keepsImageAfterAbort, type MemberStatus, type Tally } from "./member-status";
import { pauseReason, readyToAdvance, type RolloutPolicy } from "./policy";

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
  /** Grows by one with every change written: a change is written only over the version it was decided on. */
  version: number;
}

export type RolloutAction = "pause" | "resume" | "abort" | "advance";

const ALLOWED_FROM: Record<RolloutAction, readonly RolloutState[]> = {
  pause: ["running"],
  resume: ["paused"],
  abort: ["running", "paused"],
  advance: ["running"],
};

/** Whether an operator may take this action on a rollout in this state. */
export const allows = (state: RolloutState, action: RolloutAction): boolean => ALLOWED_FROM[action].includes(state);

/** Whether advancing from this stage completes the rollout. */
export const isLastStage = (policy: RolloutPolicy, stage: number): boolean => stage + 1 >= policy.stages.length;

/** The device asking for an update, as the offer rule sees it. */
export interface Asker {
  /** null: a client that does not say who it is. */
  deviceId: string | null;
  /** Its status in the rollout, if the rollout has offered it the release. */
  member: MemberStatus | undefined;
  /** Whether it runs the release's version already. */
  runsRelease: boolean;
}

/**
 * Whether a rollout in this state offers its release to the asker. `inCurrentStage` tells whether the device's
 * bucket falls in the current stage; it is asked only of a running rollout's devices that are not members yet.
 */
export function offersTo(state: RolloutState, asker: Asker, inCurrentStage: () => boolean): boolean {
  switch (state) {
    case "completed":
      return true;
    case "running":
      if (!asker.deviceId) return false;
      return asker.member !== undefined || inCurrentStage();
    case "paused":
      // Devices already offered it keep it (their download resumes against the same manifest); no one else.
      return asker.deviceId !== null && asker.member !== undefined;
    case "aborted":
      // Never pull an image from under a device that has rebooted into it, or runs it already.
      if (asker.runsRelease) return true;
      return asker.deviceId !== null && asker.member !== undefined && keepsImageAfterAbort(asker.member);
  }
}

export type Verdict = { action: "pause"; reason: string } | { action: "advance" } | null;

/**
 * What a rollout does by itself after a member finished: only a running one acts; it pauses when the failure or
 * rollback rate over the window passes its threshold, else advances (auto policies only) once the current
 * stage meets the success threshold over its minimum sample; otherwise nothing.
 */
export function verdict(rollout: Pick<Rollout, "state" | "stage" | "policy">, tally: Tally): Verdict {
  if (rollout.state !== "running") return null;
  const reason = pauseReason(rollout.policy, tally.window);
  if (reason) return { action: "pause", reason };
  if (rollout.policy.advance === "auto" && readyToAdvance(rollout.policy, tally.stages[rollout.stage]!)) return { action: "advance" };
  return null;
}
