import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { ESPHOME, HELLO_WORLD, itWithEsphome, read } from "../helpers/fixtures";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

const image = read(HELLO_WORLD);
const SHA = createHash("sha256").update(image).digest("hex");
const ETAG = `"${SHA}"`;
const SIZE = image.length;

/** One raw HTTP/1.1 exchange over TLS: to see exactly what goes on the wire (framing, headers). */
function raw(s: TestServer, requestText: string): Promise<{ head: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: "127.0.0.1", port: s.port, ca: s.ca, servername: "localhost" }, () => sock.write(requestText));
    const chunks: Buffer[] = [];
    sock.on("data", (c) => chunks.push(c));
    sock.on("error", reject);
    sock.on("end", () => {
      const all = Buffer.concat(chunks);
      const sep = all.indexOf("\r\n\r\n");
      resolve({ head: all.subarray(0, sep).toString("latin1"), body: all.subarray(sep + 4) });
    });
  });
}

describe("firmware downloads", () => {
  let s: TestServer;
  const get = (p: string, headers: Record<string, string> = {}, method = "GET") =>
    s.req(method, p, { headers: { "X-API-Key": s.creds.deviceApiKey, ...headers } });
  const BY_NAME = "/firmware/hello.bin";
  const BY_HASH = `/firmware/sha256/${SHA}.bin`;

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(async () => (await get(BY_NAME)).status === 200);
  });
  afterAll(async () => s.close());

  it.each([BY_NAME, BY_HASH])("%s is byte-identical, with Content-Length, ETag = SHA-256 and x-MD5", async (p) => {
    const r = await get(p);
    expect(r.status).toBe(200);
    expect(r.body.equals(image)).toBe(true);
    expect(r.headers["content-length"]).toBe(String(SIZE));
    expect(r.headers["transfer-encoding"]).toBeUndefined();
    expect(r.headers["accept-ranges"]).toBe("bytes");
    expect(r.headers.etag).toBe(ETAG);
    expect(r.headers["x-md5"]).toBe("b33546d26b53d14ce95821ba4f6e058e");
    expect(r.headers["content-type"]).toBe("application/octet-stream");
  });

  it("is never chunked on the wire, for HTTP/1.1 and HTTP/1.0", async () => {
    for (const version of ["HTTP/1.1", "HTTP/1.0"]) {
      const { head, body } = await raw(
        s,
        `GET ${BY_NAME} ${version}\r\nHost: localhost\r\nX-API-Key: ${s.creds.deviceApiKey}\r\nConnection: close\r\n\r\n`,
      );
      expect(head).toMatch(new RegExp(`^HTTP/1.1 200 OK`));
      expect(head).toMatch(new RegExp(`\r\nContent-Length: ${SIZE}\r\n`, "i"));
      expect(head).not.toMatch(/transfer-encoding/i);
      expect(body.equals(image)).toBe(true);
    }
  });

  // Expected bytes are cut here from the file on disk, never taken from the answer (Content-Range included).
  it.each([
    ["bytes=0-99", 0, 99],
    ["bytes=0-0", 0, 0], // the first byte
    [`bytes=${SIZE - 1}-${SIZE - 1}`, SIZE - 1, SIZE - 1], // the last byte
    ["bytes=50000-59999", 50000, 59999], // the middle
    ["bytes=-500", SIZE - 500, SIZE - 1], // suffix
    ["bytes=-1", SIZE - 1, SIZE - 1],
    ["bytes=100-", 100, SIZE - 1], // open-ended
    [`bytes=${SIZE - 1}-`, SIZE - 1, SIZE - 1],
    [`bytes=8192-${SIZE}`, 8192, SIZE - 1], // esp_https_ota asks for end = total: clamped
    [`bytes=${SIZE - 1}-${SIZE + 1000}`, SIZE - 1, SIZE - 1],
  ])("Range %s gives 206 with the exact bytes, by name and by hash, and HEAD says the same", async (range, start, end) => {
    const want = image.subarray(start, end + 1);
    expect(want.length).toBe(end - start + 1);
    for (const p of [BY_NAME, BY_HASH]) {
      for (const method of ["GET", "HEAD"]) {
        const r = await get(p, { Range: range }, method);
        expect([p, method, r.status]).toEqual([p, method, 206]);
        expect(r.headers["content-range"]).toBe(`bytes ${start}-${end}/${SIZE}`);
        expect(r.headers["content-length"]).toBe(String(want.length));
        expect(r.headers.etag).toBe(ETAG);
        expect(r.headers["x-md5"]).toBeUndefined(); // the digests are of the whole image, not of a part
        if (method === "GET") expect(r.body.equals(want)).toBe(true);
        else expect(r.body.length).toBe(0);
      }
    }
  });

  it.each([
    [`bytes=${SIZE}-`, "lies within"],
    [`bytes=${SIZE + 10}-${SIZE + 20}`, "lies within"],
    ["bytes=0-1,5-6", "only one range"],
    ["bytes=500-100", "lies within"],
    ["bytes=abc", "malformed"],
    ["bytes=", "malformed"],
  ])("Range %s gives 416 with Content-Range: bytes */size", async (range, why) => {
    const r = await get(BY_NAME, { Range: range });
    expect(r.status).toBe(416);
    expect(r.headers["content-range"]).toBe(`bytes */${SIZE}`);
    expect(r.json().error.code).toBe("range_not_satisfiable");
    expect(r.json().error.message).toContain(why);
  });

  it("ignores a Range in another unit (RFC 9110) and sends everything", async () => {
    const r = await get(BY_NAME, { Range: "items=0-5" });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(SIZE);
  });

  it("HEAD gives the headers of the whole image without a body", async () => {
    for (const p of [BY_NAME, BY_HASH]) {
      const r = await get(p, {}, "HEAD");
      expect(r.status).toBe(200);
      expect(r.headers["content-length"]).toBe(String(SIZE));
      expect(r.headers["content-range"]).toBeUndefined();
      expect(r.headers["x-md5"]).toBe(createHash("md5").update(image).digest("hex"));
      expect(r.headers["x-sha256"]).toBe(SHA);
      expect(r.body.length).toBe(0);
    }
  });

  it("If-None-Match with the SHA-256 gives 304", async () => {
    for (const inm of [ETAG, `W/${ETAG}`, `"nope", ${ETAG}`, "*"]) {
      const r = await get(BY_NAME, { "If-None-Match": inm });
      expect(r.status).toBe(304);
      expect(r.body.length).toBe(0);
      expect(r.headers.etag).toBe(ETAG);
    }
    expect((await get(BY_NAME, { "If-None-Match": '"other"' })).status).toBe(200);
  });

  it("If-Range honours the Range only for the current (strong) ETag", async () => {
    for (const p of [BY_NAME, BY_HASH]) {
      const same = await get(p, { Range: "bytes=10-19", "If-Range": ETAG });
      expect(same.status).toBe(206);
      expect(same.headers["content-range"]).toBe(`bytes 10-19/${SIZE}`);
      expect(same.body.equals(image.subarray(10, 20))).toBe(true);
      const open = await get(p, { Range: `bytes=${SIZE - 10}-`, "If-Range": ETAG });
      expect(open.status).toBe(206);
      expect(open.body.equals(image.subarray(SIZE - 10))).toBe(true);
      for (const stale of ['"0000"', `W/${ETAG}`, "Mon, 23 Nov 2026 05:00:00 GMT"]) {
        const r = await get(p, { Range: "bytes=10-19", "If-Range": stale });
        expect([stale, r.status]).toEqual([stale, 200]);
        expect(r.headers["content-range"]).toBeUndefined();
        expect(r.body.equals(image)).toBe(true);
      }
    }
  });

  it("serves the per-block SHA-256 list that the manifest names, and every block matches it", async () => {
    const m = (await get("/firmware/manifest")).json();
    const list = await get(new URL(m.block_hashes_url).pathname);
    expect(list.status).toBe(200);
    expect(createHash("sha256").update(list.body).digest("hex")).toBe(m.block_hashes_sha256);
    expect(list.body.length).toBe(32 * m.block_count);
    for (let i = 0; i < m.block_count; i++) {
      const block = await get(BY_HASH, { Range: `bytes=${i * m.block_size}-${(i + 1) * m.block_size - 1}` });
      expect(createHash("sha256").update(block.body).digest()).toEqual(list.body.subarray(i * 32, (i + 1) * 32));
    }
  });

  itWithEsphome("streams the 1.5 MB production image byte-identical", async () => {
    const big = read(ESPHOME);
    fs.copyFileSync(ESPHOME, path.join(s.dirs.firmware, "esphome.bin"));
    const r = await eventually(async () => {
      const x = await get("/firmware/esphome.bin");
      return x.status === 200 && x;
    });
    expect(r.headers["content-length"]).toBe(String(big.length));
    expect(r.body.equals(big)).toBe(true);
  });

  it("unknown names and hashes are 404; malformed ones 400", async () => {
    expect((await get("/firmware/nothing.bin")).status).toBe(404);
    expect((await get(`/firmware/sha256/${"0".repeat(64)}.bin`)).status).toBe(404);
    expect((await get("/firmware/sha256/xyz.bin")).status).toBe(400);
    expect((await get("/firmware/hello.exe")).status).toBe(400);
  });
});
