// The device API's everyday requests answered on the TLS connection itself, below Node's HTTP layer. A fleet's
// traffic is mostly one small authenticated GET /firmware/manifest per device every few minutes, and images
// fetched by hash (whole, or one block per Range request); Node's HTTP machinery (parser, IncomingMessage,
// ServerResponse, corked writes) costs more than these requests' own work. Measured in bench/ (npm run bench):
// about 35 % more polls and 15 % more download throughput per CPU-second.
//
// Every connection starts here. As long as what arrives is a complete, plain GET head (server/http/request-head.ts)
// of the manifest, or of an image held in memory, that the device API answers with a 200, 206 or 304, it is
// answered here, with the same bytes, headers and log line as the Express routes. The first time anything else
// arrives (another path or method, a body, a head still incomplete after a second, anything unusual, a refusal), the
// connection is handed, with every unanswered byte, to Node's HTTP server, which owns it from then on: the
// Express app answers that request and all later ones, with Node's parser, limits and timeouts.
import { STATUS_CODES } from "node:http";
import type https from "node:https";
import type { TLSSocket } from "node:tls";
import type { Context } from "../context";
import { readRequestHead, type RequestHead } from "../http/request-head";
import { CHUNK } from "./download";
import { deviceReplies, type ReplyOptions } from "./replies";

const EMPTY = Buffer.alloc(0);
/** How long a head cut short may wait for the rest before the connection goes to Node's server. */
const HEAD_WAIT_MS = 1000;
/** Unanswered bytes a client may send ahead (pipelining) before its connection stops being read. */
const MAX_BUFFERED = 32 * 1024;

export interface DeviceConnections {
  /** Connections this layer is serving now. */
  readonly size: number;
  /** Ends connections between requests; the others end after their answer. */
  closeIdle(): void;
  /** Destroys every connection this layer is serving. */
  closeAll(): void;
}

type ConnectionListener = (this: https.Server, socket: TLSSocket) => void;

/**
 * Puts the poll layer in front of an HTTPS server's own connection handling. Returns null, leaving the server as
 * it is, when the server is set up for a proxy (client addresses come from X-Forwarded-For: Express's job) or
 * its connection listener is not the one expected.
 */
export function answerOnConnections(
  server: https.Server,
  ctx: Context,
  o: ReplyOptions & { keepAliveTimeoutMs: number },
): DeviceConnections | null {
  if (ctx.config.trustProxy) return null;
  const listeners = server.listeners("secureConnection");
  if (listeners.length !== 1) return null;
  const http = listeners[0] as ConnectionListener;
  server.removeListener("secureConnection", http);

  const replies = deviceReplies(ctx, o);
  const keepAliveSeconds = Math.floor(o.keepAliveTimeoutMs / 1000);
  const open = new Set<DeviceConnection>();
  let closing = false;

  class DeviceConnection {
    private buffered: Buffer = EMPTY;
    private busy = false;
    private done = false;
    private paused = false;
    private headTimer: NodeJS.Timeout | null = null;

    constructor(private readonly socket: TLSSocket) {}

    start(): void {
      open.add(this);
      this.socket.on("data", this.onData);
      this.socket.on("error", this.onError);
      this.socket.on("close", this.onClose);
      this.socket.on("timeout", this.onTimeout);
      this.socket.setTimeout(o.keepAliveTimeoutMs);
    }

    get idle(): boolean {
      return !this.busy && this.buffered.length === 0;
    }

    end(): void {
      this.leave();
      this.socket.end();
    }

    destroy(): void {
      this.leave();
      this.socket.destroy();
    }

    private readonly onData = (chunk: Buffer): void => {
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
      if (this.buffered.length > MAX_BUFFERED && !this.paused) {
        this.paused = true;
        this.socket.pause();
      }
      void this.serve();
    };

    private readonly onError = (): void => this.destroy(); // a reset or a TLS error: nothing to answer
    private readonly onClose = (): void => this.leave();

    /** Between requests for keepAliveTimeoutMs, as Node's server does: the connection is closed. */
    private readonly onTimeout = (): void => {
      if (this.idle) this.destroy();
    };

    private leave(): void {
      if (this.done) return;
      this.done = true;
      this.stopHeadTimer();
      open.delete(this);
      this.socket.off("data", this.onData);
      this.socket.off("error", this.onError);
      this.socket.off("close", this.onClose);
      this.socket.setTimeout(0);
      this.socket.off("timeout", this.onTimeout);
    }

    /** Answers what is buffered, in order, one request at a time; hands the connection on at the first it cannot. */
    private async serve(): Promise<void> {
      if (this.busy || this.done) return;
      this.busy = true;
      try {
        while (!this.done && this.buffered.length > 0) {
          const read = readRequestHead(this.buffered);
          if (read.kind === "incomplete") {
            this.awaitRestOfHead();
            break;
          }
          this.stopHeadTimer();
          const kind = read.kind === "head" ? plainRequest(read.head) : null;
          if (!kind) return this.handOff();
          const head = (read as { head: RequestHead }).head;
          const answered = kind === "poll" ? await this.answerPoll(head) : await this.answerDownload(head);
          if (!answered) return this.handOff();
          if (this.socket.writableNeedDrain) await this.drained();
        }
        if (this.paused && !this.done) {
          this.paused = false;
          this.socket.resume();
        }
      } catch (err) {
        // Not a refusal (those go to the app) but a fault: logged, and the connection dropped.
        ctx.log.error({ err }, "device connection failed");
        this.destroy();
      } finally {
        this.busy = false;
      }
      if (closing && this.idle && !this.done) this.end();
    }

    /**
     * A head cut by a read (a TLS record ends mid-head, as in a pipelined burst) is completed by the next read. One
     * that stays incomplete for HEAD_WAIT_MS goes to Node's server, whose headersTimeout then deals with a client
     * sending its head slowly.
     */
    private awaitRestOfHead(): void {
      this.headTimer ??= setTimeout(() => {
        this.headTimer = null;
        if (!this.done && !this.busy) this.handOff();
      }, HEAD_WAIT_MS);
    }

    private stopHeadTimer(): void {
      if (this.headTimer) clearTimeout(this.headTimer);
      this.headTimer = null;
    }

    /** Resolves when the socket has sent what it holds, or has closed. */
    private drained(): Promise<void> {
      return new Promise((resolve) => {
        const done = () => {
          this.socket.off("drain", done);
          this.socket.off("close", done);
          resolve();
        };
        this.socket.on("drain", done);
        this.socket.on("close", done);
      });
    }

    /** The status line and headers, as Node's server writes them; the body (a manifest) sent with them. */
    private respond(head: RequestHead, status: number, list: string[], body: Buffer | null, more: boolean): { close: boolean } {
      this.buffered = this.buffered.subarray(head.length);
      const close = closing || hasToken(head.headers.connection, "close");
      let text = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n`;
      for (let i = 0; i < list.length; i += 2) text += `${list[i]}: ${list[i + 1]}\r\n`;
      text += `Date: ${httpDate()}\r\n`;
      text += close ? "Connection: close\r\n\r\n" : `Connection: keep-alive\r\nKeep-Alive: timeout=${keepAliveSeconds}\r\n\r\n`;
      const bytes = body ? Buffer.concat([Buffer.from(text, "latin1"), body]) : Buffer.from(text, "latin1");
      if (close) this.leave(); // no more requests: the connection ends with this answer
      if (close && !more) this.socket.end(bytes);
      else this.socket.write(bytes);
      return { close };
    }

    private async answerPoll(head: RequestHead): Promise<boolean> {
      const started = Date.now();
      const a = await replies.poll(head.headers, this.socket.remoteAddress ?? "");
      if (!a) return false;
      if (this.done || this.socket.destroyed) return true; // gone meanwhile: nothing to write to
      const id = replies.requestId(head.headers);
      this.respond(head, a.status, replies.headerList(id, a.headers, a.body), a.body ?? null, false);
      replies.logDone(id, "GET", "/firmware/manifest", a.status, started);
      return true;
    }

    /** An image by hash, from memory: written to the socket in slices, each when the last has gone. */
    private async answerDownload(head: RequestHead): Promise<boolean> {
      const started = Date.now();
      const d = await replies.download(head.target, head.headers, this.socket.remoteAddress ?? "");
      if (!d || (d.plan.body && !d.src.buffer)) return false; // an image not held in memory streams from disk: the app's
      if (this.done || this.socket.destroyed) return true;
      const { plan, src } = d;
      const id = replies.requestId(head.headers);
      const { close } = this.respond(head, plan.status, replies.headerList(id, plan.headers), null, plan.body);
      const sent = plan.body ? await this.sendSlices(src.buffer!, plan.start, plan.end + 1) : true;
      if (close) this.socket.end();
      const line = { req: { id, method: "GET", path: head.target }, res: { status: plan.status }, responseTime: Date.now() - started };
      if (sent) replies.logDone(id, "GET", head.target, plan.status, started);
      else replies.lines.info(line, "request aborted");
      return true;
    }

    /** Writes buf[start, stop) in CHUNK slices, waiting for the socket to drain: no copy, at most a slice held. */
    private sendSlices(buf: Buffer, start: number, stop: number): Promise<boolean> {
      const socket = this.socket;
      return new Promise((resolve) => {
        let pos = start;
        const finish = (ok: boolean) => {
          socket.off("drain", pump);
          socket.off("close", gone);
          resolve(ok);
        };
        const gone = () => finish(false);
        function pump(): void {
          while (pos < stop) {
            if (socket.destroyed) return finish(false);
            const next = Math.min(pos + CHUNK, stop);
            const more = socket.write(buf.subarray(pos, next));
            pos = next;
            if (!more && pos < stop) return; // on "drain"
          }
          finish(true);
        }
        socket.on("drain", pump);
        socket.once("close", gone);
        pump();
      });
    }

    /** From here on the connection is Node's HTTP server's, starting with the first unanswered byte. */
    private handOff(): void {
      const rest = this.buffered;
      this.buffered = EMPTY;
      this.leave();
      // Paused while the bytes go back, so they are the first the HTTP parser reads; then flowing again.
      this.socket.pause();
      if (rest.length) this.socket.unshift(rest);
      http.call(server, this.socket);
      this.socket.resume();
    }
  }

  server.on("secureConnection", (socket: TLSSocket) => new DeviceConnection(socket).start());

  return {
    get size() {
      return open.size;
    },
    closeIdle() {
      closing = true;
      for (const c of [...open]) if (c.idle) c.end();
    },
    closeAll() {
      closing = true;
      for (const c of [...open]) c.destroy();
    },
  };
}

/** What this layer may answer: a GET of the manifest or of an image by hash, with nothing for Node's parser to interpret. */
function plainRequest(head: RequestHead): "poll" | "download" | null {
  const h = head.headers;
  const plain =
    head.method === "GET" &&
    h.host !== undefined &&
    h["content-length"] === undefined &&
    h["transfer-encoding"] === undefined &&
    h.expect === undefined &&
    h.upgrade === undefined &&
    !hasToken(h.connection, "upgrade");
  if (!plain) return null;
  if (head.target === "/firmware/manifest") return "poll";
  return head.target.startsWith("/firmware/sha256/") ? "download" : null;
}

function hasToken(list: string | undefined, token: string): boolean {
  return list !== undefined && list.split(",").some((t) => t.trim().toLowerCase() === token);
}

let dateText = "";
let dateSecond = -1;
/** The Date header, made once a second. */
function httpDate(): string {
  const s = Math.floor(Date.now() / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(s * 1000).toUTCString();
  }
  return dateText;
}
