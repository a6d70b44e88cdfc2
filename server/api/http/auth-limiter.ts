// After repeated authentication failures from one address, answer 429 with Retry-After for a while.
// Only 401 answers count, and only once they are sent: a busy fleet behind one NAT is not throttled by its own
// successful polls, however many are in flight at once. A 401 to a request that presented no credential at
// all is a challenge (clients such as esp_http_client send Basic only after one), not a guess, and does not
// count either. Counts per address (IPv6 by /56, as express-rate-limit does), in express-rate-limit's store:
// each address's window starts at its first counted failure.
import { ipKeyGenerator, MemoryStore, type Options } from "express-rate-limit";
import type { RequestHandler } from "express";
import { sendError } from "./errors";

/** One limiter (one count per address) for every API it is mounted in front of. */
export function authFailureLimiter(limit: number, windowMs: number): RequestHandler {
  const store = new MemoryStore();
  store.init({ windowMs } as Options);
  const keyOf = (ip: string | undefined) => ipKeyGenerator(ip ?? "");

  return async (req, res, next) => {
    const key = keyOf(req.ip);
    const info = await store.get(key);
    if (info && info.totalHits >= limit) {
      const reset = info.resetTime?.getTime() ?? Date.now() + windowMs;
      const retryAfter = Math.max(1, Math.ceil((reset - Date.now()) / 1000));
      // Only Retry-After: devices parse every header byte in 1 KiB reads.
      res.set("Retry-After", String(retryAfter));
      sendError(
        res,
        429,
        "too_many_auth_failures",
        `too many failed authentication attempts from this address; retry after ${retryAfter} s with a valid credential`,
      );
      return;
    }
    // Counted when the answer is done ("close" also comes when the client hangs up first): a 401 that was sent.
    res.once("close", () => {
      if (res.headersSent && res.statusCode === 401 && res.locals.authChallengeOnly !== true) void store.increment(key);
    });
    next();
  };
}
