// GET /firmware/manifest: what to install, and everything a constrained agent needs to verify it block by
// block. With X-Device-Id the response is authenticated with HMAC-SHA256 under that device's own key, and
// the device's nonce is inside what the MAC covers, so an old or foreign manifest cannot be replayed to it.
import { createHash } from "node:crypto";
import type { Request, RequestHandler } from "express";
import { hmacHex } from "../auth/keys";
import type { Context } from "../context";
import { normalizeChip, CHIP_NAMES } from "../image/chips";
import { badRequest, HttpError } from "../http/errors";
import { chooseImage, noOfferMessage, type Asker, type Offer } from "./offer";

const NONCE_RE = /^[A-Za-z0-9_-]{16,64}$/;
const VERSION_RE = /^[\x20-\x7e]{1,32}$/;
const CHIP_REV_RE = /^[0-9]{1,5}$/;
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

export const MAC_HEADER = "X-Manifest-HMAC";
/** HMAC under the one fleet-wide key, for simple clients that verify one (OTA_FLEET_MANIFEST_HMAC). */
export const FLEET_MAC_HEADER = "X-Manifest-Fleet-HMAC";

/** The base URL put into manifests: OTA_PUBLIC_URL, else the host the client used (if well-formed). */
export function baseUrl(ctx: Context, req: Request): string {
  if (ctx.config.publicUrl) return ctx.config.publicUrl;
  const host = req.get("host");
  return `https://${host && HOST_RE.test(host) ? host : `localhost:${ctx.config.port}`}`;
}

/** The chip a request names (X-Device-Chip, else ?chip=); null when it names none. */
export function optionalChip(req: Request): string | null {
  const raw = req.get("x-device-chip") ?? (typeof req.query.chip === "string" ? req.query.chip : undefined);
  if (raw === undefined) return null;
  const chip = normalizeChip(raw);
  if (!chip) throw badRequest("unknown_chip", `chip must be one of ${CHIP_NAMES.join(", ")}`);
  return chip;
}

/** X-Device-Chip-Rev: the full chip revision, major * 100 + minor (ESP-IDF efuse_hal_chip_revision()). */
function optionalChipRev(req: Request): number | null {
  const raw = req.get("x-device-chip-rev");
  if (raw === undefined) return null;
  const n = CHIP_REV_RE.test(raw) ? Number(raw) : NaN;
  if (!(n <= 65535)) throw badRequest("invalid_chip_rev", "X-Device-Chip-Rev must be a whole number 0-65535 (major * 100 + minor, e.g. 301 for v3.1)");
  return n;
}

function optionalVersion(req: Request): string | null {
  const raw = req.get("x-device-version");
  if (raw === undefined) return null;
  if (!VERSION_RE.test(raw)) throw badRequest("invalid_version", "X-Device-Version must be 1-32 printable ASCII characters");
  return raw;
}

/** 404 when there is nothing to offer this device, saying why. */
export function noFirmware(ctx: Context, asker: Asker): HttpError {
  return new HttpError(404, "no_firmware", noOfferMessage(ctx, asker));
}

/** Identifies an offer: changes when anything in the manifest except the per-request fields changes. */
function offerEtag(image: Offer, base: string, interval: number): string {
  const h = createHash("sha256")
    .update(`${image.sha256}|${image.blockSize}|${interval}|${base}|${image.release ?? ""}|${image.allowDowngrade ? 1 : 0}`)
    .digest("hex");
  return `"${h.slice(0, 40)}"`;
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => {
    const v = t.trim();
    return v === "*" || v === etag || v === `W/${etag}`;
  });
}

export function manifestBody(
  image: Offer,
  base: string,
  interval: number,
  deviceId: string | null,
  nonce: string | null,
): Buffer {
  return Buffer.from(
    JSON.stringify({
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
      allow_downgrade: image.allowDowngrade,
      release: image.release,
      interval,
      device_id: deviceId,
      nonce,
      issued_at: new Date().toISOString(),
    }),
    "utf8",
  );
}

/** What the device MACs to check a 304: proves "nothing new" came from the server, for this request. */
export function notModifiedMacInput(deviceId: string, nonce: string, etag: string): string {
  return `not-modified\n${deviceId}\n${nonce}\n${etag.replace(/"/g, "")}`;
}

export function manifestHandler(ctx: Context): RequestHandler {
  return async (req, res) => {
    const caller = req.device!;
    const deviceId = caller.id;
    const nonceHeader = req.get("x-nonce");
    if (nonceHeader !== undefined && !NONCE_RE.test(nonceHeader)) {
      throw badRequest("invalid_nonce", "X-Nonce must be 16-64 characters of A-Z a-z 0-9 _ -, fresh for every request");
    }
    const nonce = nonceHeader ?? null;
    // The agent (X-Device-Id) must send a nonce; a simple client identified by its MAC or Basic user name need not.
    if (deviceId && caller.idSource === "X-Device-Id" && !nonce) {
      throw badRequest("nonce_required", "with X-Device-Id, send a fresh random X-Nonce (16-64 characters) with every manifest request");
    }
    const chip = optionalChip(req) ?? caller.chip;
    const version = optionalVersion(req);
    const chipRev = optionalChipRev(req);

    if (deviceId) ctx.devices.seen(deviceId, { chip: chip ?? undefined, chipRev: chipRev ?? undefined, version: version ?? undefined, ip: req.ip });

    const asker = { deviceId, chip, version, chipRev };
    const image = await chooseImage(ctx, asker);
    if (!image) throw noFirmware(ctx, asker);
    if (deviceId && nonce && !ctx.nonces.use(deviceId, nonce)) {
      throw new HttpError(409, "nonce_reused", "this X-Nonce was already used by this device: replayed request refused; use a fresh nonce");
    }

    const base = baseUrl(ctx, req);
    const interval = ctx.config.pollInterval;
    const etag = offerEtag(image, base, interval);
    const macKey = deviceId ? ctx.credentials.deviceMacKey(deviceId, caller.generation) : null;
    res.set({ ETag: etag, "Cache-Control": "no-store", Vary: "X-Device-Id, X-Nonce, X-Device-Chip, X-Device-Chip-Rev, X-Device-Version" });

    if (etagMatches(req.get("if-none-match"), etag)) {
      if (macKey && deviceId && nonce) res.set(MAC_HEADER, hmacHex(macKey, notModifiedMacInput(deviceId, nonce, etag)));
      res.status(304).end();
      return;
    }
    const body = manifestBody(image, base, interval, deviceId, nonce);
    if (macKey) res.set(MAC_HEADER, hmacHex(macKey, body));
    if (ctx.config.fleetManifestHmac) {
      res.set(FLEET_MAC_HEADER, hmacHex(ctx.credentials.fleetManifestMacKey(ctx.config.fleetManifestKeyGeneration), body));
    }
    res.status(200).type("application/json").send(body);
  };
}
