// The manifest request's own headers on the real server: the chip revision and chip a device says, the Host the
// manifest's URLs are built from, the forms of If-None-Match, the headers every manifest carries, and the
// fleet-wide HMAC (OTA_FLEET_MANIFEST_HMAC) under the key generation configured.
import { createHmac } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { rawExchange } from "../helpers/raw-http";
import { eventually, startTestServer, type Reply, type TestServer } from "../helpers/server";

const code = (r: Reply) => [r.status, r.json<{ error?: { code: string } }>().error?.code];

async function serverWithImage(env: Record<string, string> = {}): Promise<{ s: TestServer; sha: string }> {
  const s = await startTestServer(env);
  fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
  const sha = (await eventually(() => s.running.ctx.catalog.latest("esp32"))).sha256;
  return { s, sha };
}

describe("manifest request headers", () => {
  let s: TestServer;
  let sha: string;
  const fleet = () => ({ "X-API-Key": s.creds.deviceApiKey });
  const manifest = (headers: Record<string, string> = {}, query = "") => s.req("GET", `/firmware/manifest${query}`, { headers: { ...fleet(), ...headers } });
  const device = async (id: string) => (await s.req("GET", `/api/v1/devices/${id}`, { headers: { Authorization: `Bearer ${s.creds.operatorToken}` } })).json().device;

  beforeAll(async () => ({ s, sha } = await serverWithImage()));
  afterAll(async () => s.close());

  it("X-Device-Chip-Rev is a whole number 0-65535, kept for the device", async () => {
    for (const rev of ["abc", "3.1", "-1", "65536", "123456", ""]) {
      const r = await manifest({ "x-ESP32-STA-MAC": "24:6f:28:00:00:51", "X-Device-Chip-Rev": rev });
      expect([rev, ...code(r)]).toEqual([rev, 400, "invalid_chip_rev"]);
      expect(r.json().error.message).toMatch(/^X-Device-Chip-Rev must be a whole number 0-65535/);
    }
    for (const rev of ["0", "301", "65535"]) {
      expect((await manifest({ "x-ESP32-STA-MAC": "24:6f:28:00:00:52", "X-Device-Chip-Rev": rev })).status).toBe(200);
      await eventually(async () => (await device("24:6f:28:00:00:52"))?.chip_rev === Number(rev));
    }
  });

  it("X-Device-Version is 1-32 printable ASCII characters, kept for the device", async () => {
    for (const version of ["v".repeat(33), "", "caf\u00e9", "tab\there"]) {
      const r = await manifest({ "x-ESP32-STA-MAC": "24:6f:28:00:00:53", "X-Device-Version": version });
      expect([version, ...code(r)]).toEqual([version, 400, "invalid_version"]);
      expect(r.json().error.message).toBe("X-Device-Version must be 1-32 printable ASCII characters");
    }
    expect((await manifest({ "x-ESP32-STA-MAC": "24:6f:28:00:00:53", "X-Device-Version": "v".repeat(32) })).status).toBe(200);
    await eventually(async () => (await device("24:6f:28:00:00:53"))?.version === "v".repeat(32));
  });

  it("X-Device-Chip names the chip, before ?chip=; a chip with no image is told so", async () => {
    expect((await manifest({}, "?chip=esp32")).json()).toMatchObject({ chip: "esp32", sha256: sha });
    const r = await manifest({ "X-Device-Chip": "esp32s3" }, "?chip=esp32");
    expect(code(r)).toEqual([404, "no_firmware"]);
    expect(r.json().error.message).toBe("no firmware for esp32s3 yet: copy an ESP-IDF app .bin into the firmware folder or upload one");
    expect(code(await manifest({ "X-Device-Chip": "ESP32" }, "?chip=z80"))).toEqual([200, undefined]);
    const unknown = await manifest({}, "?chip=z80");
    expect(code(unknown)).toEqual([400, "unknown_chip"]);
    expect(unknown.json().error.message).toMatch(/^chip must be one of esp32, esp32s2, esp32c3, esp32s3, esp32c2, /);
  });

  it("the manifest's URLs use the Host the client asked, when it is well-formed; the ETag differs with it", async () => {
    // Raw requests: an HTTPS client would check the certificate against the Host it sends.
    const withHost = async (host: string) => {
      const r = await rawExchange(s, `GET /firmware/manifest HTTP/1.1\r\nHost: ${host}\r\nX-API-Key: ${s.creds.deviceApiKey}\r\nConnection: close\r\n\r\n`);
      expect(r.status).toBe(200);
      return { m: JSON.parse(r.body.toString("utf8")), etag: r.header("etag") };
    };
    const named = await withHost("ota.example.com:8443");
    expect(named.m).toMatchObject({
      url: `https://ota.example.com:8443/firmware/sha256/${sha}.bin`,
      block_hashes_url: `https://ota.example.com:8443/firmware/sha256/${sha}/blocks`,
    });
    expect((await withHost("[::1]:8443")).m.url).toBe(`https://[::1]:8443/firmware/sha256/${sha}.bin`);
    const odd = await withHost("bad_host!");
    // The fallback is localhost at the configured PORT (the test server's is 0: any port).
    expect(odd.m.url).toMatch(new RegExp(`^https://localhost:\\d+/firmware/sha256/${sha}\\.bin$`));
    expect(named.etag).toMatch(/^"[0-9a-f]{40}"$/);
    expect(named.etag).not.toBe(odd.etag);
    expect((await withHost("ota.example.com:8443")).etag).toBe(named.etag);
  });

  it("If-None-Match: the ETag, its weak form, * and a list holding it are 304; anything else 200", async () => {
    const etag = (await manifest()).headers.etag as string;
    for (const inm of [etag, `W/${etag}`, "*", `"other", ${etag}`, ` "x" ,W/${etag} `]) {
      const r = await manifest({ "If-None-Match": inm });
      expect([inm, r.status, r.body.length]).toEqual([inm, 304, 0]);
      expect(r.headers.etag).toBe(etag);
      expect(r.headers["x-manifest-hmac"]).toBeUndefined(); // no device named: nothing to sign for
    }
    for (const inm of ['"other"', etag.slice(1, -1), `W/"x", "y"`, ","]) expect((await manifest({ "If-None-Match": inm })).status).toBe(200);
  });

  it("every manifest is JSON of its exact length, never cached, and varies with what the device says", async () => {
    for (const r of [await manifest(), await manifest({ "If-None-Match": "*" })]) {
      expect(r.headers["cache-control"]).toBe("no-store");
      expect(r.headers.vary).toBe("X-Device-Id, X-Nonce, X-Device-Chip, X-Device-Chip-Rev, X-Device-Version");
    }
    const r = await manifest();
    expect(r.headers["content-type"]).toBe("application/json; charset=utf-8");
    expect(Number(r.headers["content-length"])).toBe(r.body.length);
    expect(r.headers["x-manifest-fleet-hmac"]).toBeUndefined();
  });
});

describe("fleet-wide manifest HMAC", () => {
  it("is sent under the configured key generation with every 200, not with a 304", async () => {
    const { s } = await serverWithImage({ OTA_FLEET_MANIFEST_HMAC: "true", OTA_FLEET_MANIFEST_KEY_GENERATION: "2" });
    try {
      const r = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } });
      expect(r.status).toBe(200);
      const key = s.running.ctx.credentials.fleetManifestMacKey(2);
      expect(key.equals(s.running.ctx.credentials.fleetManifestMacKey(0))).toBe(false);
      expect(r.headers["x-manifest-fleet-hmac"]).toBe(createHmac("sha256", key).update(r.body).digest("hex"));
      const nm = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey, "If-None-Match": r.headers.etag as string } });
      expect(nm.status).toBe(304);
      expect(nm.headers["x-manifest-fleet-hmac"]).toBeUndefined();
    } finally {
      await s.close();
    }
  });
});

describe("the ETag across releases", () => {
  it("changes with the release that offers the image, even when the image stays the same", async () => {
    const { s, sha } = await serverWithImage();
    try {
      const ask = (etag?: string) =>
        s.req("GET", "/firmware/manifest", {
          headers: { "X-API-Key": s.creds.deviceApiKey, "x-ESP32-STA-MAC": "24:6f:28:00:00:54", "X-Device-Chip": "esp32", ...(etag ? { "If-None-Match": etag } : {}) },
        });
      const operator = (p: string, body: object) =>
        s.req("POST", `/api/v1${p}`, { headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const release = async (name: string) => {
        expect([name, (await operator("/releases", { name, image: sha, allow_downgrade: true })).status]).toEqual([name, 201]);
        expect([name, (await operator(`/releases/${name}/rollout`, { stages: [100] })).status]).toEqual([name, 201]);
      };
      const folder = await ask();
      expect(folder.json()).toMatchObject({ sha256: sha, release: null });
      await release("etag-r1");
      const first = await ask(folder.headers.etag as string);
      expect([first.status, first.json().release]).toEqual([200, "etag-r1"]);
      expect((await ask(first.headers.etag as string)).status).toBe(304);
      // A newer release of the same image: a device holding the old ETag must learn the release changed.
      await release("etag-r2");
      const second = await ask(first.headers.etag as string);
      expect([second.status, second.json().release, second.json().sha256]).toEqual([200, "etag-r2", sha]);
      expect(second.headers.etag).not.toBe(first.headers.etag);
    } finally {
      await s.close();
    }
  });
});

describe("what a device with no offer is told", () => {
  it("before any image, and once releases decide but the device's chip is unknown", async () => {
    const s = await startTestServer();
    try {
      const ask = () => s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } });
      const empty = await ask();
      expect(code(empty)).toEqual([404, "no_firmware"]);
      expect(empty.json().error.message).toBe("no firmware yet: copy an ESP-IDF app .bin into the firmware folder or upload one");

      fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
      const sha = (await eventually(() => s.running.ctx.catalog.latest("esp32"))).sha256;
      expect((await ask()).json()).toMatchObject({ sha256: sha });
      const r = await s.req("POST", "/api/v1/releases", {
        headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" },
        body: JSON.stringify({ name: "chipless", image: sha }),
      });
      expect(r.status).toBe(201);
      const chipless = await ask();
      expect(code(chipless)).toEqual([404, "no_firmware"]);
      expect(chipless.json().error.message).toBe(
        "no release for this device: its chip is unknown, so hardware compatibility cannot be checked; send X-Device-Chip",
      );
    } finally {
      await s.close();
    }
  });
});
