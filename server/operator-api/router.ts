// The operator API under /api/v1 (bearer tokens with roles: viewer < releaser < admin).
import express, { Router } from "express";
import type { Context } from "../context";
import { operatorAuth, requireRole } from "./auth";
import { deviceReports, getDevice, listDevices, provision } from "./devices";
import { getImage, listFiles, listImages, uploadHandlers } from "./firmware";

export function operatorRouter(ctx: Context): Router {
  const r = Router();
  r.use(operatorAuth(ctx));
  const json = express.json({ limit: "64kb", strict: true });
  const viewer = requireRole("viewer");

  r.get("/whoami", viewer, (req, res) => {
    res.json({ subject: req.operator!.subject, role: req.operator!.role });
  });
  r.get("/firmware", viewer, listImages(ctx));
  r.post("/firmware", requireRole("releaser"), ...uploadHandlers(ctx));
  r.get("/firmware/files", viewer, listFiles(ctx));
  r.get("/firmware/rejected", viewer, listFiles(ctx, "problems"));
  r.get("/firmware/:sha256", viewer, getImage(ctx));
  r.get("/devices", viewer, listDevices(ctx));
  r.get("/devices/:id", viewer, getDevice(ctx));
  r.get("/devices/:id/reports", viewer, deviceReports(ctx));
  r.post("/devices/:id/provision", requireRole("admin"), json, provision(ctx));
  return r;
}
