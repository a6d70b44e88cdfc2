// After repeated authentication failures from one address, answer 429 with Retry-After for a while.
// Only 401 answers count, so a busy fleet behind one NAT is not throttled by its own successful polls.
import { ipKeyGenerator, MemoryStore, rateLimit, type AugmentedRequest } from "express-rate-limit";
import type { RequestHandler } from "express";
import { sendError } from "./errors";

export interface AuthFailureLimiter {
  middleware: RequestHandler;
  /**
   * Whether a request from this address would be refused with 429 now. For the poll fast path, which
   * answers only successes and leaves every refusal (429 included) to the middleware.
   */
  isLimited(ip: string): Promise<boolean>;
}

export function authFailureLimiter(limit: number, windowMs: number): AuthFailureLimiter {
  const store = new MemoryStore();
  const middleware = rateLimit({
    windowMs,
    limit,
    store,
    skipSuccessfulRequests: true,
    requestWasSuccessful: (_req, res) => res.statusCode !== 401,
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
  return {
    middleware,
    async isLimited(ip) {
      // The middleware counts this request first and refuses past the limit: limited once hits reach it.
      const info = await store.get(ipKeyGenerator(ip));
      return (info?.totalHits ?? 0) >= limit;
    },
  };
}
