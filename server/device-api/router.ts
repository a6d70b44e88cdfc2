// The device-facing API (docs/protocol.md): manifest, firmware bytes, reports. Device credentials only.
import { Router } from "express";
import type { Context } from "../context";
import { deviceAuth } from "./auth";
import { blockHashesHandler, byHashHandler, byNameHandler, methodNotAllowed } from "./download";
import { manifestHandler } from "./manifest";
import { reportBodyParser, reportHandler } from "./report";

export function deviceRouter(ctx: Context): Router {
  const r = Router();
  const auth = deviceAuth(ctx);

  r.get("/manifest", auth, manifestHandler(ctx));
  r.all("/manifest", methodNotAllowed("GET, HEAD"));
  r.post("/report", auth, reportBodyParser, reportHandler(ctx));
  r.all("/report", methodNotAllowed("POST"));
  r.get("/sha256/:hash/blocks", auth, blockHashesHandler(ctx));
  r.get("/sha256/:file", auth, byHashHandler(ctx));
  r.get("/:file", auth, byNameHandler(ctx));
  return r;
}
