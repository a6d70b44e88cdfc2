// GET|HEAD <OTA_HTTPUPDATE_PATH> (default /api/ota/download): the image offered to this device, as bytes,
// for update clients whose firmware we do not control.
//
// Arduino HTTPUpdate (arduino-esp32 HTTPUpdate.cpp) asks over HTTP/1.0 with x-ESP32-* headers and reads the
// answer as: 304 = "no update", 200 with Content-Length = flash it (x-MD5 checked at the end), 403 and 404 =
// reported errors, anything else = "wrong HTTP code". It cannot read chunked bodies and, by default, does
// not follow redirects. ESP-IDF's esp_https_ota sends HEAD, then GETs with Range (partial download) and
// follows redirects. Both are served here, under the same offer (chooseImage) as our own agent.
import type { Request, RequestHandler, Response } from "express";
import type { CatalogImage } from "../../domain/catalog/catalog";
import type { Context } from "../../context";
import { HttpError, type CodeWithStatus } from "../http/errors";
import { parseClientHeaders, type ClientHeaders } from "./client-headers";
import { imageFilename, imageSource, sendBytes } from "./download";
import { baseUrl, noFirmware, optionalChip } from "./manifest";
import { chooseImage } from "../../domain/releases/offer";
import { RunningImages } from "./running-image";

const conflict = (code: CodeWithStatus<409>, message: string) => new HttpError(409, code, message);

/**
 * The chip this device is, from the most to the least direct evidence: what the request says
 * (X-Device-Chip, ?chip=), the image it runs (its bytes name their chip), what the registry remembers.
 */
function deviceChip(req: Request, running: CatalogImage | undefined): string | null {
  const stated = optionalChip(req);
  if (stated && running && running.chip !== stated) {
    throw conflict(
      "chip_mismatch",
      `the request says ${stated} but the device runs ${running.project} ${running.version}, an ${running.chip} image; fix the chip in its update URL`,
    );
  }
  return stated ?? running?.chip ?? req.device?.chip ?? null;
}

/** Whether the device already runs this image. Digests of its running app decide when it sends them. */
async function alreadyRuns(running: RunningImages, image: CatalogImage, h: ClientHeaders): Promise<boolean> {
  const reported = { sha256: h.sketchSha256, md5: h.sketchMd5 };
  if (RunningImages.hasAny(reported)) return running.runs(image, reported);
  return h.version !== undefined && h.version === image.version;
}

function sendNotModified(res: Response, image: CatalogImage): void {
  res.set({ ETag: `"${image.sha256}"`, "Cache-Control": "no-store" });
  res.status(304).end();
}

export function offeredDownloadHandler(ctx: Context): RequestHandler {
  const running = new RunningImages(ctx);
  return async (req, res) => {
    const caller = req.device!;
    const h = parseClientHeaders(req);
    const runningImage = await running.find({ sha256: h.sketchSha256, md5: h.sketchMd5 });
    const chip = deviceChip(req, runningImage);
    // What the device runs: the version of the image its bytes match, else what it says.
    const version = runningImage?.version ?? h.version ?? null;

    if (caller.id) {
      ctx.devices.seen(caller.id, {
        chip: chip ?? undefined,
        version: version ?? undefined,
        ip: req.ip,
        client: {
          kind: h.kind,
          sketchSize: h.sketchSize,
          freeSpace: h.freeSpace,
          flashSize: h.flashSize,
          runningSha256: h.sketchSha256,
          runningMd5: h.sketchMd5,
          sdkVersion: h.sdkVersion,
        },
      });
    }

    if (h.mode !== undefined && h.mode !== "sketch") {
      throw new HttpError(
        404,
        "filesystem_image_not_available",
        `this server serves app images only, not ${h.mode} filesystem images; call update() rather than updateSpiffs()`,
      );
    }

    const asker = { deviceId: caller.id, chip, version, row: caller.row };
    const image = await chooseImage(ctx, asker);
    if (!image) {
      // Under releases, "no release is for this device now" is not an error: to HTTPUpdate and esp_https_ota
      // only 304 means "nothing to do". Nothing ingested yet, or a chip we cannot tell, is one (404).
      if (ctx.releases.size > 0 && chip) {
        res.set("Cache-Control", "no-store").status(304).end();
        return;
      }
      throw noFirmware(ctx, asker);
    }
    // Never hand a device an image for another chip, whatever decided the offer.
    if (chip && image.chip !== chip) {
      throw conflict("chip_mismatch", `the image offered (${image.version}) is built for ${image.chip}, but this device is an ${chip}`);
    }
    if (await alreadyRuns(running, image, h)) {
      req.log.debug({ device: caller.id, version: image.version }, "device already runs the offered image");
      return sendNotModified(res, image);
    }
    if (h.freeSpace !== undefined && image.size > h.freeSpace) {
      throw conflict(
        "image_too_large",
        `the offered image (${image.version}) is ${image.size} bytes but this device's free OTA slot holds ${h.freeSpace}; use a partition table with larger app slots`,
      );
    }
    // Redirect only when configured, and never Arduino HTTPUpdate: it does not follow redirects by default.
    if (ctx.config.offerRedirect === "hash" && h.kind !== "arduino-httpupdate") {
      res.set({ Location: `${baseUrl(ctx, req)}/firmware/sha256/${image.sha256}.bin`, "Cache-Control": "no-store", "Content-Length": "0" });
      res.status(302).end();
      return;
    }
    if (req.method === "GET" && !req.get("range")) {
      req.log.info({ device: caller.id, version: image.version, sha256: image.sha256, from: version }, "sending the offered image");
    }
    sendBytes(req, res, imageSource(ctx, image, imageFilename(image)), ctx.metrics.downloads);
  };
}
