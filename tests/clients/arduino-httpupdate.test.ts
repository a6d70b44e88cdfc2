// Arduino-ESP32 HTTPUpdate against the real server: requests exactly as HTTPUpdate.cpp sends them (HTTP/1.0,
// its header names, order and values) over raw TLS, and answers judged the way HTTPUpdate judges them.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HTTP_UE, httpUpdate, httpUpdateRequest, type Sketch, type UpdateCall } from "../helpers/arduino-httpupdate";
import { expected, HELLO_WORLD, HELLO_WORLD_IDF41, HELLO_WORLD_S3, read } from "../helpers/fixtures";
import { rawExchange } from "../helpers/raw-http";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

const PATH = "/api/ota/download";
const OFFERED = read(HELLO_WORLD);
const S3 = read(HELLO_WORLD_S3);
const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

/** esptool's ground truth for a fixture (EXPECTED.json). */
const truth = (file: string) => expected().find((f) => f.file === path.basename(file))!.parsed;

/** The x-ESP32-* values of a sketch running `file`, as ESP.getSketchMD5()/getSketchSHA256() compute them. */
function running(file: string, over: Partial<Sketch> = {}): Sketch {
  const t = truth(file);
  return {
    staMac: "24:6F:28:AA:BB:CC",
    apMac: "24:6F:28:AA:BB:CD",
    freeSpace: 0x1c0000,
    sketchSize: t.image_len,
    sketchMd5: md5(read(file).subarray(0, t.image_len)), // over ESP.getSketchSize() bytes of the running slot
    sketchSha256: String(t.sha256_stored).toUpperCase(), // esp_partition_get_sha256(): the appended digest
    chipSize: 4 * 1024 * 1024,
    sdkVersion: "v4.4.7-dirty",
    ...over,
  };
}

describe("Arduino HTTPUpdate", () => {
  let s: TestServer;
  let device: { deviceId: string; apiKey: string };
  const target = () => ({ port: s.port, ca: s.ca });
  const fleet = () => ({ user: "", pass: s.creds.deviceApiKey });
  const update = (sketch: Sketch, call: Partial<UpdateCall> = {}) =>
    httpUpdate(target(), sketch, { uri: PATH, basicAuth: fleet(), ...call });
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });

  beforeAll(async () => {
    s = await startTestServer();
    // Ingested in this order, so the newest esp32 image (the offer for esp32) is hello_world 5.2.2.
    for (const [file, name] of [
      [HELLO_WORLD_IDF41, "old.bin"],
      [HELLO_WORLD_S3, "s3.bin"],
      [HELLO_WORLD, "hello.bin"],
    ] as const) {
      fs.copyFileSync(file, path.join(s.dirs.firmware, name));
      await eventually(() => s.running.ctx.catalog.imageByName(name));
    }
    const p = await s.req("POST", "/api/v1/devices/24-6F-28-00-00-01/provision", { headers: { ...op(), "Content-Type": "application/json" }, body: "{}" });
    device = p.json();
  });
  afterAll(async () => s.close());

  it("sends exactly the request HTTPUpdate.cpp sends", () => {
    const text = httpUpdateRequest("ota.example:8443", running(HELLO_WORLD_IDF41), { uri: PATH, currentVersion: "1.0.3", basicAuth: { user: "u", pass: "p" } });
    expect(text.split("\r\n").slice(0, 7)).toEqual([
      `GET ${PATH} HTTP/1.0`,
      "Host: ota.example:8443",
      "User-Agent: ESP32-http-Update",
      "Connection: close",
      "Authorization: Basic dTpw",
      "Cache-Control: no-cache",
      "x-ESP32-STA-MAC: 24:6F:28:AA:BB:CC",
    ]);
    expect(text).toMatch(/x-ESP32-sketch-sha256: A7D90D604B7AED92[0-9A-F]{48}\r\nx-ESP32-chip-size: 4194304\r\nx-ESP32-sdk-version: v4.4.7-dirty\r\nx-ESP32-mode: sketch\r\nx-ESP32-version: 1.0.3\r\n\r\n$/);
  });

  it("a sketch running an older image gets 200 with Content-Length and x-MD5, unchunked, and HTTPUpdate flashes exactly the image", async () => {
    for (const connection of ["close", "keep-alive"] as const) {
      const { response, outcome } = await update(running(HELLO_WORLD_IDF41), { connection });
      expect(response.statusLine).toMatch(/^HTTP\/1\.[01] 200 /);
      expect(response.header("content-length")).toBe(String(OFFERED.length));
      expect(response.header("x-md5")).toBe(truth(HELLO_WORLD).file_md5);
      expect(response.header("x-sha256")).toBe(truth(HELLO_WORLD).file_sha256);
      expect(response.header("transfer-encoding")).toBeUndefined();
      expect(outcome.result).toBe("HTTP_UPDATE_OK");
      if (outcome.result === "HTTP_UPDATE_OK") expect(outcome.image.equals(OFFERED)).toBe(true);
    }
  });

  it("answers 304 (HTTP_UPDATE_NO_UPDATES) when x-ESP32-sketch-sha256 shows the sketch runs the offered image", async () => {
    const { response, outcome } = await update(running(HELLO_WORLD));
    expect(response.status).toBe(304);
    expect(response.body.length).toBe(0);
    expect(outcome.result).toBe("HTTP_UPDATE_NO_UPDATES");
  });

  it("answers 304 on x-ESP32-sketch-md5 alone, and on x-ESP32-version alone", async () => {
    const byMd5 = await update(running(HELLO_WORLD, { sketchSha256: "" }));
    expect(byMd5.outcome.result).toBe("HTTP_UPDATE_NO_UPDATES");
    const noDigests = { sketchSha256: "", sketchMd5: "" };
    const byVersion = await update(running(HELLO_WORLD_IDF41, noDigests), { currentVersion: "v1.4.1-2-g0296947-dirty" });
    expect(byVersion.outcome.result).toBe("HTTP_UPDATE_NO_UPDATES");
    const otherVersion = await update(running(HELLO_WORLD_IDF41, noDigests), { currentVersion: "1.0.3" });
    expect(otherVersion.outcome.result).toBe("HTTP_UPDATE_OK");
  });

  it("digests of the running sketch decide over what its version string says", async () => {
    const { outcome } = await update(running(HELLO_WORLD_IDF41), { currentVersion: "v1.4.1-2-g0296947-dirty" });
    expect(outcome.result).toBe("HTTP_UPDATE_OK");
  });

  it("refuses an image larger than x-ESP32-free-space with an answer HTTPUpdate reports as an error", async () => {
    const { response, outcome } = await update(running(HELLO_WORLD_IDF41, { freeSpace: OFFERED.length - 1 }));
    expect(response.status).toBe(409);
    expect(JSON.parse(response.body.toString()).error.code).toBe("image_too_large");
    expect(outcome).toMatchObject({ result: "HTTP_UPDATE_FAILED", lastError: HTTP_UE.SERVER_WRONG_HTTP_CODE });
    // An image that fits exactly is served.
    expect((await update(running(HELLO_WORLD_IDF41, { freeSpace: OFFERED.length }))).outcome.result).toBe("HTTP_UPDATE_OK");
  });

  it("never serves an image for another chip: the running image names the chip, and a URL that contradicts it is refused", async () => {
    // A sketch running the S3 image is an ESP32-S3: it gets the S3 build, though the newest image is for ESP32.
    const s3 = await update(running(HELLO_WORLD_S3, { staMac: "24:6F:28:00:00:53" }));
    expect(s3.outcome.result).toBe("HTTP_UPDATE_NO_UPDATES");
    const s3old = await update(running(HELLO_WORLD_S3, { staMac: "24:6F:28:00:00:53", sketchSha256: "AB".repeat(32), sketchMd5: "" }), {
      uri: `${PATH}?chip=esp32s3`,
    });
    expect(s3old.outcome.result).toBe("HTTP_UPDATE_OK");
    if (s3old.outcome.result === "HTTP_UPDATE_OK") expect(s3old.outcome.image.equals(S3)).toBe(true);

    const contradicted = await update(running(HELLO_WORLD_S3, { staMac: "24:6F:28:00:00:53" }), { uri: `${PATH}?chip=esp32` });
    expect(contradicted.response.status).toBe(409);
    expect(JSON.parse(contradicted.response.body.toString()).error.code).toBe("chip_mismatch");
    expect(contradicted.outcome).toMatchObject({ result: "HTTP_UPDATE_FAILED", lastError: HTTP_UE.SERVER_WRONG_HTTP_CODE });

    const c3 = running(HELLO_WORLD_IDF41, { staMac: "24:6F:28:00:00:C3", sketchSha256: "12".repeat(32), sketchMd5: "" });
    const noneForChip = await update(c3, { uri: `${PATH}?chip=esp32c3` });
    expect(noneForChip.response.status).toBe(404);
    expect(JSON.parse(noneForChip.response.body.toString()).error.code).toBe("no_firmware");
    expect(noneForChip.outcome).toMatchObject({ result: "HTTP_UPDATE_FAILED", lastError: HTTP_UE.SERVER_FILE_NOT_FOUND });
  });

  it("uses the chip the registry knows for the device", async () => {
    const mac = "24:6F:28:00:00:54";
    const nonce = "registry-chip-nonce-1";
    const m = await s.req("GET", "/firmware/manifest", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": mac, "X-Nonce": nonce, "X-Device-Chip": "ESP32-S3" },
    });
    expect(m.json().chip).toBe("esp32s3");
    await s.running.ctx.devices.flush();
    const { outcome } = await update(running(HELLO_WORLD_S3, { staMac: mac, sketchSha256: "CD".repeat(32), sketchMd5: "" }));
    expect(outcome.result).toBe("HTTP_UPDATE_OK");
    if (outcome.result === "HTTP_UPDATE_OK") expect(outcome.image.readUInt16LE(12)).toBe(9); // chip_id ESP32-S3
  });

  it("updateSpiffs() gets 404: only app images are served", async () => {
    const { response, outcome } = await update(running(HELLO_WORLD_IDF41), { spiffs: true });
    expect(JSON.parse(response.body.toString()).error.code).toBe("filesystem_image_not_available");
    expect(outcome).toMatchObject({ result: "HTTP_UPDATE_FAILED", lastError: HTTP_UE.SERVER_FILE_NOT_FOUND });
  });

  describe("authentication", () => {
    const sketch = () => running(HELLO_WORLD_IDF41);
    const status = async (call: Partial<UpdateCall>, sk: Sketch = sketch()) => (await update(sk, call)).response;

    it("accepts the fleet key as HTTP Basic password or in X-API-Key from a requestCB", async () => {
      expect((await status({ basicAuth: { user: "246f28aabbcc", pass: s.creds.deviceApiKey } })).status).toBe(200);
      expect((await status({ basicAuth: { user: "", pass: s.creds.deviceApiKey } })).status).toBe(200);
      expect((await status({ basicAuth: undefined, requestCB: [["X-API-Key", s.creds.deviceApiKey]] })).status).toBe(200);
    });

    it("accepts a device's own key for the device its x-ESP32-STA-MAC names, and no other", async () => {
      const own = running(HELLO_WORLD_IDF41, { staMac: "24:6F:28:00:00:01" });
      expect((await status({ basicAuth: { user: "246F28000001", pass: device.apiKey } }, own)).status).toBe(200);
      expect((await status({ basicAuth: undefined, requestCB: [["X-API-Key", device.apiKey]] }, own)).status).toBe(200);
      const r = await status({ basicAuth: undefined, requestCB: [["X-API-Key", device.apiKey]] }, sketch());
      expect(r.status).toBe(401);
      expect(r.header("www-authenticate")).toMatch(/^Basic realm=/);
    });

    it("refuses a fleet key for a provisioned device, and operator tokens, with 403", async () => {
      const own = running(HELLO_WORLD_IDF41, { staMac: "24:6F:28:00:00:01" });
      const fleetForProvisioned = await update(own, { basicAuth: fleet() });
      expect(JSON.parse(fleetForProvisioned.response.body.toString()).error.code).toBe("device_key_required");
      expect(fleetForProvisioned.outcome).toMatchObject({ lastError: HTTP_UE.SERVER_FORBIDDEN });
      for (const call of [{ basicAuth: { user: "", pass: s.creds.operatorToken } }, { basicAuth: undefined, requestCB: [["Authorization", `Bearer ${s.creds.operatorToken}`]] as [string, string][] }]) {
        const r = await status(call);
        expect(r.status).toBe(403);
        expect(JSON.parse(r.body.toString()).error.code).toBe("wrong_credential_kind");
      }
    });

    it("challenges a request without credentials with 401 and WWW-Authenticate: Basic", async () => {
      const r = await status({ basicAuth: undefined });
      expect(r.status).toBe(401);
      expect(r.header("www-authenticate")).toBe('Basic realm="esp32-ota devices", charset="UTF-8"');
      expect(JSON.parse(r.body.toString()).error.code).toBe("missing_credential");
    });

    it("never accepts a key in the query string, even next to a valid one", async () => {
      for (const q of [`api_key=${s.creds.deviceApiKey}`, `k=${s.creds.deviceApiKey}`, "token=x"]) {
        const r = await status({ uri: `${PATH}?${q}` });
        expect(r.status).toBe(400);
        expect(JSON.parse(r.body.toString()).error.code).toBe("credential_in_query");
      }
      expect(s.logs.join("")).not.toContain(s.creds.deviceApiKey);
    });

    it("refuses a Basic user name that names another device than x-ESP32-STA-MAC", async () => {
      const r = await status({ basicAuth: { user: "246f28000099", pass: s.creds.deviceApiKey } });
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body.toString()).error.code).toBe("conflicting_device_id");
    });
  });

  it("records what the request tells: running version, sketch size, free space, flash size, digests, SDK", async () => {
    const sk = running(HELLO_WORLD_IDF41, { staMac: "24:6F:28:00:00:77" });
    await update(sk, { currentVersion: "1.0.3" });
    const d = (await s.req("GET", "/api/v1/devices/24:6f:28:00:00:77", { headers: op() })).json().device;
    expect(d).toMatchObject({
      id: "24:6f:28:00:00:77",
      chip: "esp32",
      // The bytes it runs are an image we know: its version, not the sketch's own string.
      version: truth(HELLO_WORLD_IDF41).app_desc.version,
      client: {
        kind: "arduino-httpupdate",
        sketch_size: truth(HELLO_WORLD_IDF41).image_len,
        free_space: 0x1c0000,
        flash_size: 4194304,
        running_sha256: truth(HELLO_WORLD_IDF41).sha256_stored,
        running_md5: sk.sketchMd5,
        sdk_version: "v4.4.7-dirty",
      },
    });
    // A sketch running bytes we do not know is recorded with the version it declares.
    await update(running(HELLO_WORLD_IDF41, { staMac: "24:6F:28:00:00:78", sketchSha256: "EF".repeat(32), sketchMd5: "" }), { currentVersion: "1.0.3" });
    const d2 = (await s.req("GET", "/api/v1/devices/24:6f:28:00:00:78", { headers: op() })).json().device;
    expect(d2.version).toBe("1.0.3");
  });

  it("takes the simple report a sketch sends after the update, with the same credentials", async () => {
    const auth = `Basic ${Buffer.from(`:${s.creds.deviceApiKey}`).toString("base64")}`;
    const body = JSON.stringify({ device_id: "24:6F:28:AA:BB:CC", status: "SUCCESS", version: "v1.4.1-2-g0296947-dirty", error: "" });
    const r = await s.req("POST", "/firmware/report", { headers: { Authorization: auth, "Content-Type": "application/json" }, body });
    expect(r.json()).toEqual({ ok: true, duplicate: false });
    const d = (await s.req("GET", "/api/v1/devices/24:6f:28:aa:bb:cc", { headers: op() })).json().device;
    expect(d).toMatchObject({ state: "confirmed", version: "v1.4.1-2-g0296947-dirty" });
  });

  it.each([
    ["x-ESP32-free-space", "lots", "invalid_header"],
    ["x-ESP32-sketch-sha256", "XYZ", "invalid_header"],
    ["x-ESP32-sketch-md5", "0".repeat(31), "invalid_header"],
    ["x-ESP32-version", "v".repeat(65), "invalid_header"],
    ["x-ESP32-STA-MAC", "../../etc/passwd", "invalid_device_id"],
  ])("a malformed %s (%s) is a 400 naming it", async (name, value, code) => {
    const text = httpUpdateRequest(`localhost:${s.port}`, running(HELLO_WORLD_IDF41), { uri: PATH, basicAuth: fleet(), currentVersion: "1.0" }).replace(
      new RegExp(`${name}: [^\\r]*\\r\\n`),
      `${name}: ${value}\r\n`,
    );
    const r = await rawExchange(target(), text);
    expect(r.status).toBe(400);
    const err = JSON.parse(r.body.toString()).error;
    expect(err.code).toBe(code);
    expect(err.message).toContain(name);
  });

  it("answers only GET and HEAD", async () => {
    const r = await s.req("POST", PATH, { headers: { "X-API-Key": s.creds.deviceApiKey }, body: "" });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("GET, HEAD");
  });
});

describe("HTTPUpdate authentication failures are throttled", () => {
  it("bad keys count towards the 429 limit shared with the rest of the server; requests without any credential do not", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3", OTA_AUTH_FAILURE_WINDOW: "60" });
    try {
      const sketch = running(HELLO_WORLD_IDF41);
      for (let i = 0; i < 10; i++) {
        expect((await httpUpdate({ port: s.port, ca: s.ca }, sketch, { uri: PATH })).response.status).toBe(401);
      }
      for (let i = 0; i < 3; i++) {
        const r = await httpUpdate({ port: s.port, ca: s.ca }, sketch, { uri: PATH, basicAuth: { user: "", pass: `otafleet_wrong${i}` } });
        expect(r.response.status).toBe(401);
      }
      const limited = await httpUpdate({ port: s.port, ca: s.ca }, sketch, { uri: PATH, basicAuth: { user: "", pass: s.creds.deviceApiKey } });
      expect(limited.response.status).toBe(429);
      expect(Number(limited.response.header("retry-after"))).toBeGreaterThan(0);
      expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } })).status).toBe(429);
    } finally {
      await s.close();
    }
  });
});
