// The device API's routes: polls, reports and downloads by hash answer alike with or without a query string
// (which the routes ignore), refusals keep their codes, and reports are stored before they are acknowledged.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { withTestDb } from "../helpers/database";
import { HELLO_WORLD } from "../helpers/fixtures";
import { mac, nonce, type Bundle } from "../helpers/device-keys";
import { eventually, startTestServer, type Reply, type TestServer } from "../helpers/server";

// Headers that differ between any two answers whatever path produced them.
const PER_ANSWER = new Set(["date", "x-request-id", "x-manifest-hmac", "content-length", "connection", "keep-alive"]);
const stable = (r: Reply) => Object.fromEntries(Object.entries(r.headers).filter(([k]) => !PER_ANSWER.has(k)));


describe("device API routes", () => {
  let s: TestServer;
  let d: Bundle;
  let other: Bundle;
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const own = (extra: Record<string, string> = {}) => ({ "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, ...extra });
  const provision = async (id: string) =>
    (await s.req("POST", `/api/v1/devices/${id}/provision`, { headers: { ...op(), "Content-Type": "application/json" }, body: "{}" })).json<Bundle>();
  const report = (p: string, body: string, headers = own({ "Content-Type": "application/json" })) => s.req("POST", p, { headers, body });

  beforeAll(async () => {
    s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "5" });
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    d = await provision("fast-1");
    other = await provision("fast-2");
  });
  afterAll(async () => s.close());

  it("a poll with a query string has the same headers and body as one without", async () => {
    const fast = await s.req("GET", "/firmware/manifest", { headers: own({ "X-Nonce": nonce() }) });
    const app = await s.req("GET", "/firmware/manifest?chip=esp32", { headers: own({ "X-Nonce": nonce() }) });
    expect(fast.status).toBe(200);
    expect(app.status).toBe(200);
    expect(stable(fast)).toEqual(stable(app));
    expect(fast.headers["content-security-policy"]).toBe("default-src 'none';frame-ancestors 'none'");
    for (const r of [fast, app]) expect(r.headers["x-manifest-hmac"]).toBe(mac(d.hmacKey, r.body));
    const [f, a] = [fast.json(), app.json()];
    expect({ ...f, nonce: 0, issued_at: 0 }).toEqual({ ...a, nonce: 0, issued_at: 0 });
  });

  it("answers 304 with a MAC over the not-modified text, and logs each poll with its request id", async () => {
    const first = await s.req("GET", "/firmware/manifest", { headers: own({ "X-Nonce": nonce() }) });
    const n = nonce();
    const r = await s.req("GET", "/firmware/manifest", {
      headers: own({ "X-Nonce": n, "If-None-Match": String(first.headers.etag), "X-Request-Id": "poll-304-check" }),
    });
    expect(r.status).toBe(304);
    expect(r.headers["x-request-id"]).toBe("poll-304-check");
    const etag = String(first.headers.etag).replace(/"/g, "");
    expect(r.headers["x-manifest-hmac"]).toBe(mac(d.hmacKey, `not-modified\n${d.deviceId}\n${n}\n${etag}`));
    const line = await eventually(() => s.logs.map((l) => JSON.parse(l)).find((l) => l.req?.id === "poll-304-check"));
    expect(line).toMatchObject({ msg: "request completed", req: { method: "GET", path: "/firmware/manifest" }, res: { status: 304 } });
    expect(s.logs.join("")).not.toContain(d.apiKey);
  });

  it("refuses a replayed nonce and another device's id", async () => {
    const n = nonce();
    expect((await s.req("GET", "/firmware/manifest", { headers: own({ "X-Nonce": n }) })).status).toBe(200);
    const replay = await s.req("GET", "/firmware/manifest", { headers: own({ "X-Nonce": n }) });
    expect(replay.status).toBe(409);
    expect(replay.json().error.code).toBe("nonce_reused");
    const foreign = await s.req("GET", "/firmware/manifest", { headers: { ...own({ "X-Nonce": nonce() }), "X-Device-Id": other.deviceId } });
    expect(foreign.status).toBe(401);
  });

  it("stores a report before acknowledging it, once, with or without a query string", async () => {
    const body = JSON.stringify({ device_id: d.deviceId, status: "downloading", bytes: 8192, total: 124416, report_id: "fp-1" });
    const fast = await report("/firmware/report", body);
    expect(fast.status).toBe(200);
    expect(fast.json()).toEqual({ ok: true, duplicate: false });
    expect((await report("/firmware/report", body)).json()).toEqual({ ok: true, duplicate: true });
    const app = await report("/firmware/report?via=app", JSON.stringify({ device_id: d.deviceId, status: "writing", report_id: "fp-2" }));
    expect(app.json()).toEqual({ ok: true, duplicate: false });
    expect(stable(fast)).toEqual(stable(app));
    const h = (await s.req("GET", `/api/v1/devices/${d.deviceId}/reports`, { headers: op() })).json();
    expect(h.reports.map((r: { report_id: string }) => r.report_id)).toEqual(["fp-2", "fp-1"]);
  });

  it.each([
    ["not JSON", "{nope"],
    ["a JSON string", '"x"'],
    ["wrong types", JSON.stringify({ device_id: 5, status: ["x"] })],
    ["an unknown status", JSON.stringify({ device_id: "fast-1", status: "exploded" })],
    ["another device's id", JSON.stringify({ device_id: "fast-2", status: "checking" })],
    ["no body", ""],
    ["non-JSON whitespace before the object", '\u00a0{"device_id":"fast-1","status":"checking"}'],
  ])("refuses a report with %s, with or without a query string", async (_what, body) => {
    const fast = await report("/firmware/report", body);
    const app = await report("/firmware/report?via=app", body);
    expect(fast.status).toBeGreaterThanOrEqual(400);
    expect(fast.status).toBe(app.status);
    expect(fast.json()).toEqual(app.json());
    expect(stable(fast)).toEqual(stable(app));
  });

  it("accepts a report with a byte order mark", async () => {
    const body = '\ufeff' + JSON.stringify({ device_id: d.deviceId, status: "checking", report_id: "bom-1" });
    expect((await report("/firmware/report", body)).json()).toEqual({ ok: true, duplicate: false });
    expect((await report("/firmware/report?via=app", body)).json()).toEqual({ ok: true, duplicate: true });
  });

  it("acknowledges only what is on disk: 300 concurrent reports, every one stored", async () => {
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        report("/firmware/report", JSON.stringify({ device_id: d.deviceId, status: "writing", bytes: i, total: 300, report_id: `burst-${i}` })),
      ),
    );
    expect(replies.every((r) => r.status === 200 && r.json().duplicate === false)).toBe(true);
    // Read the database the way a restarted server would, from another connection.
    const [n] = await withTestDb(s.dirs, (db) => db.rows<{ n: number }>("SELECT CAST(count(*) AS integer) AS n FROM reports WHERE report_id LIKE 'burst-%'"));
    expect(n).toEqual({ n: 300 });
  });

  describe("downloads by hash", () => {
    const image = fs.readFileSync(HELLO_WORLD);
    const sha = createHash("sha256").update(image).digest("hex");
    const get = (q: string, headers: Record<string, string> = {}) => s.req("GET", `/firmware/sha256/${sha}.bin${q}`, { headers: own(headers) });

    const SIZE = image.length;
    const ETAG = `"${sha}"`;
    // Which bytes each request must get, worked out here from the file on disk: [first, last] or none.
    it.each<[string, Record<string, string>, number, [number, number] | null]>([
      ["the whole image", {}, 200, [0, SIZE - 1]],
      ["the first byte", { Range: "bytes=0-0" }, 206, [0, 0]],
      ["the last byte", { Range: `bytes=${SIZE - 1}-${SIZE - 1}` }, 206, [SIZE - 1, SIZE - 1]],
      ["one block in the middle", { Range: "bytes=8192-16383" }, 206, [8192, 16383]],
      ["the last 100 bytes (suffix Range)", { Range: "bytes=-100" }, 206, [SIZE - 100, SIZE - 1]],
      ["everything from an offset (open-ended Range)", { Range: "bytes=100000-" }, 206, [100000, SIZE - 1]],
      ["a Range with the current If-Range", { Range: "bytes=10-19", "If-Range": ETAG }, 206, [10, 19]],
      ["a Range with a stale If-Range", { Range: "bytes=0-99", "If-Range": '"0000"' }, 200, [0, SIZE - 1]],
      ["If-None-Match with its ETag", { "If-None-Match": ETAG }, 304, null],
      ["a Range past the end", { Range: "bytes=999999-" }, 416, null],
    ])("answers %s from the bytes of the file on disk, for GET and HEAD, with or without a query string", async (_what, headers, status, bytes) => {
      for (const [q, method] of [["", "GET"], ["?via=app", "GET"], ["", "HEAD"], ["?via=app", "HEAD"]] as const) {
        const r = await s.req(method, `/firmware/sha256/${sha}.bin${q}`, { headers: own(headers) });
        expect([method, q, r.status]).toEqual([method, q, status]);
        if (!bytes) continue;
        const [first, last] = bytes;
        const want = image.subarray(first, last + 1);
        expect(r.headers["content-length"]).toBe(String(want.length));
        expect(r.headers["content-range"]).toBe(status === 206 ? `bytes ${first}-${last}/${SIZE}` : undefined);
        expect(r.headers.etag).toBe(ETAG);
        if (method === "GET") expect(r.body.equals(want)).toBe(true);
        else expect(r.body.length).toBe(0);
      }
      const [a, b] = [await get("", headers), await get("?via=app", headers)];
      expect(stable(a)).toEqual(stable(b));
    });

    it("logs a download when its transfer ends, and refuses a wrong key", async () => {
      const r = await get("", { "X-Request-Id": "download-log-check" });
      expect(r.status).toBe(200);
      const line = await eventually(() => s.logs.map((l) => JSON.parse(l)).find((l) => l.req?.id === "download-log-check"));
      expect(line).toMatchObject({ msg: "request completed", req: { method: "GET", path: `/firmware/sha256/${sha}.bin` }, res: { status: 200 } });
      const bad = await s.req("GET", `/firmware/sha256/${sha}.bin`, { headers: { ...own(), "X-API-Key": "otadev_wrong" } });
      expect(bad.status).toBe(401);
      expect(bad.json().error.code).toBe("invalid_credential");
    });
  });

  it("answers a throttled address 429, even with a valid key", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8 && statuses.at(-1) !== 429; i++) {
      statuses.push((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": "otafleet_wrong" } })).status);
    }
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.slice(0, -1).every((x) => x === 401)).toBe(true);
    const poll = await s.req("GET", "/firmware/manifest", { headers: own({ "X-Nonce": nonce() }) });
    expect(poll.status).toBe(429);
    expect(poll.headers["retry-after"]).toBeDefined();
    const rep = await report("/firmware/report", JSON.stringify({ device_id: d.deviceId, status: "checking" }));
    expect(rep.status).toBe(429);
  });
});
