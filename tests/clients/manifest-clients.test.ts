// Sketches that read a {"version", "url"} manifest, build a URL from a version, report SUCCESS/FAILED, and
// (optionally) check a fleet-wide manifest HMAC.
import { spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { deriveImage } from "../../device/host/esp/factory-image";
import { storageEnv } from "../helpers/database";
import { HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_IDF41, HELLO_WORLD_S3, read } from "../helpers/fixtures";
import { Operator } from "../helpers/fleet";
import { eventually, ROOT, startTestServer, type TestServer } from "../helpers/server";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const V5 = "v1.4.1-2-g0296947-dirty"; // hello_world 5.2.2, built for esp32, esp32s3 and esp32c3
const V41 = "v4.1-dev-1935-g647cb62-dirty";

async function serverWith(files: [string, string][], env: Record<string, string> = {}) {
  const s = await startTestServer(env);
  for (const [file, name] of files) {
    fs.copyFileSync(file, path.join(s.dirs.firmware, name));
    await eventually(() => s.running.ctx.catalog.imageByName(name));
  }
  return s;
}

describe("version + url manifest clients", () => {
  let s: TestServer;
  const key = () => ({ "X-API-Key": s.creds.deviceApiKey });
  const basic = (user: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${s.creds.deviceApiKey}`).toString("base64")}` });

  beforeAll(async () => {
    s = await serverWith([
      [HELLO_WORLD_IDF41, "old.bin"],
      [HELLO_WORLD_S3, "s3.bin"],
      [HELLO_WORLD_C3, "c3.bin"],
      [HELLO_WORLD, "hello.bin"],
    ]);
  });
  afterAll(async () => s.close());

  it("a client that reads only version and url gets an image whose bytes match", async () => {
    for (const headers of [key(), basic(""), basic("246f28aabbcc")]) {
      const m = await s.req("GET", "/firmware/manifest?chip=esp32", { headers });
      expect(m.status).toBe(200);
      const { version, url } = m.json<{ version: string; url: string }>();
      expect(version).toBe(V5);
      const bin = await s.req("GET", new URL(url).pathname, { headers });
      expect(bin.status).toBe(200);
      expect(bin.body.equals(read(HELLO_WORLD))).toBe(true);
    }
  });

  it("the agent protocol is unchanged: X-Device-Id still needs a nonce", async () => {
    const r = await s.req("GET", "/firmware/manifest", { headers: { ...key(), "X-Device-Id": "agent-1" } });
    expect(r.status).toBe(400);
    expect(r.json().error.code).toBe("nonce_required");
  });

  describe("GET /firmware/<version>.bin", () => {
    it("serves the image with that version", async () => {
      const r = await s.req("GET", `/firmware/${V41}.bin`, { headers: key() });
      expect(r.status).toBe(200);
      expect(r.body.equals(read(HELLO_WORLD_IDF41))).toBe(true);
      expect(r.headers["content-length"]).toBe(String(r.body.length));
      const ranged = await s.req("GET", `/firmware/${V41}.bin`, { headers: { ...key(), Range: "bytes=0-0" } });
      expect(ranged.status).toBe(206);
      expect(ranged.headers["content-range"]).toBe(`bytes 0-0/${r.body.length}`);
    });

    it("a version built for several chips needs the chip, from a header, the query or the registry", async () => {
      const amb = await s.req("GET", `/firmware/${V5}.bin`, { headers: key() });
      expect(amb.status).toBe(409);
      expect(amb.json().error).toMatchObject({ code: "ambiguous_version" });
      expect(amb.json().error.message).toContain("esp32, esp32c3, esp32s3");

      const s3 = await s.req("GET", `/firmware/${V5}.bin`, { headers: { ...key(), "X-Device-Chip": "ESP32-S3" } });
      expect(sha256(s3.body)).toBe(sha256(read(HELLO_WORLD_S3)));
      const c3 = await s.req("GET", `/firmware/${V5}.bin?chip=esp32c3`, { headers: key() });
      expect(sha256(c3.body)).toBe(sha256(read(HELLO_WORLD_C3)));

      await s.req("GET", "/firmware/manifest", {
        headers: { ...key(), "X-Device-Id": "dev-esp32", "X-Nonce": "nonce-for-the-registry-1", "X-Device-Chip": "esp32" },
      });
      await s.running.ctx.devices.flush();
      const known = await s.req("GET", `/firmware/${V5}.bin`, { headers: { ...key(), "X-Device-Id": "dev-esp32" } });
      expect(sha256(known.body)).toBe(sha256(read(HELLO_WORLD)));
    });

    it("an unknown version is 404; a file of that name wins over a version", async () => {
      const r = await s.req("GET", "/firmware/v9.9.9.bin", { headers: key() });
      expect(r.status).toBe(404);
      expect(r.json().error.message).toContain("none with version v9.9.9");
      const named = `${V41}.bin`;
      fs.copyFileSync(HELLO_WORLD_S3, path.join(s.dirs.firmware, named));
      await eventually(() => s.running.ctx.catalog.imageByName(named));
      expect((await s.req("GET", `/firmware/${named}`, { headers: key() })).body.equals(read(HELLO_WORLD_S3))).toBe(true);
    });
  });

  it('POST /firmware/report takes {"device_id", "status": "SUCCESS"|"FAILED", "version", "error"}', async () => {
    const send = (body: object) =>
      s.req("POST", "/firmware/report", { headers: { ...key(), "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const op = { Authorization: `Bearer ${s.creds.operatorToken}` };
    expect((await send({ device_id: "sketch-9", status: "FAILED", version: V41, error: "HTTP error: read Timeout" })).status).toBe(200);
    expect((await s.req("GET", "/api/v1/devices/sketch-9", { headers: op })).json().device).toMatchObject({
      state: "failed",
      state_detail: "HTTP error: read Timeout",
      version: V41,
    });
    expect((await send({ device_id: "sketch-9", status: "SUCCESS", version: V5, error: "" })).status).toBe(200);
    expect((await s.req("GET", "/api/v1/devices/sketch-9", { headers: op })).json().device).toMatchObject({ state: "confirmed", version: V5 });
  });

  it("sends no fleet-wide HMAC unless switched on", async () => {
    const m = await s.req("GET", "/firmware/manifest", { headers: key() });
    expect(m.headers["x-manifest-fleet-hmac"]).toBeUndefined();
  });
});

describe("GET /firmware/<version>.bin when one chip has that version twice (a rebuild)", () => {
  let s: TestServer;
  const key = () => ({ "X-API-Key": s.creds.deviceApiKey });
  const api = (method: string, p: string, body: unknown) => new Operator(s).ok(method, p, body);
  // The same hello_world, version V5, rebuilt with another secure_version: other bytes, same version and chip.
  const rebuilt = deriveImage(read(HELLO_WORLD), { secureVersion: 1 });

  beforeAll(async () => {
    s = await serverWith([[HELLO_WORLD, "hello.bin"]]);
    fs.writeFileSync(path.join(s.dirs.firmware, "hello-rebuilt.bin"), rebuilt);
    await eventually(() => s.running.ctx.catalog.imageByName("hello-rebuilt.bin"));
  });
  afterAll(async () => s.close());

  it("before any release: the newest build (the one the folder offers)", async () => {
    const r = await s.req("GET", `/firmware/${V5}.bin`, { headers: { ...key(), "X-Device-Chip": "esp32" } });
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(rebuilt));
  });

  it("serves the build the device's release gives it (read from the registry: its pin), not just any", async () => {
    for (const id of ["dev-pinned", "dev-other"]) {
      await s.req("GET", "/firmware/manifest", { headers: { ...key(), "X-Device-Id": id, "X-Nonce": `nonce-for-${id}-0001`, "X-Device-Chip": "esp32" } });
    }
    await s.running.ctx.devices.flush();
    await api("POST", "/releases", { name: "rebuilt", image: "hello-rebuilt.bin" });
    await api("POST", "/releases/rebuilt/rollout", { stages: [100] });
    await api("POST", "/releases", { name: "original", image: "hello.bin", targets: { devices: ["dev-pinned"] } });
    await api("PATCH", "/devices/dev-pinned", { pinned_release: "original" });

    const get = (id: string) => s.req("GET", `/firmware/${V5}.bin`, { headers: { ...key(), "X-Device-Id": id, "X-Device-Chip": "esp32" } });
    const pinned = await get("dev-pinned");
    expect(pinned.status).toBe(200);
    expect(sha256(pinned.body)).toBe(sha256(read(HELLO_WORLD)));
    const other = await get("dev-other");
    expect(other.status).toBe(200);
    expect(sha256(other.body)).toBe(sha256(rebuilt));
  });
});

describe("fleet-wide manifest HMAC (OTA_FLEET_MANIFEST_HMAC=true)", () => {
  let s: TestServer;
  const ota = (env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), "manifest-hmac-key"], {
      encoding: "utf8",
      env: { ...process.env, OTA_DATA_DIR: s.dirs.data, ...storageEnv(s.dirs), ...env },
    });

  beforeAll(async () => {
    s = await serverWith([[HELLO_WORLD, "hello.bin"]], { OTA_FLEET_MANIFEST_HMAC: "true" });
  });
  afterAll(async () => s.close());

  it("X-Manifest-Fleet-HMAC is HMAC-SHA256 of the body under the key `ota manifest-hmac-key` prints", async () => {
    const r = ota({ OTA_FLEET_MANIFEST_HMAC: "true" });
    expect(r.status).toBe(0);
    const fleetKey = Buffer.from(r.stdout.trim(), "hex");
    expect(fleetKey.length).toBe(32);
    const nonce = "fleet-client-nonce-0001";
    const m = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey, "X-Nonce": nonce } });
    expect(m.headers["x-manifest-fleet-hmac"]).toBe(createHmac("sha256", fleetKey).update(m.body).digest("hex"));
    expect(m.json().nonce).toBe(nonce); // inside what the MAC covers: a client can refuse a replayed answer
    // A forged body does not verify.
    const forged = Buffer.from(m.body.toString().replace(m.json().sha256, "0".repeat(64)));
    expect(createHmac("sha256", fleetKey).update(forged).digest("hex")).not.toBe(m.headers["x-manifest-fleet-hmac"]);
  });

  it("is a different key from every device's own, and changes with OTA_FLEET_MANIFEST_KEY_GENERATION", async () => {
    const gen0 = ota().stdout.trim();
    expect(ota().stderr).toContain("OTA_FLEET_MANIFEST_HMAC is off");
    const gen1 = ota({ OTA_FLEET_MANIFEST_KEY_GENERATION: "1" }).stdout.trim();
    expect(gen1).toMatch(/^[0-9a-f]{64}$/);
    expect(gen1).not.toBe(gen0);
    const p = await s.req("POST", "/api/v1/devices/fleet-hmac-dev/provision", {
      headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" },
      body: "{}",
    });
    expect(p.json().hmacKey).not.toBe(gen0);
  });
});
