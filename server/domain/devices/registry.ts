// The device registry: who has been seen, what each device runs, its update state and report history. One
// object for the request handlers over three parts, each in its own file:
//   sightings.ts     poll sightings, written behind (batched once a second) so the poll path never waits on the disk
//   reports.ts       reports, committed with their effect (ReportEffect) before they are acknowledged, many to one commit
//   device-store.ts  lookups, lists, provisioning, operator changes and tags
import { EventEmitter } from "node:events";
import type SqliteDatabase from "better-sqlite3";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { MaybePromise } from "../../infra/maybe-promise";
import type { Metrics } from "../../infra/metrics/metrics";
import type { Database, DeviceRow, ReportRow } from "../../infra/store/schema";
import { DeviceStore, type DeviceFilter, type DevicePatch, type DeviceView, type FleetSummary } from "./device-store";
import { ReportLog, type ReportEffect, type ReportInput } from "./reports";
import { Sightings, type Sighting } from "./sightings";

export type { DeviceFilter, DevicePatch, DeviceView, FleetSummary } from "./device-store";
export type { ReportInput } from "./reports";
export type { Sighting } from "./sightings";

/**
 * Emits "changed" (device id) after an operator change that can change what the device is offered or how it is
 * addressed: group, channel, pin, chip, tags, provisioning, revocation.
 */
export class DeviceRegistry extends EventEmitter {
  private readonly sightings: Sightings;
  private readonly reportLog: ReportLog;
  private readonly store: DeviceStore;

  constructor(
    db: Kysely<Database>,
    log: Logger,
    onlineWindowMs: number,
    flushMs = 1000,
    /** On SQLite, its raw connections (Store.sqlite and Store.reader); without them, everything goes through Kysely. */
    sqlite?: { writer: SqliteDatabase.Database; reader: SqliteDatabase.Database },
    /** Counts the reports stored. */
    reportsCounted?: Metrics["reports"],
  ) {
    super();
    this.sightings = new Sightings(db, log, flushMs, sqlite?.writer);
    this.reportLog = new ReportLog(db, log, this.sightings, reportsCounted);
    this.store = new DeviceStore(db, this.sightings, onlineWindowMs, sqlite?.reader);
  }

  // ---- sightings ----------------------------------------------------------------------------------------------

  /** Records that a device was seen; written within flushMs. */
  seen(id: string, s: Sighting): void {
    this.sightings.seen(id, s);
  }

  /** Writes pending sightings now. */
  flush(): Promise<void> {
    return this.sightings.flush();
  }

  // ---- reports ------------------------------------------------------------------------------------------------

  /**
   * Stores a report, applies it to the device's state and writes its effect; resolves once all of that is on
   * disk, and rejects when it could not be stored (then nothing of it was). A retry of the same report (same
   * report_id, or for clients without ids the same body within a minute) is not stored again.
   */
  recordReport(r: ReportInput): Promise<{ duplicate: boolean }> {
    return this.reportLog.record(r);
  }

  reports(id: string, opts: { limit: number; before?: number | undefined }): Promise<ReportRow[]> {
    return this.reportLog.history(id, opts);
  }

  /** What reports do beyond the device's own row (moving it along in a rollout), written in the reports' transaction. */
  setReportEffect(effect: ReportEffect): void {
    this.reportLog.setEffect(effect);
  }

  // ---- lookups and provisioning -----------------------------------------------------------------------------------

  /** The row, without a promise where the store can read it at once (SQLite): the per-request lookup. */
  lookup(id: string): MaybePromise<DeviceRow | undefined> {
    return this.store.lookup(id);
  }

  get(id: string): Promise<DeviceRow | undefined> {
    return this.store.get(id);
  }

  view(row: DeviceRow): DeviceView {
    return this.store.view(row);
  }

  list(opts: { limit: number; after?: string | undefined } & DeviceFilter): Promise<DeviceView[]> {
    return this.store.list(opts);
  }

  /** How many devices are online (seen within the online window), counted through the last-seen index. */
  countOnline(): Promise<number> {
    return this.store.countOnline();
  }

  /** Fleet-wide counts: online, failing, by version, chip and state. */
  summary(): Promise<FleetSummary> {
    return this.store.summary();
  }

  /**
   * Registers a device for its own key; rotate=true invalidates the previous key, and so does provisioning a revoked
   * device. Returns the key generation.
   */
  async provision(id: string, opts: { rotate?: boolean; chip?: string } = {}): Promise<number> {
    const generation = await this.store.provision(id, opts);
    this.emit("changed", id);
    return generation;
  }

  /** Ends the device's key and bars fleet keys from its id until it is provisioned again; undefined for an unknown device. */
  async revoke(id: string): Promise<{ row: DeviceRow; alreadyRevoked: boolean } | undefined> {
    const r = await this.store.revoke(id);
    if (r && !r.alreadyRevoked) this.emit("changed", id);
    return r;
  }

  /** Applies an operator's change; returns the updated row, or undefined for an unknown device. */
  async update(id: string, p: DevicePatch): Promise<DeviceRow | undefined> {
    const row = await this.store.update(id, p);
    if (row) this.emit("changed", id);
    return row;
  }

  /** Up to `limit` devices pinned to a release (what keeps it from being deleted). */
  pinnedTo(release: string, limit: number): Promise<string[]> {
    return this.store.pinnedTo(release, limit);
  }

  tags(id: string): Promise<string[]> {
    return this.store.tags(id);
  }

  /** Tags of many devices at once (one query), for lists. */
  tagsOf(ids: string[]): Promise<Map<string, string[]>> {
    return this.store.tagsOf(ids);
  }

  /** Adds and removes tags (removals first); returns the device's tags afterwards. */
  async changeTags(id: string, add: readonly string[], remove: readonly string[]): Promise<string[]> {
    const tags = await this.store.changeTags(id, add, remove);
    if (add.length > 0 || remove.length > 0) this.emit("changed", id);
    return tags;
  }

  /** Writes pending sightings, then commits every queued report. */
  async close(): Promise<void> {
    await this.sightings.close();
    await this.reportLog.close();
  }
}
