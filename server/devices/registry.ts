// The device registry: who has been seen, what each device runs, its update state and report history.
// Poll sightings are written behind (batched once a second) so the poll path never waits on the disk;
// reports are committed before they are acknowledged, many to one commit: reports that arrive while a
// commit is on its way to the disk go together in the next one (group commit), so durable reports cost one
// disk flush per batch rather than one each.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type SqliteDatabase from "better-sqlite3";
import { preparedQuery } from "../store/prepared";
import { WriteBehind } from "../store/write-behind";
import type { Database, DeviceRow, ReportRow } from "../store/schema";

export interface Sighting {
  chip?: string | undefined;
  /** Full chip revision (major * 100 + minor). */
  chipRev?: number | undefined;
  version?: string | undefined;
  ip?: string | undefined;
  /** What a client we do not control says about itself (Arduino HTTPUpdate headers). */
  client?: ClientInfo | undefined;
}

export interface ClientInfo {
  kind?: string | undefined;
  sketchSize?: number | undefined;
  freeSpace?: number | undefined;
  flashSize?: number | undefined;
  runningSha256?: string | undefined;
  runningMd5?: string | undefined;
  sdkVersion?: string | undefined;
}

/** Later values win, field by field: a request that omits a header does not erase what an earlier one said. */
function mergeClient(prev: ClientInfo | undefined, next: ClientInfo | undefined): ClientInfo | undefined {
  if (!prev) return next;
  if (!next) return prev;
  const merged: ClientInfo = { ...prev };
  for (const [k, v] of Object.entries(next) as [keyof ClientInfo, never][]) if (v !== undefined) merged[k] = v;
  return merged;
}

/** The device columns a client's self-description sets (only the fields it gave). */
function clientColumns(c: ClientInfo | undefined) {
  if (!c) return {};
  const cols = {
    client: c.kind,
    sketch_size: c.sketchSize,
    free_space: c.freeSpace,
    flash_size: c.flashSize,
    running_sha256: c.runningSha256,
    running_md5: c.runningMd5,
    sdk_version: c.sdkVersion,
  };
  return Object.fromEntries(Object.entries(cols).filter(([, v]) => v !== undefined)) as Partial<typeof cols>;
}

/** What an operator may change about a device (undefined: unchanged; null: cleared). */
export interface DevicePatch {
  group?: string | null | undefined;
  channel?: string | undefined;
  pinnedRelease?: string | null | undefined;
  chip?: string | undefined;
  chipRev?: number | null | undefined;
}

export interface DeviceFilter {
  tag?: string | undefined;
  group?: string | undefined;
  channel?: string | undefined;
  /** true: seen within the online window; false: not (or never). */
  online?: boolean | undefined;
}

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

export interface DeviceView extends DeviceRow {
  online: boolean;
  provisioned: boolean;
}

const now = () => new Date().toISOString();

/** The device columns a poll sighting may set. */
const SIGHTING_COLUMNS = [
  "chip",
  "chip_rev",
  "version",
  "last_ip",
  "client",
  "sketch_size",
  "free_space",
  "flash_size",
  "running_sha256",
  "running_md5",
  "sdk_version",
] as const;
type SightingColumn = (typeof SIGHTING_COLUMNS)[number];

function sightingArgs(id: string, s: Sighting & { at: string }): Record<"id" | "at" | SightingColumn, unknown> {
  const c = clientColumns(s.client);
  return {
    id,
    at: s.at,
    chip: s.chip ?? null,
    chip_rev: s.chipRev ?? null,
    version: s.version ?? null,
    last_ip: s.ip ?? null,
    client: c.client ?? null,
    sketch_size: c.sketch_size ?? null,
    free_space: c.free_space ?? null,
    flash_size: c.flash_size ?? null,
    running_sha256: c.running_sha256 ?? null,
    running_md5: c.running_md5 ?? null,
    sdk_version: c.sdk_version ?? null,
  };
}

interface QueuedReport {
  r: ReportInput;
  reportId: string;
  at: string;
  resolve(v: { duplicate: boolean }): void;
  reject(err: unknown): void;
}

/**
 * Emits "report" (a ReportInput) after a new report is committed, so rollouts can count outcomes from every
 * endpoint that records reports.
 */
export class DeviceRegistry extends EventEmitter {
  /** Poll sightings not yet written, by device id. */
  private readonly pending: WriteBehind<string, Sighting & { at: string }>;
  private reportQueue: QueuedReport[] = [];
  private committingReports = false;

  private readonly getQuery;
  private readonly readDevice: ((id: string) => DeviceRow | undefined) | null = null;
  private readonly sightingQuery;
  private readonly insertReportQuery;
  private readonly reportStateQuery;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    private readonly onlineWindowMs: number,
    flushMs = 1000,
    /** A read-only SQLite connection for device lookups (Store.reader); without it, lookups go through Kysely. */
    reader?: SqliteDatabase.Database,
  ) {
    super();
    this.pending = new WriteBehind((batch) => this.writeSightings(batch), log, "device sightings", flushMs);
    this.getQuery = preparedQuery(["id"], (p) => db.selectFrom("devices").selectAll().where("id", "=", p.id));
    if (reader) {
      // The same SQL as getQuery, run on the reader: Kysely's SQLite rows are better-sqlite3's rows.
      const stmt = reader.prepare(this.getQuery({ id: "" }).sql);
      this.readDevice = (id) => stmt.get(...this.getQuery({ id }).parameters) as DeviceRow | undefined;
    }
    // A sighting: seen now; chip, version and address when the poll said them, else what is known.
    // Every column but the times is kept when the poll did not say it (null).
    this.sightingQuery = preparedQuery(["id", "at", ...SIGHTING_COLUMNS], (p) =>
      db
        .insertInto("devices")
        .values({
          id: p.id,
          ...(Object.fromEntries(SIGHTING_COLUMNS.map((c) => [c, p[c]])) as Record<SightingColumn, never>),
          first_seen_at: p.at,
          last_seen_at: p.at,
          created_at: p.at,
          key_generation: 0,
        })
        .onConflict((oc) =>
          oc.column("id").doUpdateSet((eb) => ({
            last_seen_at: eb.ref("excluded.last_seen_at"),
            first_seen_at: eb.fn.coalesce("devices.first_seen_at", eb.ref("excluded.first_seen_at")),
            ...(Object.fromEntries(
              SIGHTING_COLUMNS.map((c) => [c, eb.fn.coalesce(eb.ref(`excluded.${c}`), eb.ref(`devices.${c}`))]),
            ) as Record<SightingColumn, never>),
          })),
        ),
    );
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

  async get(id: string): Promise<DeviceRow | undefined> {
    if (this.readDevice) return this.readDevice(id);
    return (await this.db.executeQuery(this.getQuery({ id }))).rows[0];
  }

  /** Records that a device was seen; written within flushMs. */
  seen(id: string, s: Sighting): void {
    const prev = this.pending.get(id);
    this.pending.set(id, {
      at: now(),
      chip: s.chip ?? prev?.chip,
      chipRev: s.chipRev ?? prev?.chipRev,
      version: s.version ?? prev?.version,
      ip: s.ip ?? prev?.ip,
      client: mergeClient(prev?.client, s.client),
    });
  }

  /** Writes pending sightings now. */
  flush(): Promise<void> {
    return this.pending.flush();
  }

  private async writeSightings(batch: [string, Sighting & { at: string }][]): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      for (const [id, s] of batch) await trx.executeQuery(this.sightingQuery(sightingArgs(id, s)));
    });
  }

  /** Registers a device for its own key; rotate=true invalidates the previous key. Returns the key generation. */
  async provision(id: string, opts: { rotate?: boolean; chip?: string } = {}): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
      const at = now();
      if (!existing) {
        await trx
          .insertInto("devices")
          .values({ id, chip: opts.chip ?? null, provisioned_at: at, key_generation: 0, created_at: at })
          .execute();
        return 0;
      }
      const generation = existing.key_generation + (opts.rotate && existing.provisioned_at ? 1 : 0);
      await trx
        .updateTable("devices")
        .set({
          provisioned_at: existing.provisioned_at && !opts.rotate ? existing.provisioned_at : at,
          key_generation: generation,
          revoked_at: null,
          chip: opts.chip ?? existing.chip,
        })
        .where("id", "=", id)
        .execute();
      return generation;
    });
  }

  async revoke(id: string): Promise<boolean> {
    const r = await this.db.updateTable("devices").set({ revoked_at: now() }).where("id", "=", id).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * Stores a report and applies it to the device's state; resolves once it is on disk. A retry of the same
   * report (same report_id, or for clients without ids the same body within a minute) changes nothing.
   */
  recordReport(r: ReportInput): Promise<{ duplicate: boolean }> {
    const at = now();
    // A poll sighting still waiting to be written is older than this report: its version must not win.
    const pending = this.pending.get(r.deviceId);
    if (pending && r.version) pending.version = undefined;
    const reportId =
      r.reportId ??
      "auto:" +
        createHash("sha256")
          .update(JSON.stringify([r.status, r.version, r.targetVersion, r.error, r.reason, r.bytes, r.total, r.sha256]))
          .update(String(Math.floor(Date.now() / 60000)))
          .digest("hex")
          .slice(0, 32);
    return new Promise((resolve, reject) => {
      this.reportQueue.push({ r, reportId, at, resolve, reject });
      // Wait for the requests already read in this turn of the event loop, then commit them together.
      if (!this.committingReports && this.reportQueue.length === 1) setImmediate(() => void this.commitReports());
    });
  }

  /** Applies an operator's change; returns the updated row, or undefined for an unknown device. */
  async update(id: string, p: DevicePatch): Promise<DeviceRow | undefined> {
    const set: Record<string, unknown> = {};
    if (p.group !== undefined) set.group_name = p.group;
    if (p.channel !== undefined) set.channel = p.channel;
    if (p.pinnedRelease !== undefined) set.pinned_release = p.pinnedRelease;
    if (p.chip !== undefined) set.chip = p.chip;
    if (p.chipRev !== undefined) set.chip_rev = p.chipRev;
    if (Object.keys(set).length > 0) {
      const r = await this.db.updateTable("devices").set(set).where("id", "=", id).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) return undefined;
    }
    return this.get(id);
  }

  async tags(id: string): Promise<string[]> {
    const rows = await this.db.selectFrom("device_tags").select("tag").where("device_id", "=", id).orderBy("tag").execute();
    return rows.map((r) => r.tag);
  }

  /** Tags of many devices at once (one query), for lists. */
  async tagsOf(ids: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(ids.map((id) => [id, []]));
    if (ids.length === 0) return out;
    const rows = await this.db
      .selectFrom("device_tags")
      .select(["device_id", "tag"])
      .where("device_id", "in", ids)
      .orderBy("device_id")
      .orderBy("tag")
      .execute();
    for (const r of rows) out.get(r.device_id)?.push(r.tag);
    return out;
  }

  /** Adds and removes tags (removals first); returns the device's tags afterwards. */
  async changeTags(id: string, add: readonly string[], remove: readonly string[]): Promise<string[]> {
    await this.db.transaction().execute(async (trx) => {
      if (remove.length) await trx.deleteFrom("device_tags").where("device_id", "=", id).where("tag", "in", [...remove]).execute();
      for (const tag of add) {
        await trx.insertInto("device_tags").values({ device_id: id, tag }).onConflict((oc) => oc.columns(["device_id", "tag"]).doNothing()).execute();
      }
    });
    return this.tags(id);
  }

  /** Commits queued reports in one transaction; whatever queued meanwhile goes in the next one. */
  private async commitReports(): Promise<void> {
    if (this.committingReports || this.reportQueue.length === 0) return;
    this.committingReports = true;
    const batch = this.reportQueue;
    this.reportQueue = [];
    try {
      const results = await this.db.transaction().execute(async (trx) => {
        const out: boolean[] = [];
        for (const { r, reportId, at } of batch) {
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
          const duplicate = Number(inserted.numAffectedRows ?? 0n) === 0;
          out.push(duplicate);
          if (duplicate) continue;
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
        }
        return out;
      });
      batch.forEach((q, i) => q.resolve({ duplicate: results[i]! }));
      for (const [i, q] of batch.entries()) if (!results[i]) this.emitReport(q.r);
    } catch (err) {
      this.log.error({ err, reports: batch.length }, "could not store device reports");
      for (const q of batch) q.reject(err);
    } finally {
      this.committingReports = false;
      if (this.reportQueue.length) setImmediate(() => void this.commitReports());
    }
  }

  private emitReport(r: ReportInput): void {
    try {
      this.emit("report", r);
    } catch (err) {
      this.log.error({ err, device: r.deviceId }, "a report listener failed");
    }
  }

  view(row: DeviceRow): DeviceView {
    const pending = this.pending.get(row.id);
    const merged = pending
      ? {
          ...row,
          last_seen_at: pending.at,
          chip: pending.chip ?? row.chip,
          chip_rev: pending.chipRev ?? row.chip_rev,
          version: pending.version ?? row.version,
          ...clientColumns(pending.client),
        }
      : row;
    const seen = merged.last_seen_at ? Date.parse(merged.last_seen_at) : 0;
    return { ...merged, online: Date.now() - seen <= this.onlineWindowMs, provisioned: Boolean(row.provisioned_at) };
  }

  async list(opts: { limit: number; after?: string | undefined } & DeviceFilter): Promise<DeviceView[]> {
    await this.flush();
    let q = this.db.selectFrom("devices").selectAll("devices").orderBy("devices.id").limit(opts.limit);
    if (opts.after) q = q.where("devices.id", ">", opts.after);
    if (opts.tag) {
      const tag = opts.tag;
      q = q.where((eb) =>
        eb.exists(eb.selectFrom("device_tags").select("device_tags.tag").whereRef("device_tags.device_id", "=", "devices.id").where("device_tags.tag", "=", tag)),
      );
    }
    if (opts.group) q = q.where("devices.group_name", "=", opts.group);
    if (opts.channel) q = q.where("devices.channel", "=", opts.channel);
    if (opts.online !== undefined) {
      const since = new Date(Date.now() - this.onlineWindowMs).toISOString();
      q = opts.online
        ? q.where("devices.last_seen_at", ">=", since)
        : q.where((eb) => eb.or([eb("devices.last_seen_at", "is", null), eb("devices.last_seen_at", "<", since)]));
    }
    return (await q.execute()).map((r) => this.view(r));
  }

  async reports(id: string, opts: { limit: number; before?: number | undefined }): Promise<ReportRow[]> {
    let q = this.db
      .selectFrom("reports")
      .selectAll()
      .where("device_id", "=", id)
      .orderBy("id", "desc")
      .limit(opts.limit);
    if (opts.before) q = q.where("id", "<", opts.before);
    return q.execute();
  }

  async close(): Promise<void> {
    await this.pending.close();
    while (this.committingReports || this.reportQueue.length) {
      await this.commitReports();
      await new Promise((r) => setImmediate(r));
    }
  }
}
