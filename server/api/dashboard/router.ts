// The operator dashboard: one page at / and its files under /assets, built from dashboard/src into
// dist/dashboard by `npm run build`. They hold no data and need no token: the page asks for one and calls the
// operator API with it. Without a build, the page answers 503 dashboard_not_built.
import fs from "node:fs";
import path from "node:path";
import express, { Router } from "express";
import { projectRoot } from "../../paths";
import { HttpError } from "../http/errors";
import { DASHBOARD_ASSETS, DASHBOARD_PAGE } from "../http/security-headers";

export function dashboardRouter(dir = path.join(projectRoot(), "dist", "dashboard")): Router {
  const r = Router();
  const page = path.join(dir, "index.html");
  r.get(DASHBOARD_PAGE, (_req, res) => {
    // Read per request (a few hundred bytes): a rebuild shows at the next reload.
    let html: Buffer;
    try {
      html = fs.readFileSync(page);
    } catch {
      throw new HttpError(503, "dashboard_not_built", "the dashboard is not built: run npm run build (npm start does) and reload");
    }
    res.set("Cache-Control", "no-cache").type("html").send(html);
  });
  r.use(
    DASHBOARD_ASSETS,
    express.static(dir, {
      index: false,
      redirect: false,
      dotfiles: "ignore",
      // Same names across builds: the browser checks with the server (Last-Modified) before using its copy.
      setHeaders: (res) => res.set("Cache-Control", "no-cache"),
    }),
  );
  return r;
}
