// Rollouts: start one for a release, watch it, pause, resume, advance or abort it.
import type { RequestHandler } from "express";
import type { Context } from "../../context";
import { ERROR_CODES, HttpError, notFound } from "../http/errors";
import { parseWith } from "../http/validate";
import { RolloutError, type Rollout } from "../../domain/rollouts/rollout-manager";
import { actorOf } from "./actor";
import { emptyBody, params, rolloutActionBody, rolloutStartBody } from "./schemas";
import { rolloutView } from "./views";

function asHttp(e: unknown): never {
  if (e instanceof RolloutError) {
    throw new HttpError(ERROR_CODES[e.code].status, e.code, e.message);
  }
  throw e;
}

function find(ctx: Pick<Context, "rollouts">, ref: unknown): Rollout {
  const { ref: r } = parseWith(params.rollout, { ref }, "path");
  const rollout = ctx.rollouts.get(r);
  if (!rollout) throw notFound("rollout_not_found", `no rollout ${r} (give a rollout id or the name of its release)`);
  return rollout;
}

export function startRollout(ctx: Pick<Context, "releases" | "rollouts">): RequestHandler {
  return async (req, res) => {
    const { name } = parseWith(params.release, req.params, "path");
    const policy = parseWith(rolloutStartBody, req.body ?? {}, "body");
    if (!ctx.releases.get(name)) throw notFound("release_not_found", `no release named ${name}`);
    const rollout = await ctx.rollouts.start(name, policy, actorOf(req)).catch(asHttp);
    res.status(201).json({ rollout: rolloutView(rollout) });
  };
}

export function listRollouts(ctx: Pick<Context, "rollouts">): RequestHandler {
  return (_req, res) => {
    res.json({ rollouts: ctx.rollouts.list().map(rolloutView) });
  };
}

export function getRollout(ctx: Pick<Context, "rollouts">): RequestHandler {
  return async (req, res) => {
    const rollout = find(ctx, req.params.ref);
    const s = await ctx.rollouts.summary(rollout.id);
    res.set("Cache-Control", "no-store").json({ rollout: rolloutView(s.rollout), devices: s.devices, stages: s.stages, window: s.window });
  };
}

type Action = "pause" | "resume" | "abort" | "advance";

export function rolloutAction(ctx: Pick<Context, "rollouts">, action: Action): RequestHandler {
  return async (req, res) => {
    const rollout = find(ctx, req.params.ref);
    const by = actorOf(req);
    let next: Rollout;
    if (action === "pause" || action === "abort") {
      const { reason } = parseWith(rolloutActionBody, req.body ?? {}, "body");
      next = await ctx.rollouts[action](rollout.id, by, reason).catch(asHttp);
    } else {
      parseWith(emptyBody, req.body ?? {}, "body");
      next = await ctx.rollouts[action](rollout.id, by).catch(asHttp);
    }
    req.log.info({ rollout: rollout.id, action, state: next.state, operator: req.operator?.subject }, `rollout ${action}`);
    res.json({ rollout: rolloutView(next) });
  };
}
