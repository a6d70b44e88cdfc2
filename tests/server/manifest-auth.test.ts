import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { agentVerdict, mac, nonce, type Bundle } from "../helpers/device-keys";
import { eventually, startTestServer, type TestServer } from "../helpers/server";



describe("per-device authenticated manifests", () => {
  let s: TestServer;
  let a: Bundle;
  let b: Bundle;
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const provision = async (id: string, body: object = {}) => {
    const r = await s.req("POST", `/api/v1/devices/${encodeURIComponent(id)}/provision`, {
      headers: { ...op(), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(201);
    return r.json<Bundle>();
  };
  const poll = (d: Bundle, n: string, extra: Record<string, string> = {}) =>
    s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, "X-Nonce": n, ...extra } });

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    a = await provision("AA-BB-CC-00-00-01");
    b = await provision("device-b");
  });
  afterAll(async () => s.close());

  it("provisioning gives the device its id (MAC normalised), its keys, the server URL and the CA", () => {
    expect(a.deviceId).toBe("aa:bb:cc:00:00:01");
    expect(a.apiKey).toMatch(/^otadev_/);
    expect(a.hmacKey).toMatch(/^[0-9a-f]{64}$/);
    expect(a.ca).toBe(s.ca.toString("utf8"));
    expect(a.hmacKey).not.toBe(b.hmacKey);
    expect(a.apiKey).not.toBe(b.apiKey);
  });

  it("the manifest's HMAC verifies under the device's own key and covers its nonce", async () => {
    const n = nonce();
    const r = await poll(a, n);
    expect(r.status).toBe(200);
    const m = r.json();
    expect(m.device_id).toBe(a.deviceId);
    expect(m.nonce).toBe(n);
    expect(r.headers["x-manifest-hmac"]).toBe(mac(a.hmacKey, r.body));
    // Another device's key cannot have made it, and this device's key cannot forge for the other.
    expect(r.headers["x-manifest-hmac"]).not.toBe(mac(b.hmacKey, r.body));
    const rb = await poll(b, nonce());
    expect(rb.headers["x-manifest-hmac"]).toBe(mac(b.hmacKey, rb.body));
    expect(rb.headers["x-manifest-hmac"]).not.toBe(mac(a.hmacKey, rb.body));
  });

  it("a replayed request (same nonce) is refused; a fresh nonce works", async () => {
    const n = nonce();
    expect((await poll(a, n)).status).toBe(200);
    const replay = await poll(a, n);
    expect(replay.status).toBe(409);
    expect(replay.json().error.code).toBe("nonce_reused");
    expect(replay.json().error.message).toBe("this X-Nonce was already used by this device: replayed request refused; use a fresh nonce");
    expect((await poll(a, nonce())).status).toBe(200);
    // Nonces are per device: the same value from another device is its own.
    expect((await poll(b, n)).status).toBe(200);
  });

  it("an old manifest does not verify for a new nonce (what the agent checks)", async () => {
    // The key in the device's bundle is the one the server signs with.
    expect(s.running.ctx.credentials.deviceMacKey(a.deviceId, a.keyGeneration).toString("hex")).toBe(a.hmacKey);
    const n1 = nonce();
    const first = await poll(a, n1);
    const n2 = nonce();
    const second = await poll(a, n2);
    expect(agentVerdict(a, n1, first)).toBe("ok");
    expect(agentVerdict(a, n2, second)).toBe("ok");
    // The old answer, genuine as it is, does not answer the new request...
    expect(agentVerdict(a, n2, first)).toBe("replayed_manifest");
    // ...and putting the new nonce into it breaks its MAC: the nonce is inside what the MAC covers.
    const edited = Buffer.from(first.body.toString("utf8").replace(`"nonce":"${n1}"`, `"nonce":"${n2}"`));
    expect(edited.equals(first.body)).toBe(false);
    expect(agentVerdict(a, n2, { headers: first.headers, body: edited })).toBe("hmac_mismatch");
    // Nor does a genuine answer for one device verify on another.
    expect(agentVerdict({ ...b, deviceId: a.deviceId }, n2, second)).toBe("hmac_mismatch");
  });

  it("If-None-Match gives 304 whose HMAC binds device, nonce and ETag", async () => {
    const r = await poll(a, nonce());
    const etag = r.headers.etag as string;
    const n = nonce();
    const nm = await poll(a, n, { "If-None-Match": etag });
    expect(nm.status).toBe(304);
    expect(nm.body.length).toBe(0);
    expect(nm.headers["x-manifest-hmac"]).toBe(mac(a.hmacKey, `not-modified\n${a.deviceId}\n${n}\n${etag.replace(/"/g, "")}`));
    expect((await poll(a, nonce(), { "If-None-Match": '"something-else"' })).status).toBe(200);
  });

  it("a nonce is required with X-Device-Id, and must be well-formed", async () => {
    const r = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": a.apiKey, "X-Device-Id": a.deviceId } });
    expect(r.status).toBe(400);
    expect(r.json().error).toEqual({
      code: "nonce_required",
      message: "with X-Device-Id, send a fresh random X-Nonce (16-64 characters) with every manifest request",
    });
    expect((await poll(a, "short")).json().error).toEqual({
      code: "invalid_nonce",
      message: "X-Nonce must be 16-64 characters of A-Z a-z 0-9 _ -, fresh for every request",
    });
    expect((await poll(a, "x".repeat(65))).status).toBe(400);
  });

  it("a device key works only for its own device id", async () => {
    const r = await s.req("GET", "/firmware/manifest", {
      headers: { "X-API-Key": a.apiKey, "X-Device-Id": b.deviceId, "X-Nonce": nonce() },
    });
    expect(r.status).toBe(401);
    const noId = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": a.apiKey } });
    expect(noId.status).toBe(400);
    expect(noId.json().error.code).toBe("device_id_required");
  });

  it("a provisioned device cannot be impersonated with the fleet key; an unprovisioned id can use it", async () => {
    const r = await s.req("GET", "/firmware/manifest", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": a.deviceId, "X-Nonce": nonce() },
    });
    expect(r.status).toBe(403);
    expect(r.json().error.code).toBe("device_key_required");
    const rep = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: a.deviceId, status: "failed" }),
    });
    expect(rep.status).toBe(403);
    const other = await s.req("GET", "/firmware/manifest", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": "not-provisioned", "X-Nonce": nonce() },
    });
    expect(other.status).toBe(200);
  });

  it("rotating a device's key ends the old one", async () => {
    const c1 = await provision("rotating");
    expect((await poll(c1, nonce())).status).toBe(200);
    const c2 = await provision("rotating", { rotate: true });
    expect(c2.keyGeneration).toBe(c1.keyGeneration + 1);
    expect((await poll(c1, nonce())).status).toBe(401);
    const r = await poll(c2, nonce());
    expect(r.status).toBe(200);
    expect(r.headers["x-manifest-hmac"]).toBe(mac(c2.hmacKey, r.body));
  });

  it("credentials of one kind never work on the other API", async () => {
    const onDevice = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.operatorToken } });
    expect(onDevice.status).toBe(403);
    expect(onDevice.json().error.code).toBe("wrong_credential_kind");
    const bearerOnDevice = await s.req("GET", "/firmware/manifest", { headers: op() });
    expect(bearerOnDevice.status).toBe(403);
    for (const key of [s.creds.deviceApiKey, a.apiKey]) {
      const asBearer = await s.req("GET", "/api/v1/devices", { headers: { Authorization: `Bearer ${key}` } });
      expect(asBearer.status).toBe(403);
      expect(asBearer.json().error.code).toBe("wrong_credential_kind");
      const asKey = await s.req("GET", "/api/v1/devices", { headers: { "X-API-Key": key, "X-Device-Id": a.deviceId } });
      expect(asKey.status).toBe(403);
    }
  });

  it("the operator sees the polling device with its chip and version, and online", async () => {
    await poll(a, nonce(), { "X-Device-Chip": "esp32", "X-Device-Version": "v1.0.0" });
    const d = await eventually(async () => {
      const r = (await s.req("GET", `/api/v1/devices/${a.deviceId}`, { headers: op() })).json();
      return r.device?.version === "v1.0.0" && r.device;
    });
    expect(d).toMatchObject({ id: a.deviceId, chip: "esp32", online: true, provisioned: true });
  });

  it("no secret appears in the logs", () => {
    const logs = s.logs.join("");
    for (const secret of [s.creds.deviceApiKey, s.creds.operatorToken, a.apiKey, a.hmacKey, b.apiKey, b.hmacKey]) {
      expect(logs).not.toContain(secret);
    }
  });
});
