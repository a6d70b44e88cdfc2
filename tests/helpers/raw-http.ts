// One HTTP exchange over a raw TLS socket, byte for byte as a device sends it, and the answer as a device
// reads it: status line, headers in order, then exactly Content-Length bytes (or everything until close).
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
