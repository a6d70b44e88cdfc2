// The Express application: security headers, request ids and logs, the two APIs, JSON errors.
import { randomUUID } from "node:crypto";
import express from "express";
import helmet from "helmet";
import { pinoHttp } from "pino-http";
import type { Context } from "./context";
import { deviceRouter, offeredDownloadRouter } from "./device-api/router";
import { withFastPath, type RequestListener } from "./device-api/fast-path";
import type { ReplyOptions } from "./device-api/replies";
import { authFailureLimiter, type AuthFailureLimiter } from "./http/auth-limiter";
import { errorHandler, notFoundHandler, sendError } from "./http/errors";
import { operatorRouter } from "./operator-api/router";
import "./http/express-types";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

// An API serves no pages: the strictest content policy, and helmet's other defaults.
const securityHeaderMiddleware = () =>
  helmet({ contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } } });

/** The headers helmet sets, captured once (they depend on nothing in the request). */
function staticSecurityHeaders(): [string, string][] {
  const headers: [string, string][] = [];
  const res = { setHeader: (name: string, value: unknown) => headers.push([name, String(value)]), removeHeader: () => undefined };
  securityHeaderMiddleware()({} as never, res as never, () => undefined);
  return headers;
}

/**
 * What the HTTPS server runs: the device API fast path in front of the Express app, and what the poll layer
 * under the HTTP server (device-api/device-connection.ts) shares with them: the failure limiter and the headers.
 */
export function createRequestListener(ctx: Context): { listener: RequestListener; replies: ReplyOptions } {
  const limiter = authFailureLimiter(ctx.config.authFailureLimit, ctx.config.authFailureWindowMs);
  const app = createApp(ctx, limiter);
  const replies = { limiter, securityHeaders: staticSecurityHeaders() };
  return { listener: withFastPath(ctx, { fallback: app, ...replies }), replies };
}

export function createApp(
  ctx: Context,
  limiter: AuthFailureLimiter = authFailureLimiter(ctx.config.authFailureLimit, ctx.config.authFailureWindowMs),
): express.Express {
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
  app.use(securityHeaderMiddleware());
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

  app.use("/firmware", limiter.middleware, deviceRouter(ctx));
  app.use(ctx.config.httpUpdatePath, limiter.middleware, offeredDownloadRouter(ctx));
  app.use("/api/v1", limiter.middleware, operatorRouter(ctx));

  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}
