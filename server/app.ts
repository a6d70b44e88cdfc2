// The Express application: security headers, request ids and logs, the two APIs, JSON errors.
import { randomUUID } from "node:crypto";
import express from "express";
import helmet from "helmet";
import { pinoHttp } from "pino-http";
import type { Context } from "./context";
import { deviceRouter, offeredDownloadRouter } from "./device-api/router";
import { authFailureLimiter } from "./http/auth-limiter";
import { errorHandler, notFoundHandler } from "./http/errors";
import { operatorRouter } from "./operator-api/router";
import "./http/express-types";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function createApp(ctx: Context): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false); // ETags are ours: the image SHA-256, or the manifest offer
  app.set("trust proxy", ctx.config.trustProxy);
  app.set("query parser", "simple");

  app.use(
    pinoHttp({
      logger: ctx.log,
      genReqId: (req, res) => {
        const incoming = req.headers["x-request-id"];
        const id = typeof incoming === "string" && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
        res.setHeader("X-Request-Id", id);
        return id;
      },
      // Method, path and status only: never headers (credentials) or query strings.
      serializers: {
        req: (req) => ({ id: req.id, method: req.method, path: String(req.url).split("?")[0]!.slice(0, 200) }),
        res: (res) => ({ status: res.statusCode }),
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? "error" : res.statusCode >= 400 ? "warn" : "info"),
      autoLogging: { ignore: (req) => req.url === "/healthz" },
    }),
  );
  // An API serves no pages: the strictest content policy, and helmet's other defaults.
  app.use(helmet({ contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } } }));

  app.get("/healthz", (_req, res) => {
    res.set("Cache-Control", "no-store").json({ status: "ok" });
  });

  const limiter = authFailureLimiter(ctx.config.authFailureLimit, ctx.config.authFailureWindowMs);
  app.use("/firmware", limiter, deviceRouter(ctx));
  app.use(ctx.config.httpUpdatePath, limiter, offeredDownloadRouter(ctx));
  app.use("/api/v1", limiter, operatorRouter(ctx));

  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}
