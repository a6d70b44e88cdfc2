// What the operator API answers, as the CLI reads it: the JSON of the server's own views (api/operator/views.ts),
// so a change there that the CLI depends on fails type-checking here.
import type { AuditRecord } from "../domain/audit/audit-log";
import type { apiKeyView, deviceView, imageView, releaseView, rolloutView, tokenView } from "../api/operator/views";
import type { MemberStatus } from "../domain/rollouts/member-status";

type ImageJson = ReturnType<typeof imageView>;
type ReleaseJson = ReturnType<typeof releaseView>;
type RolloutJson = ReturnType<typeof rolloutView>;
type DeviceJson = ReturnType<typeof deviceView>;
type TokenJson = ReturnType<typeof tokenView>;
type ApiKeyJson = ReturnType<typeof apiKeyView>;

export interface Whoami {
  subject: string;
  role: string;
}

export interface UploadAnswer {
  name: string;
  created: boolean;
  image: ImageJson;
}

export interface ReleaseAnswer {
  release: ReleaseJson;
}

export interface ReleaseList {
  releases: ReleaseJson[];
}

export interface RolloutAnswer {
  rollout: RolloutJson;
}

export interface RolloutList {
  rollouts: RolloutJson[];
}

/** GET /rollouts/{ref}: the rollout and how many of its devices are where. */
export interface RolloutStatus {
  rollout: RolloutJson;
  devices: { total: number } & Record<MemberStatus, number>;
}

export interface DeviceAnswer {
  device: DeviceJson;
}

export interface DeviceList {
  devices: DeviceJson[];
  next: string | null;
}

/** GET /tokens (and `ota token list` in local mode). */
export interface TokenList {
  tokens: TokenJson[];
}

/** GET /apikeys (and `ota apikey list` in local mode). */
export interface ApiKeyList {
  apikeys: ApiKeyJson[];
}

/** POST /tokens/{id}/revoke. */
export interface TokenRevoked {
  token: TokenJson;
  already_revoked: boolean;
}

/** POST /apikeys/{id}/revoke. */
export interface ApiKeyRevoked {
  apikey: ApiKeyJson;
  already_revoked: boolean;
}

/** POST /devices/{id}/revoke. */
export interface DeviceRevoked {
  device: DeviceJson;
  already_revoked: boolean;
}

export interface AuditPage {
  entries: AuditRecord[];
  next: number | null;
}

/** The error body of every 4xx and 5xx answer. */
export interface ErrorBody {
  error?: { code?: string; message?: string; reason?: string };
}
