// Connections that hold the server without ever asking anything: a client that never finishes its TLS handshake
// is closed after OTA_HANDSHAKE_TIMEOUT_MS, and past OTA_MAX_CONNECTIONS open connections a new one is closed at
// once. Both are logged, a flood of them as one line per interval.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { RawConnection } from "../helpers/raw-http";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

/** A plain TCP connection to the server's port; resolves with how long it stayed open once the server closes it. */
function tcpOpen(s: TestServer, send?: Buffer): Promise<{ sock: net.Socket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: "127.0.0.1", port: s.port }, () => {
      const t0 = Date.now();
      if (send) sock.write(send);
      const closed = new Promise<number>((done) => sock.once("close", () => done(Date.now() - t0)));
      resolve({ sock, closed });
    });
    sock.once("error", reject);
    sock.on("error", () => undefined);
  });
}

/** What `p` resolves to, or Infinity when it has not after `ms`. */
async function within(p: Promise<number>, ms: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<number>((r) => (timer = setTimeout(() => r(Infinity), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const logLines = (s: TestServer) => s.logs.map((l) => JSON.parse(l) as Record<string, unknown>);

/** Resolves true when it is closed before it starts a TLS session, false when it gets one. */
function refusedBeforeTls(s: TestServer): Promise<boolean> {
  return RawConnection.open(s).then(
    (c) => {
      c.end();
      return false;
    },
    () => true,
  );
}

describe("a handshake that never finishes", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ OTA_HANDSHAKE_TIMEOUT_MS: "300" });
  });
  afterAll(async () => s.close());

  it.each([
    ["sends nothing", undefined],
    // A TLS record header announcing a 512-byte ClientHello, and only its first bytes.
    ["sends part of a ClientHello", Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])],
  ])("is closed after OTA_HANDSHAKE_TIMEOUT_MS when the client %s", async (_what, send) => {
    const { sock, closed } = await tcpOpen(s, send);
    try {
      const openFor = await within(closed, 5_000);
      expect(openFor).toBeGreaterThanOrEqual(250);
      expect(openFor).toBeLessThan(3_000);
    } finally {
      sock.destroy();
    }
  });

  it("is logged, a flood of them as one line", async () => {
    const before = logLines(s).filter((l) => l.handshakeTimeoutMs !== undefined).length;
    const opened = await Promise.all(Array.from({ length: 10 }, () => tcpOpen(s)));
    try {
      expect(Math.max(...(await Promise.all(opened.map((o) => within(o.closed, 5_000)))))).toBeLessThan(3_000);
    } finally {
      for (const o of opened) o.sock.destroy();
    }
    const lines = logLines(s).filter((l) => l.handshakeTimeoutMs !== undefined);
    // The first test's timeouts opened an interval; these ten fall in it, so they add at most one line.
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length - before).toBeLessThanOrEqual(1);
    expect(lines[0]).toMatchObject({ level: "warn", handshakeTimeoutMs: 300, remoteAddress: "127.0.0.1", count: 1 });
    expect(String(lines[0]!.msg)).toMatch(/handshake/);
  });

  it("leaves a client that completes its handshake alone", async () => {
    const c = await RawConnection.open(s);
    try {
      c.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
      expect((await c.next()).status).toBe(200);
    } finally {
      c.end();
    }
  });
});

describe("the connection cap", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ OTA_MAX_CONNECTIONS: "3" });
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
  });
  afterAll(async () => s.close());

  it("closes connections past OTA_MAX_CONNECTIONS at once, logs it as one line per flood, and serves again once one closes", async () => {
    const held = await Promise.all([RawConnection.open(s), RawConnection.open(s), RawConnection.open(s)]);
    try {
      // The fourth, and a flood after it: each closed before its handshake.
      expect(await refusedBeforeTls(s)).toBe(true);
      const flood = await Promise.all(Array.from({ length: 20 }, () => refusedBeforeTls(s)));
      expect(flood.every(Boolean)).toBe(true);
      const lines = logLines(s).filter((l) => l.maxConnections !== undefined);
      expect(lines).toEqual([expect.objectContaining({ level: "warn", maxConnections: 3, remoteAddress: "127.0.0.1", count: 1 })]);
      expect(String(lines[0]!.msg)).toMatch(/OTA_MAX_CONNECTIONS/);

      // The held connections still work.
      held[0].send(`GET /firmware/manifest HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${s.creds.deviceApiKey}\r\n\r\n`);
      expect((await held[0].next()).status).toBe(200);

      // One closes: a new poll gets through (once the server has seen the close).
      held.pop()!.end();
      const poll = await eventually(async () => {
        const c = await RawConnection.open(s).catch(() => null);
        if (!c) return null;
        try {
          c.send(`GET /firmware/manifest HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${s.creds.deviceApiKey}\r\n\r\n`);
          return await c.next();
        } finally {
          c.end();
        }
      });
      expect(poll.status).toBe(200);
      expect(JSON.parse(poll.body.toString()).version).toEqual(expect.any(String));
    } finally {
      for (const c of held) c.end();
    }
  });
});
