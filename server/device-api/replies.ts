// What the device API's fast answers share, however they reach the wire (Node's ServerResponse in fast-path.ts,
// or the socket itself in device-connection.ts): the manifest answer for a poll, the response header list with
// request id and security headers, and the request's log line. One place, so both give the same bytes.
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { Context } from "../context";
import type { AuthFailureLimiter } from "../http/auth-limiter";
import { unredacted } from "../logging/logger";
import { authenticateDevice } from "./auth";
import { imageFilename, imageSource, planBytes, type BytePlan, type ByteSource } from "./download";
import { answerManifest, type ManifestAnswer } from "./manifest";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const IMAGE_BY_HASH_RE = /^\/firmware\/sha256\/([0-9a-f]{64})\.bin$/;
export const JSON_CONTENT_TYPE = "application/json; charset=utf-8";

export interface ReplyOptions {
  limiter: AuthFailureLimiter;
  /** Headers every response carries (helmet's), computed once. */
  securityHeaders: ReadonlyArray<readonly [string, string]>;
}

export type Replies = ReturnType<typeof deviceReplies>;

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export function deviceReplies(ctx: Context, o: ReplyOptions) {
  const lines = unredacted(ctx.log); // request and report lines: fixed fields, never a credential
  const security = o.securityHeaders.flat(); // [name, value, name, value, ...], as writeHead takes them

  return {
    lines,

    /** The client's X-Request-Id when well-formed, else a new one. */
    requestId(headers: IncomingHttpHeaders): string {
      const incoming = one(headers["x-request-id"]);
      return incoming !== undefined && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
    },

    /** [name, value, ...]: request id, security headers, `extra`, and the JSON body's type and length. */
    headerList(id: string, extra: Record<string, string>, body?: Buffer): string[] {
      const headers = ["X-Request-Id", id, ...security];
      for (const k in extra) headers.push(k, extra[k]!);
      if (body) headers.push("Content-Type", JSON_CONTENT_TYPE, "Content-Length", String(body.length));
      return headers;
    },

    logDone(id: string, method: string, path: string, status: number, started: number): void {
      const line = { req: { id, method, path }, res: { status }, responseTime: Date.now() - started };
      if (status >= 500) lines.error(line, "request completed");
      else if (status >= 400) lines.warn(line, "request completed");
      else lines.info(line, "request completed");
    },

    /**
     * GET /firmware/manifest: the 200 or 304 to send, or null when the Express app must answer (the address is
     * throttled, or the request is refused or fails: the app answers and logs that the usual way). Nothing is
     * used up by a null: the nonce is consumed only by an answer.
     */
    async poll(headers: IncomingHttpHeaders, ip: string): Promise<ManifestAnswer | null> {
      if (await o.limiter.isLimited(ip)) return null;
      try {
        return await answerManifest(ctx, {
          caller: await authenticateDevice(ctx, { url: "/firmware/manifest", headers }),
          nonce: one(headers["x-nonce"]),
          chip: one(headers["x-device-chip"]),
          chipRev: one(headers["x-device-chip-rev"]),
          version: one(headers["x-device-version"]),
          ifNoneMatch: one(headers["if-none-match"]),
          host: headers.host,
          ip,
        });
      } catch {
        return null;
      }
    },

    /**
     * GET /firmware/sha256/<hash>.bin: which bytes to send (200, 206 or 304), or null when the Express app must
     * answer (throttled, refused, unknown image, 416).
     */
    async download(target: string, headers: IncomingHttpHeaders, ip: string): Promise<{ plan: BytePlan; src: ByteSource } | null> {
      const m = IMAGE_BY_HASH_RE.exec(target);
      if (!m) return null;
      if (await o.limiter.isLimited(ip)) return null;
      try {
        await authenticateDevice(ctx, { url: target, headers });
      } catch {
        return null;
      }
      const image = ctx.catalog.image(m[1]!);
      if (!image) return null;
      const src = imageSource(ctx, image, imageFilename(image));
      try {
        const plan = planBytes(
          { method: "GET", range: one(headers.range), ifRange: one(headers["if-range"]), ifNoneMatch: one(headers["if-none-match"]) },
          src,
        );
        return { plan, src };
      } catch {
        return null; // 416: the app answers it
      }
    },
  };
}
