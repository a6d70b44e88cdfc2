// JSON shapes of the operator API (snake_case, like the device protocol).
import type { ImageSignature } from "../../domain/catalog/analyze";
import type { CatalogFile, CatalogImage } from "../../domain/catalog/catalog";
import type { DeviceView } from "../../domain/devices/registry";
import { isOffer, type NoOffer, type Offer } from "../../domain/releases/offer";
import type { CompiledRelease } from "../../domain/releases/release-store";
import type { Rollout } from "../../domain/rollouts/rollout-manager";
import type { FleetKeyInfo, OperatorTokenInfo } from "../../infra/auth/credentials";
import type { ReportRow } from "../../infra/store/schema";

const signatureView = (s: ImageSignature) => ({ scheme: s.scheme, key_digest: s.keyDigest });

export function imageView(image: CatalogImage, names: string[], offered: boolean) {
  return {
    sha256: image.sha256,
    size: image.size,
    md5: image.md5,
    version: image.version,
    project: image.project,
    chip: image.chip,
    min_chip_rev: image.minChipRev,
    max_chip_rev: image.maxChipRev,
    secure_version: image.secureVersion,
    idf_version: image.idfVersion,
    app_elf_sha256: image.appElfSha256,
    build_date: image.buildDate,
    build_time: image.buildTime,
    trailing_bytes: image.trailingBytes,
    block_size: image.blockSize,
    block_count: image.blockCount,
    signatures: image.signatures.map(signatureView),
    signed_by: image.signedBy && signatureView(image.signedBy),
    first_ingested_at: image.firstIngestedAt,
    last_ingested_at: image.lastIngestedAt,
    files: names,
    offered,
  };
}

export function fileView(f: CatalogFile) {
  return {
    name: f.name,
    status: f.status,
    sha256: f.sha256,
    size: f.size,
    reason_code: f.reasonCode,
    reason: f.reason,
    source: f.source,
    updated_at: f.updatedAt,
  };
}

export function deviceView(d: DeviceView, tags: string[] = []) {
  return {
    id: d.id,
    chip: d.chip,
    chip_rev: d.chip_rev,
    channel: d.channel,
    group: d.group_name,
    tags,
    pinned_release: d.pinned_release,
    version: d.version,
    state: d.state,
    state_detail: d.state_detail,
    target_version: d.target_version,
    progress: d.progress_total ? { bytes: d.progress_bytes, total: d.progress_total } : null,
    online: d.online,
    provisioned: d.provisioned,
    revoked: Boolean(d.revoked_at),
    revoked_at: d.revoked_at,
    first_seen_at: d.first_seen_at,
    last_seen_at: d.last_seen_at,
    last_report_at: d.last_report_at,
    client: clientView(d),
  };
}

/**
 * What the device would be answered if it polled now: `offered` (the release, or null under the firmware folder,
 * and the image's version), or the code and message of the 404 it would get (no_firmware, waiting_for_rollout_stage).
 */
export function offerView(o: Offer | NoOffer) {
  if (isOffer(o)) return { status: "offered" as const, release: o.release, version: o.version, sha256: o.sha256, message: null };
  return { status: o.code, release: o.release, version: null, sha256: null, message: o.message };
}

/** What a device's update client told us about itself (null for clients that say nothing). */
function clientView(d: DeviceView) {
  const known = [d.client, d.sketch_size, d.free_space, d.flash_size, d.running_sha256, d.running_md5, d.sdk_version].some((v) => v != null);
  if (!known) return null;
  return {
    kind: d.client,
    sketch_size: d.sketch_size,
    free_space: d.free_space,
    flash_size: d.flash_size,
    running_sha256: d.running_sha256,
    running_md5: d.running_md5,
    sdk_version: d.sdk_version,
  };
}

export function reportView(r: ReportRow) {
  return {
    id: r.id,
    status: r.status,
    version: r.version,
    target_version: r.target_version,
    error: r.error,
    reason: r.reason,
    bytes: r.bytes,
    total: r.total,
    sha256: r.sha256,
    report_id: r.report_id,
    received_at: r.received_at,
  };
}

export function releaseView(r: CompiledRelease, rollout: Rollout | undefined) {
  return {
    name: r.name,
    channel: r.channel,
    image: { sha256: r.imageSha256, version: r.version, chip: r.chip, min_chip_rev: r.minChipRev, max_chip_rev: r.maxChipRev },
    notes: r.notes,
    targets: r.targets,
    min_version: r.minVersion,
    via: r.via,
    allow_downgrade: r.allowDowngrade,
    signed_by: r.signer && { ...signatureView(r.signer), trusted: r.signer.trusted },
    created_at: r.createdAt,
    created_by: r.createdBy,
    rollout: rollout ? { id: rollout.id, state: rollout.state, stage_percent: rollout.policy.stages[rollout.stage] } : null,
  };
}

export function rolloutView(r: Rollout) {
  return {
    id: r.id,
    release: r.releaseName,
    state: r.state,
    stage: { index: r.stage, percent: r.policy.stages[r.stage] },
    policy: r.policy,
    reason: r.reason,
    window_started_at: r.windowStartedAt,
    created_at: r.createdAt,
    created_by: r.createdBy,
    updated_at: r.updatedAt,
  };
}

/** An operator token as listed: never the token itself. */
export function tokenView(t: OperatorTokenInfo, now = Date.now()) {
  const expired = t.expires_at !== null && Date.parse(t.expires_at) <= now;
  return {
    id: t.id,
    name: t.subject,
    role: t.role,
    created_at: t.created_at,
    expires_at: t.expires_at,
    revoked_at: t.revoked_at,
    state: t.revoked_at ? "revoked" : expired ? "expired" : "active",
  };
}

/** A fleet key as listed: never the key or its hash. */
export function apiKeyView(k: FleetKeyInfo) {
  return {
    id: k.id,
    label: k.label,
    created_at: k.created_at,
    revoked_at: k.revoked_at,
    state: k.revoked_at ? "revoked" : "active",
  };
}
