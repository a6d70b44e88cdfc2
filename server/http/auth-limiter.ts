// After repeated authentication failures from one address, answer 429 with Retry-After for a while.
// Only 401 answers count, so a busy fleet behind one NAT is not throttled by its own successful polls; a 401
// to a request that presented no credential at all is a challenge (clients such as esp_http_client send
// Basic only after one), not a guess, and does not count either.
import { rateLimit, type AugmentedRequest } from "express-rate-limit";
import type { RequestHandler } from "express";
import { sendError } from "./errors";

export function authFailureLimiter(limit: number, windowMs: number): RequestHandler {
  return rateLimit({
    windowMs,
    limit,
    skipSuccessfulRequests: true,
    requestWasSuccessful: (_req, res) => res.statusCode !== 401 || res.locals.authChallengeOnly === true,
    standardHeaders: false, // devices parse every header byte in 1 KiB reads: only Retry-After, when limited
    legacyHeaders: false,
    handler: (req, res) => {
      const reset = (req as AugmentedRequest).rateLimit?.resetTime?.getTime() ?? Date.now() + windowMs;
      const retryAfter = Math.max(1, Math.ceil((reset - Date.now()) / 1000));
      res.set("Retry-After", String(retryAfter));
      sendError(
        res,
        429,
        "too_many_auth_failures",
        `too many failed authentication attempts from this address; retry after ${retryAfter} s with a valid credential`,
      );
    },
  });
}
