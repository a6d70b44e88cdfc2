// Which catalog image a device runs, from the digests that clients we do not control report about their
// running app. Arduino's x-ESP32-sketch-sha256 is esp_partition_get_sha256() of the running partition:
// the image's appended SHA-256 (or, without one, the SHA-256 of the image bytes); x-ESP32-sketch-md5 is
// the MD5 of the image bytes as esp_image_verify() counts them. Neither equals the digest of the .bin file
// when the file carries bytes after the image (a signature block), so every form is accepted. The digests
// of an image never change: each is computed once from the stored bytes and kept.
import { createHash } from "node:crypto";
import type { CatalogImage } from "../../domain/catalog/catalog";
import type { Context } from "../../context";
import { parseAppImage } from "../../esp";

export interface ReportedDigests {
  /** Lower-case hex. */
  sha256?: string | undefined;
  md5?: string | undefined;
}

const hex = (algo: string, data: Buffer) => createHash(algo).update(data).digest("hex");

export class RunningImages {
  private readonly digests = new Map<string, Promise<ReadonlySet<string>>>();

  constructor(private readonly ctx: Pick<Context, "catalog" | "blobs">) {}

  private digestsOf(image: CatalogImage): Promise<ReadonlySet<string>> {
    let known = this.digests.get(image.sha256);
    if (!known) {
      known = this.compute(image);
      this.digests.set(image.sha256, known);
    }
    return known;
  }

  private async compute(image: CatalogImage): Promise<ReadonlySet<string>> {
    const set = new Set([image.sha256, image.md5]);
    const data = await this.ctx.blobs.readVerified(image.sha256);
    if (!data) {
      this.digests.delete(image.sha256); // the stored copy is gone: try again once it is back
      return set;
    }
    const parsed = parseAppImage(data);
    const body = data.subarray(0, parsed.imageLength);
    set.add(hex("sha256", body));
    set.add(hex("md5", body));
    if (parsed.appendedSha256) set.add(parsed.appendedSha256);
    return set;
  }

  static hasAny(r: ReportedDigests): boolean {
    return Boolean(r.sha256 || r.md5);
  }

  /** True when the reported digests name exactly this image's bytes. */
  async runs(image: CatalogImage, reported: ReportedDigests): Promise<boolean> {
    if (!RunningImages.hasAny(reported)) return false;
    const d = await this.digestsOf(image);
    return Boolean((reported.sha256 && d.has(reported.sha256)) || (reported.md5 && d.has(reported.md5)));
  }

  /** The image (of all ever ingested) the device reports running, if we know it. */
  async find(reported: ReportedDigests): Promise<CatalogImage | undefined> {
    if (!RunningImages.hasAny(reported)) return undefined;
    for (const image of this.ctx.catalog.allImages()) {
      if (await this.runs(image, reported)) return image;
    }
    return undefined;
  }
}
