// Device reports and their history. A report is committed before it is acknowledged, many to one commit:
// reports that arrive while a commit is on its way to the disk go together in the next one (group commit), so
// durable reports cost one disk flush per batch rather than one each. What a report does beyond the device's
// own row (moving the device along in a rollout: ReportEffect) is written in the same transaction, so a report
// and its effect are stored together or not at all. Once committed, each new report is counted in the metrics
// (ota_reports_total by status and reason); a retry is not counted again.
import { createHash } from "node:crypto";
import type { Kysely, Transaction } from "kysely";
import type { Logger } from "pino";
import { reportReasonLabel, type Metrics } from "../../infra/metrics/metrics";
import { preparedQuery } from "../../infra/store/prepared";
import type { Database, ReportRow } from "../../infra/store/schema";
import type { Sightings } from "./sightings";

/** What a device may report (its update state is the status of its latest report). */
export const REPORT_STATUSES = [
  "idle",
  "checking",
  "up_to_date",
  "downloading",
  "verifying",
  "writing",
  "rebooting",
  "confirming",
  "confirmed",
  "rolled_back",
  "failed",
  "rejected",
] as const;

export interface ReportInput {
  deviceId: string;
  reportId?: string | undefined;
  status: string;
  version?: string | null | undefined;
  targetVersion?: string | null | undefined;
  error?: string | null | undefined;
  reason?: string | null | undefined;
  bytes?: number | null | undefined;
  total?: number | null | undefined;
  sha256?: string | null | undefined;
  ip?: string | undefined;
}

/** A report as stored, for what it does beyond the device's own row. */
export interface StoredReport {
  deviceId: string;
  status: string;
  version: string | null;
  targetVersion: string | null;
  sha256: string | null;
  receivedAt: string;
  /**
   * The device sent again a report already stored, and it is the device's latest: its effect is written again,
   * which changes nothing when it was written with the report (a report stored before effects were written with
   * it may have lost its effect).
   */
  resent: boolean;
}

/**
 * What reports do beyond the device's own row. `write` runs inside the transaction that stores them, with the
 * new reports and the resent latest ones in the order received; it writes their effect through `trx` and returns
 * what to do once the transaction has committed. The reports are acknowledged after the promise that returns
 * settles.
 */
export interface ReportEffect {
  write(trx: Transaction<Database>, reports: readonly StoredReport[]): Promise<() => Promise<void>>;
}

interface QueuedReport {
  r: ReportInput;
  reportId: string;
  at: string;
  resolve(v: { duplicate: boolean }): void;
  reject(err: unknown): void;
}

export class ReportLog {
  private queue: QueuedReport[] = [];
  private effect: ReportEffect | null = null;
  private committing = false;
  private readonly insertReportQuery;
  private readonly reportStateQuery;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    /** Told when a report says a device's version, which is newer than any sighting still to be written. */
    private readonly sightings: Pick<Sightings, "versionReported">,
    /** Counts each new report once it is committed. */
    private readonly counted?: Metrics["reports"],
  ) {
    const reportFields = ["device_id", "report_id", "status", "version", "target_version", "error", "reason", "bytes", "total", "sha256", "remote_ip", "received_at"] as const;
    this.insertReportQuery = preparedQuery(reportFields, (p) =>
      db
        .insertInto("reports")
        .values({ ...p, bytes: p.bytes as never, total: p.total as never })
        .onConflict((oc) => oc.columns(["device_id", "report_id"]).doNothing()),
    );
    // A report moves the device's state; version and address only when the report says them.
    this.reportStateQuery = preparedQuery(
      ["id", "state", "state_detail", "target_version", "progress_bytes", "progress_total", "at", "version", "ip"],
      (p) =>
        db
          .insertInto("devices")
          .values({
            id: p.id,
            state: p.state,
            state_detail: p.state_detail,
            target_version: p.target_version,
            progress_bytes: p.progress_bytes as never,
            progress_total: p.progress_total as never,
            last_report_at: p.at,
            last_seen_at: p.at,
            version: p.version,
            last_ip: p.ip,
            first_seen_at: p.at,
            created_at: p.at,
            key_generation: 0,
          })
          .onConflict((oc) =>
            oc.column("id").doUpdateSet((eb) => ({
              state: eb.ref("excluded.state"),
              state_detail: eb.ref("excluded.state_detail"),
              target_version: eb.ref("excluded.target_version"),
              progress_bytes: eb.ref("excluded.progress_bytes"),
              progress_total: eb.ref("excluded.progress_total"),
              last_report_at: eb.ref("excluded.last_report_at"),
              last_seen_at: eb.ref("excluded.last_seen_at"),
              version: eb.fn.coalesce(eb.ref("excluded.version"), eb.ref("devices.version")),
              last_ip: eb.fn.coalesce(eb.ref("excluded.last_ip"), eb.ref("devices.last_ip")),
              first_seen_at: eb.fn.coalesce("devices.first_seen_at", eb.ref("excluded.first_seen_at")),
            })),
          ),
    );
  }

  /** Sets what reports do beyond the device's own row, written with them (one effect; a later call replaces it). */
  setEffect(effect: ReportEffect): void {
    this.effect = effect;
  }

  /**
   * Stores a report, applies it to the device's state and writes its effect; resolves once all of that is on
   * disk. A retry of the same report (same report_id, or for clients without ids the same body within a minute)
   * is not stored again; when it is the device's latest report its effect is written again, which changes
   * nothing when the effect was already there.
   */
  record(r: ReportInput): Promise<{ duplicate: boolean }> {
    const at = new Date().toISOString();
    if (r.version) this.sightings.versionReported(r.deviceId);
    const reportId =
      r.reportId ??
      "auto:" +
        createHash("sha256")
          .update(JSON.stringify([r.status, r.version, r.targetVersion, r.error, r.reason, r.bytes, r.total, r.sha256]))
          .update(String(Math.floor(Date.now() / 60000)))
          .digest("hex")
          .slice(0, 32);
    return new Promise((resolve, reject) => {
      this.queue.push({ r, reportId, at, resolve, reject });
      // Wait for the requests already read in this turn of the event loop, then commit them together.
      if (!this.committing && this.queue.length === 1) setImmediate(() => void this.commit());
    });
  }

  /** A device's reports, newest first. */
  async history(id: string, opts: { limit: number; before?: number | undefined }): Promise<ReportRow[]> {
    let q = this.db
      .selectFrom("reports")
      .selectAll()
      .where("device_id", "=", id)
      .orderBy("id", "desc")
      .limit(opts.limit);
    if (opts.before) q = q.where("id", "<", opts.before);
    return q.execute();
  }

  /**
   * Commits queued reports, with their effect, in one transaction; whatever queued meanwhile goes in the next
   * one. The effect's follow-up (a rollout's own decision) is taken before the reports are acknowledged.
   */
  private async commit(): Promise<void> {
    if (this.committing || this.queue.length === 0) return;
    this.committing = true;
    const batch = this.queue;
    this.queue = [];
    /** For each report of the batch: whether it was stored before (a retry). */
    let results: boolean[];
    let committed: (() => Promise<void>) | null = null;
    try {
      results = await this.db.transaction().execute(async (trx) => {
        const out: boolean[] = [];
        const effective: StoredReport[] = [];
        for (const { r, reportId, at } of batch) {
          const stored = await this.store(trx, r, reportId, at);
          out.push(stored === "duplicate" || stored.resent);
          if (stored !== "duplicate") effective.push(stored);
        }
        if (this.effect && effective.length) committed = await this.effect.write(trx, effective);
        return out;
      });
    } catch (err) {
      this.log.error({ err, reports: batch.length }, "could not store device reports");
      for (const q of batch) q.reject(err);
      return;
    } finally {
      this.committing = false;
      if (this.queue.length) setImmediate(() => void this.commit());
    }
    if (this.counted) {
      batch.forEach((q, i) => {
        if (!results[i]) this.counted!.inc({ status: q.r.status, reason: reportReasonLabel(q.r.reason) });
      });
    }
    // Stored: whatever follows is acknowledged anyway (the effect is on disk; its follow-up can be taken again).
    try {
      await (committed as (() => Promise<void>) | null)?.();
    } catch (err) {
      this.log.error({ err, reports: batch.length }, "what follows from stored reports failed");
    }
    batch.forEach((q, i) => q.resolve({ duplicate: results[i]! }));
  }

  /**
   * Inserts one report and applies it to the device's row. A new report is returned as stored; a retry is
   * returned as stored (resent) when it is the device's latest report, since its effect may be missing, else
   * "duplicate".
   */
  private async store(trx: Transaction<Database>, r: ReportInput, reportId: string, at: string): Promise<StoredReport | "duplicate"> {
    const inserted = await trx.executeQuery(
      this.insertReportQuery({
        device_id: r.deviceId,
        report_id: reportId,
        status: r.status,
        version: r.version ?? null,
        target_version: r.targetVersion ?? null,
        error: r.error ?? null,
        reason: r.reason ?? null,
        bytes: r.bytes ?? null,
        total: r.total ?? null,
        sha256: r.sha256 ?? null,
        remote_ip: r.ip ?? null,
        received_at: at,
      }),
    );
    if (Number(inserted.numAffectedRows ?? 0n) === 0) {
      // Stored before: what counts is the stored report, and only when nothing newer came from the device.
      const prior = await trx
        .selectFrom("reports as r")
        .select(["r.status", "r.version", "r.target_version", "r.sha256", "r.received_at"])
        .select((eb) =>
          eb.exists(eb.selectFrom("reports as n").select("n.id").whereRef("n.device_id", "=", "r.device_id").whereRef("n.id", ">", "r.id")).as("superseded"),
        )
        .where("r.device_id", "=", r.deviceId)
        .where("r.report_id", "=", reportId)
        .executeTakeFirst();
      if (!prior || Number(prior.superseded)) return "duplicate";
      return {
        deviceId: r.deviceId,
        status: prior.status,
        version: prior.version,
        targetVersion: prior.target_version,
        sha256: prior.sha256,
        receivedAt: prior.received_at,
        resent: true,
      };
    }
    await trx.executeQuery(
      this.reportStateQuery({
        id: r.deviceId,
        state: r.status,
        state_detail: r.error ?? r.reason ?? null,
        target_version: r.targetVersion ?? null,
        progress_bytes: r.bytes ?? null,
        progress_total: r.total ?? null,
        at,
        version: r.version ?? null,
        ip: r.ip ?? null,
      }),
    );
    return {
      deviceId: r.deviceId,
      status: r.status,
      version: r.version ?? null,
      targetVersion: r.targetVersion ?? null,
      sha256: r.sha256 ?? null,
      receivedAt: at,
      resent: false,
    };
  }

  /** Commits every queued report. */
  async close(): Promise<void> {
    while (this.committing || this.queue.length) {
      await this.commit();
      await new Promise((r) => setImmediate(r));
    }
  }
}
