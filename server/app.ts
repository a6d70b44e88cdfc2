// The Express application, the one way in for every request: request id and log line (and the poll count),
// security headers, the Host check, the operator dashboard's files, the failure limiter, then the metrics, the
// device API, the compatibility download and the operator API, and JSON errors.
import express from "express";
import type { Context } from "./context";
import { countPolls } from "./api/device/poll-metrics";
import { deviceRouter, offeredDownloadRouter } from "./api/device/router";
import { AuthFailureLimiter } from "./api/http/auth-limiter";
import { errorHandler, notFoundHandler, sendError } from "./api/http/errors";
import { requestLog } from "./api/http/request-log";
import { metricsRouter } from "./api/operator/metrics";
import { securityHeaders } from "./api/http/security-headers";
import { dashboardRouter } from "./api/dashboard/router";
import { operatorRouter } from "./api/operator/router";
import "./api/http/express-types";

export function createApp(ctx: Context): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false); // ETags are ours: the image SHA-256, or the manifest offer
  app.set("trust proxy", ctx.config.trustProxy);
  app.set("query parser", "simple");

  app.use(requestLog(app, ctx.log, countPolls(ctx.metrics.polls, ctx.config.httpUpdatePath)));
  // helmet's headers; the strictest content policy for the APIs, the dashboard's own for its page and files.
  app.use(securityHeaders());
  app.use((req, res, next) => {
    if (req.httpVersion === "1.1" && req.headers.host === undefined) {
      sendError(res, 400, "missing_host", "an HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)");
      return;
    }
    next();
  });

  app.get("/healthz", (_req, res) => {
    res.set("Cache-Control", "no-store").json({ status: "ok" });
  });

  // The dashboard's page and files: public, no data in them (the page asks for a token).
  app.use(dashboardRouter());

  // One count of failed authentications per address, whichever API they were tried on: each API's
  // authentication records its failures, and the check refuses an address over its limit.
  const failures = new AuthFailureLimiter(ctx.config.authFailureLimit, ctx.config.authFailureWindowMs, ctx.metrics.auth);
  app.use(failures.check);
  app.use(metricsRouter(ctx, failures.recordFailure));
  app.use("/firmware", deviceRouter(ctx, failures.recordFailure));
  app.use(ctx.config.httpUpdatePath, offeredDownloadRouter(ctx, failures.recordFailure));
  app.use("/api/v1", operatorRouter(ctx, failures.recordFailure));

  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}
