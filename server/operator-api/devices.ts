// Operator view of the fleet: devices, their state and their report history; provisioning.
import type { RequestHandler } from "express";
import { z } from "zod";
import type { Context } from "../context";
import { deviceIdSchema } from "../devices/device-id";
import { provisionDevice } from "../devices/provisioning";
import { notFound } from "../http/errors";
import { parseWith, queryInt } from "../http/validate";
import { deviceView, reportView } from "./views";

const listQuery = z.object({ limit: queryInt(1, 1000).optional(), after: deviceIdSchema.optional() });
const reportsQuery = z.object({ limit: queryInt(1, 1000).optional(), before: queryInt(1, Number.MAX_SAFE_INTEGER).optional() });
const provisionBody = z.object({ rotate: z.boolean().optional(), server_url: z.url({ protocol: /^https?$/ }).optional() }).strict();

function deviceParam(value: unknown): string {
  return parseWith(deviceIdSchema, value, "device id");
}

export function listDevices(ctx: Context): RequestHandler {
  return async (req, res) => {
    const q = parseWith(listQuery, req.query, "query");
    const limit = q.limit ?? 100;
    const devices = await ctx.devices.list({ limit, after: q.after });
    res.json({
      devices: devices.map(deviceView),
      next: devices.length === limit ? devices[devices.length - 1]!.id : null,
    });
  };
}

export function getDevice(ctx: Context): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    await ctx.devices.flush();
    const row = await ctx.devices.get(id);
    if (!row) throw notFound("device_not_found", `no device ${id}`);
    const reports = await ctx.devices.reports(id, { limit: 20 });
    res.json({ device: deviceView(ctx.devices.view(row)), reports: reports.map(reportView) });
  };
}

export function deviceReports(ctx: Context): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const q = parseWith(reportsQuery, req.query, "query");
    if (!(await ctx.devices.get(id))) throw notFound("device_not_found", `no device ${id}`);
    const limit = q.limit ?? 100;
    const reports = await ctx.devices.reports(id, { limit, before: q.before });
    res.json({ reports: reports.map(reportView), next: reports.length === limit ? reports[reports.length - 1]!.id : null });
  };
}

export function provision(ctx: Context): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const body = parseWith(provisionBody, req.body ?? {}, "body");
    const bundle = await provisionDevice(ctx, id, { rotate: body.rotate, serverUrl: body.server_url });
    req.log?.info({ device: id, rotate: Boolean(body.rotate), operator: req.operator?.subject }, "device provisioned");
    res.set("Cache-Control", "no-store").status(201).json(bundle);
  };
}
