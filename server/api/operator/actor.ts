// The operator behind a request, as the audit log and the rollout manager record it.
import type { Request } from "express";
import type { Actor } from "../../domain/rollouts/rollout-manager";

export function actorOf(req: Request): Actor {
  const op = req.operator;
  return {
    actor: op?.subject ?? "unknown",
    role: op?.role ?? null,
    tokenId: op?.jti ?? null,
    source: "api",
    ip: req.ip ?? null,
    requestId: typeof req.id === "string" || typeof req.id === "number" ? String(req.id) : null,
  };
}
