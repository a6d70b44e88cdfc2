// The firmware catalog: every accepted image (by SHA-256) and every file operators gave us (by name), with
// the reason for each refusal. Held in memory for the poll path and persisted so a restart agrees with it.
// Signatures are judged against the signing keys of the running server (OTA_SIGNING_KEYS): at ingestion, and
// again at every start for every stored image, so an image the current keys do not verify is never offered,
// whatever keys admitted it before. That judgement is not stored: start again with the keys that admitted it
// and it is offered again.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Database, FileStatus, FirmwareFileRow, ImageRow } from "../../infra/store/schema";
import { analyzeImage, analyzeSignatures, blockHashes, type Analysis, type ImageFacts, type ImageSignature, type RejectCode, type SigningPolicy } from "./analyze";
import type { BlobStore } from "./blob-store";
import type { NoteChange } from "../../infra/replicas/change-feed";

export interface CatalogImage extends ImageFacts {
  firstIngestedAt: string;
  lastIngestedAt: string;
  blockSize: number;
  blockCount: number;
  /** SHA-256 of every block, 32 bytes each. */
  blockHashes: Buffer;
  blockHashesSha256: string;
}

export interface CatalogFile {
  name: string;
  status: FileStatus;
  sha256: string | null;
  size: number;
  mtimeMs: number;
  reasonCode: string | null;
  reason: string | null;
  source: "folder" | "upload";
  updatedAt: string;
}

export interface FileMeta {
  size: number;
  mtimeMs: number;
  source: "folder" | "upload";
  /** A short file may still be arriving: record it as incomplete rather than refused. */
  mayBeIncomplete?: boolean;
}

export type IngestOutcome =
  | { status: "valid"; image: CatalogImage; changed: boolean }
  | { status: "rejected" | "incomplete"; code: RejectCode; message: string };

const now = () => new Date().toISOString();

function fileFromRow(r: FirmwareFileRow): CatalogFile {
  return {
    name: r.name,
    status: r.status,
    sha256: r.sha256,
    size: r.size,
    mtimeMs: Number(r.mtime_ms),
    reasonCode: r.reason_code,
    reason: r.reason,
    source: r.source,
    updatedAt: r.updated_at,
  };
}

function factsFromRow(r: ImageRow, sig: { signatures: ImageSignature[]; signedBy: ImageSignature | null }): ImageFacts {
  return {
    sha256: r.sha256,
    md5: r.md5,
    size: r.size,
    version: r.version,
    project: r.project,
    chip: r.chip,
    chipId: r.chip_id,
    minChipRev: r.min_chip_rev,
    maxChipRev: r.max_chip_rev,
    secureVersion: r.secure_version,
    idfVersion: r.idf_version,
    appElfSha256: r.app_elf_sha256,
    buildDate: r.build_date,
    buildTime: r.build_time,
    trailingBytes: r.trailing_bytes,
    signatures: sig.signatures,
    signedBy: sig.signedBy,
  };
}

export class Catalog extends EventEmitter {
  private readonly images = new Map<string, CatalogImage>();
  private readonly files = new Map<string, CatalogFile>();
  /** Stored images the current signing keys refuse (found at load), with why: their files are listed as rejected. */
  private readonly refusedAtLoad = new Map<string, { code: RejectCode; message: string }>();
  /** Stored images whose blob was missing or damaged when read (read again when their file is ingested again). */
  private readonly unreadable = new Set<string>();
  /** offered() is on the poll path: computed once per catalog change. */
  private offeredCache: CatalogImage[] | null = null;
  /** Changes are applied one at a time (the folder watcher and uploads both write). */
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly blobs: BlobStore,
    readonly blockSize: number,
    readonly maxImageSize: number,
    private readonly log: Logger,
    /** The keys images must be signed by; null: no signature check. */
    readonly signingPolicy: SigningPolicy = null,
    /** Tells other server processes that the catalog changed (nothing to tell with one process). */
    private readonly noteChange: NoteChange = () => Promise.resolve(),
  ) {
    super();
  }

  /** Judges a file as ingestion does (format, size, and the signing policy). */
  analyze(data: Buffer): Analysis {
    return analyzeImage(data, this.maxImageSize, this.signingPolicy);
  }

  /**
   * Loads the catalog from the database, re-verifying every stored image against its hash. A reader
   * beside a running server (the `ota` command) passes sweep: false: the server's half-written blobs are its own.
   */
  async load(opts: { sweep?: boolean; sweepOlderThanMs?: number } = {}): Promise<void> {
    if (opts.sweep !== false) await this.blobs.sweep(opts.sweepOlderThanMs ?? 0);
    const rows = await this.db.selectFrom("images").selectAll().execute();
    let done = 0;
    for (const row of rows) {
      const image = await this.verifiedImage(row);
      done++;
      if (image) this.images.set(row.sha256, image);
      if (rows.length > 20 && done % 20 === 0) this.log.info({ done, total: rows.length }, "verifying stored images");
    }
    for (const row of await this.db.selectFrom("firmware_files").selectAll().execute()) {
      const f = this.fileAsLoaded(row);
      this.files.set(f.name, f);
    }
    this.log.info({ images: this.images.size, files: this.files.size }, "firmware catalog loaded");
  }

  /**
   * Takes what another server process changed: images it ingested (read from the shared blobs and verified like
   * at start) and the files' rows. Applied after the changes of this process already queued.
   */
  reload(): Promise<void> {
    return this.serially(async () => {
      let changed = false;
      for (const row of await this.db.selectFrom("images").selectAll().execute()) {
        const have = this.images.get(row.sha256);
        if (have) {
          if (have.lastIngestedAt < row.last_ingested_at) {
            this.images.set(row.sha256, { ...have, lastIngestedAt: row.last_ingested_at });
            changed = true;
          }
          continue;
        }
        if (this.refusedAtLoad.has(row.sha256) || this.unreadable.has(row.sha256)) continue;
        const image = await this.verifiedImage(row);
        if (!image) continue;
        this.images.set(row.sha256, image);
        changed = true;
      }
      for (const row of await this.db.selectFrom("firmware_files").selectAll().execute()) {
        const f = this.fileAsLoaded(row);
        const prev = this.files.get(f.name);
        if (prev && prev.updatedAt === f.updatedAt && prev.status === f.status && prev.sha256 === f.sha256) continue;
        this.files.set(f.name, f);
        changed = true;
      }
      if (!changed) return;
      this.offeredCache = null;
      this.emit("changed");
    });
  }

  /** A stored image, read from its blob and checked against its hash and the signing policy; undefined if it fails. */
  private async verifiedImage(row: ImageRow): Promise<CatalogImage | undefined> {
    const data = await this.blobs.readVerified(row.sha256);
    if (!data) {
      this.unreadable.add(row.sha256);
      this.log.error(
        { sha256: row.sha256, version: row.version },
        "stored image is missing or damaged; it will not be served until its file is ingested again",
      );
      return undefined;
    }
    const sig = analyzeSignatures(data, row.size - row.trailing_bytes, this.signingPolicy);
    if (!sig.ok) {
      this.refusedAtLoad.set(row.sha256, { code: sig.code, message: sig.message });
      this.log.warn(
        { sha256: row.sha256, version: row.version, reason: sig.code, detail: sig.message },
        "stored image is not signed by a key in OTA_SIGNING_KEYS; it will not be offered",
      );
      return undefined;
    }
    this.unreadable.delete(row.sha256);
    return this.withBlocks(factsFromRow(row, sig), data, row.first_ingested_at, row.last_ingested_at);
  }

  /** A file's row as listed: refused under today's signing keys, or waiting for a stored copy that is missing. */
  private fileAsLoaded(row: FirmwareFileRow): CatalogFile {
    const f = fileFromRow(row);
    const refused = f.status === "valid" && f.sha256 ? this.refusedAtLoad.get(f.sha256) : undefined;
    if (refused) {
      // Listed as refused, but not recorded so: the row still says what admitted it, for a start with those keys.
      f.status = "rejected";
      f.reasonCode = refused.code;
      f.reason = `accepted before, refused under the current OTA_SIGNING_KEYS: ${refused.message}`;
    } else if (f.status === "valid" && (!f.sha256 || !this.images.has(f.sha256))) {
      f.status = "incomplete";
      f.reasonCode = "blob_missing";
      f.reason = "stored copy missing; waiting for the file to be ingested again";
    }
    return f;
  }

  private withBlocks(facts: ImageFacts, data: Buffer, first: string, last: string): CatalogImage {
    const hashes = blockHashes(data, this.blockSize);
    return {
      ...facts,
      firstIngestedAt: first,
      lastIngestedAt: last,
      blockSize: this.blockSize,
      blockCount: hashes.length / 32,
      blockHashes: hashes,
      blockHashesSha256: createHash("sha256").update(hashes).digest("hex"),
    };
  }

  /**
   * Takes a complete file's bytes: validates, stores by hash and maps the name to it. A name that already
   * maps to the same bytes changes nothing; new bytes under an old name make that image the newest.
   */
  ingest(name: string, data: Buffer, meta: FileMeta): Promise<IngestOutcome> {
    return this.serially(() => this.ingestNow(name, data, meta));
  }

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private async ingestNow(name: string, data: Buffer, meta: FileMeta): Promise<IngestOutcome> {
    const analysis = this.analyze(data);
    if (!analysis.ok) {
      const incomplete = meta.mayBeIncomplete && (analysis.code === "truncated" || analysis.code === "too_short");
      if (incomplete) {
        await this.setFileNow({
          name,
          status: "incomplete",
          sha256: null,
          size: meta.size,
          mtimeMs: meta.mtimeMs,
          reasonCode: analysis.code,
          reason: `looks like a copy still in progress (${meta.size} bytes so far): ${analysis.message}`,
          source: meta.source,
          updatedAt: now(),
        });
        this.log.info({ file: name, size: meta.size }, "firmware file looks incomplete; waiting for the copy to finish");
        return { status: "incomplete", code: analysis.code, message: analysis.message };
      }
      await this.setFileNow({
        name,
        status: "rejected",
        sha256: null,
        size: meta.size,
        mtimeMs: meta.mtimeMs,
        reasonCode: analysis.code,
        reason: analysis.message,
        source: meta.source,
        updatedAt: now(),
      });
      this.log.warn({ file: name, reason: analysis.code, detail: analysis.message }, "firmware file refused");
      return { status: "rejected", code: analysis.code, message: analysis.message };
    }
    const facts = analysis.facts;
    const prev = this.files.get(name);
    const changed = !(prev && prev.status === "valid" && prev.sha256 === facts.sha256);
    await this.blobs.put(facts.sha256, data);
    const at = now();
    let image = this.images.get(facts.sha256);
    if (!image) image = this.withBlocks(facts, data, at, at);
    else if (changed) image = { ...image, lastIngestedAt: at };

    const file: CatalogFile = {
      name,
      status: "valid",
      sha256: facts.sha256,
      size: meta.size,
      mtimeMs: meta.mtimeMs,
      reasonCode: null,
      reason: null,
      source: prev?.status === "valid" && !changed ? prev.source : meta.source,
      updatedAt: changed ? at : (prev?.updatedAt ?? at),
    };
    await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto("images")
        .values({
          sha256: facts.sha256,
          size: facts.size,
          md5: facts.md5,
          version: facts.version,
          project: facts.project,
          chip: facts.chip,
          chip_id: facts.chipId,
          min_chip_rev: facts.minChipRev,
          max_chip_rev: facts.maxChipRev,
          secure_version: facts.secureVersion,
          idf_version: facts.idfVersion,
          app_elf_sha256: facts.appElfSha256,
          build_date: facts.buildDate,
          build_time: facts.buildTime,
          trailing_bytes: facts.trailingBytes,
          first_ingested_at: image.firstIngestedAt,
          last_ingested_at: image.lastIngestedAt,
        })
        .onConflict((oc) => oc.column("sha256").doUpdateSet({ last_ingested_at: image.lastIngestedAt }))
        .execute();
      await this.upsertFile(trx, file);
      await this.noteChange(trx, "catalog");
    });
    this.unreadable.delete(facts.sha256);
    this.images.set(facts.sha256, image);
    this.files.set(name, file);
    this.offeredCache = null;
    if (changed) {
      this.log.info(
        { file: name, sha256: facts.sha256, version: facts.version, project: facts.project, chip: facts.chip, size: facts.size },
        "firmware image indexed",
      );
      this.emit("changed");
    }
    return { status: "valid", image, changed };
  }

  /** Records a file that is not (or not yet) an image: incomplete, rejected, or removed from the folder. */
  setFile(file: CatalogFile): Promise<void> {
    return this.serially(() => this.setFileNow(file));
  }

  private async setFileNow(file: CatalogFile): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await this.upsertFile(trx, file);
      await this.noteChange(trx, "catalog");
    });
    const wasValid = this.files.get(file.name)?.status === "valid";
    this.files.set(file.name, file);
    this.offeredCache = null;
    if (wasValid) this.emit("changed");
  }

  markRemoved(name: string): Promise<void> {
    return this.serially(() => this.markRemovedNow(name));
  }

  private async markRemovedNow(name: string): Promise<void> {
    const prev = this.files.get(name);
    if (!prev || prev.status === "removed") return;
    await this.setFileNow({ ...prev, status: "removed", reasonCode: null, reason: "file deleted from the folder", updatedAt: now() });
    this.log.info({ file: name }, "firmware file removed; its image is no longer offered by default");
  }

  private async upsertFile(db: Kysely<Database>, f: CatalogFile): Promise<void> {
    const row = {
      name: f.name,
      status: f.status,
      sha256: f.sha256,
      size: f.size,
      mtime_ms: Math.floor(f.mtimeMs),
      reason_code: f.reasonCode,
      reason: f.reason,
      source: f.source,
      updated_at: f.updatedAt,
    };
    const { name: _name, ...update } = row;
    await db.insertInto("firmware_files").values(row).onConflict((oc) => oc.column("name").doUpdateSet(update)).execute();
  }

  image(sha256: string): CatalogImage | undefined {
    return this.images.get(sha256);
  }

  file(name: string): CatalogFile | undefined {
    return this.files.get(name);
  }

  /** The image a valid file of this name currently holds. */
  imageByName(name: string): CatalogImage | undefined {
    const f = this.files.get(name);
    return f?.status === "valid" && f.sha256 ? this.images.get(f.sha256) : undefined;
  }

  /** Images that some valid file currently holds, newest ingestion first. */
  offered(): CatalogImage[] {
    if (this.offeredCache) return this.offeredCache;
    const shas = new Set<string>();
    for (const f of this.files.values()) if (f.status === "valid" && f.sha256) shas.add(f.sha256);
    this.offeredCache = [...shas]
      .map((s) => this.images.get(s))
      .filter((i): i is CatalogImage => Boolean(i))
      .sort((a, b) => (a.lastIngestedAt < b.lastIngestedAt ? 1 : a.lastIngestedAt > b.lastIngestedAt ? -1 : 0));
    return this.offeredCache;
  }

  /** The most recently ingested valid image for a chip (any chip when unknown). */
  latest(chip?: string | null): CatalogImage | undefined {
    return this.offered().find((i) => !chip || i.chip === chip);
  }

  allImages(): CatalogImage[] {
    return [...this.images.values()];
  }

  allFiles(): CatalogFile[] {
    return [...this.files.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  namesFor(sha256: string): string[] {
    return this.allFiles()
      .filter((f) => f.status === "valid" && f.sha256 === sha256)
      .map((f) => f.name);
  }
}
