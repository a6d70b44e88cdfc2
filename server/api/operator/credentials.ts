// Operator tokens and fleet keys (role admin): list them (never a secret or a hash) and revoke them. A revocation
// is written before it is acknowledged and holds from the credential's next request on, in every process: each
// request reads the credential's record from the database.
import type { RequestHandler } from "express";
import type { Context } from "../../context";
import { notFound } from "../http/errors";
import { parseWith } from "../http/validate";
import { actorOf } from "./actor";
import { params, revokeBody } from "./schemas";
import { apiKeyView, tokenView } from "./views";

export function listTokens(ctx: Pick<Context, "credentials">): RequestHandler {
  return async (_req, res) => {
    const tokens = await ctx.credentials.listOperatorTokens();
    res.set("Cache-Control", "no-store").json({ tokens: tokens.map((t) => tokenView(t)) });
  };
}

export function revokeToken(ctx: Pick<Context, "credentials" | "audit">): RequestHandler {
  return async (req, res) => {
    const { id } = parseWith(params.tokenId, req.params, "token id");
    const body = parseWith(revokeBody, req.body ?? {}, "body");
    const r = await ctx.credentials.revokeOperatorToken(id);
    if (!r) throw notFound("token_not_found", `no operator token has id ${id}; ota token list shows them`);
    await ctx.audit.record({
      ...actorOf(req),
      action: "token.revoke",
      target: id,
      details: { subject: r.info.subject, role: r.info.role, already_revoked: r.alreadyRevoked, ...(body.reason ? { reason: body.reason } : {}) },
    });
    req.log.info({ token_id: id, operator: req.operator?.subject }, "operator token revoked");
    res.json({ token: tokenView(r.info), already_revoked: r.alreadyRevoked });
  };
}

export function listApiKeys(ctx: Pick<Context, "credentials">): RequestHandler {
  return async (_req, res) => {
    const keys = await ctx.credentials.listFleetKeys();
    res.set("Cache-Control", "no-store").json({ apikeys: keys.map(apiKeyView) });
  };
}

export function revokeApiKey(ctx: Pick<Context, "credentials" | "audit">): RequestHandler {
  return async (req, res) => {
    const { id } = parseWith(params.apiKeyId, req.params, "fleet key id");
    const body = parseWith(revokeBody, req.body ?? {}, "body");
    const r = await ctx.credentials.revokeFleetKey(id);
    if (!r) throw notFound("apikey_not_found", `no fleet key has id ${id}; ota apikey list shows them`);
    await ctx.audit.record({
      ...actorOf(req),
      action: "apikey.revoke",
      target: id,
      details: { label: r.info.label, already_revoked: r.alreadyRevoked, ...(body.reason ? { reason: body.reason } : {}) },
    });
    req.log.info({ key_id: id, operator: req.operator?.subject }, "fleet key revoked");
    res.json({ apikey: apiKeyView(r.info), already_revoked: r.alreadyRevoked });
  };
}
