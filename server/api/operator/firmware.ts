// Operator view of the firmware catalog, and uploads (which take the same path as a dropped file).
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { RequestHandler } from "express";
import multer from "multer";
import { FIRMWARE_NAME_RE } from "../../domain/catalog/analyze";
import type { Context } from "../../context";
import { writeFileDurably } from "../../infra/store/durable-file";
import { readRegularFile } from "../../infra/store/regular-file";
import { badRequest, HttpError, notFound } from "../http/errors";
import { parseWith } from "../http/validate";
import { actorOf } from "./actor";
import { collectBlobsBody, params, uploadFields } from "./schemas";
import { fileView, imageView } from "./views";

export function listImages(ctx: Pick<Context, "catalog">): RequestHandler {
  return (_req, res) => {
    const offered = new Set(ctx.catalog.offered().map((i) => i.sha256));
    const images = ctx.catalog
      .allImages()
      .sort((a, b) => (a.lastIngestedAt < b.lastIngestedAt ? 1 : -1))
      .map((i) => imageView(i, ctx.catalog.namesFor(i.sha256), offered.has(i.sha256)));
    res.json({ images });
  };
}

export function getImage(ctx: Pick<Context, "catalog">): RequestHandler {
  return (req, res) => {
    const sha = String(req.params.sha256).toLowerCase();
    if (!params.sha256.safeParse({ sha256: sha }).success) throw badRequest("invalid_hash", "sha256 must be 64 hex characters");
    const image = ctx.catalog.image(sha);
    if (!image) throw notFound("firmware_not_found", "no image with this SHA-256");
    const offered = ctx.catalog.offered().some((i) => i.sha256 === sha);
    res.json({ image: imageView(image, ctx.catalog.namesFor(sha), offered) });
  };
}

/** DELETE /firmware/:sha256: an image no release uses, its files in the folder, its blob. */
export function deleteImage(ctx: Pick<Context, "catalog" | "releases" | "watcher" | "audit">): RequestHandler {
  return async (req, res) => {
    const sha = parseWith(params.sha256, req.params, "path").sha256.toLowerCase();
    const users = ctx.releases.list().filter((r) => r.imageSha256 === sha).map((r) => r.name);
    if (users.length > 0) {
      throw new HttpError(409, "image_in_use", `releases ${users.join(", ")} use this image: delete them first (a release whose rollout is unfinished cannot be deleted)`);
    }
    const done = await ctx.catalog.deleteImage(sha, ctx.watcher.dir);
    if (!done) throw notFound("firmware_not_found", "no image with this SHA-256");
    await ctx.audit.record({ ...actorOf(req), action: "image.delete", target: sha, details: { files: done.files } });
    req.log.info({ sha256: sha, files: done.files, operator: req.operator?.subject }, "firmware image deleted");
    res.json({ deleted: { sha256: sha, files: done.files } });
  };
}

/** DELETE /firmware/files/:name: a file that holds no image (rejected, incomplete, removed), and its copy in the folder. */
export function forgetFile(ctx: Pick<Context, "catalog" | "watcher" | "audit">): RequestHandler {
  return async (req, res) => {
    const { name } = parseWith(params.file, req.params, "path");
    const outcome = await ctx.catalog.forgetFile(name, ctx.watcher.dir);
    if (outcome === "not_found") throw notFound("file_not_found", `no firmware file named ${name}`);
    if (outcome === "valid") {
      throw new HttpError(409, "file_holds_image", `${name} holds an ingested image: delete the image (DELETE /api/v1/firmware/{sha256}), or remove the file from the folder`);
    }
    await ctx.audit.record({ ...actorOf(req), action: "file.delete", target: name, details: {} });
    res.json({ deleted: { name } });
  };
}

/** POST /firmware/gc: deletes stored blobs that no image names. */
export function collectBlobs(ctx: Pick<Context, "catalog" | "audit">): RequestHandler {
  return async (req, res) => {
    const b = parseWith(collectBlobsBody, req.body ?? {}, "body");
    const r = await ctx.catalog.collectBlobs(b.older_than_minutes * 60_000);
    await ctx.audit.record({ ...actorOf(req), action: "blobs.collect", target: "blobs", details: { ...r, older_than_minutes: b.older_than_minutes } });
    res.json(r);
  };
}

export function listFiles(ctx: Pick<Context, "catalog">, only?: "problems"): RequestHandler {
  return (_req, res) => {
    const files = ctx.catalog
      .allFiles()
      .filter((f) => !only || f.status === "rejected" || f.status === "incomplete")
      .map(fileView);
    res.json({ files });
  };
}

function defaultName(project: string, version: string, sha256: string): string {
  const n = `${project}-${version}.bin`.replace(/[^A-Za-z0-9._+-]/g, "_").replace(/^[^A-Za-z0-9]+/, "");
  return FIRMWARE_NAME_RE.test(n) ? n : `${sha256.slice(0, 16)}.bin`;
}

/** multipart/form-data with one "file" field (and an optional "name"), capped at the OTA slot size. */
export function uploadHandlers(ctx: Pick<Context, "config" | "catalog" | "watcher" | "audit">): RequestHandler[] {
  const tmpDir = path.join(ctx.config.dataDir, "uploads");
  fs.mkdirSync(tmpDir, { recursive: true, mode: 0o700 });
  const max = ctx.catalog.maxImageSize;
  const upload = multer({
    storage: multer.diskStorage({
      destination: tmpDir,
      filename: (_req, _file, cb) => cb(null, `upload-${randomBytes(8).toString("hex")}`),
    }),
    limits: { fileSize: max, files: 1, fields: 4, fieldSize: 1024, parts: 6, headerPairs: 50 },
  }).single("file");

  const receive: RequestHandler = (req, res, next) => {
    if (!req.is("multipart/form-data")) {
      throw new HttpError(415, "unsupported_media_type", "upload the image as multipart/form-data with a field named file");
    }
    upload(req, res, (err: unknown) => {
      if (!err) return next();
      if (err instanceof multer.MulterError) {
        if (err.code === "LIMIT_FILE_SIZE") {
          return next(new HttpError(413, "upload_too_large", `the image is larger than the smallest OTA slot (${max} bytes)`));
        }
        if (err.code === "LIMIT_UNEXPECTED_FILE") {
          return next(badRequest("unexpected_field", `unexpected file field "${err.field ?? ""}": send one field named file`));
        }
        return next(new HttpError(400, "invalid_upload", `upload refused: ${err.message}`));
      }
      // Parser errors (busboy: "Unexpected end of form", "Malformed part header") carry no errno code;
      // file-system errors do, and those are ours (500).
      if (err instanceof Error && !(err as NodeJS.ErrnoException).code) {
        return next(badRequest("invalid_upload", `the multipart body is malformed: ${err.message}`));
      }
      next(err);
    });
  };

  const ingest: RequestHandler = async (req, res) => {
    const file = req.file;
    if (!file) throw badRequest("missing_file", "send the image as a multipart/form-data field named file");
    let read;
    try {
      read = await readRegularFile(file.path, max);
    } finally {
      await fs.promises.rm(file.path, { force: true });
    }
    // multer wrote this file a moment ago in our own folder, within the size limit: anything else is our fault.
    if (read.kind !== "read" || read.data.length !== read.stat.size) throw new Error(`upload's temporary file is not what was received (${read.kind})`);
    const data = read.data;
    const fields = parseWith(uploadFields, req.body ?? {}, "form");
    const analysis = ctx.catalog.analyzeUpload(data);
    if (!analysis.ok) {
      throw new HttpError(422, "invalid_image", analysis.message, {}, { reason: analysis.code });
    }
    const facts = analysis.facts;
    const name = fields.name ?? defaultName(facts.project, facts.version, facts.sha256);
    const target = path.join(ctx.watcher.dir, name);
    const existing = ctx.catalog.file(name);
    // Whatever holds the name counts, a link included (lstat: never followed); it is never written through.
    const onDisk = await fs.promises.lstat(target).then(
      () => true,
      (e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") return false;
        throw e;
      },
    );
    if ((existing && existing.status !== "removed" && existing.sha256 !== facts.sha256) || (onDisk && existing?.sha256 !== facts.sha256)) {
      throw new HttpError(409, "name_taken", `a different file is already named ${name}; choose another name`);
    }
    const outcome = await ctx.catalog.ingest(name, data, { size: data.length, mtimeMs: Date.now(), source: "upload" });
    if (outcome.status !== "valid") throw new HttpError(422, "invalid_image", outcome.message, {}, { reason: outcome.code });
    if (!onDisk) {
      // Into the folder too, so the folder stays the whole truth: atomically (the watcher ignores the dot-named
      // temporary file) and durably (file and folder fsynced) before the answer says it is stored.
      await writeFileDurably(target, data, { mode: 0o644 });
    }
    await ctx.audit.record({
      ...actorOf(req),
      action: "firmware.upload",
      target: name,
      details: { sha256: facts.sha256, version: facts.version, chip: facts.chip, size: facts.size, created: outcome.changed },
    });
    req.log.info({ file: name, sha256: facts.sha256, operator: req.operator?.subject }, "firmware uploaded");
    const offered = ctx.catalog.offered().some((i) => i.sha256 === facts.sha256);
    res.status(outcome.changed ? 201 : 200).json({
      name,
      created: outcome.changed,
      image: imageView(outcome.image, ctx.catalog.namesFor(facts.sha256), offered),
    });
  };
  return [receive, ingest];
}
