// The operator API's answers, typed from the functions that shape them on the server, and its request bodies,
// typed from the zod schemas that validate them (type imports only: esbuild erases them, nothing of the server
// is bundled).
import type { z } from "zod";
import type { AuditRecord } from "../../../server/domain/audit/audit-log";
import type { FleetSummary } from "../../../server/domain/devices/device-store";
import type { OfferExplanation } from "../../../server/domain/releases/offer";
import type { summarizeStatuses } from "../../../server/domain/rollouts/member-status";
import type { Role, RolloutState } from "../../../server/infra/store/schema";
import type { deviceView, fileView, imageView, releaseView, reportView, rolloutView } from "../../../server/api/operator/views";
import type { createReleaseBody, rolloutStartBody } from "../../../server/api/operator/schemas";

export type { Role, RolloutState };
export type Device = ReturnType<typeof deviceView>;
export type Report = ReturnType<typeof reportView>;
export type Image = ReturnType<typeof imageView>;
export type FirmwareFile = ReturnType<typeof fileView>;
export type Release = ReturnType<typeof releaseView>;
export type Rollout = ReturnType<typeof rolloutView>;
type Counts = ReturnType<typeof summarizeStatuses>;
export type AuditEntry = AuditRecord;
export type DeviceOffer = OfferExplanation;
/** POST /releases. */
export type NewRelease = z.input<typeof createReleaseBody>;
/** POST /releases/{name}/rollout. */
export type RolloutPolicy = z.input<typeof rolloutStartBody>;

export interface WhoAmI {
  subject: string;
  role: Role;
}

export interface Fleet {
  devices: Pick<FleetSummary, "total" | "online" | "offline" | "failing" | "revoked">;
  versions: FleetSummary["versions"];
  chips: FleetSummary["chips"];
  states: FleetSummary["states"];
}

export interface RolloutStatus {
  rollout: Rollout;
  devices: Counts["devices"];
  stages: Counts["stages"];
  window: { since: string; finished: number; succeeded: number; failed: number; rolledBack: number } | null;
}

export type RolloutAction = "pause" | "resume" | "advance" | "abort";

/** Which actions each rollout state allows (the server's state machine: server/domain/rollouts/rollout-state.ts). */
export const ACTIONS_FROM: Record<RolloutAction, readonly RolloutState[]> = {
  pause: ["running"],
  resume: ["paused"],
  advance: ["running"],
  abort: ["running", "paused"],
};

const RANK: Record<Role, number> = { viewer: 0, releaser: 1, admin: 2 };
/** Whether a token with role `have` may do what needs `need` (the server checks again). */
export const may = (have: Role, need: Role): boolean => RANK[have] >= RANK[need];
