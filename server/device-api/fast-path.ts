// The device API's fast path: the requests a fleet makes all day, a manifest poll from every device every few
// minutes, its progress reports, and image downloads by hash (whole, or one block per Range request). Express's routing and middleware cost several times these requests'
// own work (measured: see bench/), so the common, well-formed case is answered here, straight from Node's
// request, with the same code as the Express routes (authenticateDevice, answerManifest, acceptReport,
// planBytes/writeBytes), the same security headers (helmet's, computed once), request id and log lines.
//
// Polls on connections that never left the poll layer (device-connection.ts) do not even get here; this path takes
// the polls on connections handed to Node's HTTP server, and reports and downloads.
//
// Everything else goes to the Express app, untouched: another path or method, a query string, a proxy setup,
// an address being throttled, a refused credential, and for polls and downloads every refusal. A report's body is read only
// once its headers and credentials have passed; refusals found in the body (bad JSON, bad fields) are answered
// here with the same JSON errors the app gives.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "../context";
import { HttpError } from "../http/errors";
import { authenticateDevice } from "./auth";
import { writeBytes } from "./download";
import { acceptReport, REPORT_BODY_LIMIT } from "./report";
import { deviceReplies, type ReplyOptions } from "./replies";

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

const JSON_TYPE_RE = /^application\/json\s*(?:;\s*charset="?utf-8"?\s*)?$/i;

export interface FastPathOptions extends ReplyOptions {
  /** The Express app: answers everything the fast path does not. */
  fallback: RequestListener;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a body whose length the headers announced (at most REPORT_BODY_LIMIT). */
function readBody(req: IncomingMessage, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > length) req.destroy(new Error("body longer than announced"));
      else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, size)));
    req.on("error", reject);
    req.on("aborted", () => reject(new Error("request aborted")));
  });
}

export function withFastPath(ctx: Context, o: FastPathOptions): RequestListener {
  if (ctx.config.trustProxy) return o.fallback; // client addresses come from X-Forwarded-For: Express's job
  const replies = deviceReplies(ctx, o);
  const { lines, requestId, logDone } = replies;

  const head = (res: ServerResponse, id: string, status: number, extra: Record<string, string>, body?: Buffer) => {
    res.writeHead(status, replies.headerList(id, extra, body));
  };

  const send = (res: ServerResponse, id: string, status: number, extra: Record<string, string>, body?: Buffer) => {
    head(res, id, status, extra, body);
    res.end(body);
  };

  const credentials = (req: IncomingMessage) => authenticateDevice(ctx, { url: req.url ?? "", headers: req.headers });

  /** GET /firmware/manifest: answered here only when the answer is a 200 or 304. */
  const poll = async (req: IncomingMessage, res: ServerResponse, started: number): Promise<boolean> => {
    const a = await replies.poll(req.headers, req.socket.remoteAddress ?? "");
    if (!a) return false;
    const id = requestId(req.headers);
    send(res, id, a.status, a.headers, a.body);
    logDone(id, "GET", "/firmware/manifest", a.status, started);
    return true;
  };

  /** POST /firmware/report: taken here once its headers and credentials pass; its body is then ours. */
  const report = async (req: IncomingMessage, res: ServerResponse, started: number): Promise<boolean> => {
    const h = req.headers;
    const declared = h["content-length"] ?? "";
    if (
      !JSON_TYPE_RE.test(h["content-type"] ?? "") ||
      (h["content-encoding"] !== undefined && h["content-encoding"] !== "identity") ||
      h["transfer-encoding"] !== undefined ||
      !/^[0-9]{1,5}$/.test(declared) ||
      Number(declared) === 0 || // the app's parser reads an empty body as {}: leave that to it
      Number(declared) > REPORT_BODY_LIMIT
    ) {
      return false;
    }
    const ip = req.socket.remoteAddress ?? "";
    if (await o.limiter.isLimited(ip)) return false;
    let caller;
    try {
      caller = await credentials(req);
    } catch {
      return false;
    }
    const id = requestId(req.headers);
    let status = 200;
    try {
      const text = (await readBody(req, Number(declared))).toString("utf8").replace(/^\uFEFF/, "");
      // As the app's JSON parser (strict, byte order mark dropped): only an object or an array is JSON here.
      let body: unknown;
      try {
        if (!/^[\x20\x09\x0a\x0d]*[[{]/.test(text)) throw new SyntaxError("not an object or array");
        body = JSON.parse(text);
      } catch {
        throw new HttpError(400, "invalid_json", "request body is not valid JSON");
      }
      const a = await acceptReport(ctx, caller, body, ip);
      lines.info({ req: { id }, device: a.deviceId, status: a.status, reason: a.reason, duplicate: a.duplicate }, "device report");
      send(res, id, 200, {}, Buffer.from(a.duplicate ? '{"ok":true,"duplicate":true}' : '{"ok":true,"duplicate":false}'));
    } catch (err) {
      if (res.headersSent || req.socket.destroyed) {
        res.destroy();
        return true;
      }
      const e = err instanceof HttpError ? err : new HttpError(500, "internal_error", "the server failed to handle this request; it has been logged");
      if (!(err instanceof HttpError)) ctx.log.error({ err, req: { id } }, "unhandled server error");
      status = e.status;
      const body = JSON.stringify({ error: { code: e.code, message: e.message, ...(e.details ?? {}) } });
      send(res, id, e.status, { ...e.headers, "Cache-Control": "no-store" }, Buffer.from(body));
    }
    logDone(id, "POST", "/firmware/report", status, started);
    return true;
  };

  /** GET /firmware/sha256/<hash>.bin: answered here when the answer is 200, 206 or 304. */
  const download = async (req: IncomingMessage, res: ServerResponse, started: number): Promise<boolean> => {
    const d = await replies.download(req.url ?? "", req.headers, req.socket.remoteAddress ?? "");
    if (!d) return false;
    const { plan, src } = d;
    const id = requestId(req.headers);
    head(res, id, plan.status, plan.headers);
    // The line is written when the transfer ends, with its duration, as for the app's requests.
    const path = req.url!;
    res.once("close", () => {
      if (res.writableFinished) logDone(id, "GET", path, plan.status, started);
      else lines.info({ req: { id, method: "GET", path }, res: { status: plan.status }, responseTime: Date.now() - started }, "request aborted");
    });
    writeBytes(res, src, plan, ctx.log);
    return true;
  };

  return (req, res) => {
    if (req.headers.host === undefined && req.httpVersion === "1.1") return o.fallback(req, res); // refused by the app
    const handler =
      req.method === "GET"
        ? req.url === "/firmware/manifest"
          ? poll
          : req.url?.startsWith("/firmware/sha256/")
            ? download
            : null
        : req.method === "POST" && req.url === "/firmware/report"
          ? report
          : null;
    if (!handler) return o.fallback(req, res);
    handler(req, res, Date.now()).then(
      (done) => {
        if (!done) o.fallback(req, res);
      },
      (err) => {
        ctx.log.error({ err }, "device API fast path failed");
        if (!res.headersSent) o.fallback(req, res);
        else res.destroy();
      },
    );
  };
}
