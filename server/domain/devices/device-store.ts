// Devices as the operator and the device API look them up: one device or a filtered list (with the sightings
// not yet written laid over), registration of a device for its own key, operator changes, and tags.
import type SqliteDatabase from "better-sqlite3";
import type { Kysely } from "kysely";
import type { MaybePromise } from "../../infra/maybe-promise";
import { preparedQuery } from "../../infra/store/prepared";
import type { Database, DeviceRow } from "../../infra/store/schema";
import type { Sightings } from "./sightings";

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

export interface DeviceView extends DeviceRow {
  online: boolean;
  provisioned: boolean;
}

const now = () => new Date().toISOString();

export class DeviceStore {
  private readonly getQuery;
  private readonly readDevice: ((id: string) => DeviceRow | undefined) | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    /** Laid over the rows read, and written before a list is read. */
    private readonly sightings: Pick<Sightings, "overlay" | "flush">,
    private readonly onlineWindowMs: number,
    /** A read-only SQLite connection for device lookups (Store.reader); without it, lookups go through Kysely. */
    reader?: SqliteDatabase.Database,
  ) {
    this.getQuery = preparedQuery(["id"], (p) => db.selectFrom("devices").selectAll().where("id", "=", p.id));
    if (reader) {
      // The same SQL as getQuery, run on the reader: Kysely's SQLite rows are better-sqlite3's rows.
      const stmt = reader.prepare(this.getQuery({ id: "" }).sql);
      this.readDevice = (id) => stmt.get(...this.getQuery({ id }).parameters) as DeviceRow | undefined;
    }
  }

  /** The row, synchronously when there is a reader (every request's lookup): no promise to wait for. */
  lookup(id: string): MaybePromise<DeviceRow | undefined> {
    return this.readDevice ? this.readDevice(id) : this.get(id);
  }

  async get(id: string): Promise<DeviceRow | undefined> {
    if (this.readDevice) return this.readDevice(id);
    return (await this.db.executeQuery(this.getQuery({ id }))).rows[0];
  }

  view(row: DeviceRow): DeviceView {
    const merged = this.sightings.overlay(row);
    const seen = merged.last_seen_at ? Date.parse(merged.last_seen_at) : 0;
    return { ...merged, online: Date.now() - seen <= this.onlineWindowMs, provisioned: Boolean(row.provisioned_at) };
  }

  async list(opts: { limit: number; after?: string | undefined } & DeviceFilter): Promise<DeviceView[]> {
    await this.sightings.flush();
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

  /** Registers a device for its own key; rotate=true (or a revoked device) gets a new key generation. Returns the generation. */
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
      // A revoked device gets a new generation too: its revoked key must not come back with it.
      const newKey = Boolean(opts.rotate || existing.revoked_at);
      const generation = existing.key_generation + (newKey && existing.provisioned_at ? 1 : 0);
      await trx
        .updateTable("devices")
        .set({
          provisioned_at: existing.provisioned_at && !newKey ? existing.provisioned_at : at,
          key_generation: generation,
          revoked_at: null,
          chip: opts.chip ?? existing.chip,
        })
        .where("id", "=", id)
        .execute();
      return generation;
    });
  }

  /**
   * Revokes a device: its own key is refused from its next request on, and no fleet key may speak for its id, until
   * it is provisioned again (with a new key generation). Undefined for an unknown device; a second revocation keeps
   * the first time.
   */
  async revoke(id: string): Promise<{ row: DeviceRow; alreadyRevoked: boolean } | undefined> {
    const r = await this.db.updateTable("devices").set({ revoked_at: now() }).where("id", "=", id).where("revoked_at", "is", null).executeTakeFirst();
    const row = await this.db.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
    return row && { row, alreadyRevoked: Number(r.numUpdatedRows) === 0 };
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
}
