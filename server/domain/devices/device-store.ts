// Devices as the operator and the device API look them up: one device or a filtered list (with the sightings
// not yet written laid over), registration of a device for its own key, operator changes, and tags.
import type SqliteDatabase from "better-sqlite3";
import { sql, type Expression, type ExpressionBuilder, type Kysely, type SqlBool } from "kysely";
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
  /** The version it runs, exactly. */
  version?: string | undefined;
  /** Its update state (the status of its latest report), exactly. */
  state?: string | undefined;
  /** The start of its id. */
  search?: string | undefined;
  /** true: seen within the online window; false: not (or never). */
  online?: boolean | undefined;
}

/** Latest report statuses that count a device as failing. */
const FAILING_STATES = ["failed", "rolled_back", "rejected"] as const;

export interface FleetSummary {
  total: number;
  online: number;
  offline: number;
  failing: number;
  revoked: number;
  versions: { value: string | null; devices: number }[];
  chips: { value: string | null; devices: number }[];
  states: { value: string | null; devices: number }[];
}

export interface DeviceView extends DeviceRow {
  online: boolean;
  provisioned: boolean;
}

const now = () => new Date().toISOString();

/** Up to this many devices on the asked side of online, a list finds them through the last-seen index. */
const FEW_SEEN = 5000;

export class DeviceStore {
  private readonly getQuery;
  private readonly readDevice: ((id: string) => DeviceRow | undefined) | null = null;
  private readonly onlineQuery;
  private readonly readOnline: ((since: string) => number) | null = null;

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
    // A range of the last-seen index, counted from the index alone (covering: no row is read).
    this.onlineQuery = preparedQuery(["since"], (p) =>
      db
        .selectFrom("devices")
        .select((eb) => eb.fn.countAll().as("n"))
        .where("last_seen_at", ">=", p.since),
    );
    if (reader) {
      const stmt = reader.prepare(this.onlineQuery({ since: "" }).sql);
      this.readOnline = (since) => Number((stmt.get(...this.onlineQuery({ since }).parameters) as { n: number | bigint }).n);
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

  /**
   * A page of devices in id order. Every filter is answered through an index, so a page costs about its own
   * rows whatever the fleet's size: tag, group, channel, version and state each through an index ordered by
   * (value, id); search is a range of the id itself. Online and offline are a time range, in no id order: when
   * few devices (at most FEW_SEEN) are on the asked side, they are found through the last-seen index and read by
   * id; otherwise they are common enough that walking the fleet in id order fills a page soon.
   */
  async list(opts: { limit: number; after?: string | undefined } & DeviceFilter): Promise<DeviceView[]> {
    await this.sightings.flush();
    const since = new Date(Date.now() - this.onlineWindowMs).toISOString();
    let among: string[] | null = null;
    if (opts.online !== undefined) {
      among = await this.fewSeen(opts.online, since);
      if (among !== null) among = among.filter((id) => !opts.after || id > opts.after);
    }
    const rows: DeviceRow[] = [];
    if (among === null) {
      rows.push(...(await this.page(opts, since, null)));
    } else {
      // Few enough to name: a page of them, in id order, with the other filters applied.
      for (let i = 0; i < among.length && rows.length < opts.limit; i += 500) {
        rows.push(...(await this.page({ ...opts, limit: opts.limit - rows.length }, since, among.slice(i, i + 500))));
      }
    }
    return rows.map((r) => this.view(r));
  }

  /**
   * How many devices were seen within the online window: one count over a range of the last-seen index, after the
   * pending sightings are written. With a million devices online this reads the million index entries (about 25 ms
   * on SQLite); the metrics ask for it at most once per 5 s.
   */
  async countOnline(): Promise<number> {
    await this.sightings.flush();
    const since = new Date(Date.now() - this.onlineWindowMs).toISOString();
    if (this.readOnline) return this.readOnline(since);
    const row = (await this.db.executeQuery(this.onlineQuery({ since }))).rows[0];
    return Number(row?.n ?? 0);
  }

  /**
   * Counts over the whole fleet: how many devices, online, failing (latest report failed, rolled back or rejected),
   * and by version, chip and state (null: not known yet). Revoked devices are counted apart and left out of the rest.
   */
  async summary(): Promise<FleetSummary> {
    await this.sightings.flush();
    const since = new Date(Date.now() - this.onlineWindowMs).toISOString();
    const live = this.db.selectFrom("devices").where("revoked_at", "is", null);
    const by = async (column: "version" | "chip" | "state") => {
      const rows = await live
        .select([column, (eb) => eb.fn.countAll().as("n")])
        .groupBy(column)
        .execute();
      return rows
        .map((r) => ({ value: r[column], devices: Number(r.n) }))
        .sort((a, b) => b.devices - a.devices || String(a.value).localeCompare(String(b.value)));
    };
    const count = async (q: typeof live) => Number((await q.select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
    const [total, online, failing, revoked, versions, chips, states] = await Promise.all([
      count(live),
      count(live.where("last_seen_at", ">=", since)),
      count(live.where("state", "in", FAILING_STATES)),
      count(this.db.selectFrom("devices").where("revoked_at", "is not", null)),
      by("version"),
      by("chip"),
      by("state"),
    ]);
    return { total, online, offline: total - online, failing, revoked, versions, chips, states };
  }

  /** One page with every filter, in id order (`ids`: only among these). */
  private page(opts: { limit: number; after?: string | undefined } & DeviceFilter, since: string, ids: string[] | null): Promise<DeviceRow[]> {
    const conds: Expression<SqlBool>[] = [];
    const eq = (column: string, value: string | undefined) => {
      if (value !== undefined) conds.push(sql<SqlBool>`${sql.ref(column)} = ${value}`);
    };
    eq("devices.group_name", opts.group);
    eq("devices.channel", opts.channel);
    eq("devices.version", opts.version);
    eq("devices.state", opts.state);
    if (opts.search !== undefined) {
      // Ids that start with it: a range of the primary key (ids are ASCII, so U+FFFF sorts after every one).
      conds.push(sql<SqlBool>`${sql.ref("devices.id")} >= ${opts.search}`, sql<SqlBool>`${sql.ref("devices.id")} < ${opts.search + "\uffff"}`);
    }
    if (opts.online !== undefined) {
      conds.push(
        opts.online
          ? sql<SqlBool>`devices.last_seen_at >= ${since}`
          : sql<SqlBool>`(devices.last_seen_at is null or devices.last_seen_at < ${since})`,
      );
    }
    if (ids !== null) conds.push(sql<SqlBool>`devices.id in (${sql.join(ids)})`);
    // With a tag, the tag index leads (rows in device id order, from the first after `after`) and each row's
    // device is read by key.
    const key = opts.tag !== undefined ? "device_tags.device_id" : "devices.id";
    if (opts.after) conds.push(sql<SqlBool>`${sql.ref(key)} > ${opts.after}`);
    const filtered = <Q extends { where(e: Expression<SqlBool>): Q }>(q: Q): Q => conds.reduce((acc, c) => acc.where(c), q);
    if (opts.tag !== undefined) {
      const tagged = this.db
        .selectFrom("device_tags")
        .innerJoin("devices", "devices.id", "device_tags.device_id")
        .selectAll("devices")
        .where("device_tags.tag", "=", opts.tag)
        .orderBy("device_tags.device_id");
      return filtered(tagged).limit(opts.limit).execute();
    }
    return filtered(this.db.selectFrom("devices").selectAll("devices").orderBy("devices.id")).limit(opts.limit).execute();
  }

  /**
   * The ids (sorted) of the devices seen since `since` (online) or not (offline), when there are at most FEW_SEEN
   * of them: read through the last-seen index, at most FEW_SEEN + 1 entries. Null when there are more.
   */
  private async fewSeen(online: boolean, since: string): Promise<string[] | null> {
    // Ordered by the indexed column, so that the index is what the database reads.
    const probe = (where: (eb: ExpressionBuilder<Database, "devices">) => Expression<SqlBool>, limit: number) =>
      this.db.selectFrom("devices").select("id").where(where).orderBy("last_seen_at").limit(limit).execute();
    const ids = online
      ? await probe((eb) => eb("last_seen_at", ">=", since), FEW_SEEN + 1)
      : [...(await probe((eb) => eb("last_seen_at", "is", null), FEW_SEEN + 1)), ...(await probe((eb) => eb("last_seen_at", "<", since), FEW_SEEN + 1))];
    if (ids.length > FEW_SEEN) return null;
    return ids.map((r) => r.id).sort();
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

  /** Up to `limit` devices pinned to a release (a scan of the registry: asked only when a release is deleted). */
  async pinnedTo(release: string, limit: number): Promise<string[]> {
    const rows = await this.db.selectFrom("devices").select("id").where("pinned_release", "=", release).orderBy("id").limit(limit).execute();
    return rows.map((r) => r.id);
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
