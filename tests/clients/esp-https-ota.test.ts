// ESP-IDF esp_https_ota against the real server: the HEAD and Range sequence of a partial download, resumption,
// the Basic challenge, 304, and redirects only where configured. Requests go out as esp_http_client writes them.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { httpUpdate } from "../helpers/arduino-httpupdate";
import { espHttpsOta, type OtaConfig } from "../helpers/esp-https-ota";
import { HELLO_WORLD, read } from "../helpers/fixtures";
import { rawExchange } from "../helpers/raw-http";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

const IMAGE = read(HELLO_WORLD);
const SIZE = IMAGE.length; // 124416
const SHA = createHash("sha256").update(IMAGE).digest("hex");
const ESP32 = 0;
const OFFER = "/api/ota/download";
const BY_NAME = "/firmware/hello.bin";

async function serverWithImage(env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer(env);
  fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
  await eventually(() => s.running.ctx.catalog.imageByName("hello.bin"));
  return s;
}

describe("esp_https_ota", () => {
  let s: TestServer;
  const target = () => ({ port: s.port, ca: s.ca });
  const appHeaders = (): [string, string][] => [
    ["X-API-Key", s.creds.deviceApiKey],
    ["X-Device-Id", "ota-client-1"],
  ];
  const ota = (cfg: Partial<OtaConfig>) => espHttpsOta(target(), { path: OFFER, initHeaders: appHeaders(), chipId: ESP32, ...cfg });

  beforeAll(async () => {
    s = await serverWithImage();
  });
  afterAll(async () => s.close());

  it.each([OFFER, BY_NAME])("partial download from %s: HEAD gives 200 with Content-Length, then 64 KiB ranges and an open-ended last one", async (p) => {
    const r = await ota({ path: p, partialHttpDownload: true });
    expect(r.ok).toBe(true);
    expect(r.exchanges.map((e) => [e.method, e.range, e.status, e.contentLength, e.contentRange])).toEqual([
      ["HEAD", undefined, 200, String(SIZE), undefined],
      ["GET", "bytes=0-65535", 206, "65536", `bytes 0-65535/${SIZE}`],
      ["GET", "bytes=65536-", 206, String(SIZE - 65536), `bytes 65536-${SIZE - 1}/${SIZE}`],
    ]);
    if (r.ok) expect(r.image.equals(IMAGE)).toBe(true);
  });

  it("a resumed partial download asks for a first range ending at the image length: it is clamped to the last byte", async () => {
    const r = await ota({ partialHttpDownload: true, resumeFrom: IMAGE.subarray(0, 65536) });
    expect(r.exchanges.map((e) => [e.method, e.range, e.status, e.contentLength, e.contentRange])).toEqual([
      ["HEAD", undefined, 200, String(SIZE), undefined],
      ["GET", `bytes=65536-${SIZE}`, 206, String(SIZE - 65536), `bytes 65536-${SIZE - 1}/${SIZE}`],
    ]);
    expect(r.ok && r.image.equals(IMAGE)).toBe(true);
  });

  it("a small max_http_request_size gives many exact ranges", async () => {
    const r = await ota({ partialHttpDownload: true, maxHttpRequestSize: 16384 });
    const gets = r.exchanges.filter((e) => e.method === "GET");
    expect(gets).toHaveLength(Math.ceil(SIZE / 16384));
    expect(gets.every((e) => e.status === 206)).toBe(true);
    expect(gets.at(-1)!.range).toBe(`bytes=${16384 * 7}-`);
    expect(r.ok && r.image.equals(IMAGE)).toBe(true);
  });

  it("Range: bytes=0-0 (its probe when HEAD fails) gives 206 with Content-Range: bytes 0-0/<total>", async () => {
    const text = `GET ${OFFER} HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nHost: localhost:${s.port}\r\nX-API-Key: ${s.creds.deviceApiKey}\r\nRange: bytes=0-0\r\n\r\n`;
    const r = await rawExchange(target(), text);
    expect(r.status).toBe(206);
    expect(r.header("content-range")).toBe(`bytes 0-0/${SIZE}`);
    expect(r.header("content-length")).toBe("1");
    expect(r.body).toEqual(IMAGE.subarray(0, 1));
    // esp_http_client takes the total after the slash.
    expect(Number(/\/(\d+)$/.exec(r.header("content-range")!)![1])).toBe(SIZE);
  });

  it("a plain download has Content-Length; a resumed one (Range: bytes=N-) continues with 206", async () => {
    const whole = await ota({});
    expect(whole.exchanges.map((e) => [e.method, e.range, e.status, e.contentLength])).toEqual([["GET", undefined, 200, String(SIZE)]]);
    expect(whole.ok && whole.image.equals(IMAGE)).toBe(true);
    const resumed = await ota({ resumeFrom: IMAGE.subarray(0, 4096) });
    expect(resumed.exchanges.map((e) => [e.range, e.status, e.contentRange])).toEqual([["bytes=4096-", 206, `bytes 4096-${SIZE - 1}/${SIZE}`]]);
    expect(resumed.ok && resumed.image.equals(IMAGE)).toBe(true);
  });

  it("credentials in the URL are sent after the 401 challenge, then with every range", async () => {
    const r = await ota({ initHeaders: [], basic: { user: "ota-client-2", pass: s.creds.deviceApiKey }, partialHttpDownload: true });
    expect(r.exchanges.map((e) => [e.method, e.status])).toEqual([
      ["HEAD", 401],
      ["HEAD", 200],
      ["GET", 206],
      ["GET", 206],
    ]);
    expect(r.ok && r.image.equals(IMAGE)).toBe(true);
    const preemptive = await ota({ initHeaders: [], basic: { user: "ota-client-2", pass: s.creds.deviceApiKey, preemptive: true } });
    expect(preemptive.exchanges.map((e) => e.status)).toEqual([200]);
  });

  it("304 when the app says it already runs the offered image: begin fails quietly with ESP_ERR_HTTP_NOT_MODIFIED", async () => {
    for (const h of [["x-ESP32-version", "v1.4.1-2-g0296947-dirty"], ["If-None-Match", `"${SHA}"`]] as [string, string][]) {
      const r = await ota({ initHeaders: [...appHeaders(), h] });
      expect(r).toMatchObject({ ok: false, error: "ESP_ERR_HTTP_NOT_MODIFIED" });
    }
  });

  it("a device that says it is another chip is refused rather than sent an ESP32 image", async () => {
    const r = await ota({ initHeaders: [...appHeaders(), ["X-Device-Chip", "esp32s3"]], chipId: 9 });
    expect(r).toMatchObject({ ok: false, error: "File not found(404)" });
    // The client's own check would refuse it too, after the first 1024 bytes.
    const byName = await ota({ path: BY_NAME, chipId: 9 });
    expect(byName).toMatchObject({ ok: false, error: expect.stringContaining("another chip") });
  });

  it("never redirects unless configured", async () => {
    const r = await ota({ partialHttpDownload: true });
    expect(r.exchanges.every((e) => e.status < 300 || e.status >= 400)).toBe(true);
  });
});

describe("esp_https_ota with OTA_OFFER_REDIRECT=hash", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await serverWithImage({ OTA_OFFER_REDIRECT: "hash" });
  });
  afterAll(async () => s.close());

  it("the offer redirects to the content-addressed URL, so every range of one download reads the same bytes", async () => {
    const r = await espHttpsOta(
      { port: s.port, ca: s.ca },
      { path: OFFER, initHeaders: [["X-API-Key", s.creds.deviceApiKey]], chipId: ESP32, partialHttpDownload: true },
    );
    expect(r.exchanges.map((e) => [e.method, e.path, e.status])).toEqual([
      ["HEAD", OFFER, 302],
      ["HEAD", `/firmware/sha256/${SHA}.bin`, 200],
      ["GET", `/firmware/sha256/${SHA}.bin`, 206],
      ["GET", `/firmware/sha256/${SHA}.bin`, 206],
    ]);
    expect(r.ok && r.image.equals(IMAGE)).toBe(true);
  });

  it("Arduino HTTPUpdate, which does not follow redirects, still gets the bytes", async () => {
    const { outcome } = await httpUpdate(
      { port: s.port, ca: s.ca },
      { staMac: "24:6F:28:AA:BB:CC", apMac: "24:6F:28:AA:BB:CD", freeSpace: 0x1c0000, sketchSize: 1000, chipSize: 4194304, sdkVersion: "v4.4.7" },
      { uri: OFFER, basicAuth: { user: "", pass: s.creds.deviceApiKey } },
    );
    expect(outcome.result).toBe("HTTP_UPDATE_OK");
  });
});
