// GET /metrics: the server's metrics in Prometheus text format (docs/operations.md "Metrics"), for an operator
// token of any role (viewer and up) or for the metrics token (OTA_METRICS_TOKEN), which reads this and nothing
// else. Device and fleet keys are refused (403) as on the operator API, and so is a request without a token
// (401); a wrong token counts as a failed authentication like any other.
import { createHash } from "node:crypto";
import { Router, type RequestHandler } from "express";
import type { Context } from "../../context";
import type { RecordAuthFailure } from "../http/auth-limiter";
import { safeEqual } from "../../infra/auth/keys";
import { operatorAuth, requireRole } from "./auth";

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/** Lets a request that carries the metrics token straight to the metrics; any other goes on to operator authentication. */
function metricsToken(token: string | null): RequestHandler {
  const expected = token === null ? null : digest(token);
  return (req, _res, next) => {
    const m = expected && /^Bearer\s+(\S{1,4096})$/i.exec(req.get("authorization") ?? "");
    // Compared as digests: the time taken tells nothing of the token, its length included.
    if (m && safeEqual(digest(m[1]!), expected)) return next();
    next("route");
  };
}

export function metricsRouter(ctx: Pick<Context, "config" | "credentials" | "metrics">, recordFailure: RecordAuthFailure): Router {
  const registry = ctx.metrics.registry;
  const send: RequestHandler = async (_req, res) => {
    const text = await registry.metrics();
    res.set({ "Content-Type": registry.contentType, "Cache-Control": "no-store" }).send(text);
  };
  const r = Router();
  r.get("/metrics", metricsToken(ctx.config.metricsToken), send);
  r.get("/metrics", operatorAuth(ctx, recordFailure), requireRole("viewer"), send);
  return r;
}
