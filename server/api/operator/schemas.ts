// Every operator request schema, in one place: the handlers validate with these and the OpenAPI document
// (openapi.ts) is generated from these same objects, so the two cannot drift apart.
import { z } from "zod";
import { FIRMWARE_NAME_RE, FIRMWARE_NAME_RULE } from "../../domain/catalog/analyze";
import { deviceIdSchema } from "../../domain/devices/device-id";
import { REPORT_STATUSES } from "../../domain/devices/reports";
import { fleetKeyIdSchema, tokenIdSchema } from "../../infra/auth/credentials";
import { MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG } from "../../domain/devices/provisioning";
import { queryInt } from "../http/validate";
import { CHIP_NAMES, normalizeChip } from "../../esp";
import { hasOrder } from "../../domain/releases/version";
import { rolloutPolicySchema } from "../../domain/rollouts/policy";

const RELEASE_NAME_RULE = "1-64 characters: letters, digits, '.', '_', '+', '-' (starting with a letter or digit)";
const releaseName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, `release names are ${RELEASE_NAME_RULE}`)
  .describe(`release name: ${RELEASE_NAME_RULE}`);

const LABEL_RULE = "1-64 characters: letters, digits, '.', '_', ':', '-' (starting with a letter or digit)";
/** Tags and group names. */
const label = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/, `tags and groups are ${LABEL_RULE}`);

const CHANNEL_RULE = "1-32 characters: lower-case letters, digits, '.', '_', '-'";
const channelName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,31}$/, `channels are ${CHANNEL_RULE}`).describe(`channel: ${CHANNEL_RULE}`);

const deviceId = deviceIdSchema.describe("device id; MAC addresses in any spelling are normalised to aa:bb:cc:dd:ee:ff");
const versionText = z
  .string()
  .regex(/^[\x20-\x7e]{1,32}$/, "must be 1-32 printable ASCII characters")
  .refine(hasOrder, "must contain a version number x.y.z (versions are compared by their first x.y.z)");
const chip = z
  .string()
  .max(16)
  .transform((v, c) => {
    const n = normalizeChip(v);
    if (!n) {
      c.addIssue({ code: "custom", message: `must be one of ${CHIP_NAMES.join(", ")}` });
      return z.NEVER;
    }
    return n;
  })
  .describe(`chip: ${CHIP_NAMES.join(", ")}`);
const boolQuery = z.enum(["true", "false"]).transform((v) => v === "true");

export const params = {
  deviceId: z.object({ id: deviceId }),
  sha256: z.object({ sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, "sha256 must be 64 hex characters") }),
  release: z.object({ name: releaseName }),
  file: z.object({ name: z.string().regex(FIRMWARE_NAME_RE, `a firmware file name: ${FIRMWARE_NAME_RULE}`) }),
  rollout: z.object({ ref: z.string().min(1).max(64).describe("a rollout id (ro_…) or the name of its release") }),
  tokenId: z.object({ id: tokenIdSchema }),
  apiKeyId: z.object({ id: fleetKeyIdSchema }),
};

export const deviceListQuery = z
  .object({
    limit: queryInt(1, 1000).optional().describe("page size, default 100"),
    after: deviceId.optional().describe("the last id of the previous page"),
    tag: label.optional(),
    group: label.optional(),
    channel: channelName.optional(),
    version: z.string().regex(/^[\x20-\x7e]{1,32}$/, "must be 1-32 printable ASCII characters").optional().describe("the version the device runs, exactly"),
    state: z.enum(REPORT_STATUSES).optional().describe("the device's update state: the status of its latest report"),
    search: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, "must be 1-64 characters: letters, digits, '.', '_', ':', '-'").optional().describe("devices whose id starts with this"),
    online: boolQuery.optional().describe("true: seen within three poll intervals; false: not"),
  })
  .strict();

export const reportsQuery = z
  .object({ limit: queryInt(1, 1000).optional(), before: queryInt(1, Number.MAX_SAFE_INTEGER).optional().describe("report id to page before") })
  .strict();

export const provisionBody = z
  .object({
    rotate: z.boolean().optional(),
    server_url: z
      .url({ protocol: /^https?$/ })
      .refine((u) => Buffer.byteLength(u.replace(/\/+$/, "")) <= MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG)
      .optional(),
  })
  .strict();

export const devicePatchBody = z
  .object({
    group: label.nullable().optional().describe("the device's group (null: none)"),
    channel: channelName.optional().describe("the release channel the device follows (default stable)"),
    pinned_release: releaseName.nullable().optional().describe("always offer this release (null: follow the channel)"),
    chip: chip.optional().describe("the device's chip, for devices that do not send X-Device-Chip"),
    chip_rev: z.number().int().min(0).max(65535).nullable().optional().describe("full chip revision, major * 100 + minor"),
    add_tags: z.array(label).max(50).default([]),
    remove_tags: z.array(label).max(50).default([]),
  })
  .strict();

export const collectBlobsBody = z
  .object({
    older_than_minutes: z.number().int().min(0).max(525_600).default(60).describe("only blobs last written longer ago than this (an ingestion may be under way)"),
  })
  .strict();

export const uploadFields = z.object({ name: z.string().regex(FIRMWARE_NAME_RE, `must use ${FIRMWARE_NAME_RULE}`).optional() });

export const releaseListQuery = z.object({ channel: channelName.optional() }).strict();

export const createReleaseBody = z
  .object({
    name: releaseName,
    image: z.string().min(1).max(128).describe("the SHA-256 of an ingested image, or the name of a valid file in the firmware folder"),
    channel: channelName.default("stable"),
    notes: z.string().max(10_000).default(""),
    targets: z
      .object({
        groups: z.array(label).max(100).default([]),
        tags: z.array(label).max(100).default([]),
        devices: z.array(deviceId).max(10_000).default([]),
      })
      .strict()
      .default({ groups: [], tags: [], devices: [] })
      .describe("who may get the release: devices in any of these groups, with any of these tags, or listed; all empty: the whole channel"),
    min_version: versionText.optional().describe("devices must run at least this version to get the release directly"),
    via: releaseName.optional().describe("the release devices below min_version get first (a mandatory intermediate step)"),
    allow_downgrade: z.boolean().default(false).describe("may replace a newer version (tells the agent so in the manifest)"),
  })
  .strict()
  .refine((b) => !b.via || b.min_version, { message: "via needs min_version: it is the step for devices below min_version", path: ["via"] });

export const rolloutStartBody = rolloutPolicySchema;

export const rolloutActionBody = z.object({ reason: z.string().min(1).max(500).optional() }).strict();
export const emptyBody = z.object({}).strict();

export const revokeBody = z.object({ reason: z.string().min(1).max(500).optional().describe("why (recorded in the audit log)") }).strict();

export const auditQuery = z
  .object({
    limit: queryInt(1, 1000).optional(),
    before: queryInt(1, Number.MAX_SAFE_INTEGER).optional(),
    action: z.string().regex(/^[a-z_.]{1,64}$/).optional(),
    actor: z.string().min(1).max(128).optional(),
    target: z.string().min(1).max(128).optional(),
  })
  .strict();
