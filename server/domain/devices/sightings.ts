// Poll sightings: that a device was seen, and what its poll said about it (chip, version, address, what a
// client we do not control says about itself). Written behind, batched once a second, so the poll path never
// waits on the disk; until then a lookup sees them through overlay().
import type SqliteDatabase from "better-sqlite3";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { preparedQuery } from "../../infra/store/prepared";
import type { Database, DeviceRow } from "../../infra/store/schema";
import { WriteBehind } from "../../infra/store/write-behind";

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

type PendingSighting = Sighting & { at: string };

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
/** 16 parameters a row: well under PostgreSQL's 65535 a statement. */
const SIGHTINGS_PER_STATEMENT = 1000;

function sightingArgs(id: string, s: PendingSighting): Record<"id" | "at" | SightingColumn, unknown> {
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

export class Sightings {
  /** Sightings not yet written, by device id. */
  private readonly pending: WriteBehind<string, PendingSighting>;
  private readonly sightingQuery;

  /** On SQLite: the batch written by the raw statement on Kysely's own connection (see write()). */
  private readonly writeRaw: ((batch: [string, PendingSighting][]) => void) | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    log: Logger,
    flushMs = 1000,
    /** The SQLite connection Kysely runs on (Store.sqlite); without it (PostgreSQL), a batch is a few multi-row statements. */
    sqlite?: SqliteDatabase.Database,
  ) {
    this.pending = new WriteBehind((batch) => this.write(batch), log, "device sightings", flushMs);
    this.sightingQuery = preparedQuery(["id", "at", ...SIGHTING_COLUMNS], (p) => this.upsert([p]));
    if (sqlite) {
      // The same SQL, prepared once and run for the whole batch in one synchronous transaction: a row costs a
      // few microseconds instead of a round through Kysely's driver per row.
      const stmt = sqlite.prepare(this.sightingQuery(sightingArgs("", { at: "" })).sql);
      const run = sqlite.transaction((batch: [string, PendingSighting][]) => {
        for (const [id, s] of batch) stmt.run(...this.sightingQuery(sightingArgs(id, s)).parameters);
      });
      this.writeRaw = (batch) => run(batch);
    }
  }

  /**
   * Sightings as one statement. Each row: seen now; chip, version and address when the poll said them, else what
   * is known. Every column but the times is kept when the poll did not say it (null).
   */
  private upsert(rows: Record<"id" | "at" | SightingColumn, unknown>[]) {
    return this.db
      .insertInto("devices")
      .values(
        rows.map((p) => ({
          id: p.id as never,
          ...(Object.fromEntries(SIGHTING_COLUMNS.map((c) => [c, p[c]])) as Record<SightingColumn, never>),
          first_seen_at: p.at as never,
          last_seen_at: p.at as never,
          created_at: p.at as never,
          key_generation: 0,
        })),
      )
      .onConflict((oc) =>
        oc.column("id").doUpdateSet((eb) => ({
          last_seen_at: eb.ref("excluded.last_seen_at"),
          first_seen_at: eb.fn.coalesce("devices.first_seen_at", eb.ref("excluded.first_seen_at")),
          ...(Object.fromEntries(
            SIGHTING_COLUMNS.map((c) => [c, eb.fn.coalesce(eb.ref(`excluded.${c}`), eb.ref(`devices.${c}`))]),
          ) as Record<SightingColumn, never>),
        })),
      );
  }

  /** Records that a device was seen; written within flushMs. */
  seen(id: string, s: Sighting): void {
    const prev = this.pending.get(id);
    this.pending.set(id, {
      at: new Date().toISOString(),
      chip: s.chip ?? prev?.chip,
      chipRev: s.chipRev ?? prev?.chipRev,
      version: s.version ?? prev?.version,
      ip: s.ip ?? prev?.ip,
      client: mergeClient(prev?.client, s.client),
    });
  }

  /** A report said the device's version: a sighting still waiting to be written is older, so its version must not win. */
  versionReported(id: string): void {
    const pending = this.pending.get(id);
    if (pending) pending.version = undefined;
  }

  /** The row as it will be once the device's pending sighting is written (the row itself when none is pending). */
  overlay(row: DeviceRow): DeviceRow {
    const pending = this.pending.get(row.id);
    if (!pending) return row;
    return {
      ...row,
      last_seen_at: pending.at,
      chip: pending.chip ?? row.chip,
      chip_rev: pending.chipRev ?? row.chip_rev,
      version: pending.version ?? row.version,
      ...clientColumns(pending.client),
    };
  }

  /** Writes pending sightings now. */
  flush(): Promise<void> {
    return this.pending.flush();
  }

  private async write(batch: [string, PendingSighting][]): Promise<void> {
    const writeRaw = this.writeRaw;
    if (writeRaw) {
      // Holding Kysely's connection means none of its transactions is open on it while this one runs.
      await this.db.connection().execute(() => Promise.resolve(writeRaw(batch)));
      return;
    }
    // PostgreSQL: a round trip per statement, so many rows to one statement (in id order, the order in which
    // other writers lock device rows too), a bounded number of rows per statement (at most 65535 parameters).
    const sorted = [...batch].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    await this.db.transaction().execute(async (trx) => {
      for (let i = 0; i < sorted.length; i += SIGHTINGS_PER_STATEMENT) {
        const rows = sorted.slice(i, i + SIGHTINGS_PER_STATEMENT).map(([id, s]) => sightingArgs(id, s));
        await trx.executeQuery(this.upsert(rows).compile());
      }
    });
  }

  /** Stops the timer and writes what is pending. */
  close(): Promise<void> {
    return this.pending.close();
  }
}
