// A TLS hop between a device and the real server, under the test's control: it can go down (connections
// are cut as soon as they open), change answers in transit (corrupt a block, spoil a MAC, replay an old
// manifest), and it records every request. Both legs are real TLS with the test CA; the server sees the
// relay's Host, so the URLs it puts in manifests lead back through the relay.
import fs from "node:fs";
import https from "node:https";
import type net from "node:net";
import path from "node:path";
import type { TestServer } from "./server";

export interface RelayedRequest {
  method: string;
  path: string;
  range?: string;
  /** Real time the request arrived. */
  at: number;
  status?: number;
  bodyLength?: number;
}

export interface RelayedResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Changes an answer on its way to the device; return "cut" to drop the connection instead. */
export type Tamper = (req: RelayedRequest, res: RelayedResponse) => void | "cut";

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);

export class Relay {
  readonly requests: RelayedRequest[] = [];
  /** Real times TCP connections arrived (also while down). */
  readonly connections: number[] = [];
  tamper: Tamper | null = null;
  private down = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly upstream: https.Agent;

  private constructor(
    private readonly server: https.Server,
    private readonly target: TestServer,
    readonly port: number,
  ) {
    this.upstream = new https.Agent({ keepAlive: true, ca: target.ca });
  }

  get url(): string {
    return `https://localhost:${this.port}`;
  }

  static async start(target: TestServer): Promise<Relay> {
    const server = https.createServer({
      key: fs.readFileSync(path.join(target.dirs.certs, "server.key")),
      cert: fs.readFileSync(path.join(target.dirs.certs, "server.crt")),
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const relay = new Relay(server, target, (server.address() as net.AddressInfo).port);
    server.on("connection", (sock: net.Socket) => relay.onConnection(sock));
    server.on("request", (req, res) => void relay.onRequest(req, res));
    return relay;
  }

  /** Down: every connection is cut as it opens, and open ones are cut now. */
  setDown(down: boolean): void {
    this.down = down;
    if (down) for (const s of this.sockets) s.destroy();
  }

  /** Requests for image bytes (Range requests on /firmware/sha256/...bin). */
  blockRequests(from = 0): RelayedRequest[] {
    return this.requests.slice(from).filter((r) => r.range && r.path.endsWith(".bin"));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.upstream.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(sock: net.Socket): void {
    this.connections.push(Date.now());
    if (this.down) {
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
  }

  private async onRequest(req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse): Promise<void> {
    const rec: RelayedRequest = { method: req.method ?? "GET", path: req.url ?? "/", range: req.headers.range, at: Date.now() };
    this.requests.push(rec);
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      // The device went away in the middle of its request ("aborted": its power was cut): nothing to forward.
      res.socket?.destroy();
      return;
    }
    const body = Buffer.concat(chunks);
    let answer: RelayedResponse;
    try {
      answer = await this.forward(req, body);
    } catch {
      res.socket?.destroy();
      return;
    }
    rec.status = answer.status;
    rec.bodyLength = answer.body.length;
    if (this.tamper && this.tamper(rec, answer) === "cut") {
      res.socket?.destroy();
      return;
    }
    if (this.down) {
      res.socket?.destroy();
      return;
    }
    res.writeHead(answer.status, { ...answer.headers, "content-length": String(answer.body.length) });
    res.end(answer.body);
  }

  private forward(req: import("node:http").IncomingMessage, body: Buffer): Promise<RelayedResponse> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && !HOP_BY_HOP.has(k)) headers[k] = v;
      headers["content-length"] = String(body.length);
      const up = https.request(
        { host: "127.0.0.1", port: this.target.port, servername: "localhost", method: req.method, path: req.url, headers, agent: this.upstream },
        (r) => {
          const parts: Buffer[] = [];
          r.on("data", (c: Buffer) => parts.push(c));
          r.on("end", () => {
            const h: Record<string, string> = {};
            for (const [k, v] of Object.entries(r.headers)) if (typeof v === "string" && !HOP_BY_HOP.has(k)) h[k] = v;
            resolve({ status: r.statusCode ?? 502, headers: h, body: Buffer.concat(parts) });
          });
          r.on("error", reject);
        },
      );
      up.on("error", reject);
      up.end(body);
    });
  }
}
