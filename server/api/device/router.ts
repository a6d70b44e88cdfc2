// The device-facing API (docs/protocol.md): manifest, firmware bytes, reports, and the offered image for
// clients we do not control (docs/clients.md). Device credentials only.
import { Router } from "express";
import type { Context } from "../../context";
import type { RecordAuthFailure } from "../http/auth-limiter";
import { deviceAuth } from "./auth";
import { blockHashesHandler, byHashHandler, byNameHandler, methodNotAllowed } from "./download";
import { manifestHandler, manifestMac } from "./manifest";
import { offeredDownloadHandler } from "./offered-download";
import { reportBodyParser, reportHandler } from "./report";

export function deviceRouter(ctx: Context, recordFailure: RecordAuthFailure): Router {
  const r = Router();
  const auth = deviceAuth(ctx, recordFailure);

  r.get("/manifest", auth, manifestHandler(ctx), manifestMac(ctx));
  r.all("/manifest", methodNotAllowed("GET, HEAD"));
  r.post("/report", auth, reportBodyParser, reportHandler(ctx));
  r.all("/report", methodNotAllowed("POST"));
  r.get("/sha256/:hash/blocks", auth, blockHashesHandler(ctx));
  r.get("/sha256/:file", auth, byHashHandler(ctx));
  r.get("/:file", auth, byNameHandler(ctx));
  return r;
}

/** Mounted at OTA_HTTPUPDATE_PATH: the image offered to the asking device (Arduino HTTPUpdate, esp_https_ota). */
export function offeredDownloadRouter(ctx: Context, recordFailure: RecordAuthFailure): Router {
  const r = Router();
  r.get("/", deviceAuth(ctx, recordFailure), offeredDownloadHandler(ctx));
  r.all("/", methodNotAllowed("GET, HEAD"));
  return r;
}
