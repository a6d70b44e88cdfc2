// `ota export <dir>`: what the server offers, as plain files for a bucket or CDN, for devices that read a
// static {"version", "url"} manifest from object storage. manifest.json is the offer for a device that does
// not say its chip (as GET /firmware/manifest without a chip); manifest-<chip>.json the offer for each chip.
// Binaries are named by SHA-256, so a name never changes meaning and caches can keep them forever; they are
// written (and verified) before any manifest that names them, and every file appears by rename, so a sync
// running at the same time never sees a manifest pointing at a missing or half-written binary.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { BlobStore } from "../domain/catalog/blob-store";
import type { CatalogImage } from "../domain/catalog/catalog";
import { chooseImage, type OfferServices } from "../domain/releases/offer";
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
  file: string;
  chip: string | null;
  image: CatalogImage;
  url: string;
}

function binaryName(image: CatalogImage): string {
  return `${image.sha256}.bin`;
}

/** The manifest a static client reads: version and url, plus what lets it check the download. */
function staticManifest(image: CatalogImage, url: string) {
  return {
    version: image.version,
    url,
    size: image.size,
    sha256: image.sha256,
    md5: image.md5,
    chip: image.chip,
    project: image.project,
    secure_version: image.secureVersion,
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

export async function exportStatic(ctx: OfferServices & { blobs: BlobStore }, opts: ExportOptions): Promise<ExportedManifest[]> {
  const chips = [...new Set(ctx.catalog.offered().map((i) => i.chip))].sort();
  const wanted: { file: string; chip: string | null }[] = [
    { file: "manifest.json", chip: null },
    ...chips.map((chip) => ({ file: `manifest-${chip}.json`, chip })),
  ];
  const manifests: ExportedManifest[] = [];
  for (const w of wanted) {
    const image = await chooseImage(ctx, { deviceId: null, chip: w.chip, version: null });
    if (!image) continue;
    const name = binaryName(image);
    manifests.push({ ...w, image, url: opts.baseUrl ? `${opts.baseUrl}/${name}` : name });
  }
  if (manifests.length === 0) {
    throw new ExportError(
      "nothing to export: the server offers no firmware yet; copy an ESP-IDF app .bin into the firmware folder (with the server running) or upload one",
    );
  }

  await fs.promises.mkdir(opts.dir, { recursive: true });
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
    await writeAtomically(opts.dir, m.file, JSON.stringify(staticManifest(m.image, m.url), null, 2) + "\n");
  }
  return manifests;
}
