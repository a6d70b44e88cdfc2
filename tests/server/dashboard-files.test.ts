// How the server hands out the dashboard's files (server/api/dashboard/router.ts) and which headers they carry
// (server/api/http/security-headers.ts): the page and its assets under the dashboard's own content policy, the
// APIs under theirs; no directory listing, no dotfiles, nothing outside the folder; without a build, the page
// answers 503 dashboard_not_built.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import express from "express";
import request from "supertest";
import { dashboardRouter } from "../../server/api/dashboard/router";
import { errorHandler, notFoundHandler } from "../../server/api/http/errors";
import { requestLog } from "../../server/api/http/request-log";
import { securityHeaders } from "../../server/api/http/security-headers";
import { createLogger } from "../../server/infra/logging/logger";

function appServing(dir: string): express.Express {
  const app = express();
  app.use(requestLog(app, createLogger("silent", new Writable({ write: (_c, _e, cb) => cb() }))));
  app.use(securityHeaders());
  app.use(dashboardRouter(dir));
  app.get("/api/v1/thing", (_req, res) => void res.json({ ok: true }));
  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}

describe("dashboard files", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-dashboard-files-"));
  beforeAll(() => {
    fs.writeFileSync(path.join(dir, "index.html"), '<!doctype html><script defer src="/assets/app.js"></script>');
    fs.writeFileSync(path.join(dir, "app.js"), "console.log(1)");
    fs.writeFileSync(path.join(dir, ".secret"), "no");
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("serves the page and its script under the dashboard's content policy, not to be cached unchecked", async () => {
    const app = appServing(dir);
    for (const [p, type] of [
      ["/", /text\/html/],
      ["/assets/app.js", /javascript/],
    ] as const) {
      const r = await request(app).get(p);
      expect(r.status).toBe(200);
      expect(r.headers["content-type"]).toMatch(type);
      expect(r.headers["cache-control"]).toBe("no-cache");
      expect(r.headers["content-security-policy"]).toBe(
        "default-src 'self';script-src 'self';style-src 'self';img-src 'self';connect-src 'self';object-src 'none';base-uri 'none';form-action 'none';frame-ancestors 'none'",
      );
      expect(r.headers["referrer-policy"]).toBe("no-referrer");
      expect(r.headers["x-content-type-options"]).toBe("nosniff");
    }
    const api = await request(app).get("/api/v1/thing");
    expect(api.headers["content-security-policy"]).toBe("default-src 'none';frame-ancestors 'none'");
  });

  it("lists no folder and serves no dotfile or file outside the folder", async () => {
    const app = appServing(dir);
    for (const p of ["/assets/", "/assets", "/assets/.secret", "/assets/../package.json", "/assets/%2e%2e/package.json", "/index.html"]) {
      const r = await request(app).get(p);
      expect([p, r.status, r.body?.error?.code]).toEqual([p, 404, "not_found"]);
    }
  });

  it("without a build, the page says how to make one", async () => {
    const r = await request(appServing(path.join(dir, "missing"))).get("/");
    expect(r.status).toBe(503);
    expect(r.body.error).toMatchObject({ code: "dashboard_not_built", message: expect.stringContaining("npm run build") });
  });
});
