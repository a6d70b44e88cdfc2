// After repeated authentication failures from one address, answer 429 with Retry-After for a while.
//
// A failure is counted where it is decided: the device and operator authentication call `recordFailure` the
// moment they find a credential wrong, expired or revoked, and once the address has used up its limit that call
// gives them the 429 to answer instead of the 401. So however many guesses arrive at once (pipelined on one
// connection, or on many), at most `limit` of them are answered 401 in a window; every later one, and every
// request from the address that starts after that, gets 429. Successful requests are never counted, so a busy
// fleet behind one NAT is not throttled by its own polls. A 401 to a request that presented no credential at all
// is a challenge (clients such as esp_http_client send Basic only after one), not a guess: the authentication
// does not call `recordFailure` for it.
//
// Counts per address (IPv6 by /56, with express-rate-limit's key), in a fixed window that starts at the
// address's first counted failure. The count is a plain synchronous Map rather than express-rate-limit's
// MemoryStore: a store's interface is asynchronous (made for shared stores such as Redis), so a failure counted
// through it shows only after an await, by which time the rest of a pipelined burst has been let through.
//
// Every failure and every 429 is also counted in the metrics (ota_auth_failures_total by the refusal's code,
// ota_auth_throttled_total), by the API it was tried on.
import { ipKeyGenerator } from "express-rate-limit";
import type { Request, RequestHandler } from "express";
import type { AuthMetrics } from "../../infra/metrics/metrics";
import { HttpError } from "./errors";

/**
 * Counts a failed authentication from the request's address, at once, and gives what to answer: `refusal` (the
 * 401 the credential earned), or the 429 when the address is over its limit.
 */
export type RecordAuthFailure = (req: Request, refusal: HttpError) => HttpError;

interface Count {
  failures: number;
  /** When this address's window ends (ms since the epoch). */
  resetAt: number;
}

/** One limiter (one count per address) for every API whose authentication records its failures here. */
export class AuthFailureLimiter {
  private readonly counts = new Map<string, Count>();
  private nextSweep = 0;

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly metrics?: AuthMetrics,
  ) {}

  /**
   * In front of the APIs: refuses every request from an address over its limit. While no address has failed,
   * it costs a poll one size check.
   */
  readonly check: RequestHandler = (req, _res, next) => {
    if (this.counts.size === 0) return next();
    const key = keyOf(req);
    const count = this.counts.get(key);
    if (count && count.resetAt <= Date.now()) this.counts.delete(key);
    else if (count && count.failures >= this.limit) throw this.refusal(req, count);
    next();
  };

  readonly recordFailure: RecordAuthFailure = (req, refusal) => {
    const now = Date.now();
    this.sweep(now);
    const key = keyOf(req);
    let count = this.counts.get(key);
    if (!count || count.resetAt <= now) {
      count = { failures: 0, resetAt: now + this.windowMs };
      this.counts.set(key, count);
    }
    this.metrics?.failures.inc({ api: apiOf(req), code: refusal.code });
    if (count.failures >= this.limit) return this.refusal(req, count);
    count.failures++;
    return refusal;
  };

  private refusal(req: Request, count: Count): HttpError {
    this.metrics?.throttled.inc(apiOf(req) === "device" ? DEVICE : OPERATOR);
    const retryAfter = Math.max(1, Math.ceil((count.resetAt - Date.now()) / 1000));
    // Only Retry-After: devices parse every header byte in 1 KiB reads.
    return new HttpError(
      429,
      "too_many_auth_failures",
      `too many failed authentication attempts from this address; retry after ${retryAfter} s with a valid credential`,
      { "Retry-After": String(retryAfter) },
    );
  }

  /** Forgets the addresses whose window has ended, at most once per window: the map holds only recent failers. */
  private sweep(now: number): void {
    if (now < this.nextSweep) return;
    this.nextSweep = now + this.windowMs;
    for (const [key, count] of this.counts) if (count.resetAt <= now) this.counts.delete(key);
  }
}

const keyOf = (req: Request) => ipKeyGenerator(req.ip ?? "");

const DEVICE = { api: "device" } as const;
const OPERATOR = { api: "operator" } as const;

/** The API a request was for, as the metrics name it: the operator API and /metrics are "operator", the rest "device". */
function apiOf(req: Request): "device" | "operator" {
  const url = req.originalUrl;
  return url.startsWith("/api/v1") || url.startsWith("/metrics") ? "operator" : "device";
}
