// Manifest polls answered on the TLS connection itself, below Node's HTTP layer. A fleet's traffic is mostly
// one small authenticated GET /firmware/manifest per device every few minutes, and Node's HTTP machinery
// (parser, IncomingMessage, ServerResponse, header handling) costs more than the poll's own work: measured in
// bench/ (npm run bench), answering here serves about 40 % more polls per CPU-second.
//
// Every connection starts here. As long as what arrives is a complete, plain `GET /firmware/manifest` head
// (server/http/request-head.ts) that the device API answers with a 200 or a 304, it is answered here, with the
// same bytes, headers and log line as the Express route. The first time anything else arrives (another path or
// method, a body, a head split across reads, anything unusual, a refusal), the connection is handed, with every
// unanswered byte, to Node's HTTP server, which owns it from then on: the Express app answers that request and
// all later ones, with Node's parser, limits and timeouts.
import type https from "node:https";
import type { TLSSocket } from "node:tls";
import type { Context } from "../context";
import { readRequestHead, type RequestHead } from "../http/request-head";
import { deviceReplies, type ReplyOptions } from "./replies";

const EMPTY = Buffer.alloc(0);
/** Unanswered bytes a client may send ahead (pipelining) before its connection stops being read. */
const MAX_BUFFERED = 32 * 1024;

export interface PollConnections {
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
export function answerPollsOnConnections(
  server: https.Server,
  ctx: Context,
  o: ReplyOptions & { keepAliveTimeoutMs: number },
): PollConnections | null {
  if (ctx.config.trustProxy) return null;
  const listeners = server.listeners("secureConnection");
  if (listeners.length !== 1) return null;
  const http = listeners[0] as ConnectionListener;
  server.removeListener("secureConnection", http);

  const replies = deviceReplies(ctx, o);
  const open = new Set<PollConnection>();
  let closing = false;

  class PollConnection {
    private buffered: Buffer = EMPTY;
    private busy = false;
    private done = false;
    private paused = false;

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
          if (read.kind !== "head" || !isPlainPoll(read.head)) return this.handOff();
          if (!(await this.answer(read.head))) return this.handOff();
          if (this.socket.writableNeedDrain) await new Promise((resolve) => this.socket.once("drain", resolve).once("close", resolve));
        }
        if (this.paused && !this.done) {
          this.paused = false;
          this.socket.resume();
        }
      } finally {
        this.busy = false;
      }
      if (closing && this.idle) this.end();
    }

    private async answer(head: RequestHead): Promise<boolean> {
      const started = Date.now();
      const a = await replies.poll(head.headers, this.socket.remoteAddress ?? "");
      if (!a) return false;
      if (this.done || this.socket.destroyed) return true; // gone meanwhile: nothing to write to
      this.buffered = this.buffered.subarray(head.length);
      const close = closing || hasToken(head.headers.connection, "close");
      const id = replies.requestId(head.headers);
      const list = replies.headerList(id, a.headers, a.body);
      let text = a.status === 200 ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 304 Not Modified\r\n";
      for (let i = 0; i < list.length; i += 2) text += `${list[i]}: ${list[i + 1]}\r\n`;
      text += `Date: ${httpDate()}\r\n`;
      text += close ? "Connection: close\r\n\r\n" : `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(o.keepAliveTimeoutMs / 1000)}\r\n\r\n`;
      const bytes = a.body ? Buffer.concat([Buffer.from(text, "latin1"), a.body]) : Buffer.from(text, "latin1");
      if (close) {
        this.leave();
        this.socket.end(bytes);
      } else {
        this.socket.write(bytes);
      }
      replies.logDone(id, "GET", "/firmware/manifest", a.status, started);
      return true;
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

  server.on("secureConnection", (socket: TLSSocket) => new PollConnection(socket).start());

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

/** A request this layer may answer: a manifest poll with nothing that needs Node's parser to interpret. */
function isPlainPoll(head: RequestHead): boolean {
  const h = head.headers;
  return (
    head.method === "GET" &&
    head.target === "/firmware/manifest" &&
    h.host !== undefined &&
    h["content-length"] === undefined &&
    h["transfer-encoding"] === undefined &&
    h.expect === undefined &&
    h.upgrade === undefined &&
    !hasToken(h.connection, "upgrade")
  );
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
