// Operator view of the fleet: devices, their state, tags, group, channel and pin, their report history;
// provisioning and revocation.
import type { RequestHandler } from "express";
import type { Context } from "../../context";
import { provisionDevice } from "../../domain/devices/provisioning";
import { explainOffer, offerNow } from "../../domain/releases/offer";
import { HttpError, notFound } from "../http/errors";
import { parseWith } from "../http/validate";
import { actorOf } from "./actor";
import { deviceListQuery, devicePatchBody, params, provisionBody, reportsQuery, revokeBody } from "./schemas";
import { deviceView, offerView, reportView } from "./views";

function deviceParam(value: unknown): string {
  return parseWith(params.deviceId, { id: value }, "device id").id;
}

export function listDevices(ctx: Pick<Context, "devices">): RequestHandler {
  return async (req, res) => {
    const q = parseWith(deviceListQuery, req.query, "query");
    const limit = q.limit ?? 100;
    const devices = await ctx.devices.list({ ...q, limit });
    const tags = await ctx.devices.tagsOf(devices.map((d) => d.id));
    res.json({
      devices: devices.map((d) => deviceView(d, tags.get(d.id))),
      next: devices.length === limit ? devices[devices.length - 1]!.id : null,
    });
  };
}

export function fleetSummary(ctx: Pick<Context, "devices">): RequestHandler {
  return async (_req, res) => {
    const f = await ctx.devices.summary();
    res.set("Cache-Control", "no-store").json({
      devices: { total: f.total, online: f.online, offline: f.offline, failing: f.failing, revoked: f.revoked },
      versions: f.versions,
      chips: f.chips,
      states: f.states,
    });
  };
}

export function getDevice(ctx: Pick<Context, "devices" | "catalog" | "releases" | "rollouts" | "log">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    await ctx.devices.flush();
    const row = await ctx.devices.get(id);
    if (!row) throw notFound("device_not_found", `no device ${id}`);
    const reports = await ctx.devices.reports(id, { limit: 20 });
    // What a poll would be answered now, from what the registry knows of the device; nothing is recorded.
    const now = await offerNow(ctx, { deviceId: id, chip: row.chip, chipRev: row.chip_rev, version: row.version, row });
    res.json({
      device: { ...deviceView(ctx.devices.view(row), await ctx.devices.tags(id)), offer: offerView(now) },
      reports: reports.map(reportView),
    });
  };
}

export function deviceOffer(ctx: Pick<Context, "devices" | "catalog" | "releases" | "rollouts" | "log">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    await ctx.devices.flush();
    const row = await ctx.devices.get(id);
    if (!row) throw notFound("device_not_found", `no device ${id}`);
    res.set("Cache-Control", "no-store").json(await explainOffer(ctx, row));
  };
}

export function deviceReports(ctx: Pick<Context, "devices">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const q = parseWith(reportsQuery, req.query, "query");
    if (!(await ctx.devices.get(id))) throw notFound("device_not_found", `no device ${id}`);
    const limit = q.limit ?? 100;
    const reports = await ctx.devices.reports(id, { limit, before: q.before });
    res.json({ reports: reports.map(reportView), next: reports.length === limit ? reports[reports.length - 1]!.id : null });
  };
}

/** Group, channel, pin, chip and tags: what targeting and compatibility checks use. */
export function patchDevice(ctx: Pick<Context, "devices" | "releases" | "audit">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const b = parseWith(devicePatchBody, req.body ?? {}, "body");
    if (b.pinned_release && !ctx.releases.get(b.pinned_release)) {
      throw new HttpError(422, "pinned_release_not_found", `pinned_release: no release named ${b.pinned_release}`);
    }
    await ctx.devices.flush();
    const row = await ctx.devices.update(id, {
      group: b.group,
      channel: b.channel,
      pinnedRelease: b.pinned_release,
      chip: b.chip,
      chipRev: b.chip_rev,
    });
    if (!row) throw notFound("device_not_found", `no device ${id}: devices appear when they first poll or are provisioned`);
    const tags = b.add_tags.length || b.remove_tags.length ? await ctx.devices.changeTags(id, b.add_tags, b.remove_tags) : await ctx.devices.tags(id);
    await ctx.audit.record({ ...actorOf(req), action: "device.update", target: id, details: b });
    res.json({ device: deviceView(ctx.devices.view(row), tags) });
  };
}

export function provision(ctx: Pick<Context, "config" | "devices" | "credentials" | "audit">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const body = parseWith(provisionBody, req.body ?? {}, "body");
    const bundle = await provisionDevice(ctx, id, { rotate: body.rotate, serverUrl: body.server_url });
    await ctx.audit.record({ ...actorOf(req), action: "device.provision", target: id, details: { rotate: Boolean(body.rotate), server_url: bundle.serverUrl, key_generation: bundle.keyGeneration } });
    req.log.info({ device: id, rotate: Boolean(body.rotate), operator: req.operator?.subject }, "device provisioned");
    res.set("Cache-Control", "no-store").status(201).json(bundle);
  };
}

/**
 * Revokes a device: its own key is refused from its next request on, and no fleet key may speak for its id, until
 * it is provisioned again (which gives it a new key generation).
 */
export function revokeDevice(ctx: Pick<Context, "devices" | "audit">): RequestHandler {
  return async (req, res) => {
    const id = deviceParam(req.params.id);
    const body = parseWith(revokeBody, req.body ?? {}, "body");
    await ctx.devices.flush(); // a device seen a moment ago is in the database before it is looked up
    const r = await ctx.devices.revoke(id);
    if (!r) throw notFound("device_not_found", `no device ${id}: devices appear when they first poll or are provisioned`);
    await ctx.audit.record({
      ...actorOf(req),
      action: "device.revoke",
      target: id,
      details: { key_generation: r.row.key_generation, already_revoked: r.alreadyRevoked, ...(body.reason ? { reason: body.reason } : {}) },
    });
    req.log.info({ device: id, operator: req.operator?.subject }, "device revoked");
    res.json({ device: deviceView(ctx.devices.view(r.row), await ctx.devices.tags(id)), already_revoked: r.alreadyRevoked });
  };
}
