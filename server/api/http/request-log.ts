// Every request, device or operator: an id (the client's X-Request-Id when well-formed, else a new one),
// sent back in X-Request-Id, and one log line when the answer is done: id, method, path, status and duration,
// never headers (credentials) or query strings. Handlers that log more use `req.log`, a child logger made only
// when asked for, so a poll pays for one line, not for a logger of its own. The same moment tells `done` (the
// metrics' count of answers by path and status), so counting costs a poll no listener of its own.
import { randomUUID } from "node:crypto";
import type { Express, RequestHandler } from "express";
import type { Logger } from "pino";
import { unredacted } from "../../infra/logging/logger";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const MAX_LOGGED_PATH = 200;

/** The path a log line names: up to the query string, and bounded. */
function loggedPath(url: string): string {
  const q = url.indexOf("?");
  return (q < 0 ? url : url.slice(0, q)).slice(0, MAX_LOGGED_PATH);
}

/** Paths answered so often and so plainly that a line each would drown the rest (load balancer checks). */
const QUIET = new Set(["/healthz"]);

/** Told of every answer when it is done: the request's URL (path and query), its status, and whether it was sent whole. */
export type AnswerObserver = (url: string, status: number, completed: boolean) => void;

/**
 * Installs `req.log` on the app's request prototype (created on first use, bound to the request id) and returns
 * the middleware that gives each request its id and its closing log line.
 */
export function requestLog(app: Express, log: Logger, done?: AnswerObserver): RequestHandler {
  // The closing lines' fields are fixed and validated: they can never hold a credential, so they skip the
  // redaction pass (which costs as much as the rest of writing a line). Everything else goes through `log`.
  const lines = unredacted(log);
  Object.defineProperty(app.request, "log", {
    configurable: true,
    get(this: Express["request"]) {
      const child = log.child({ req: { id: this.id } });
      Object.defineProperty(this, "log", { value: child, configurable: true });
      return child;
    },
  });

  return (req, res, next) => {
    const started = Date.now();
    const incoming = req.headers["x-request-id"];
    const id = typeof incoming === "string" && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
    req.id = id;
    res.setHeader("X-Request-Id", id);
    const url = req.originalUrl;
    if (QUIET.has(url)) return next();
    res.once("close", () => {
      const status = res.statusCode;
      done?.(url, status, res.writableFinished);
      const line = { req: { id, method: req.method, path: loggedPath(url) }, res: { status }, responseTime: Date.now() - started };
      if (!res.writableFinished) lines.info(line, "request aborted");
      else if (status >= 500) lines.error(line, "request completed");
      else if (status >= 400) lines.warn(line, "request completed");
      else lines.info(line, "request completed");
    });
    next();
  };
}
