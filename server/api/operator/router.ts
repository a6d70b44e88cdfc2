// The operator API under /api/v1 (bearer tokens with roles: viewer < releaser < admin). Routes come from
// routes.ts; the OpenAPI document describing them is public (it holds no data).
import express, { Router } from "express";
import type { Context } from "../../context";
import type { RecordAuthFailure } from "../http/auth-limiter";
import { packageVersion } from "../../paths";
import { operatorAuth, requireRole } from "./auth";
import { buildOpenApi } from "./openapi";
import { ROUTES } from "./routes";

export function operatorRouter(ctx: Context, recordFailure: RecordAuthFailure): Router {
  const r = Router();
  const doc = JSON.stringify(buildOpenApi(packageVersion()));
  r.get("/openapi.json", (_req, res) => {
    res.type("application/json").set("Cache-Control", "no-cache").send(doc);
  });
  r.use(operatorAuth(ctx, recordFailure));
  const json = express.json({ limit: "64kb", strict: true });
  for (const def of ROUTES) {
    r[def.method](def.path, requireRole(def.role, ctx.audit), ...(def.body ? [json] : []), ...def.handlers(ctx));
  }
  return r;
}
