// A device keeps one TLS connection open and sends its poll, its block downloads and its reports on it, one
// after another or pipelined. These tests speak raw bytes over such a connection, as a device does: every
// request goes through the same Express middleware (request id, security headers, log line) whatever it asks.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { mac, nonce, type Bundle } from "../helpers/device-keys";
import { RawConnection as Connection, type RawAnswer as Answer } from "../helpers/raw-http";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

/** Runs `use` on a fresh connection to `s`, destroyed afterwards whatever happens. */
async function withConnection(s: TestServer, use: (c: Connection) => Promise<void>): Promise<void> {
  const c = await Connection.open(s);
  try {
    await use(c);
  } finally {
    c.end();
  }
}

describe("requests on one kept-alive connection", () => {
  let s: TestServer;
  let d: Bundle;
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const pollText = (extra: Record<string, string> = {}, target = "/firmware/manifest") =>
    [`GET ${target} HTTP/1.1`, `Host: localhost:${s.port}`, `X-API-Key: ${d.apiKey}`, `X-Device-Id: ${d.deviceId}`, `X-Nonce: ${nonce()}`]
      .concat(Object.entries(extra).map(([k, v]) => `${k}: ${v}`))
      .join("\r\n") + "\r\n\r\n";

  beforeAll(async () => {
    s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "50" });
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    d = (await s.req("POST", "/api/v1/devices/conn-1/provision", { headers: { ...op(), "Content-Type": "application/json" }, body: "{}" })).json();
  });
  afterAll(async () => s.close());

  it("answers polls on a kept-alive connection with authenticated manifests, and the same headers as the app", async () => {
    await withConnection(s, async (c) => {
      c.send(pollText({ "X-Request-Id": "conn-poll-1" }));
      const a = await c.next();
      expect(a.status).toBe(200);
      expect(a.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, a.body));
      expect(a.headers.get("x-request-id")).toBe("conn-poll-1");
      expect(a.headers.get("connection")).toBe("keep-alive");
      expect(a.headers.get("keep-alive")).toBe("timeout=5");
      expect(JSON.parse(a.body.toString()).device_id).toBe(d.deviceId);

      // The same poll with a query string, on a fresh connection.
      const app = await s.req("GET", "/firmware/manifest?chip=esp32", { headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, "X-Nonce": nonce() } });
      const perAnswer = new Set(["date", "x-request-id", "x-manifest-hmac", "content-length", "connection", "keep-alive"]);
      const names = (h: Iterable<string>) => [...h].filter((k) => !perAnswer.has(k)).sort();
      expect(names(a.headers.keys())).toEqual(names(Object.keys(app.headers)));
      for (const k of names(a.headers.keys())) expect(a.headers.get(k)).toBe(String(app.headers[k]));

      const line = await eventually(() => s.logs.map((l) => JSON.parse(l)).find((l) => l.req?.id === "conn-poll-1"));
      expect(line).toMatchObject({ msg: "request completed", req: { method: "GET", path: "/firmware/manifest" }, res: { status: 200 } });
    });
  });

  it("passes a poll, a block download and a report on one connection through the same middleware", async () => {
    const sha = createHash("sha256").update(fs.readFileSync(HELLO_WORLD)).digest("hex");
    const report = JSON.stringify({ device_id: d.deviceId, status: "downloading", bytes: 8192, total: 124416, report_id: "one-way-in" });
    const texts = [
      pollText({ "X-Request-Id": "one-way-poll" }),
      pollText({ "X-Request-Id": "one-way-block", Range: "bytes=0-8191" }, `/firmware/sha256/${sha}.bin`),
      [
        "POST /firmware/report HTTP/1.1",
        "Host: localhost",
        `X-API-Key: ${d.apiKey}`,
        `X-Device-Id: ${d.deviceId}`,
        "X-Request-Id: one-way-report",
        "Content-Type: application/json",
        `Content-Length: ${Buffer.byteLength(report)}`,
      ].join("\r\n") + `\r\n\r\n${report}`,
    ];
    const answers: Answer[] = [];
    await withConnection(s, async (c) => {
      for (const t of texts) {
        c.send(t);
        answers.push(await c.next());
      }
    });
    expect(answers.map((a) => a.status)).toEqual([200, 206, 200]);
    expect(answers.map((a) => a.headers.get("x-request-id"))).toEqual(["one-way-poll", "one-way-block", "one-way-report"]);
    // helmet's headers, the same on each: every request passed the same security middleware.
    const security = ["content-security-policy", "strict-transport-security", "x-content-type-options", "x-frame-options", "referrer-policy"];
    const seen = answers.map((a) => security.map((h) => a.headers.get(h)));
    expect(seen[0]!.every((v) => typeof v === "string" && v.length > 0)).toBe(true);
    expect(seen[1]).toEqual(seen[0]);
    expect(seen[2]).toEqual(seen[0]);
    expect(answers[0]!.headers.get("content-security-policy")).toBe("default-src 'none';frame-ancestors 'none'");
    // One closing line each, in one shape.
    const lines = await eventually(() => {
      const all = s.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request completed" && String(l.req?.id).startsWith("one-way-"));
      return all.length === 3 ? all : null;
    });
    const paths = ["/firmware/manifest", `/firmware/sha256/${sha}.bin`, "/firmware/report"];
    for (const line of lines) {
      expect(Object.keys(line).sort()).toEqual(["level", "msg", "req", "res", "responseTime", "service", "time"]);
      expect(Object.keys(line.req).sort()).toEqual(["id", "method", "path"]);
      expect(paths).toContain(line.req.path);
    }
    expect(lines.map((l) => l.res.status).sort()).toEqual([200, 200, 206]);
    const reportLine = s.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "device report" && l.req?.id === "one-way-report");
    expect(reportLine).toMatchObject({ device: d.deviceId, status: "downloading", duplicate: false });
    expect(s.logs.join("")).not.toContain(d.apiKey);
  });

  it("answers pipelined polls and a report in order", async () => {
    await withConnection(s, async (c) => {
      const report = JSON.stringify({ device_id: d.deviceId, status: "checking", report_id: "conn-report-1" });
      // Two polls, a report with a body, then a poll: all in one write.
      c.send(
        pollText() +
          pollText() +
          `POST /firmware/report HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${d.apiKey}\r\nX-Device-Id: ${d.deviceId}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(report)}\r\n\r\n${report}` +
          pollText({ "X-Request-Id": "after-handover" }),
      );
      const answers = [await c.next(), await c.next(), await c.next(), await c.next()];
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(answers[0]!.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, answers[0]!.body));
      expect(answers[1]!.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, answers[1]!.body));
      expect(JSON.parse(answers[2]!.body.toString())).toEqual({ ok: true, duplicate: false });
      expect(answers[3]!.headers.get("x-request-id")).toBe("after-handover");
      expect(answers[3]!.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, answers[3]!.body));
    });
  });

  it("serves an image by hash after a poll on the same connection: whole, one block, and 304, like the app", async () => {
    const image = fs.readFileSync(HELLO_WORLD);
    const sha = createHash("sha256").update(image).digest("hex");
    const get = (extra: Record<string, string> = {}) => pollText(extra, `/firmware/sha256/${sha}.bin`);
    await withConnection(s, async (c) => {
      c.send(pollText());
      const m = await c.next();
      expect(JSON.parse(m.body.toString()).sha256).toBe(sha);
      c.send(get({ "X-Request-Id": "conn-download-1" }));
      const whole = await c.next();
      expect(whole.status).toBe(200);
      expect(createHash("sha256").update(whole.body).digest("hex")).toBe(sha);
      expect(whole.headers.get("x-sha256")).toBe(sha);
      c.send(get({ Range: "bytes=8192-16383" }) + get({ "If-None-Match": `"${sha}"` }));
      const block = await c.next();
      expect(block.status).toBe(206);
      expect(block.headers.get("content-range")).toBe(`bytes 8192-16383/${image.length}`);
      expect(block.body.equals(image.subarray(8192, 16384))).toBe(true);
      const same = await c.next();
      expect(same.status).toBe(304);

      const app = await s.req("GET", `/firmware/sha256/${sha}.bin?via=app`, { headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId } });
      const perAnswer = new Set(["date", "x-request-id", "connection", "keep-alive"]);
      const names = (h: Iterable<string>) => [...h].filter((k) => !perAnswer.has(k)).sort();
      expect(names(whole.headers.keys())).toEqual(names(Object.keys(app.headers)));
      for (const k of names(whole.headers.keys())) expect(whole.headers.get(k)).toBe(String(app.headers[k]));
      const line = await eventually(() => s.logs.map((l) => JSON.parse(l)).find((l) => l.req?.id === "conn-download-1"));
      expect(line).toMatchObject({ msg: "request completed", req: { method: "GET", path: `/firmware/sha256/${sha}.bin` }, res: { status: 200 } });
    });
  });

  it("answers a range it cannot satisfy with 416", async () => {
    const sha = createHash("sha256").update(fs.readFileSync(HELLO_WORLD)).digest("hex");
    await withConnection(s, async (c) => {
      c.send(pollText({ Range: "bytes=99999999-" }, `/firmware/sha256/${sha}.bin`));
      const r = await c.next();
      expect(r.status).toBe(416);
      expect(JSON.parse(r.body.toString()).error.code).toBe("range_not_satisfiable");
    });
  });

  it("answers 300 pipelined polls sent in one burst, in order", async () => {
    await withConnection(s, async (c) => {
      const ids = Array.from({ length: 300 }, (_, i) => `burst-poll-${i}`);
      c.send(ids.map((id) => pollText({ "X-Request-Id": id })).join("")); // about 100 KiB of heads
      for (const id of ids) {
        const a = await c.next();
        expect(a.status).toBe(200);
        expect(a.headers.get("x-request-id")).toBe(id);
        expect(a.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, a.body));
      }
    });
  });

  it("answers a head that arrives in pieces, and one whose rest comes after a pause", async () => {
    await withConnection(s, async (c) => {
      const text = pollText();
      c.send(text.slice(0, 25));
      await new Promise((r) => setTimeout(r, 200));
      c.send(text.slice(25));
      const a = await c.next();
      expect(a.status).toBe(200);
      expect(a.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, a.body));

      const slow = pollText();
      c.send(slow.slice(0, 40));
      await new Promise((r) => setTimeout(r, 1_200));
      c.send(slow.slice(40));
      const b = await c.next();
      expect(b.status).toBe(200);
      expect(b.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, b.body));
    });
  });

  it.each([
    ["a repeated X-Device-Id", (t: string) => t.replace("X-Nonce", `X-Device-Id: conn-2\r\nX-Nonce`), 400],
    ["a header folded onto two lines", (t: string) => t.replace("\r\nX-Nonce", "\r\n X-Other: 1\r\nX-Nonce"), 400],
    ["a bare LF", (t: string) => t.replace("\r\nX-Nonce", "\nX-Nonce"), 400],
    ["a control byte in a value", (t: string) => t.replace("Host: localhost", "Host: local\x01host"), 400],
    ["a request body on a GET", (t: string) => t.replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 200],
    ["no Host", (t: string) => t.replace(/Host: \S+\r\n/, ""), 400],
    ["HTTP/1.0", (t: string) => t.replace("HTTP/1.1", "HTTP/1.0"), 200],
    ["a wrong key", (t: string) => t.replace(/X-API-Key: \S+/, "X-API-Key: otadev_wrong"), 401],
  ])("answers a poll with %s as Node's parser and the app decide", async (_what, change, status) => {
    await withConnection(s, async (c) => {
      c.send(change(pollText()));
      const a = await c.next();
      expect(a.status).toBe(status);
      if (status >= 400) expect(JSON.parse(a.body.toString()).error.code).toEqual(_what === "no Host" ? "missing_host" : expect.any(String));
      else expect(a.headers.get("x-manifest-hmac")).toBe(mac(d.hmacKey, a.body));
    });
  });

  it("closes after answering a poll that asks for it", async () => {
    const c = await Connection.open(s);
    c.send(pollText({ Connection: "close" }));
    const a = await c.next();
    expect(a.status).toBe(200);
    expect(a.headers.get("connection")).toBe("close");
    expect(await c.closedByServer()).toBe(true);
  });

  it("refuses a replayed nonce on the same connection", async () => {
    await withConnection(s, async (c) => {
      const text = pollText();
      c.send(text);
      expect((await c.next()).status).toBe(200);
      c.send(text);
      const replay = await c.next();
      expect(replay.status).toBe(409);
      expect(JSON.parse(replay.body.toString()).error.code).toBe("nonce_reused");
    });
  });

  it("closes an idle connection after the keep-alive timeout", async () => {
    const c = await Connection.open(s);
    c.send(pollText());
    expect((await c.next()).status).toBe(200);
    const t0 = Date.now();
    await eventually(() => c.closed, 8_000, 100);
    expect(Date.now() - t0).toBeGreaterThan(4_000);
  });
});

describe("stopping the server", () => {
  it("ends idle kept-alive connections at once", async () => {
    const s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    const d: Bundle = (
      await s.req("POST", "/api/v1/devices/stop-1/provision", {
        headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" },
        body: "{}",
      })
    ).json();
    const text = `GET /firmware/manifest HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${d.apiKey}\r\nX-Device-Id: ${d.deviceId}\r\nX-Nonce: ${nonce()}\r\n\r\n`;
    const idle = await Connection.open(s);
    idle.send(text);
    expect((await idle.next()).status).toBe(200);
    const t0 = Date.now();
    await s.close();
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(await idle.closedByServer()).toBe(true);
  });
});
