// Firmware bytes over HTTP the way every ESP32 client needs them: always Content-Length (DeviceScript and
// Arduino cannot read chunked bodies), ETag = the SHA-256, one Range per request (206 + Content-Range),
// 416 for anything else, HEAD, If-None-Match and If-Range. Full answers carry x-MD5 (checked by Arduino's
// Update) and x-SHA256 (checked by newer arduino-esp32 HTTPUpdate releases).
import fs from "node:fs";
import type { ServerResponse } from "node:http";
import type { Request, RequestHandler, Response } from "express";
import type { Logger } from "pino";
import parseRange from "range-parser";
import type { CatalogImage } from "../../domain/catalog/catalog";
import type { Context } from "../../context";
import { FIRMWARE_NAME_RE, FIRMWARE_NAME_RULE } from "../../domain/catalog/analyze";
import { badRequest, HttpError, notFound, sendError } from "../http/errors";
import type { DownloadMetrics } from "../../infra/metrics/metrics";
import { optionalChip } from "./manifest";
import { chooseImage } from "../../domain/releases/offer";

export interface ByteSource {
  /** What is served, as the metrics count it: an image, or an image's list of block hashes. */
  kind: "image" | "block_hashes";
  size: number;
  etag: string;
  filename: string;
  md5?: string;
  sha256?: string;
  /** Whole body in memory, or a file to stream from. */
  buffer?: Buffer;
  file?: string;
}

function etagListMatches(header: string, etag: string, weakOk: boolean): boolean {
  return header.split(",").some((t) => {
    const v = t.trim();
    return v === "*" || v === etag || (weakOk && v === `W/${etag}`);
  });
}

/** The request headers that decide which bytes a download answers with. */
export interface ByteRequest {
  method: string;
  range: string | undefined;
  ifRange: string | undefined;
  ifNoneMatch: string | undefined;
}

/** Decides which bytes to send: null for all of them, or one satisfiable range. Throws 416. */
function selectRange(req: ByteRequest, src: ByteSource): { start: number; end: number } | null {
  const header = req.range;
  if (!header) return null;
  const ifRange = req.ifRange;
  // If-Range with anything but our exact (strong) ETag means "the copy I have is stale: send it all".
  if (ifRange !== undefined && ifRange.trim() !== src.etag) return null;
  if (!/^\s*bytes\s*=/i.test(header)) return null; // unknown unit: ignore the header (RFC 9110)
  const parsed = parseRange(src.size, header, { combine: false });
  if (parsed === -1 || parsed === -2 || parsed.length !== 1) {
    const why =
      parsed === -2
        ? "the Range header is malformed"
        : parsed === -1
          ? `no part of the requested range lies within the ${src.size}-byte file`
          : "only one range per request is supported";
    throw new HttpError(416, "range_not_satisfiable", why, { "Content-Range": `bytes */${src.size}` });
  }
  const r = parsed[0]!;
  return { start: r.start, end: r.end };
}

/**
 * Bytes handed to the connection at a time. A device on a slow link holds at most about one chunk of the
 * server's memory (its encrypted copy waiting for the socket), so 1,000 slow downloads cost tens of MiB, not
 * the image size each; large enough that a fast client is not slowed by the per-write cost.
 */
const CHUNK = 32 * 1024;

/**
 * Writes buf[start, stop) in CHUNK slices, waiting for the socket to drain: no copy, bounded memory. `wrote` is
 * told each slice's length as it is handed to the connection.
 */
function sendSlices(res: ServerResponse, buf: Buffer, start: number, stop: number, wrote: (n: number) => void): void {
  let pos = start;
  const pump = () => {
    while (pos < stop) {
      if (res.destroyed) return;
      const next = Math.min(pos + CHUNK, stop);
      const more = res.write(buf.subarray(pos, next));
      wrote(next - pos);
      pos = next;
      if (!more && pos < stop) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

/** What a download answers: status, headers and which bytes. */
interface BytePlan {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  start: number;
  end: number;
  /** false for HEAD and 304 */
  body: boolean;
}

function baseHeaders(src: ByteSource): Record<string, string> {
  return {
    "Accept-Ranges": "bytes",
    ETag: src.etag,
    "Cache-Control": "private, max-age=0, must-revalidate",
    "Content-Disposition": `attachment; filename="${src.filename}"`,
    "Content-Type": "application/octet-stream",
  };
}

/** Decides the answer to a download from its headers. Throws 416. */
function planBytes(req: ByteRequest, src: ByteSource): BytePlan {
  const headers = baseHeaders(src);
  if (req.ifNoneMatch && etagListMatches(req.ifNoneMatch, src.etag, true)) {
    return { status: 304, headers, start: 0, end: -1, body: false };
  }
  const range = selectRange(req, src);
  const start = range ? range.start : 0;
  const end = range ? range.end : src.size - 1;
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${src.size}`;
  else {
    if (src.md5) headers["x-MD5"] = src.md5;
    if (src.sha256) headers["x-SHA256"] = src.sha256;
  }
  headers["Content-Length"] = String(end - start + 1);
  return { status: range ? 206 : 200, headers, start, end, body: req.method !== "HEAD" };
}

const FILE_LABELS = { image: { file: "image" }, block_hashes: { file: "block_hashes" } } as const;
const DOWNLOAD_LABELS = {
  image: { full: { file: "image", range: "full" }, partial: { file: "image", range: "partial" } },
  block_hashes: { full: { file: "block_hashes", range: "full" }, partial: { file: "block_hashes", range: "partial" } },
} as const;

/**
 * Sends the planned bytes (headers already set): from memory in slices, or streamed from disk. A body answer is
 * counted as a download, and the bytes handed to the connection are counted once it closes, however far it got.
 */
function writeBytes(res: ServerResponse, src: ByteSource, plan: BytePlan, log: Logger, metrics: DownloadMetrics): void {
  if (!plan.body) {
    res.end();
    return;
  }
  metrics.count.inc(DOWNLOAD_LABELS[src.kind][plan.status === 206 ? "partial" : "full"]);
  let sent = 0;
  const wrote = (n: number) => void (sent += n);
  res.once("close", () => metrics.bytes.inc(FILE_LABELS[src.kind], sent));
  if (src.buffer) {
    sendSlices(res, src.buffer, plan.start, plan.end + 1, wrote);
    return;
  }
  const stream = fs.createReadStream(src.file!, { start: plan.start, end: plan.end, highWaterMark: CHUNK });
  stream.on("data", (chunk) => wrote(chunk.length));
  stream.on("error", (err) => {
    log.error({ err }, "firmware read failed mid-response");
    res.destroy(err);
  });
  res.on("close", () => stream.destroy());
  stream.pipe(res);
}

export function sendBytes(req: Request, res: Response, src: ByteSource, metrics: DownloadMetrics): void {
  // Set before deciding, so a 416 carries them too.
  res.set(baseHeaders(src));
  const plan = planBytes(
    { method: req.method, range: req.get("range"), ifRange: req.get("if-range"), ifNoneMatch: req.get("if-none-match") },
    src,
  );
  res.set(plan.headers).status(plan.status);
  writeBytes(res, src, plan, req.log, metrics);
}

export function imageSource(ctx: Pick<Context, "blobs">, image: CatalogImage, filename: string): ByteSource {
  const buffer = ctx.blobs.cached(image.sha256);
  const src: ByteSource = { kind: "image", size: image.size, etag: `"${image.sha256}"`, filename, md5: image.md5, sha256: image.sha256 };
  return buffer ? { ...src, buffer } : { ...src, file: ctx.blobs.path(image.sha256) };
}

/** A download name for an image: what it is, never anything taken from the request. */
export function imageFilename(image: CatalogImage): string {
  return `${image.project}-${image.version}.bin`.replace(/[^A-Za-z0-9._+-]/g, "_");
}

/**
 * The offered image with this version (`esp_app_desc_t.version`), for clients that build their URL from a
 * version. One version built for several chips needs the chip (X-Device-Chip, ?chip= or the registry).
 */
async function imageByVersion(ctx: Context, req: Request, version: string): Promise<CatalogImage | undefined> {
  const chip = optionalChip(req) ?? req.device?.chip ?? null;
  const candidates = ctx.catalog.offered().filter((i) => i.version === version && (!chip || i.chip === chip));
  if (candidates.length <= 1) return candidates[0];
  const chips = [...new Set(candidates.map((i) => i.chip))];
  if (chips.length > 1) {
    throw new HttpError(
      409,
      "ambiguous_version",
      `version ${version} exists for ${chips.join(", ")}: say which chip with X-Device-Chip or ?chip=`,
    );
  }
  // The same version rebuilt for one chip: the one offered to this device, else the newest.
  const offer = await chooseImage(ctx, { deviceId: req.device?.id ?? null, chip, version: null });
  return candidates.find((i) => i.sha256 === offer?.sha256) ?? candidates[0];
}

/** GET|HEAD /firmware/:file — by the name it has in the firmware folder, else <version>.bin by version. */
export function byNameHandler(ctx: Context): RequestHandler {
  return async (req, res) => {
    const name = String(req.params.file);
    if (!FIRMWARE_NAME_RE.test(name)) throw badRequest("invalid_name", `firmware names use ${FIRMWARE_NAME_RULE}`);
    const version = name.slice(0, -".bin".length);
    const image = ctx.catalog.imageByName(name) ?? (await imageByVersion(ctx, req, version));
    if (!image) throw notFound("firmware_not_found", `no valid firmware named ${name}, and none with version ${version}`);
    sendBytes(req, res, imageSource(ctx, image, name), ctx.metrics.downloads);
  };
}

const HASH_BIN_RE = /^([0-9a-f]{64})\.bin$/;

/** GET|HEAD /firmware/sha256/:file — content-addressed: the bytes are exactly those the hash names. */
export function byHashHandler(ctx: Pick<Context, "catalog" | "blobs" | "metrics">): RequestHandler {
  return (req, res) => {
    const m = HASH_BIN_RE.exec(String(req.params.file).toLowerCase());
    if (!m) throw badRequest("invalid_hash", "use /firmware/sha256/<64 lowercase hex>.bin");
    const image = ctx.catalog.image(m[1]!);
    if (!image) throw notFound("firmware_not_found", "no image with this SHA-256");
    sendBytes(req, res, imageSource(ctx, image, imageFilename(image)), ctx.metrics.downloads);
  };
}

/** GET|HEAD /firmware/sha256/:hash/blocks — the SHA-256 of every block, 32 bytes each, in order. */
export function blockHashesHandler(ctx: Pick<Context, "catalog" | "metrics">): RequestHandler {
  return (req, res) => {
    const hash = String(req.params.hash).toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hash)) throw badRequest("invalid_hash", "use /firmware/sha256/<64 lowercase hex>/blocks");
    const image = ctx.catalog.image(hash);
    if (!image) throw notFound("firmware_not_found", "no image with this SHA-256");
    sendBytes(
      req,
      res,
      { kind: "block_hashes", size: image.blockHashes.length, etag: `"${image.blockHashesSha256}"`, filename: `${hash}.blocks`, buffer: image.blockHashes },
      ctx.metrics.downloads,
    );
  };
}

export function methodNotAllowed(allowed: string): RequestHandler {
  return (_req, res) => {
    res.set("Allow", allowed);
    sendError(res, 405, "method_not_allowed", `this endpoint accepts ${allowed}`);
  };
}
