// `ota export <dir>`: what the server offers, as plain files for a bucket or CDN, for devices that read a
// static {"version", "url"} manifest from object storage. A static client says neither who it is nor what it
// runs, so it gets what every device is offered:
// - folder mode (no release yet): manifest.json is the newest image (any chip), manifest-<chip>.json the newest
//   for each chip;
// - with releases: for each channel and chip, the newest release for everyone on that channel whose rollout
//   is completed or running at 100 %. The stable channel's are manifest-<chip>.json (and manifest.json, the
//   newest of them); another channel's are channels/<channel>/manifest-<chip>.json and .../manifest.json.
// Binaries are named by SHA-256, so a name never changes meaning and caches can keep them forever; they are
// written (and verified) before any manifest that names them, and every file appears by rename, so a sync
// running at the same time never sees a manifest pointing at a missing or half-written binary. The export
// records what it wrote (.ota-export.json) and removes only those files once they no longer belong: a manifest
// at once, a binary one export later (a device may still be downloading it). Other files in <dir> are kept.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { BlobStore } from "../domain/catalog/blob-store";
import type { CatalogImage } from "../domain/catalog/catalog";
import { assign } from "../domain/releases/assign";
import { chooseImage, type OfferServices } from "../domain/releases/offer";
import type { CompiledRelease } from "../domain/releases/release-store";
import { writeFileDurably } from "../infra/store/durable-file";

export class ExportError extends Error {}

export interface ExportOptions {
  dir: string;
  /** Absolute http(s) URL the binaries will be reachable under; null: URLs relative to the manifest. */
  baseUrl: string | null;
  /** Called once per binary, for progress. */
  onBinary?: (file: string, image: CatalogImage, written: boolean) => void;
}

export interface ExportedManifest {
  /** Relative to the export folder, "/"-separated. */
  file: string;
  /** null: folder mode. */
  channel: string | null;
  chip: string | null;
  /** The release it comes from; null in folder mode. */
  release: string | null;
  image: CatalogImage;
  url: string;
}

export interface ExportResult {
  manifests: ExportedManifest[];
  /** Files of an earlier export that no longer belong, removed (relative paths). */
  removed: string[];
}

/** What an export wrote, so that the next one removes only its own files. */
const RECORD = ".ota-export.json";
const DEFAULT_CHANNEL = "stable";

interface ExportRecord {
  manifests: string[];
  binaries: string[];
  /** Binaries no manifest names any more, kept for one more export. */
  retired: string[];
}

function binaryName(image: CatalogImage): string {
  return `${image.sha256}.bin`;
}

/** The manifest a static client reads: version and url, plus what lets it check the download. */
function staticManifest(m: Omit<ExportedManifest, "url">, url: string) {
  const image = m.image;
  return {
    version: image.version,
    url,
    size: image.size,
    sha256: image.sha256,
    md5: image.md5,
    chip: image.chip,
    project: image.project,
    secure_version: image.secureVersion,
    ...(m.release !== null ? { release: m.release, channel: m.channel } : {}),
  };
}

/** Each file appears whole by rename, and is on disk (file and folder fsynced) before the next is written. */
function writeAtomically(dir: string, name: string, data: Buffer | string): Promise<void> {
  return writeFileDurably(path.join(dir, name), data, { mode: 0o644 });
}

async function alreadyThere(file: string, sha256: string): Promise<boolean> {
  try {
    return createHash("sha256").update(await fs.promises.readFile(file)).digest("hex") === sha256;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

type ExportServices = OfferServices & { blobs: BlobStore };

/** A rollout offers its release to every device (not only to a stage or to members). */
function fleetWide(ctx: ExportServices, r: CompiledRelease): boolean {
  const rollout = ctx.rollouts.get(r.name);
  if (!rollout || rollout.releaseName !== r.name) return false;
  return rollout.state === "completed" || (rollout.state === "running" && rollout.policy.stages[rollout.stage] === 100);
}

type Wanted = Omit<ExportedManifest, "url">;

async function folderOffers(ctx: ExportServices): Promise<Wanted[]> {
  const chips = [...new Set(ctx.catalog.offered().map((i) => i.chip))].sort();
  const wanted: Wanted[] = [];
  for (const chip of [null, ...chips]) {
    const image = await chooseImage(ctx, { deviceId: null, chip, version: null });
    if (image) wanted.push({ file: chip ? `manifest-${chip}.json` : "manifest.json", channel: null, chip, release: null, image });
  }
  return wanted;
}

function releaseOffers(ctx: ExportServices): Wanted[] {
  const all = ctx.releases.list();
  const channels = [...new Set(all.map((r) => r.channel))].sort();
  const wanted: Wanted[] = [];
  for (const channel of channels) {
    const prefix = channel === DEFAULT_CHANNEL ? "" : `channels/${channel}/`;
    const chips = [...new Set(all.filter((r) => r.channel === channel).map((r) => r.chip))].sort();
    let newest: { w: Wanted; id: number } | null = null;
    for (const chip of chips) {
      const a = assign(
        { id: null, chip, chipRev: null, version: null, channel, group: null, tags: null, pinned: null },
        { channel: (c) => ctx.releases.channel(c), get: (n) => ctx.releases.get(n), includes: (r) => fleetWide(ctx, r) },
      );
      const image = a && ctx.catalog.image(a.release.imageSha256);
      if (!a || !image) continue;
      const w: Wanted = { file: `${prefix}manifest-${chip}.json`, channel, chip, release: a.release.name, image };
      wanted.push(w);
      if (!newest || a.release.id > newest.id) newest = { w, id: a.release.id };
    }
    if (newest) wanted.push({ ...newest.w, file: `${prefix}manifest.json`, chip: null });
  }
  return wanted;
}

async function readRecord(dir: string): Promise<ExportRecord> {
  try {
    const r = JSON.parse(await fs.promises.readFile(path.join(dir, RECORD), "utf8")) as Partial<ExportRecord>;
    const names = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string" && safeRelative(x)) : []);
    return { manifests: names(r.manifests), binaries: names(r.binaries), retired: names(r.retired) };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || e instanceof SyntaxError) return { manifests: [], binaries: [], retired: [] };
    throw e;
  }
}

/** A record is read back from a folder others may write to: only names the export itself makes are acted on. */
function safeRelative(name: string): boolean {
  return /^(channels\/[a-z0-9][a-z0-9._-]{0,31}\/)?manifest(-[a-z0-9]+)?\.json$/.test(name) || /^[0-9a-f]{64}\.bin$/.test(name);
}

export async function exportStatic(ctx: ExportServices, opts: ExportOptions): Promise<ExportResult> {
  const releaseMode = ctx.releases.size > 0;
  const wanted = releaseMode ? releaseOffers(ctx) : await folderOffers(ctx);
  if (wanted.length === 0) {
    throw new ExportError(
      releaseMode
        ? "nothing to export: no release is offered to every device of its channel; a static client gets a release for everyone (no group, tag or device targets) once its rollout is completed or running at 100 % (ota rollout advance)"
        : "nothing to export: the server offers no firmware yet; copy an ESP-IDF app .bin into the firmware folder (with the server running) or upload one",
    );
  }
  const manifests = wanted.map((w) => {
    const name = binaryName(w.image);
    const up = "../".repeat(w.file.split("/").length - 1);
    return { ...w, url: opts.baseUrl ? `${opts.baseUrl}/${name}` : `${up}${name}` };
  });

  await fs.promises.mkdir(opts.dir, { recursive: true });
  const before = await readRecord(opts.dir);
  const images = new Map(manifests.map((m) => [m.image.sha256, m.image]));
  for (const image of images.values()) {
    const name = binaryName(image);
    if (await alreadyThere(path.join(opts.dir, name), image.sha256)) {
      opts.onBinary?.(name, image, false);
      continue;
    }
    const data = await ctx.blobs.readVerified(image.sha256);
    if (!data) {
      throw new ExportError(
        `the stored copy of ${image.project} ${image.version} (${image.sha256}) is missing or damaged; copy its .bin into the firmware folder again and retry`,
      );
    }
    await writeAtomically(opts.dir, name, data);
    opts.onBinary?.(name, image, true);
  }
  for (const m of manifests) {
    const target = path.join(opts.dir, ...m.file.split("/"));
    await fs.promises.mkdir(path.dirname(target), { recursive: true });
    await writeAtomically(path.dirname(target), path.basename(target), JSON.stringify(staticManifest(m, m.url), null, 2) + "\n");
  }

  const files = new Set(manifests.map((m) => m.file));
  const binaries = [...images.values()].map(binaryName);
  const current = new Set(binaries);
  const retired = before.binaries.filter((b) => !current.has(b));
  const stale = [...before.manifests.filter((f) => !files.has(f)), ...before.retired.filter((b) => !current.has(b) && !retired.includes(b))];
  // The record is written before anything is removed: a crash in between leaves files to remove, never a
  // removal the record does not know of.
  await writeAtomically(opts.dir, RECORD, JSON.stringify({ manifests: [...files].sort(), binaries: binaries.sort(), retired: retired.sort() }, null, 2) + "\n");
  const removed: string[] = [];
  for (const f of [...new Set(stale)].sort()) {
    const target = path.join(opts.dir, ...f.split("/"));
    await fs.promises.rm(target, { force: true });
    removed.push(f);
    if (f.startsWith("channels/")) {
      // The channel's folder goes with its last manifest; a folder holding anything else stays.
      await fs.promises.rmdir(path.dirname(target)).catch(() => undefined);
      await fs.promises.rmdir(path.join(opts.dir, "channels")).catch(() => undefined);
    }
  }
  return { manifests, removed };
}
