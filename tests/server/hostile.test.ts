// Malformed and hostile requests: each gets a precise 4xx with a JSON error body, none a 5xx, and the
// server stays up throughout.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import jwt from "jsonwebtoken";
import { operatorSigningKey } from "../../server/infra/auth/keys";
import { onPostgres } from "../helpers/database";
import { BOOTLOADER, HELLO_WORLD, read } from "../helpers/fixtures";
import { RawConnection, type RawAnswer } from "../helpers/raw-http";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

interface Case {
  name: string;
  method?: string;
  path: string;
  headers?: () => Record<string, string>;
  body?: () => string | Buffer;
  status: number;
  code?: string;
  message?: RegExp;
}

function multipart(fields: Record<string, string>, file?: { name: string; data: Buffer; field?: string }) {
  const boundary = "----ota" + randomBytes(8).toString("hex");
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  }
  if (file) {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${file.field ?? "file"}"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      file.data,
      Buffer.from("\r\n"),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), type: `multipart/form-data; boundary=${boundary}` };
}

function rawExchange(s: TestServer, text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: "127.0.0.1", port: s.port, ca: s.ca, servername: "localhost" }, () => sock.write(text));
    let out = "";
    sock.on("data", (c) => (out += c.toString("latin1")));
    sock.on("error", reject);
    sock.on("close", () => resolve(out));
  });
}

describe("hostile and malformed requests", () => {
  let s: TestServer;
  let device: { deviceId: string; apiKey: string };
  let viewerToken: string;
  let expiredToken: string;
  let foreignToken: string;
  const dev = () => ({ "X-API-Key": s.creds.deviceApiKey });
  const own = () => ({ "X-API-Key": device.apiKey, "X-Device-Id": device.deviceId, "X-Nonce": "replayed-nonce-0001" });
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const json = (h: Record<string, string>) => ({ ...h, "Content-Type": "application/json" });
  const report = (body: unknown) => JSON.stringify(body);
  const upload = (fields: Record<string, string>, file?: { name: string; data: Buffer; field?: string }) => {
    const m = multipart(fields, file);
    return { headers: () => ({ ...op(), "Content-Type": m.type }), body: () => m.body };
  };

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest());
    const p = await s.req("POST", "/api/v1/devices/hostile-dev/provision", { headers: json(op()), body: "{}" });
    device = p.json();
    await s.req("GET", "/firmware/manifest", { headers: own() }); // uses the nonce once: later uses are replays
    viewerToken = (await s.running.ctx.credentials.issueOperatorToken("viewer", "viewer")).token;
    const master = Buffer.from(fs.readFileSync(path.join(s.dirs.data, "master.key"), "utf8").trim(), "hex");
    expiredToken = jwt.sign({ role: "admin", exp: Math.floor(Date.now() / 1000) - 60 }, operatorSigningKey(master), {
      algorithm: "HS256",
      subject: "admin",
      jwtid: (await s.running.ctx.credentials.issueOperatorToken("admin", "admin")).jti,
      issuer: "esp32-ota",
      audience: "operator-api",
    });
    foreignToken = jwt.sign({ role: "admin" }, randomBytes(32), { algorithm: "HS256", subject: "admin", jwtid: "x", issuer: "esp32-ota", audience: "operator-api" });
  });
  afterAll(async () => s.close());

  const noneToken =
    Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url") +
    "." +
    Buffer.from(JSON.stringify({ role: "admin", sub: "admin", iss: "esp32-ota", aud: "operator-api" })).toString("base64url") +
    ".";

  const cases: Case[] = [
    // credentials on the device API
    { name: "manifest without a key", path: "/firmware/manifest", status: 401, code: "missing_credential" },
    { name: "unknown fleet key", path: "/firmware/manifest", headers: () => ({ "X-API-Key": "otafleet_" + "A".repeat(43) }), status: 401, code: "invalid_credential" },
    { name: "random key", path: "/firmware/manifest", headers: () => ({ "X-API-Key": "hello" }), status: 401, code: "invalid_credential" },
    { name: "8 KB key", path: "/firmware/manifest", headers: () => ({ "X-API-Key": "k".repeat(8000) }), status: 401 },
    { name: "operator token as X-API-Key", path: "/firmware/manifest", headers: () => ({ "X-API-Key": s.creds.operatorToken }), status: 403, code: "wrong_credential_kind" },
    { name: "operator bearer on the device API", path: "/firmware/hello.bin", headers: op, status: 403, code: "wrong_credential_kind" },
    { name: "device key without its id", path: "/firmware/manifest", headers: () => ({ "X-API-Key": device.apiKey }), status: 400, code: "device_id_required" },
    { name: "device key for another id", path: "/firmware/manifest", headers: () => ({ ...own(), "X-Device-Id": "someone-else", "X-Nonce": "n".repeat(20) }), status: 401 },
    // headers and query on the manifest
    { name: "path traversal as device id", path: "/firmware/manifest", headers: () => ({ ...dev(), "X-Device-Id": "../../etc/passwd" }), status: 400, code: "invalid_device_id" },
    { name: "100-character device id", path: "/firmware/manifest", headers: () => ({ ...dev(), "X-Device-Id": "d".repeat(100) }), status: 400 },
    { name: "malformed nonce", path: "/firmware/manifest", headers: () => ({ ...own(), "X-Nonce": "no spaces allowed!" }), status: 400, code: "invalid_nonce" },
    { name: "replayed manifest request", path: "/firmware/manifest", headers: own, status: 409, code: "nonce_reused" },
    { name: "unknown chip", path: "/firmware/manifest", headers: () => ({ ...dev(), "X-Device-Chip": "esp8266" }), status: 400, code: "unknown_chip" },
    { name: "chip in query, wrong type (array)", path: "/firmware/manifest?chip=esp32&chip=esp32s3", headers: dev, status: 200 },
    { name: "overlong version header", path: "/firmware/manifest", headers: () => ({ ...dev(), "X-Device-Version": "v".repeat(40) }), status: 400, code: "invalid_version" },
    { name: "POST to the manifest", method: "POST", path: "/firmware/manifest", headers: dev, status: 405, code: "method_not_allowed" },
    // reports
    { name: "report: not JSON", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => "{not json", status: 400, code: "invalid_json" },
    { name: "report: JSON array", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => "[1,2]", status: 400, code: "invalid_request" },
    { name: "report: JSON string", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => '"x"', status: 400 },
    { name: "report: wrong types", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: 5, status: ["x"] }), status: 400, code: "invalid_request" },
    { name: "report: no device id", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ status: "checking" }), status: 400 },
    { name: "report: unknown status", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "d1", status: "exploded" }), status: 400 },
    { name: "report: negative progress", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "d1", status: "downloading", bytes: -1 }), status: 400 },
    { name: "report: fractional progress", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "d1", status: "downloading", bytes: 1.5 }), status: 400 },
    { name: "report: sha256 not hex", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "d1", status: "confirmed", sha256: "zz" }), status: 400 },
    { name: "report: 9 KiB body", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "d1", status: "failed", error: "e".repeat(9000) }), status: 413, code: "body_too_large" },
    { name: "report: 1 MiB body", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => "[" + "0,".repeat(500000) + "0]", status: 413 },
    { name: "report: deep nesting", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => "[".repeat(3000) + "]".repeat(3000), status: 400 },
    { name: "report: text/plain", method: "POST", path: "/firmware/report", headers: () => ({ ...dev(), "Content-Type": "text/plain" }), body: () => "status=ok", status: 415, code: "unsupported_media_type" },
    { name: "report: unsupported charset", method: "POST", path: "/firmware/report", headers: () => ({ ...dev(), "Content-Type": "application/json; charset=koi8-r" }), body: () => "{}", status: 415 },
    { name: "report: for another device than authenticated", method: "POST", path: "/firmware/report", headers: () => json({ ...own(), "X-Nonce": "unused-nonce-12345" }), body: () => report({ device_id: "other", status: "checking" }), status: 403, code: "device_mismatch" },
    { name: "report: traversal as device id", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => report({ device_id: "../../x", status: "checking" }), status: 400 },
    { name: "report: prototype pollution attempt", method: "POST", path: "/firmware/report", headers: () => json(dev()), body: () => '{"device_id":"d1","status":"checking","__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}', status: 200 },
    { name: "GET on the report endpoint", path: "/firmware/report", headers: dev, status: 405 },
    // paths and ranges on downloads
    { name: "traversal in a firmware name", path: "/firmware/..%2f..%2fdata%2fmaster.key", headers: dev, status: 400, code: "invalid_name" },
    { name: "hidden-file name", path: "/firmware/.master.bin", headers: dev, status: 400 },
    { name: "traversal in a hash path", path: "/firmware/sha256/..%2f..%2fmaster.key", headers: dev, status: 400, code: "invalid_hash" },
    { name: "broken percent-encoding", path: "/firmware/%E0%A4%A.bin", headers: dev, status: 400, code: "invalid_path" },
    { name: "NUL in a name", path: "/firmware/hello%00.bin", headers: dev, status: 400 },
    { name: "absurd range start", path: "/firmware/hello.bin", headers: () => ({ ...dev(), Range: "bytes=99999999999999999999-" }), status: 416 },
    { name: "zero-length suffix range", path: "/firmware/hello.bin", headers: () => ({ ...dev(), Range: "bytes=-0" }), status: 416 },
    { name: "a thousand ranges", path: "/firmware/hello.bin", headers: () => ({ ...dev(), Range: "bytes=" + Array.from({ length: 1000 }, (_, i) => `${i}-${i}`).join(",") }), status: 416 },
    { name: "range with trailing junk", path: "/firmware/hello.bin", headers: () => ({ ...dev(), Range: "bytes=0-1x" }), status: 416 },
    { name: "block list with a bad hash", path: "/firmware/sha256/abc/blocks", headers: dev, status: 400 },
    // clients we do not control: Basic, x-ESP32-* headers, the offered-image path
    { name: "key in the query string", path: "/firmware/manifest?api_key=x", headers: dev, status: 400, code: "credential_in_query" },
    { name: "fleet key as a query value", path: "/firmware/manifest?k=otafleet_x", status: 400, code: "credential_in_query" },
    { name: "Basic with garbage", path: "/firmware/manifest", headers: () => ({ Authorization: "Basic %%%" }), status: 401, code: "missing_credential" },
    { name: "Basic with a wrong key", path: "/api/ota/download", headers: () => ({ Authorization: `Basic ${Buffer.from(":otafleet_nope").toString("base64")}` }), status: 401, code: "invalid_credential" },
    { name: "Basic user name with traversal", path: "/api/ota/download", headers: () => ({ Authorization: `Basic ${Buffer.from(`../x:${s.creds.deviceApiKey}`).toString("base64")}` }), status: 400, code: "invalid_device_id" },
    { name: "X-Device-Id and x-ESP32-STA-MAC disagree", path: "/api/ota/download", headers: () => ({ ...dev(), "X-Device-Id": "aa:bb:cc:dd:ee:ff", "x-ESP32-STA-MAC": "AA:BB:CC:DD:EE:00" }), status: 400, code: "conflicting_device_id" },
    { name: "negative free space", path: "/api/ota/download", headers: () => ({ ...dev(), "x-ESP32-free-space": "-1" }), status: 400, code: "invalid_header" },
    { name: "11-digit sketch size", path: "/api/ota/download", headers: () => ({ ...dev(), "x-ESP32-sketch-size": "99999999999" }), status: 400, code: "invalid_header" },
    { name: "offered image for an unknown chip", path: "/api/ota/download?chip=z80", headers: dev, status: 400, code: "unknown_chip" },
    { name: "DELETE on the offered image", method: "DELETE", path: "/api/ota/download", headers: dev, status: 405 },
    { name: "version download with traversal", path: "/firmware/..%2f..%2fmaster.key.bin", headers: dev, status: 400, code: "invalid_name" },
    // operator API
    { name: "operator API without a token", path: "/api/v1/devices", status: 401, code: "missing_credential" },
    { name: "bearer garbage", path: "/api/v1/devices", headers: () => ({ Authorization: "Bearer garbage" }), status: 401, code: "invalid_token" },
    { name: "alg=none token", path: "/api/v1/devices", headers: () => ({ Authorization: `Bearer ${noneToken}` }), status: 401, code: "invalid_token", message: /^the bearer token is not a valid operator token$/ },
    { name: "token signed with another key", path: "/api/v1/devices", headers: () => ({ Authorization: `Bearer ${foreignToken}` }), status: 401, code: "invalid_token", message: /^the bearer token is not a valid operator token$/ },
    { name: "expired token", path: "/api/v1/devices", headers: () => ({ Authorization: `Bearer ${expiredToken}` }), status: 401, code: "token_expired", message: /^the operator token has expired; ask an admin for a new one$/ },
    { name: "Basic auth", path: "/api/v1/devices", headers: () => ({ Authorization: "Basic YWRtaW46YWRtaW4=" }), status: 401 },
    { name: "viewer uploads", method: "POST", path: "/api/v1/firmware", headers: () => ({ Authorization: `Bearer ${viewerToken}`, "Content-Type": "multipart/form-data; boundary=x" }), body: () => "--x--", status: 403, code: "insufficient_role" },
    { name: "viewer provisions", method: "POST", path: "/api/v1/devices/x/provision", headers: () => json({ Authorization: `Bearer ${viewerToken}` }), body: () => "{}", status: 403 },
    { name: "upload as JSON", method: "POST", path: "/api/v1/firmware", headers: () => json(op()), body: () => "{}", status: 415 },
    { name: "upload without a file", method: "POST", path: "/api/v1/firmware", ...upload({ name: "x.bin" }), status: 400, code: "missing_file" },
    { name: "upload in the wrong field", method: "POST", path: "/api/v1/firmware", ...upload({}, { name: "a.bin", data: read(HELLO_WORLD), field: "image" }), status: 400, code: "unexpected_field" },
    { name: "upload of a bootloader", method: "POST", path: "/api/v1/firmware", ...upload({}, { name: "b.bin", data: read(BOOTLOADER) }), status: 422, code: "invalid_image" },
    { name: "upload larger than the OTA slot", method: "POST", path: "/api/v1/firmware", ...upload({}, { name: "big.bin", data: Buffer.concat([read(HELLO_WORLD), Buffer.alloc(0x1c0000)]) }), status: 413, code: "upload_too_large" },
    { name: "upload named with traversal", method: "POST", path: "/api/v1/firmware", ...upload({ name: "../evil.bin" }, { name: "a.bin", data: read(HELLO_WORLD) }), status: 400 },
    { name: "broken multipart", method: "POST", path: "/api/v1/firmware", headers: () => ({ ...op(), "Content-Type": "multipart/form-data; boundary=zz" }), body: () => "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc", status: 400 },
    { name: "limit not a number", path: "/api/v1/devices?limit=abc", headers: op, status: 400, code: "invalid_request" },
    { name: "limit too large", path: "/api/v1/devices?limit=100000", headers: op, status: 400 },
    { name: "traversal as device path", path: "/api/v1/devices/..%2f..%2fetc", headers: op, status: 400 },
    { name: "unknown device", path: "/api/v1/devices/nobody", headers: op, status: 404, code: "device_not_found" },
    { name: "provision with bad JSON", method: "POST", path: "/api/v1/devices/x/provision", headers: () => json(op()), body: () => "{", status: 400, code: "invalid_json" },
    { name: "provision with unknown fields", method: "POST", path: "/api/v1/devices/x/provision", headers: () => json(op()), body: () => '{"admin":true}', status: 400 },
    {
      name: "provision with a server URL too long for the agent",
      method: "POST",
      path: "/api/v1/devices/x/provision",
      headers: () => json(op()),
      body: () => JSON.stringify({ server_url: `https://ota.example.com/${"p".repeat(196)}` }),
      status: 400,
      message: /server_url: is longer than the 219 characters the device agent can keep/,
    },
    { name: "image by a bad hash", path: "/api/v1/firmware/nothex", headers: op, status: 400 },
    { name: "unknown endpoint", path: "/api/v1/nothing", headers: op, status: 404, code: "not_found" },
    { name: "unknown top-level path", path: "/../../etc/passwd", status: 404 },
  ];

  it(`has at least 40 cases (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  it.each(cases.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const r = await s.req(c.method ?? "GET", c.path, { headers: c.headers?.(), body: c.body?.() });
    expect({ status: r.status, body: r.text().slice(0, 300) }).toMatchObject({ status: c.status });
    expect(r.status).toBeLessThan(500);
    if (r.status >= 400) {
      expect(r.headers["content-type"]).toMatch(/application\/json/);
      const err = r.json().error;
      expect(typeof err.code).toBe("string");
      expect(typeof err.message).toBe("string");
      if (c.code) expect(err.code).toBe(c.code);
      if (c.message) expect(err.message).toMatch(c.message);
    }
  });

  it("malformed HTTP and oversized headers get JSON 4xx from the socket layer", async () => {
    const bad = await rawExchange(s, "NOT HTTP AT ALL\r\n\r\n");
    expect(bad).toMatch(/^HTTP\/1.1 400 /);
    expect(bad).toContain('"code":"malformed_request"');
    const huge = await rawExchange(s, `GET /firmware/manifest HTTP/1.1\r\nHost: x\r\nX-Pad: ${"a".repeat(20000)}\r\n\r\n`);
    expect(huge).toMatch(/^HTTP\/1.1 431 /);
  });

  it("did not pollute prototypes, and the server is still up", async () => {
    expect(({} as any).polluted).toBeUndefined();
    const h = await s.req("GET", "/healthz");
    expect(h.status).toBe(200);
    expect((await s.req("GET", "/firmware/manifest", { headers: dev() })).status).toBe(200);
    expect(s.logs.join("")).not.toMatch(/"level":"error"/);
  });

  it("no secret appears in a log or an error body", () => {
    const logs = s.logs.join("");
    for (const secret of [s.creds.deviceApiKey, s.creds.operatorToken, device.apiKey]) expect(logs).not.toContain(secret);
  });
});

describe("repeated authentication failures", () => {
  it("answer 429 with Retry-After, for the failing address, until the window passes", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3", OTA_AUTH_FAILURE_WINDOW: "60" });
    try {
      for (let i = 0; i < 3; i++) {
        expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": `wrong-${i}` } })).status).toBe(401);
      }
      const limited = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": "wrong-again" } });
      expect(limited.status).toBe(429);
      expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
      expect(Number(limited.headers["retry-after"])).toBeLessThanOrEqual(60);
      expect(limited.json().error.code).toBe("too_many_auth_failures");
      // The operator API shares the count.
      expect((await s.req("GET", "/api/v1/devices")).status).toBe(429);
    } finally {
      await s.close();
    }
  });

  it("good requests in flight from one address never count towards the limit, however many", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3" });
    const held: tls.TLSSocket[] = [];
    try {
      const op = `Bearer ${s.creds.operatorToken}`;
      let heads = 0;
      // originalUrl: the application has already routed the request (and trimmed req.url) when this runs.
      s.running.server.on("request", (req: { method?: string; url?: string; originalUrl?: string }) => {
        if (req.method === "POST" && (req.originalUrl ?? req.url) === "/api/v1/releases") heads++;
      });
      // Five authenticated uploads whose bodies have not arrived yet: in flight, past the limiter.
      const answers = Array.from({ length: 5 }, () => {
        const sock = tls.connect({ host: "127.0.0.1", port: s.port, ca: s.ca, servername: "localhost" });
        held.push(sock);
        sock.write(`POST /api/v1/releases HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${op}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n`);
        return new Promise<string>((resolve) => {
          let text = "";
          sock.on("data", (d) => {
            text += d.toString("latin1");
            if (text.includes("\r\n\r\n")) resolve(text); // the answer's head
          });
          sock.on("close", () => resolve(text));
        });
      });
      await eventually(() => heads === 5); // the server has read all five request heads
      const dev = { "X-API-Key": s.creds.deviceApiKey };
      const now = await Promise.all([s.req("GET", "/api/v1/devices", { headers: { Authorization: op } }), s.req("GET", "/firmware/manifest", { headers: dev })]);
      expect(now.map((r) => r.status)).toEqual([200, 404]);
      // The bodies, on connections kept open (a client that half-closes may lose its answer to a server still waiting for the database).
      for (const sock of held) sock.write("{}");
      for (const text of await Promise.all(answers)) expect(text).toMatch(/^HTTP\/1.1 400 /);

      // Failures do count, also when they arrive together: three wrong keys, then the address is throttled.
      const bad = await Promise.all([0, 1, 2].map((i) => s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": `wrong-${i}` } })));
      expect(bad.map((r) => r.status)).toEqual([401, 401, 401]);
      await eventually(async () => (await s.req("GET", "/api/v1/devices", { headers: { Authorization: op } })).status === 429);
    } finally {
      for (const sock of held) sock.destroy();
      await s.close();
    }
  });

  it("answer a pipelined burst of wrong keys on one connection with at most the limit of 401s, then 429s; challenges do not count", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "5", OTA_AUTH_FAILURE_WINDOW: "60" });
    const c = await RawConnection.open(s);
    try {
      const get = (extra: string) => `GET /firmware/manifest HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;
      // Twenty requests without any credential, then 300 wrong keys: all in one write, on one kept-alive connection.
      const challenges = Array.from({ length: 20 }, () => get(""));
      const guesses = Array.from({ length: 300 }, (_, i) => get(`X-API-Key: otafleet_wrong${i}\r\n`));
      c.send(challenges.concat(guesses).join(""));
      const answers: RawAnswer[] = [];
      for (let i = 0; i < 320; i++) answers.push(await c.next());
      // The answers in order, as runs of one status and code.
      const runs: [string, number][] = [];
      for (const a of answers) {
        const code = `${a.status} ${JSON.parse(a.body.toString()).error.code}`;
        if (runs.at(-1)?.[0] === code) runs.at(-1)![1]++;
        else runs.push([code, 1]);
      }
      if (onPostgres()) {
        // Fleet keys are checked against the database asynchronously, so failures are counted in the order their
        // checks finish, not in the order of the requests: the limit still holds, the runs may interleave.
        expect(runs[0]).toEqual(["401 missing_credential", 20]);
        const counts = new Map<string, number>();
        for (const [code, n] of runs.slice(1)) counts.set(code, (counts.get(code) ?? 0) + n);
        expect(Object.fromEntries(counts)).toEqual({ "401 invalid_credential": 5, "429 too_many_auth_failures": 295 });
      } else {
        expect(runs).toEqual([
          ["401 missing_credential", 20],
          ["401 invalid_credential", 5],
          ["429 too_many_auth_failures", 295],
        ]);
      }
      for (const a of answers.filter((x) => x.status === 429)) {
        expect(Number(a.headers.get("retry-after"))).toBeGreaterThan(0);
        expect(Number(a.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      }
      // The address stays refused, a good key too; another address with a good key is not affected.
      c.send(get(`X-API-Key: ${s.creds.deviceApiKey}\r\n`));
      expect((await c.next()).status).toBe(429);
      const other = await RawConnection.open(s, { localAddress: "127.0.0.2" });
      try {
        other.send(get(`X-API-Key: ${s.creds.deviceApiKey}\r\n`));
        const answer = await other.next();
        expect(answer.status).toBe(404); // no image yet: authenticated and answered
        expect(JSON.parse(answer.body.toString()).error.code).toBe("no_firmware");
      } finally {
        other.end();
      }
    } finally {
      c.end();
      await s.close();
    }
  });

  it("count a wrong bearer token on the device API, also one signed like an operator token", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3", OTA_AUTH_FAILURE_WINDOW: "60" });
    try {
      const forged = jwt.sign({ role: "admin" }, randomBytes(32), { algorithm: "HS256", subject: "admin", jwtid: "x", issuer: "esp32-ota", audience: "operator-api" });
      for (const token of ["not-a-token", forged, `${s.creds.operatorToken.slice(0, -4)}AAAA`]) {
        const r = await s.req("GET", "/firmware/manifest", { headers: { Authorization: `Bearer ${token}` } });
        expect(r.status).toBe(401);
        expect(r.json().error.code).toBe("invalid_credential");
        expect(r.headers["www-authenticate"]).toMatch(/^Basic /);
      }
      const limited = await s.req("GET", "/firmware/manifest", { headers: { Authorization: `Bearer ${forged}` } });
      expect(limited.status).toBe(429);
      expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
  });

  it("successful requests do not count towards the limit", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3" });
    try {
      for (let i = 0; i < 20; i++) {
        expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } })).status).toBe(404);
      }
      expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": "wrong" } })).status).toBe(401);
    } finally {
      await s.close();
    }
  });
});
