// Table types for the query builder. Timestamps are ISO-8601 text and booleans 0/1 integers so the same
// queries run on SQLite and PostgreSQL.
import type { Generated, Insertable, Selectable } from "kysely";

export interface ImagesTable {
  sha256: string;
  size: number;
  md5: string;
  version: string;
  project: string;
  chip: string;
  chip_id: number;
  min_chip_rev: number;
  max_chip_rev: number | null;
  secure_version: number;
  idf_version: string;
  app_elf_sha256: string;
  build_date: string;
  build_time: string;
  trailing_bytes: number;
  first_ingested_at: string;
  last_ingested_at: string;
}

export type FileStatus = "valid" | "rejected" | "incomplete" | "removed";

export interface FirmwareFilesTable {
  name: string;
  status: FileStatus;
  sha256: string | null;
  size: number;
  mtime_ms: number;
  reason_code: string | null;
  reason: string | null;
  source: "folder" | "upload";
  updated_at: string;
}

export interface DevicesTable {
  id: string;
  chip: string | null;
  version: string | null;
  state: string | null;
  state_detail: string | null;
  target_version: string | null;
  progress_bytes: number | null;
  progress_total: number | null;
  first_seen_at: string | null;
  last_seen_at: string | null;
  last_report_at: string | null;
  last_ip: string | null;
  provisioned_at: string | null;
  key_generation: number;
  revoked_at: string | null;
  created_at: string;
  /** Which kind of client last asked: "arduino-httpupdate", "esp-http-client" (esp_https_ota), or null. */
  client: string | null;
  /** x-ESP32-sketch-size: bytes of the image the device runs. */
  sketch_size: number | null;
  /** x-ESP32-free-space: bytes of the OTA slot the next image goes to. */
  free_space: number | null;
  /** x-ESP32-chip-size: flash size in bytes. */
  flash_size: number | null;
  /** SHA-256 of the running app as the device reports it (x-ESP32-sketch-sha256), lower-case hex. */
  running_sha256: string | null;
  running_md5: string | null;
  sdk_version: string | null;
  /** Full chip revision (major * 100 + minor), as the image header's min/max_chip_rev_full. */
  chip_rev: Generated<number | null>;
  channel: Generated<string>;
  group_name: Generated<string | null>;
  pinned_release: Generated<string | null>;
}

export interface DeviceTagsTable {
  device_id: string;
  tag: string;
}

export interface ReleasesTable {
  id: Generated<number>;
  name: string;
  channel: string;
  image_sha256: string;
  version: string;
  chip: string;
  notes: string;
  /** JSON arrays of strings. */
  target_groups: string;
  target_tags: string;
  target_devices: string;
  min_version: string | null;
  via_release: string | null;
  allow_downgrade: number;
  created_at: string;
  created_by: string;
  /** The signature block of the image that the release records (null: the image carries none that holds). */
  signer_scheme: Generated<string | null>;
  /** eFuse digest (hex) of that block's public key. */
  signer_key_digest: Generated<string | null>;
  /** 1: the key was in OTA_SIGNING_KEYS when the release was made; 0: the server did not check signatures. */
  signer_trusted: Generated<number | null>;
}

export type RolloutState = "running" | "paused" | "completed" | "aborted";

export interface RolloutsTable {
  id: string;
  release_name: string;
  state: RolloutState;
  stage: number;
  /** JSON: the RolloutPolicy. */
  policy: string;
  window_started_at: string;
  state_reason: string | null;
  created_at: string;
  created_by: string;
  updated_at: string;
  /** Grows by one with every state change: a change is written only over the version it was decided on. */
  version: Generated<number>;
}

export interface RolloutDevicesTable {
  rollout_id: string;
  device_id: string;
  stage: number;
  status: string;
  joined_at: string;
  updated_at: string;
  finished_at: string | null;
}

/**
 * A rollout's members counted by stage and status (stage -1: those that finished since the current window
 * started, by outcome status), kept in the transactions that write the members.
 */
export interface RolloutCountsTable {
  rollout_id: string;
  stage: number;
  status: string;
  n: number;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: string;
  actor: string;
  role: string | null;
  token_id: string | null;
  source: string;
  ip: string | null;
  request_id: string | null;
  action: string;
  target: string | null;
  outcome: string;
  details: string;
}

export interface ReportsTable {
  id: Generated<number>;
  device_id: string;
  report_id: string | null;
  status: string;
  version: string | null;
  target_version: string | null;
  error: string | null;
  reason: string | null;
  bytes: number | null;
  total: number | null;
  sha256: string | null;
  remote_ip: string | null;
  received_at: string;
}

export interface ApiKeysTable {
  id: string;
  label: string;
  key_hash: string;
  created_at: string;
  revoked_at: string | null;
}

export type Role = "viewer" | "releaser" | "admin";

export interface OperatorTokensTable {
  jti: string;
  subject: string;
  role: Role;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

/** The last MQTT update notice made for a device (server/domain/notify/). */
export interface MqttNoticesTable {
  device_id: string;
  /** Grows by one with every notice for the device. */
  seq: number;
  /** offerDigest() of the offer the notice names. */
  digest: string;
  topic: string;
  payload: string;
  compat_topic: string | null;
  compat_payload: string | null;
  /** 1: not yet acknowledged by the broker (PUBACK); 0: delivered. */
  pending: number;
  updated_at: string;
}

export interface Database {
  images: ImagesTable;
  firmware_files: FirmwareFilesTable;
  devices: DevicesTable;
  reports: ReportsTable;
  api_keys: ApiKeysTable;
  operator_tokens: OperatorTokensTable;
  device_tags: DeviceTagsTable;
  releases: ReleasesTable;
  mqtt_notices: MqttNoticesTable;
  rollouts: RolloutsTable;
  rollout_devices: RolloutDevicesTable;
  rollout_counts: RolloutCountsTable;
  audit_log: AuditLogTable;
  cache_versions: CacheVersionsTable;
  nonces: NoncesTable;
}

/** Per cached topic (releases, rollouts, catalog), a number that grows with every change other processes must reload. */
export interface CacheVersionsTable {
  topic: string;
  version: number;
}

/** Manifest nonces used within their time to live, shared by every server process (PostgreSQL). */
export interface NoncesTable {
  device_id: string;
  nonce: string;
  /** Milliseconds since the epoch. */
  expires_at: number;
}

export type ImageRow = Selectable<ImagesTable>;
export type FirmwareFileRow = Selectable<FirmwareFilesTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type NewDevice = Insertable<DevicesTable>;
export type ReportRow = Selectable<ReportsTable>;
export type ReleaseRow = Selectable<ReleasesTable>;
export type RolloutRow = Selectable<RolloutsTable>;
export type RolloutDeviceRow = Selectable<RolloutDevicesTable>;
export type AuditRow = Selectable<AuditLogTable>;
