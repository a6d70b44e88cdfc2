// The audit log, newest first (role admin).
import type { RequestHandler } from "express";
import type { Context } from "../../context";
import { parseWith } from "../http/validate";
import { auditQuery } from "./schemas";

export function listAudit(ctx: Pick<Context, "audit">): RequestHandler {
  return async (req, res) => {
    const q = parseWith(auditQuery, req.query, "query");
    const limit = q.limit ?? 100;
    const entries = await ctx.audit.list({ ...q, limit });
    res.json({ entries, next: entries.length === limit ? entries[entries.length - 1]!.id : null });
  };
}
