// The device registry: who has been seen, what each device runs, its update state and report history.
// Poll sightings are written behind (batched once a second) so the poll path never waits on the disk;
// reports are committed before they are acknowledged.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
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

/**
 * Emits "report" (a ReportInput) after a new report is committed, so rollouts can count outcomes from every
 * endpoint that records reports.
 */
export class DeviceRegistry extends EventEmitter {
  private pending = new Map<string, Sighting & { at: string }>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    private readonly onlineWindowMs: number,
    private readonly flushMs = 1000,
  ) {
    super();
  }

  async get(id: string): Promise<DeviceRow | undefined> {
    return this.db.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
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
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  /** Writes pending sightings in one transaction. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pending.size === 0) return;
      const batch = [...this.pending];
      this.pending.clear();
      try {
        await this.db.transaction().execute(async (trx) => {
          for (const [id, s] of batch) {
            await trx
              .insertInto("devices")
              .values({
                id,
                chip: s.chip ?? null,
                chip_rev: s.chipRev ?? null,
                version: s.version ?? null,
                last_ip: s.ip ?? null,
                first_seen_at: s.at,
                last_seen_at: s.at,
                created_at: s.at,
                key_generation: 0,
                ...clientColumns(s.client),
              })
              .onConflict((oc) =>
                oc.column("id").doUpdateSet((eb) => ({
                  last_seen_at: s.at,
                  first_seen_at: eb.fn.coalesce("devices.first_seen_at", eb.val(s.at)),
                  chip: s.chip ?? eb.ref("devices.chip"),
                  chip_rev: s.chipRev ?? eb.ref("devices.chip_rev"),
                  version: s.version ?? eb.ref("devices.version"),
                  last_ip: s.ip ?? eb.ref("devices.last_ip"),
                  ...clientColumns(s.client),
                })),
              )
              .execute();
          }
        });
      } catch (err) {
        this.log.error({ err, devices: batch.length }, "could not record device sightings; will retry");
        for (const [id, s] of batch) if (!this.pending.has(id)) this.pending.set(id, s);
      }
    });
    return this.flushing;
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
   * Stores a report and applies it to the device's state in one transaction. A retry of the same report
   * (same report_id, or for clients without ids the same body within a minute) changes nothing.
   */
  async recordReport(r: ReportInput): Promise<{ duplicate: boolean }> {
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
    const outcome = await this.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto("reports")
        .values({
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
        })
        .onConflict((oc) => oc.columns(["device_id", "report_id"]).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0) return { duplicate: true };
      const state = {
        state: r.status,
        state_detail: r.error ?? r.reason ?? null,
        target_version: r.targetVersion ?? null,
        progress_bytes: r.bytes ?? null,
        progress_total: r.total ?? null,
        last_report_at: at,
        last_seen_at: at,
      };
      await trx
        .insertInto("devices")
        .values({
          id: r.deviceId,
          ...state,
          version: r.version ?? null,
          last_ip: r.ip ?? null,
          first_seen_at: at,
          created_at: at,
          key_generation: 0,
        })
        .onConflict((oc) =>
          oc.column("id").doUpdateSet((eb) => ({
            ...state,
            version: r.version ?? eb.ref("devices.version"),
            last_ip: r.ip ?? eb.ref("devices.last_ip"),
            first_seen_at: eb.fn.coalesce("devices.first_seen_at", eb.val(at)),
          })),
        )
        .execute();
      return { duplicate: false };
    });
    if (!outcome.duplicate) this.emit("report", r);
    return outcome;
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
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
  }
}
