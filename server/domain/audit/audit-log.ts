// The audit log: every operator action (who, what, when, from where, with what outcome), and every action the
// server takes on its own (a rollout pausing itself). Append-only; written before the action is acknowledged.
import type { Kysely } from "kysely";
import type { AuditRow, Database } from "../../infra/store/schema";

export type AuditSource = "api" | "cli" | "system";
export type AuditOutcome = "ok" | "denied";

export interface AuditEntry {
  actor: string;
  role?: string | null | undefined;
  tokenId?: string | null | undefined;
  source: AuditSource;
  ip?: string | null | undefined;
  requestId?: string | null | undefined;
  action: string;
  target?: string | null | undefined;
  outcome?: AuditOutcome | undefined;
  /** What was asked for: validated request fields. Never a secret. */
  details?: Record<string, unknown> | undefined;
}

/** A stored entry, with its details parsed. */
export type AuditRecord = Omit<AuditRow, "details"> & { details: Record<string, unknown> };

export class AuditLog {
  constructor(private readonly db: Kysely<Database>) {}

  async record(e: AuditEntry): Promise<void> {
    await this.db
      .insertInto("audit_log")
      .values({
        at: new Date().toISOString(),
        actor: e.actor,
        role: e.role ?? null,
        token_id: e.tokenId ?? null,
        source: e.source,
        ip: e.ip ?? null,
        request_id: e.requestId ?? null,
        action: e.action,
        target: e.target ?? null,
        outcome: e.outcome ?? "ok",
        details: JSON.stringify(e.details ?? {}),
      })
      .execute();
  }

  /** Newest first. */
  async list(opts: { limit: number; before?: number | undefined; action?: string | undefined; actor?: string | undefined; target?: string | undefined }): Promise<AuditRecord[]> {
    let q = this.db.selectFrom("audit_log").selectAll().orderBy("id", "desc").limit(opts.limit);
    if (opts.before) q = q.where("id", "<", opts.before);
    if (opts.action) q = q.where("action", "=", opts.action);
    if (opts.actor) q = q.where("actor", "=", opts.actor);
    if (opts.target) q = q.where("target", "=", opts.target);
    return (await q.execute()).map((r) => ({ ...r, details: JSON.parse(r.details) as Record<string, unknown> }));
  }
}
