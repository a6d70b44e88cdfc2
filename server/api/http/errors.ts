// Every error answer is JSON: {"error": {"code", "message"}} with a stable code a client can act on. The codes,
// each with its one status, are listed in error-codes.ts; the types below refuse a code that is not listed there,
// or a status that is not the code's.
import type { ErrorRequestHandler, RequestHandler, Response } from "express";
import { ZodError } from "zod";
import { errorMessage, isDatabaseUnavailable } from "../../infra/store/postgres-errors";
import { ERROR_CODES, type CodeWithStatus, type ErrorCode, type StatusOf } from "./error-codes";

export { ERROR_CODES, type CodeWithStatus, type ErrorCode } from "./error-codes";

/** The status, checked against the registry too: a cast must not make a code answer two statuses. */
function registeredStatus(status: number, code: ErrorCode): number {
  const expected = (ERROR_CODES as Record<string, { status: number } | undefined>)[code]?.status;
  if (expected !== status) {
    throw new TypeError(`error code ${code} is answered with ${expected ?? "nothing: it is not in error-codes.ts"}, not ${status}`);
  }
  return status;
}

export class HttpError<C extends ErrorCode = ErrorCode> extends Error {
  readonly status: number;

  constructor(
    status: NoInfer<StatusOf<C>>,
    readonly code: C,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "HttpError";
    this.status = registeredStatus(status, code);
  }
}

export const badRequest = (code: CodeWithStatus<400>, message: string, details?: Record<string, unknown>) =>
  new HttpError(400, code, message, {}, details);
export const forbidden = (code: CodeWithStatus<403>, message: string) => new HttpError(403, code, message);
export const notFound = (code: CodeWithStatus<404>, message: string) => new HttpError(404, code, message);

function writeError(res: Response, status: number, code: ErrorCode, message: string, details?: Record<string, unknown>) {
  const body = JSON.stringify({ error: { code, message, ...(details ?? {}) } });
  res.status(registeredStatus(status, code)).type("application/json").set("Cache-Control", "no-store").send(body);
}

export function sendError<C extends ErrorCode>(
  res: Response,
  status: NoInfer<StatusOf<C>>,
  code: C,
  message: string,
  details?: Record<string, unknown>,
) {
  writeError(res, status, code, message, details);
}

/** Turns a zod failure into a 400 naming the first bad field. */
export function validationError(err: ZodError, where: string): HttpError {
  const issue = err.issues[0];
  const field = issue && issue.path.length ? issue.path.join(".") : where;
  return badRequest("invalid_request", `${field}: ${issue?.message ?? "invalid value"}`, {
    fields: err.issues.slice(0, 10).map((i) => ({ path: i.path.join("."), message: i.message })),
  });
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new HttpError(404, "not_found", `no such endpoint: ${req.method} ${req.path.slice(0, 200)}`));
};

/** Seconds a client is asked to wait when the database is out of reach: about what a restart or failover takes. */
const DATABASE_RETRY_AFTER_S = 5;

interface BodyParserError extends Error {
  type?: string;
  status?: number;
  statusCode?: number;
  expose?: boolean;
}

/** Maps every error to a JSON answer; only a real server fault becomes a 500 (logged, never detailed). */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  if (res.headersSent) {
    req.log.warn({ err }, "error after the response started; closing the connection");
    res.destroy();
    return;
  }
  if (err instanceof HttpError) {
    const e = err as HttpError;
    for (const [k, v] of Object.entries(e.headers)) res.set(k, v);
    return writeError(res, e.status, e.code, e.message, e.details);
  }
  if (err instanceof ZodError) {
    const e = validationError(err, "request");
    return writeError(res, e.status, e.code, e.message, e.details);
  }
  const e = err as BodyParserError;
  switch (e.type) {
    case "entity.too.large":
      return sendError(res, 413, "body_too_large", "request body is larger than this endpoint accepts");
    case "entity.parse.failed":
      return sendError(res, 400, "invalid_json", "request body is not valid JSON");
    case "encoding.unsupported":
    case "charset.unsupported":
      return sendError(res, 415, "unsupported_encoding", "request body encoding is not supported; send UTF-8 JSON");
    case "request.aborted":
      return sendError(res, 400, "request_aborted", "the request body was not received completely");
  }
  if (err instanceof URIError || (e.status === 400 && /decode|URI/i.test(e.message))) {
    return sendError(res, 400, "invalid_path", "the request path is not valid percent-encoding");
  }
  const status = e.status ?? e.statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) {
    // One code, one status: a size limit is body_too_large, any other refusal by a library a plain 400.
    if (status === 413) return sendError(res, 413, "body_too_large", "request body is larger than this endpoint accepts");
    return sendError(res, 400, "bad_request", e.expose ? e.message : "the request could not be processed");
  }
  if (isDatabaseUnavailable(err)) {
    // Not a fault of this request nor of the server: the database is down or out of reach, and will likely be back.
    req.log.warn({ err: { message: errorMessage(err), code: (err as { code?: unknown }).code } }, "database unavailable");
    res.set("Retry-After", String(DATABASE_RETRY_AFTER_S));
    return sendError(res, 503, "database_unavailable", "the server cannot reach its database just now; retry later");
  }
  req.log.error({ err }, "unhandled server error");
  sendError(res, 500, "internal_error", "the server failed to handle this request; it has been logged");
};
