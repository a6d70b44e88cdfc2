// One HTTP exchange over a raw TLS socket, byte for byte as a device sends it, and the answer as a device
// reads it: status line, headers in order, then exactly Content-Length bytes (or everything until close). And a
// kept-alive connection read as a stream of answers, for pipelined requests.
import tls from "node:tls";

export interface RawResponse {
  /** The whole header block as received. */
  head: string;
  statusLine: string;
  status: number;
  headers: [string, string][];
  header(name: string): string | undefined;
  body: Buffer;
  /** True when the server closed the connection after this answer. */
  closed: boolean;
}

export interface RawTarget {
  port: number;
  ca: Buffer;
}

function parseHead(head: string) {
  const [statusLine = "", ...lines] = head.split("\r\n");
  const headers = lines.map((l): [string, string] => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  return { statusLine, status: Number(statusLine.split(" ")[1]), headers };
}

/** Sends `text` and reads one response; `method` tells whether a body follows (not for HEAD). */
export function rawExchange(target: RawTarget, text: string, method = text.slice(0, text.indexOf(" "))): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: "127.0.0.1", port: target.port, ca: target.ca, servername: "localhost" }, () => sock.write(text));
    let buf = Buffer.alloc(0);
    let parsed: ReturnType<typeof parseHead> & { head: string; bodyStart: number; length: number | null } | null = null;
    let done = false;
    const finish = (closed: boolean) => {
      if (done || !parsed) return;
      done = true;
      const end = parsed.length === null ? buf.length : parsed.bodyStart + parsed.length;
      const h = parsed;
      resolve({
        head: h.head,
        statusLine: h.statusLine,
        status: h.status,
        headers: h.headers,
        header: (name) => h.headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1],
        body: buf.subarray(h.bodyStart, end),
        closed,
      });
      sock.destroy();
    };
    sock.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!parsed) {
        const sep = buf.indexOf("\r\n\r\n");
        if (sep < 0) return;
        const head = buf.subarray(0, sep).toString("latin1");
        const p = parseHead(head);
        const cl = p.headers.find(([k]) => k.toLowerCase() === "content-length")?.[1];
        const bodyless = method === "HEAD" || p.status === 304 || p.status === 204;
        parsed = { ...p, head, bodyStart: sep + 4, length: bodyless ? 0 : cl !== undefined ? Number(cl) : null };
      }
      if (parsed.length !== null && buf.length >= parsed.bodyStart + parsed.length) finish(false);
    });
    sock.on("error", (err: Error) => (parsed ? finish(true) : reject(err)));
    sock.on("close", () => (parsed ? finish(true) : reject(new Error("connection closed before a response"))));
  });
}

export interface RawAnswer {
  status: number;
  /** Header names in lower case. */
  headers: Map<string, string>;
  body: Buffer;
}

/** One kept-alive TLS connection, read as a stream of HTTP responses (Content-Length bodies; none for 304). */
export class RawConnection {
  private buf = Buffer.alloc(0);
  private waiting: (() => void) | null = null;
  closed = false;

  private constructor(readonly sock: tls.TLSSocket) {
    sock.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.waiting?.();
    });
    sock.on("close", () => {
      this.closed = true;
      this.waiting?.();
    });
    sock.on("error", () => undefined);
  }

  /** Connects (from `localAddress`, e.g. 127.0.0.2 to be another client address, when given). */
  static open(target: RawTarget, opts: { localAddress?: string } = {}): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const sock = tls.connect({ host: "127.0.0.1", port: target.port, ca: target.ca, servername: "localhost", ...opts }, () =>
        resolve(new RawConnection(sock)),
      );
      sock.once("error", reject);
    });
  }

  send(text: string | Buffer): void {
    this.sock.write(text);
  }

  private async until(ready: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!ready()) {
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 100);
      });
    }
  }

  async next(): Promise<RawAnswer> {
    await this.until(() => this.buf.includes("\r\n\r\n"), "a response head");
    const end = this.buf.indexOf("\r\n\r\n");
    const [statusLine, ...lines] = this.buf.subarray(0, end).toString("latin1").split("\r\n");
    const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
    const status = Number(statusLine!.split(" ")[1]);
    const announced = headers.get("content-length");
    if (announced === undefined && status !== 304) {
      await this.until(() => this.closed, "the end of a body without a length");
    }
    const length = status === 304 ? 0 : announced === undefined ? this.buf.length - end - 4 : Number(announced);
    await this.until(() => this.buf.length >= end + 4 + length, "a response body");
    const body = this.buf.subarray(end + 4, end + 4 + length);
    this.buf = this.buf.subarray(end + 4 + length);
    return { status, headers, body };
  }

  async closedByServer(): Promise<boolean> {
    await this.until(() => this.closed, "the server to close").catch(() => undefined);
    return this.closed;
  }

  end(): void {
    this.sock.destroy();
  }
}
