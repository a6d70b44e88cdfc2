// GET /firmware/manifest: what to install, and everything a constrained agent needs to verify it block by
// block. With X-Device-Id the response is authenticated with HMAC-SHA256 under that device's own key, and
// the device's nonce is inside what the MAC covers, so an old or foreign manifest cannot be replayed to it.
import { createHash } from "node:crypto";
import type { Request, RequestHandler } from "express";
import { hmacHex } from "../../infra/auth/keys";
import type { Context } from "../../context";
import { normalizeChip, CHIP_NAMES } from "../../esp";
import { badRequest, HttpError } from "../http/errors";
import type { DeviceIdentity } from "../http/express-types";
import { chooseOrExplain, isOffer, noOfferMessage, type Asker, type NoOffer, type Offer } from "../../domain/releases/offer";
import type { MaybePromise } from "../../infra/maybe-promise";

const NONCE_RE = /^[A-Za-z0-9_-]{16,64}$/;
const VERSION_RE = /^[\x20-\x7e]{1,32}$/;
const CHIP_REV_RE = /^[0-9]{1,5}$/;
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

const MAC_HEADER = "X-Manifest-HMAC";
/** HMAC under the one fleet-wide key, for simple clients that verify one (OTA_FLEET_MANIFEST_HMAC). */
const FLEET_MAC_HEADER = "X-Manifest-Fleet-HMAC";

/** The base URL put into manifests: OTA_PUBLIC_URL, else the host the client used (if well-formed). */
export function baseUrl(ctx: Pick<Context, "config">, req: Request): string {
  return baseUrlFor(ctx, req.get("host"));
}

function baseUrlFor(ctx: Pick<Context, "config">, host: string | undefined): string {
  if (ctx.config.publicUrl) return ctx.config.publicUrl;
  return `https://${host && HOST_RE.test(host) ? host : `localhost:${ctx.config.port}`}`;
}

/** The chip a request names (X-Device-Chip, else ?chip=); null when it names none. */
export function optionalChip(req: Request): string | null {
  return parseChip(req.get("x-device-chip") ?? (typeof req.query.chip === "string" ? req.query.chip : undefined));
}

function parseChip(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  const chip = normalizeChip(raw);
  if (!chip) throw badRequest("unknown_chip", `chip must be one of ${CHIP_NAMES.join(", ")}`);
  return chip;
}

/** X-Device-Chip-Rev: the full chip revision, major * 100 + minor (ESP-IDF efuse_hal_chip_revision()). */
function parseChipRev(raw: string | undefined): number | null {
  if (raw === undefined) return null;
  const n = CHIP_REV_RE.test(raw) ? Number(raw) : NaN;
  if (!(n <= 65535)) throw badRequest("invalid_chip_rev", "X-Device-Chip-Rev must be a whole number 0-65535 (major * 100 + minor, e.g. 301 for v3.1)");
  return n;
}

function parseVersion(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  if (!VERSION_RE.test(raw)) throw badRequest("invalid_version", "X-Device-Version must be 1-32 printable ASCII characters");
  return raw;
}

/** 404 when there is nothing to offer this device, saying why. */
export function noFirmware(ctx: Pick<Context, "releases">, asker: Asker): HttpError {
  return new HttpError(404, "no_firmware", noOfferMessage(ctx, asker));
}

/**
 * The per-offer parts of a manifest, computed once per (offer, base URL, interval) rather than per poll:
 * the ETag and the JSON text up to the per-request fields. Offers are immutable objects, one per image and
 * release (server/domain/releases/offer.ts keeps them), so a WeakMap keyed by the offer forgets those that are
 * gone.
 */
interface OfferParts {
  etag: string;
  /** `{"version":…,"interval":N` — the body without its per-request tail and closing brace. */
  head: string;
}
const offerCache = new WeakMap<Offer, Map<string, OfferParts>>();

function offerParts(offer: Offer, base: string, interval: number): OfferParts {
  let byBase = offerCache.get(offer);
  if (!byBase) offerCache.set(offer, (byBase = new Map<string, OfferParts>()));
  const key = `${interval}|${base}`;
  let parts = byBase.get(key);
  if (!parts) {
    // Identifies an offer: changes when anything in the manifest except the per-request fields changes.
    const h = createHash("sha256")
      .update(`${offer.sha256}|${offer.blockSize}|${interval}|${base}|${offer.release ?? ""}|${offer.allowDowngrade ? 1 : 0}`)
      .digest("hex");
    const full = JSON.stringify(manifestFields(offer, base, interval));
    parts = { etag: `"${h.slice(0, 40)}"`, head: full.slice(0, -1) };
    if (byBase.size >= 64) byBase.clear(); // Host-derived bases are few; never let them grow without bound
    byBase.set(key, parts);
  }
  return parts;
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => {
    const v = t.trim();
    return v === "*" || v === etag || v === `W/${etag}`;
  });
}

function manifestFields(image: Offer, base: string, interval: number) {
  return {
    version: image.version,
    size: image.size,
    sha256: image.sha256,
    md5: image.md5,
    url: `${base}/firmware/sha256/${image.sha256}.bin`,
    project: image.project,
    chip: image.chip,
    min_chip_rev: image.minChipRev,
    max_chip_rev: image.maxChipRev,
    secure_version: image.secureVersion,
    idf_version: image.idfVersion,
    build: `${image.buildDate} ${image.buildTime}`.trim(),
    block_size: image.blockSize,
    block_count: image.blockCount,
    block_hashes_url: `${base}/firmware/sha256/${image.sha256}/blocks`,
    block_hashes_sha256: image.blockHashesSha256,
    // Secure Boot v2 blocks that hold (at most 3): what a device checking signatures on update can expect.
    signatures: image.signatures.map((s) => ({ scheme: s.scheme, key_digest: s.keyDigest })),
    allow_downgrade: image.allowDowngrade,
    release: image.release,
    interval,
  };
}

export function manifestBody(
  image: Offer,
  base: string,
  interval: number,
  deviceId: string | null,
  nonce: string | null,
): Buffer {
  // Same bytes as JSON.stringify of the whole object: the cached head, then the per-request fields.
  const tail = `,"device_id":${JSON.stringify(deviceId)},"nonce":${JSON.stringify(nonce)},"issued_at":"${new Date().toISOString()}"}`;
  return Buffer.from(offerParts(image, base, interval).head + tail, "utf8");
}

/** What the device MACs to check a 304: proves "nothing new" came from the server, for this request. */
function notModifiedMacInput(deviceId: string, nonce: string, etag: string): string {
  return `not-modified\n${deviceId}\n${nonce}\n${etag.replace(/"/g, "")}`;
}

/** What a manifest request carries, as sent (headers, or `?chip=` for the chip). */
export interface ManifestRequest {
  caller: DeviceIdentity;
  nonce: string | undefined;
  chip: string | undefined;
  chipRev: string | undefined;
  version: string | undefined;
  ifNoneMatch: string | undefined;
  host: string | undefined;
  ip: string | undefined;
}

export interface ManifestAnswer {
  status: 200 | 304;
  /** Identifies the offer (see offerParts). */
  etag: string;
  /** JSON, for 200. */
  body?: Buffer;
  /** What the device's MAC covers: the body, or for a 304 the not-modified text (null: nothing to sign). */
  signed: Buffer | string | null;
}

/**
 * Decides the answer to a manifest request: validates the per-request headers, records the sighting, consumes
 * the nonce last (only a request that is otherwise answerable uses it up). Throws the HttpError to answer
 * otherwise. Signing is manifestMac's.
 */
function answerManifest(ctx: Context, r: ManifestRequest): MaybePromise<ManifestAnswer> {
  const caller = r.caller;
  const deviceId = caller.id;
  if (r.nonce !== undefined && !NONCE_RE.test(r.nonce)) {
    throw badRequest("invalid_nonce", "X-Nonce must be 16-64 characters of A-Z a-z 0-9 _ -, fresh for every request");
  }
  const nonce = r.nonce ?? null;
  // The agent (X-Device-Id) must send a nonce; a simple client identified by its MAC or Basic user name need not.
  if (deviceId && caller.idSource === "X-Device-Id" && !nonce) {
    throw badRequest("nonce_required", "with X-Device-Id, send a fresh random X-Nonce (16-64 characters) with every manifest request");
  }
  const chip = parseChip(r.chip) ?? caller.chip;
  const version = parseVersion(r.version);
  const chipRev = parseChipRev(r.chipRev);

  if (deviceId) ctx.devices.seen(deviceId, { chip: chip ?? undefined, chipRev: chipRev ?? undefined, version: version ?? undefined, ip: r.ip });

  const asker = { deviceId, chip, version, chipRev, row: caller.row };
  const image = chooseOrExplain(ctx, asker);
  return image instanceof Promise ? image.then((i) => answerWith(ctx, r, asker, nonce, i)) : answerWith(ctx, r, asker, nonce, image);
}

/** The answer once the offer is known (none: 404 saying why, no_firmware or waiting_for_rollout_stage). */
function answerWith(ctx: Context, r: ManifestRequest, asker: Asker, nonce: string | null, found: Offer | NoOffer): MaybePromise<ManifestAnswer> {
  const deviceId = asker.deviceId;
  if (!isOffer(found)) throw new HttpError(404, found.code, found.message);
  const image = found;
  if (deviceId && nonce) {
    const fresh = ctx.nonces.use(deviceId, nonce);
    if (fresh instanceof Promise) return fresh.then((ok) => answerFresh(ctx, r, asker, nonce, image, ok));
    return answerFresh(ctx, r, asker, nonce, image, fresh);
  }
  return answerFresh(ctx, r, asker, nonce, image, true);
}

function answerFresh(ctx: Context, r: ManifestRequest, asker: Asker, nonce: string | null, image: Offer, fresh: boolean): ManifestAnswer {
  const deviceId = asker.deviceId;
  if (!fresh) throw new HttpError(409, "nonce_reused", "this X-Nonce was already used by this device: replayed request refused; use a fresh nonce");

  const base = baseUrlFor(ctx, r.host);
  const interval = ctx.config.pollInterval;
  const etag = offerParts(image, base, interval).etag;
  if (etagMatches(r.ifNoneMatch, etag)) {
    return { status: 304, etag, signed: deviceId && nonce ? notModifiedMacInput(deviceId, nonce, etag) : null };
  }
  const body = manifestBody(image, base, interval, deviceId, nonce);
  return { status: 200, etag, body, signed: body };
}

/** GET /firmware/manifest: decides the answer (res.locals.manifest) and leaves sending it to manifestMac. */
export function manifestHandler(ctx: Context): RequestHandler {
  return (req, res, next) => {
    const answer = answerManifest(ctx, {
      caller: req.device!,
      nonce: req.get("x-nonce"),
      chip: req.get("x-device-chip") ?? (typeof req.query.chip === "string" ? req.query.chip : undefined),
      chipRev: req.get("x-device-chip-rev"),
      version: req.get("x-device-version"),
      ifNoneMatch: req.get("if-none-match"),
      host: req.get("host"),
      ip: req.ip,
    });
    // Most polls are decided without waiting for anything: no promise, no extra turn of the event loop.
    if (answer instanceof Promise) {
      return answer.then((a) => {
        res.locals.manifest = a;
        next();
      });
    }
    res.locals.manifest = answer;
    next();
  };
}

/** A manifest depends on who asks and what they say: no cache may answer it for another request. */
const MANIFEST_VARY = "X-Device-Id, X-Nonce, X-Device-Chip, X-Device-Chip-Rev, X-Device-Version";

/**
 * Authenticates the manifest answer and sends it: X-Manifest-HMAC under the asking device's own MAC key (for a
 * device that named itself), and X-Manifest-Fleet-HMAC under the fleet key when OTA_FLEET_MANIFEST_HMAC is on.
 */
export function manifestMac(ctx: Pick<Context, "config" | "credentials">): RequestHandler {
  const fleetKey = ctx.config.fleetManifestHmac ? ctx.credentials.fleetManifestMacKey(ctx.config.fleetManifestKeyGeneration) : null;
  return (req, res) => {
    const a = res.locals.manifest as ManifestAnswer;
    const caller = req.device!;
    res.setHeader("ETag", a.etag);
    res.setHeader("Cache-Control", "no-store");
    res.setHeader("Vary", MANIFEST_VARY);
    if (a.signed !== null && caller.id) {
      res.setHeader(MAC_HEADER, hmacHex(ctx.credentials.deviceMacKey(caller.id, caller.generation), a.signed));
    }
    if (a.status === 304) {
      res.statusCode = 304;
      res.end();
      return;
    }
    const body = a.body!;
    if (fleetKey) res.setHeader(FLEET_MAC_HEADER, hmacHex(fleetKey, body));
    res.statusCode = 200;
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.setHeader("Content-Length", body.length);
    res.end(body);
  };
}
