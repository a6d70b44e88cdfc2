// POST /firmware/report: a device says where it is in an update. The caller's right to speak for the device is
// checked before anything is stored; the report and its effect on a rollout are stored before it is acknowledged,
// and a report that could not be stored is answered 503 (nothing of it counts); a retried report (same report_id)
// is acknowledged again without being stored twice.
import express, { type RequestHandler } from "express";
import { z } from "zod";
import type { Context } from "../../context";
import { deviceIdSchema } from "../../domain/devices/device-id";
import { REPORT_STATUSES } from "../../domain/devices/reports";
import { HttpError, validationError } from "../http/errors";
import type { DeviceIdentity } from "../http/express-types";
import { assertMaySpeakFor } from "./auth";

/** Status words simple clients send ({"status": "SUCCESS"|"FAILED"}), mapped onto ours. */
const ALIASES: Record<string, (typeof REPORT_STATUSES)[number]> = { success: "confirmed", failed: "failed", failure: "failed" };

const status = z
  .string()
  .max(32)
  .transform((v, c) => {
    const s = v.trim().toLowerCase();
    const mapped = ALIASES[s] ?? (REPORT_STATUSES as readonly string[]).find((x) => x === s);
    if (!mapped) {
      c.addIssue({ code: "custom", message: `must be one of ${REPORT_STATUSES.join(", ")} (or SUCCESS, FAILED)` });
      return z.NEVER;
    }
    return mapped;
  });

const version = z.string().regex(/^[\x20-\x7e]{1,32}$/, "must be 1-32 printable ASCII characters");
const count = z.number().int().min(0).max(0x7fffffff);

const reportSchema = z.object({
  device_id: deviceIdSchema,
  status,
  version: version.nullish(),
  target_version: version.nullish(),
  error: z.string().max(1024).nullish(),
  reason: z
    .string()
    .regex(/^[a-z0-9_]{1,64}$/, "must be a lower-case reason code such as block_hash_mismatch")
    .nullish(),
  bytes: count.nullish(),
  total: count.nullish(),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex characters")
    .transform((s) => s.toLowerCase())
    .nullish(),
  report_id: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    .optional(),
});

const REPORT_BODY_LIMIT = 8 * 1024;

export const reportBodyParser = express.json({ limit: REPORT_BODY_LIMIT, strict: true, type: "application/json" });

/** Validates and stores one report from `caller` (the body as parsed JSON); throws the HttpError to answer. */
async function acceptReport(
  ctx: Pick<Context, "devices">,
  caller: DeviceIdentity,
  body: unknown,
  ip: string | undefined,
): Promise<{ duplicate: boolean; deviceId: string; status: string; reason: string | null | undefined }> {
  const parsed = reportSchema.safeParse(body);
  if (!parsed.success) throw validationError(parsed.error, "body");
  const r = parsed.data;
  await assertMaySpeakFor(ctx, caller, r.device_id);
  let duplicate: boolean;
  try {
    ({ duplicate } = await ctx.devices.recordReport({
      deviceId: r.device_id,
      reportId: r.report_id,
      status: r.status,
      version: r.version,
      targetVersion: r.target_version,
      error: r.error,
      reason: r.reason,
      bytes: r.bytes,
      total: r.total,
      sha256: r.sha256,
      ip,
    }));
  } catch {
    // Logged where the commit failed; nothing of the report was stored.
    throw new HttpError(503, "report_not_stored", "the server could not store this report, so it does not count; send it again later with the same report_id");
  }
  return { duplicate, deviceId: r.device_id, status: r.status, reason: r.reason };
}

export function reportHandler(ctx: Pick<Context, "devices">): RequestHandler {
  return async (req, res) => {
    if (!req.is("application/json")) {
      throw new HttpError(415, "unsupported_media_type", "send the report as Content-Type: application/json");
    }
    const a = await acceptReport(ctx, req.device!, req.body, req.ip);
    req.log.info({ device: a.deviceId, status: a.status, reason: a.reason, duplicate: a.duplicate }, "device report");
    res.status(200).json({ ok: true, duplicate: a.duplicate });
  };
}
