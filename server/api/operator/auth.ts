// Operator API authentication: "Authorization: Bearer <JWT>" with a role. Device and fleet keys are
// refused with 403, so a device credential never reaches an operator endpoint. A wrong, expired or revoked
// token is counted as an authentication failure the moment it is found (server/api/http/auth-limiter.ts); a
// request without any is a challenge and is not.
import type { RequestHandler } from "express";
import type { AuditLog } from "../../domain/audit/audit-log";
import type { RecordAuthFailure } from "../http/auth-limiter";
import { looksLikeJwt, roleAtLeast } from "../../infra/auth/credentials";
import { DEVICE_KEY_PREFIX, FLEET_KEY_PREFIX } from "../../infra/auth/keys";
import type { Context } from "../../context";
import { forbidden, HttpError } from "../http/errors";
import type { Role } from "../../infra/store/schema";
import { actorOf } from "./actor";

const WWW = { "WWW-Authenticate": 'Bearer realm="esp32-ota operator API"' };

export function operatorAuth(ctx: Pick<Context, "credentials">, recordFailure: RecordAuthFailure): RequestHandler {
  return async (req, _res, next) => {
    const header = req.get("authorization");
    const apiKey = req.get("x-api-key");
    if (!header) {
      if (apiKey && (apiKey.startsWith(FLEET_KEY_PREFIX) || apiKey.startsWith(DEVICE_KEY_PREFIX))) {
        throw forbidden("wrong_credential_kind", "device and fleet API keys cannot be used on the operator API; send an operator token as Authorization: Bearer <token>");
      }
      // Nothing presented, nothing guessed: a challenge, not counted as a failure.
      throw new HttpError(401, "missing_credential", "send an operator token as Authorization: Bearer <token>", WWW);
    }
    /** A wrong credential: counted now, and answered 429 instead once this address is over its limit. */
    const failed = (e: HttpError) => recordFailure(req, e);
    const m = /^Bearer\s+(\S{1,4096})$/i.exec(header);
    if (!m) throw failed(new HttpError(401, "invalid_credential", "the Authorization header must be: Bearer <operator token>", WWW));
    const token = m[1]!;
    if (token.startsWith(FLEET_KEY_PREFIX) || token.startsWith(DEVICE_KEY_PREFIX)) {
      throw forbidden("wrong_credential_kind", "device and fleet API keys cannot be used on the operator API; use an operator token");
    }
    if (!looksLikeJwt(token)) throw failed(new HttpError(401, "invalid_token", "the bearer token is not a valid operator token", WWW));
    const check = await ctx.credentials.verifyOperatorToken(token);
    if (!check.ok) throw failed(new HttpError(401, check.code, check.message, WWW));
    req.operator = check.identity;
    next();
  };
}

/** Refuses a token below `role`; a refused change (anything but GET) is written to the audit log. */
export function requireRole(role: Role, audit?: AuditLog): RequestHandler {
  return async (req, _res, next) => {
    const have = req.operator?.role;
    if (!have || !roleAtLeast(have, role)) {
      if (audit && req.method !== "GET" && req.method !== "HEAD") {
        const path = req.originalUrl.split("?")[0]!.slice(0, 200);
        await audit.record({ ...actorOf(req), action: "denied", target: path, outcome: "denied", details: { method: req.method, needs: role } });
      }
      throw forbidden("insufficient_role", `this action needs the ${role} role; your token has ${have ?? "none"}`);
    }
    next();
  };
}
