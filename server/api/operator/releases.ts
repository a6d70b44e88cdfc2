// Releases: promote an ingested image to a channel, for a target, with an upgrade path.
import type { RequestHandler } from "express";
import type { CatalogImage } from "../../domain/catalog/catalog";
import type { Context } from "../../context";
import { HttpError, notFound, type CodeWithStatus } from "../http/errors";
import { parseWith } from "../http/validate";
import { compareVersions } from "../../domain/releases/version";
import { actorOf } from "./actor";
import { createReleaseBody, params, releaseListQuery } from "./schemas";
import { releaseView } from "./views";

const unprocessable = (code: CodeWithStatus<422>, message: string) => new HttpError(422, code, message);

function resolveImage(ctx: Pick<Context, "catalog">, ref: string): CatalogImage | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(ref)) return ctx.catalog.image(ref.toLowerCase());
  return ctx.catalog.imageByName(ref);
}

export function listReleases(ctx: Pick<Context, "releases" | "rollouts">): RequestHandler {
  return (req, res) => {
    const q = parseWith(releaseListQuery, req.query, "query");
    res.json({ releases: ctx.releases.list(q).map((r) => releaseView(r, ctx.rollouts.get(r.name))) });
  };
}

export function getRelease(ctx: Pick<Context, "releases" | "rollouts">): RequestHandler {
  return (req, res) => {
    const { name } = parseWith(params.release, req.params, "path");
    const r = ctx.releases.get(name);
    if (!r) throw notFound("release_not_found", `no release named ${name}`);
    res.json({ release: releaseView(r, ctx.rollouts.get(name)) });
  };
}

/** DELETE /releases/:name: a release nothing needs any more, with its finished rollout. */
export function deleteRelease(ctx: Pick<Context, "releases" | "rollouts" | "devices" | "audit">): RequestHandler {
  return async (req, res) => {
    const { name } = parseWith(params.release, req.params, "path");
    if (!ctx.releases.get(name)) throw notFound("release_not_found", `no release named ${name}`);
    const why =
      ctx.rollouts.keepsRelease(name) ??
      ((via) => (via.length ? `releases ${via.join(", ")} lead through it (via): delete them first` : null))(ctx.releases.list().filter((r) => r.via === name).map((r) => r.name)) ??
      ((pinned) => (pinned.length ? `devices ${pinned.join(", ")} are pinned to it: unpin them first` : null))(await ctx.devices.pinnedTo(name, 5));
    if (why) throw new HttpError(409, "release_in_use", `release ${name} cannot be deleted: ${why}`);
    if (!(await ctx.releases.delete(name, (trx) => ctx.rollouts.deleteFor(trx, name)))) throw notFound("release_not_found", `no release named ${name}`);
    await ctx.audit.record({ ...actorOf(req), action: "release.delete", target: name, details: {} });
    req.log.info({ release: name, operator: req.operator?.subject }, "release deleted");
    res.json({ deleted: { name } });
  };
}

export function createRelease(ctx: Pick<Context, "catalog" | "releases" | "audit">): RequestHandler {
  return async (req, res) => {
    const b = parseWith(createReleaseBody, req.body ?? {}, "body");
    if (ctx.releases.get(b.name)) throw new HttpError(409, "release_exists", `a release named ${b.name} already exists; releases cannot change, choose another name`);
    const image = resolveImage(ctx, b.image);
    if (!image) {
      throw unprocessable("image_not_found", `no valid image ${b.image}: give the SHA-256 or file name of an ingested image (GET /api/v1/firmware)`);
    }
    if (b.via) {
      const via = ctx.releases.get(b.via);
      if (!via) throw unprocessable("via_not_found", `via: no release named ${b.via}; create the intermediate release first`);
      if (via.chip !== image.chip) throw unprocessable("via_incompatible", `via: ${b.via} is for ${via.chip}, this image is for ${image.chip}`);
      const c = compareVersions(via.version, b.min_version!);
      if (c === null || c < 0) {
        throw unprocessable("via_below_min_version", `via: ${b.via} runs ${via.version}, below min_version ${b.min_version}: devices would never get past it`);
      }
    }
    const devices = [...new Set(b.targets.devices)];
    const release = await ctx.releases
      .create({
        name: b.name,
        channel: b.channel,
        image,
        notes: b.notes,
        targets: { groups: [...new Set(b.targets.groups)], tags: [...new Set(b.targets.tags)], devices },
        minVersion: b.min_version ?? null,
        via: b.via ?? null,
        allowDowngrade: b.allow_downgrade,
        createdBy: req.operator!.subject,
      })
      .catch((e: unknown) => {
        // Two requests for one name at once: the unique index decides, the loser hears why.
        const code = (e as { code?: string }).code;
        if (code === "SQLITE_CONSTRAINT_UNIQUE" || code === "23505") throw new HttpError(409, "release_exists", `a release named ${b.name} already exists`);
        throw e;
      });
    await ctx.audit.record({
      ...actorOf(req),
      action: "release.create",
      target: release.name,
      details: {
        channel: release.channel,
        image: image.sha256,
        version: image.version,
        targets: { groups: release.targets.groups, tags: release.targets.tags, devices: devices.length },
        min_version: release.minVersion,
        via: release.via,
        allow_downgrade: release.allowDowngrade,
      },
    });
    req.log.info({ release: release.name, channel: release.channel, sha256: image.sha256, operator: req.operator?.subject }, "release created");
    res.status(201).json({ release: releaseView(release, undefined) });
  };
}
