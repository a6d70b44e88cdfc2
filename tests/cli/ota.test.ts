import { spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { storageEnv } from "../helpers/database";
import { HELLO_WORLD } from "../helpers/fixtures";
import { eventually, ROOT, startTestServer, type TestServer } from "../helpers/server";

describe("the ota command", () => {
  let s: TestServer;
  const ota = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], {
      encoding: "utf8",
      env: { ...process.env, OTA_DATA_DIR: s.dirs.data, OTA_CERT_DIR: s.dirs.certs, PORT: String(s.port), ...storageEnv(s.dirs) },
    });

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest());
  });
  afterAll(async () => s.close());

  it("device provision prints what the device needs, and those keys work on the running server", async () => {
    const r = ota("device", "provision", "24:6F:28:AA:BB:CC", "--chip", "ESP32");
    expect(r.status).toBe(0);
    const b = JSON.parse(r.stdout);
    expect(b).toMatchObject({
      deviceId: "24:6f:28:aa:bb:cc",
      serverUrl: `https://localhost:${s.port}`,
      ca: s.ca.toString("utf8"),
      keyGeneration: 0,
      pollInterval: 300,
    });
    const nonce = randomBytes(16).toString("hex");
    const m = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": b.apiKey, "X-Device-Id": b.deviceId, "X-Nonce": nonce } });
    expect(m.status).toBe(200);
    expect(m.headers["x-manifest-hmac"]).toBe(createHmac("sha256", Buffer.from(b.hmacKey, "hex")).update(m.body).digest("hex"));
    expect(m.json()).toMatchObject({ chip: "esp32", nonce, device_id: b.deviceId });
  });

  it("--out writes a 0600 file and prints no secret", () => {
    const out = path.join(s.dirs.root, "dev7.json");
    const r = ota("device", "provision", "dev-7", "--out", out, "--server-url", "https://ota.example.com:8443");
    expect(r.status).toBe(0);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    const b = JSON.parse(fs.readFileSync(out, "utf8"));
    expect(b.serverUrl).toBe("https://ota.example.com:8443");
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(out);
    expect(r.stderr).not.toContain(b.apiKey);
  });

  it("token create makes an operator token of the given role", async () => {
    const r = ota("token", "create", "--role", "viewer", "--name", "alice");
    expect(r.status).toBe(0);
    const token = r.stdout.trim();
    const who = await s.req("GET", "/api/v1/whoami", { headers: { Authorization: `Bearer ${token}` } });
    expect(who.json()).toEqual({ subject: "alice", role: "viewer" });
    const up = await s.req("POST", "/api/v1/devices/x/provision", { headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: "{}" });
    expect(up.status).toBe(403);
  });

  it("apikey create makes a fleet key that works on the device API only", async () => {
    const r = ota("apikey", "create", "--label", "ci");
    expect(r.status).toBe(0);
    const key = r.stdout.trim();
    expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": key } })).status).toBe(200);
    expect((await s.req("GET", "/api/v1/devices", { headers: { Authorization: `Bearer ${key}` } })).status).toBe(403);
  });

  it.each([
    [["device", "provision", "bad id!"], /device id must be/],
    [["device", "provision"], /missing required argument/],
    [["token", "create"], /--role/],
    [["token", "create", "--role", "king"], /Allowed choices are viewer, releaser, admin/],
    [["device", "provision", "x", "--chip", "z80"], /--chip must be one of/],
    [["device", "provision", "x", "--server-url", `https://ota.example.com/${"p".repeat(196)}`], /--server-url is longer than the 219 characters the device agent can keep/],
    [["frobnicate"], /unknown command/],
  ])("ota %j exits 2 with a clear message", (args, message) => {
    const r = ota(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it("a bad environment is named", () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), "apikey", "create"], {
      encoding: "utf8",
      env: { ...process.env, OTA_LOG_LEVEL: "shout" },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/OTA_LOG_LEVEL/);
  });
});
