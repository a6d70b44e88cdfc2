// The operator API as a table: the router registers exactly these routes, and the OpenAPI document is
// generated from the same entries and the same request schemas the handlers validate with.
import type { RequestHandler } from "express";
import type { z } from "zod";
import type { Context } from "../../context";
import type { Role } from "../../infra/store/schema";
import { packageVersion } from "../../paths";
import { signingPolicyInfo } from "../../domain/catalog/signing-policy";
import { listAudit } from "./audit";
import { listApiKeys, listTokens, revokeApiKey, revokeToken } from "./credentials";
import { deviceOffer, deviceReports, fleetSummary, getDevice, listDevices, patchDevice, provision, revokeDevice } from "./devices";
import { collectBlobs, deleteImage, forgetFile, getImage, listFiles, listImages, uploadHandlers } from "./firmware";
import { createRelease, deleteRelease, getRelease, listReleases } from "./releases";
import { getRollout, listRollouts, rolloutAction, startRollout } from "./rollouts";
import * as s from "./schemas";

export interface RouteDef {
  method: "get" | "post" | "patch" | "delete";
  /** Express path under /api/v1. */
  path: string;
  role: Role;
  tag: string;
  summary: string;
  params?: z.ZodObject;
  query?: z.ZodType;
  /** A JSON body validated with this schema. */
  body?: z.ZodType;
  /** A multipart/form-data upload (field `file`, plus these fields). */
  multipart?: z.ZodObject;
  /** Status codes besides the generic 400/401/403 and what each means. */
  responses: Record<number, string>;
  handlers: (ctx: Context) => RequestHandler[];
}

const one = (f: (ctx: Context) => RequestHandler) => (ctx: Context) => [f(ctx)];

function apiInfo(ctx: Pick<Context, "config">): RequestHandler {
  const p = signingPolicyInfo(ctx.config);
  const body = {
    name: "esp32-ota",
    version: packageVersion(),
    openapi: "/api/v1/openapi.json",
    image_signatures: { checked: p.checked, trusted_key_digests: p.trustedKeyDigests, note: p.note },
  };
  return (_req, res) => void res.json(body);
}

export const ROUTES: readonly RouteDef[] = [
  {
    method: "get",
    path: "/",
    role: "viewer",
    tag: "session",
    summary: "The server: its version, where the OpenAPI document is, and whether images are signature-checked (OTA_SIGNING_KEYS)",
    responses: { 200: "`{name, version, openapi, image_signatures: {checked, trusted_key_digests, note}}`" },
    handlers: (ctx) => [apiInfo(ctx)],
  },
  {
    method: "get",
    path: "/whoami",
    role: "viewer",
    tag: "session",
    summary: "The token's subject and role",
    responses: { 200: "`{subject, role}`" },
    handlers: () => [(req, res) => void res.json({ subject: req.operator!.subject, role: req.operator!.role })],
  },
  {
    method: "get",
    path: "/firmware",
    role: "viewer",
    tag: "firmware",
    summary: "Ingested images, newest first, each with its signatures (`signatures`, `signed_by`)",
    responses: { 200: "`{images: [...]}`" },
    handlers: one(listImages),
  },
  {
    method: "post",
    path: "/firmware",
    role: "releaser",
    tag: "firmware",
    summary: "Upload an image (verified like a dropped file, then written into the firmware folder)",
    multipart: s.uploadFields,
    responses: {
      200: "already there: `{name, created: false, image}`",
      201: "new: `{name, created: true, image}`",
      409: "`name_taken`: the name holds different bytes",
      413: "`upload_too_large`: larger than the smallest OTA slot",
      415: "not multipart/form-data",
      422: "`invalid_image` with `reason` (with OTA_SIGNING_KEYS also: unsigned, untrusted_signer, signature_invalid, signature_digest_mismatch, malformed_signature_sector)",
    },
    handlers: (ctx) => uploadHandlers(ctx),
  },
  {
    method: "get",
    path: "/firmware/files",
    role: "viewer",
    tag: "firmware",
    summary: "Every file seen in the folder or uploaded, with its status",
    responses: { 200: "`{files: [...]}`" },
    handlers: (ctx) => [listFiles(ctx)],
  },
  {
    method: "get",
    path: "/firmware/rejected",
    role: "viewer",
    tag: "firmware",
    summary: "Files refused or still incomplete, with the reason",
    responses: { 200: "`{files: [...]}`" },
    handlers: (ctx) => [listFiles(ctx, "problems")],
  },
  {
    method: "get",
    path: "/firmware/:sha256",
    role: "viewer",
    tag: "firmware",
    summary: "One image",
    params: s.params.sha256,
    responses: { 200: "`{image}`", 404: "`firmware_not_found`" },
    handlers: one(getImage),
  },
  {
    method: "delete",
    path: "/firmware/files/:name",
    role: "releaser",
    tag: "firmware",
    summary: "Forget a file that holds no image (rejected, incomplete or removed), and delete it from the folder if it is there",
    params: s.params.file,
    responses: { 200: "`{deleted: {name}}`", 404: "`file_not_found`", 409: "`file_holds_image`: delete its image instead" },
    handlers: one(forgetFile),
  },
  {
    method: "delete",
    path: "/firmware/:sha256",
    role: "releaser",
    tag: "firmware",
    summary: "Delete an image no release uses: its files in the folder, its record and its stored blob",
    params: s.params.sha256,
    responses: { 200: "`{deleted: {sha256, files}}`", 404: "`firmware_not_found`", 409: "`image_in_use`: releases use it" },
    handlers: one(deleteImage),
  },
  {
    method: "post",
    path: "/firmware/gc",
    role: "admin",
    tag: "firmware",
    summary: "Delete stored blobs that no image names (left by a crash, or by images deleted while a blob was being written)",
    body: s.collectBlobsBody,
    responses: { 200: "`{removed, bytes}`" },
    handlers: one(collectBlobs),
  },
  {
    method: "get",
    path: "/devices",
    role: "viewer",
    tag: "devices",
    summary: "Devices with state, version, tags, group, channel, last seen and online flag (filterable, paginated by id)",
    query: s.deviceListQuery,
    responses: { 200: "`{devices: [...], next}`" },
    handlers: one(listDevices),
  },
  {
    method: "get",
    path: "/fleet",
    role: "viewer",
    tag: "devices",
    summary:
      "Fleet-wide counts: devices, online, offline, failing (latest report failed, rolled_back or rejected), revoked; and devices by version, chip and state (revoked devices left out)",
    responses: { 200: "`{devices: {total, online, offline, failing, revoked}, versions: [{value, devices}], chips: [...], states: [...]}`" },
    handlers: one(fleetSummary),
  },
  {
    method: "get",
    path: "/devices/:id",
    role: "viewer",
    tag: "devices",
    summary: "One device, what a poll would be answered now (`device.offer`: offered, waiting_for_rollout_stage or no_firmware), and its 20 latest reports",
    params: s.params.deviceId,
    responses: { 200: "`{device, reports}`", 404: "`device_not_found`" },
    handlers: one(getDevice),
  },
  {
    method: "patch",
    path: "/devices/:id",
    role: "releaser",
    tag: "devices",
    summary: "Set a device's group, channel, pinned release, chip or chip revision; add and remove tags",
    params: s.params.deviceId,
    body: s.devicePatchBody,
    responses: { 200: "`{device}`", 404: "`device_not_found`", 422: "`pinned_release_not_found`" },
    handlers: one(patchDevice),
  },
  {
    method: "get",
    path: "/devices/:id/offer",
    role: "viewer",
    tag: "devices",
    summary:
      "What the device's next poll would be offered and why (from its stored chip and version): each release judged in order up to the one that wins, with the reason the others are not its (no rollout membership is written)",
    params: s.params.deviceId,
    responses: {
      200: "`{mode: latest|releases, offer: {sha256, version, release} | null, pinned, candidates: [{release, installs, refusal}], message}`; refusal: not_targeted, hardware, not_in_rollout, no_upgrade_path, downgrade",
      404: "`device_not_found`",
    },
    handlers: one(deviceOffer),
  },
  {
    method: "get",
    path: "/devices/:id/reports",
    role: "viewer",
    tag: "devices",
    summary: "A device's report history, newest first",
    params: s.params.deviceId,
    query: s.reportsQuery,
    responses: { 200: "`{reports: [...], next}`", 404: "`device_not_found`" },
    handlers: one(deviceReports),
  },
  {
    method: "post",
    path: "/devices/:id/provision",
    role: "admin",
    tag: "devices",
    summary: "Register a device for its own keys and answer its provisioning bundle (secrets: shown once)",
    params: s.params.deviceId,
    body: s.provisionBody,
    responses: { 201: "the bundle: `{deviceId, apiKey, hmacKey, keyGeneration, mqttUser, mqttPassword, serverUrl, ca, pollInterval}`" },
    handlers: one(provision),
  },
  {
    method: "post",
    path: "/devices/:id/revoke",
    role: "admin",
    tag: "devices",
    summary:
      "Revoke a device: its key is refused (401 `credential_revoked`) and fleet keys may not speak for its id (403 `device_revoked`) from the next request on, until it is provisioned again with a new key",
    params: s.params.deviceId,
    body: s.revokeBody,
    responses: { 200: "`{device, already_revoked}`", 404: "`device_not_found`" },
    handlers: one(revokeDevice),
  },
  {
    method: "get",
    path: "/releases",
    role: "viewer",
    tag: "releases",
    summary: "Releases, newest first, each with its rollout's state and the key that signed its image (`signed_by`)",
    query: s.releaseListQuery,
    responses: { 200: "`{releases: [...]}`" },
    handlers: one(listReleases),
  },
  {
    method: "post",
    path: "/releases",
    role: "releaser",
    tag: "releases",
    summary: "Promote an ingested image to a release on a channel, for a target, with an upgrade path",
    body: s.createReleaseBody,
    responses: {
      201: "`{release}` (offered to nobody until its rollout starts)",
      409: "`release_exists`",
      422: "`image_not_found`, `via_not_found`, `via_incompatible`, `via_below_min_version`",
    },
    handlers: one(createRelease),
  },
  {
    method: "get",
    path: "/releases/:name",
    role: "viewer",
    tag: "releases",
    summary: "One release",
    params: s.params.release,
    responses: { 200: "`{release}`", 404: "`release_not_found`" },
    handlers: one(getRelease),
  },
  {
    method: "delete",
    path: "/releases/:name",
    role: "releaser",
    tag: "releases",
    summary: "Delete a release nothing needs any more (its rollout finished or never started), with its rollout and members",
    params: s.params.release,
    responses: { 200: "`{deleted: {name}}`", 404: "`release_not_found`", 409: "`release_in_use`: its rollout is unfinished, a release leads through it (via), or devices are pinned to it" },
    handlers: one(deleteRelease),
  },
  {
    method: "post",
    path: "/releases/:name/rollout",
    role: "releaser",
    tag: "rollouts",
    summary: "Start the release's staged rollout (once per release)",
    params: s.params.release,
    body: s.rolloutStartBody,
    responses: { 201: "`{rollout}`", 404: "`release_not_found`", 409: "`rollout_exists`" },
    handlers: one(startRollout),
  },
  {
    method: "get",
    path: "/rollouts",
    role: "viewer",
    tag: "rollouts",
    summary: "Rollouts, newest first",
    responses: { 200: "`{rollouts: [...]}`" },
    handlers: one(listRollouts),
  },
  {
    method: "get",
    path: "/rollouts/:ref",
    role: "viewer",
    tag: "rollouts",
    summary: "A rollout's state and device counts, overall and per stage",
    params: s.params.rollout,
    responses: { 200: "`{rollout, devices, stages, window}`", 404: "`rollout_not_found`" },
    handlers: one(getRollout),
  },
  ...(["pause", "resume", "advance", "abort"] as const).map(
    (action): RouteDef => ({
      method: "post",
      path: `/rollouts/:ref/${action}`,
      role: "releaser",
      tag: "rollouts",
      summary: {
        pause: "Pause: devices already offered the release keep it; no other device gets it",
        resume: "Resume a paused rollout; failure and rollback rates count afresh from now",
        advance: "Move to the next stage now (at the last stage: complete the rollout)",
        abort: "Abort for good: devices that have not rebooted into the image are offered their previous release again",
      }[action],
      params: s.params.rollout,
      body: action === "pause" || action === "abort" ? s.rolloutActionBody : s.emptyBody,
      responses: { 200: "`{rollout}`", 404: "`rollout_not_found`", 409: "`invalid_transition`" },
      handlers: (ctx) => [rolloutAction(ctx, action)],
    }),
  ),
  {
    method: "get",
    path: "/tokens",
    role: "admin",
    tag: "credentials",
    summary: "Operator tokens, newest first: id, name, role, created, expires, revoked, state (never the token)",
    responses: { 200: "`{tokens: [...]}`" },
    handlers: one(listTokens),
  },
  {
    method: "post",
    path: "/tokens/:id/revoke",
    role: "admin",
    tag: "credentials",
    summary: "Revoke an operator token: refused (401 `token_revoked`) from its next request on",
    params: s.params.tokenId,
    body: s.revokeBody,
    responses: { 200: "`{token, already_revoked}`", 404: "`token_not_found`" },
    handlers: one(revokeToken),
  },
  {
    method: "get",
    path: "/apikeys",
    role: "admin",
    tag: "credentials",
    summary: "Fleet API keys, newest first: id, label, created, revoked, state (never the key or its hash)",
    responses: { 200: "`{apikeys: [...]}`" },
    handlers: one(listApiKeys),
  },
  {
    method: "post",
    path: "/apikeys/:id/revoke",
    role: "admin",
    tag: "credentials",
    summary: "Revoke a fleet API key: refused (401 `credential_revoked`) from its next request on",
    params: s.params.apiKeyId,
    body: s.revokeBody,
    responses: { 200: "`{apikey, already_revoked}`", 404: "`apikey_not_found`" },
    handlers: one(revokeApiKey),
  },
  {
    method: "get",
    path: "/audit",
    role: "admin",
    tag: "audit",
    summary: "The audit log, newest first: who did what, when, from where",
    query: s.auditQuery,
    responses: { 200: "`{entries: [...], next}`" },
    handlers: one(listAudit),
  },
];
