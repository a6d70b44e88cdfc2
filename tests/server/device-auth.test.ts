// Device API authentication at its edges, on the real server: the three places a request may name its device
// and how they must agree, which of them obliges a nonce, keys in the URL under any parameter name, bearer
// tokens that are not operator tokens, Basic without a password, and device keys for ids that were never
// provisioned. Which refusals count towards the failure limit, and which are only a challenge.
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { mac, nonce, type Bundle } from "../helpers/device-keys";
import { eventually, startTestServer, type Reply, type TestServer } from "../helpers/server";

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
const code = (r: Reply) => [r.status, r.json<{ error?: { code: string } }>().error?.code];

describe("device authentication", () => {
  let s: TestServer;
  let d: Bundle;
  const manifest = (headers: Record<string, string>, query = "") => s.req("GET", `/firmware/manifest${query}`, { headers });

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    const r = await s.req("POST", "/api/v1/devices/24:6F:28:AA:BB:01/provision", {
      headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" },
      body: "{}",
    });
    expect(r.status).toBe(201);
    d = r.json<Bundle>();
  });
  afterAll(async () => s.close());

  it("a device key names its device by x-ESP32-STA-MAC or the Basic user name without a nonce; the manifest is MACed for it", async () => {
    const namings: Record<string, string>[] = [
      { "X-API-Key": d.apiKey, "x-ESP32-STA-MAC": "24:6F:28:AA:BB:01" },
      { Authorization: basic("246f28aabb01", d.apiKey) },
    ];
    for (const headers of namings) {
      const r = await manifest(headers);
      expect(r.status).toBe(200);
      expect(r.json()).toMatchObject({ device_id: d.deviceId, nonce: null });
      expect(r.headers["x-manifest-hmac"]).toBe(mac(d.hmacKey, r.body));
    }
    // X-Device-Id is the agent's header, and the agent must send a nonce with it.
    expect(code(await manifest({ "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId }))).toEqual([400, "nonce_required"]);
  });

  it("every place that names the device must name the same one", async () => {
    const agreeing = await manifest({ Authorization: basic("246F28AABB01", d.apiKey), "X-Device-Id": "24-6f-28-aa-bb-01", "x-ESP32-STA-MAC": "24:6f:28:aa:bb:01", "X-Nonce": nonce() });
    expect(agreeing.status).toBe(200);
    const r = await manifest({ Authorization: basic("246f28aabb02", d.apiKey), "X-Device-Id": d.deviceId, "X-Nonce": nonce() });
    expect(code(r)).toEqual([400, "conflicting_device_id"]);
    expect(r.json().error.message).toBe(`X-Device-Id names device ${d.deviceId} but the HTTP Basic user name names 24:6f:28:aa:bb:02`);
    const mac2 = await manifest({ "X-API-Key": d.apiKey, "x-ESP32-STA-MAC": "24:6f:28:aa:bb:01", "X-Device-Id": "other-device" });
    expect(code(mac2)).toEqual([400, "conflicting_device_id"]);
    expect(mac2.json().error.message).toMatch(/^X-Device-Id names device other-device but x-ESP32-STA-MAC names 24:6f:28:aa:bb:01$/);
    const badMac = await manifest({ "X-API-Key": d.apiKey, "x-ESP32-STA-MAC": "not a mac!" });
    expect(code(badMac)).toEqual([400, "invalid_device_id"]);
    expect(badMac.json().error.message).toMatch(/^x-ESP32-STA-MAC must be /);
    const badUser = await manifest({ Authorization: basic("a b", d.apiKey) });
    expect(code(badUser)).toEqual([400, "invalid_device_id"]);
    expect(badUser.json().error.message).toMatch(/^the HTTP Basic user name is the device id/);
  });

  it("a key in the URL is refused under any parameter name; other parameters are not", async () => {
    for (const q of [`?x=${d.apiKey}`, `?chip=esp32&note=${encodeURIComponent(s.creds.deviceApiKey)}`]) {
      const r = await manifest({ "X-API-Key": s.creds.deviceApiKey }, q);
      expect(code(r)).toEqual([400, "credential_in_query"]);
      expect(r.json().error.message).toMatch(/^credentials are not accepted in the URL/);
    }
    expect((await manifest({ "X-API-Key": s.creds.deviceApiKey }, "?chip=esp32&note=otafleet")).status).toBe(200);
  });

  it("Basic without a password, or another scheme, is no credential: a challenge", async () => {
    for (const authorization of [basic("246f28aabb01", ""), "Digest username=x", "Bearer", "Bearer  "]) {
      const r = await manifest({ Authorization: authorization });
      expect(code(r)).toEqual([401, "missing_credential"]);
      expect(r.headers["www-authenticate"]).toBe('Basic realm="esp32-ota devices", charset="UTF-8"');
    }
  });

  it("a device reports for itself with its own key; an operator token after two spaces is still recognised", async () => {
    const r = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: d.deviceId, status: "idle" }),
    });
    expect(r.status).toBe(200);
    expect(code(await manifest({ Authorization: `Bearer  ${s.creds.operatorToken}` }))).toEqual([403, "wrong_credential_kind"]);
  });

  it("a bearer token that is not an operator token is a wrong credential, not a challenge", async () => {
    const r = await manifest({ Authorization: "Bearer not-a-token" });
    expect(code(r)).toEqual([401, "invalid_credential"]);
    expect(r.json().error.message).toMatch(/^a bearer token is not a device credential/);
    expect(r.headers["www-authenticate"]).toMatch(/^Basic realm=/);
  });

  it("only an Authorization header that starts with Bearer and holds one token is taken for a bearer token", async () => {
    // "Bearer" further in is no bearer token: no credential was sent, so the answer is the challenge.
    const inside = await manifest({ Authorization: `Token Bearer ${s.creds.operatorToken}` });
    expect(code(inside)).toEqual([401, "missing_credential"]);
    // An operator token with more after it is not an operator token: a wrong credential, not a 403 that names it.
    const more = await manifest({ Authorization: `Bearer ${s.creds.operatorToken} extra` });
    expect(code(more)).toEqual([401, "invalid_credential"]);
  });

  it("a path without a query is not read as one, whatever it holds", async () => {
    const r = await s.req("GET", "/firmware/a&token=x.bin", { headers: { "X-API-Key": s.creds.deviceApiKey } });
    // Refused for its name, after authentication: not as a key in the URL.
    expect(code(r)).toEqual([400, "invalid_name"]);
  });

  it("a device key is refused for an id that was seen but never provisioned, even the key its generation 0 would have", async () => {
    const rep = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: "seen-only", status: "idle" }),
    });
    expect(rep.status).toBe(200);
    const wouldBe = s.running.ctx.credentials.deviceApiKey("seen-only", 0);
    const r = await manifest({ "X-API-Key": wouldBe, "x-ESP32-STA-MAC": "seen-only" });
    expect(code(r)).toEqual([401, "invalid_credential"]);
    expect(r.json().error.message).toBe("the API key is not valid for this device; send the key its provisioning gave it (ota device provision)");
    // The fleet key still speaks for it: it has no key of its own.
    expect((await manifest({ "X-API-Key": s.creds.deviceApiKey, "x-ESP32-STA-MAC": "seen-only" })).status).toBe(200);
    // A key longer than any device key is not looked at.
    expect(code(await manifest({ "X-API-Key": "otadev_" + "A".repeat(300), "x-ESP32-STA-MAC": d.deviceId }))).toEqual([401, "invalid_credential"]);
  });

  it("a fleet key speaks for an id without a key of its own, and the manifest names it", async () => {
    const r = await manifest({ "X-API-Key": s.creds.deviceApiKey, "x-ESP32-STA-MAC": "24:6f:28:cc:dd:01" });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ device_id: "24:6f:28:cc:dd:01" });
    const anonymous = await manifest({ "X-API-Key": s.creds.deviceApiKey });
    expect(anonymous.json()).toMatchObject({ device_id: null });
    expect(anonymous.headers["x-manifest-hmac"]).toBeUndefined();
  });
  it("every refusal says what to send instead, and names the devices it is about", async () => {
    const admin = { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" };
    const spare = await s.running.ctx.credentials.createFleetKey("words-spare");
    expect((await s.req("POST", `/api/v1/apikeys/${spare.id}/revoke`, { headers: admin, body: "{}" })).status).toBe(200);
    const gone = (await s.req("POST", "/api/v1/devices/24:6F:28:AA:BB:09/provision", { headers: admin, body: "{}" })).json<Bundle>();
    expect((await s.req("POST", `/api/v1/devices/${gone.deviceId}/revoke`, { headers: admin, body: "{}" })).status).toBe(200);
    const report = (headers: Record<string, string>, deviceId: string) =>
      s.req("POST", "/firmware/report", { headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify({ device_id: deviceId, status: "idle" }) });
    const fleet = s.creds.deviceApiKey;
    const invalidKey = "the API key is not valid; send a device key (ota device provision) or a fleet key (ota apikey create)";

    const cases: [string, Promise<Reply>, number, string, string | RegExp][] = [
      ["an unknown key", manifest({ "X-API-Key": "not-a-key" }), 401, "invalid_credential", invalidKey],
      ["a fleet key that was never issued", manifest({ "X-API-Key": "otafleet_" + "B".repeat(40) }), 401, "invalid_credential", invalidKey],
      ["a key longer than any key", manifest({ "X-API-Key": "C".repeat(300) }), 401, "invalid_credential", invalidKey],
      ["no key", manifest({}), 401, "missing_credential", /in the X-API-Key header or as the HTTP Basic password$/],
      ["a device key without its id", manifest({ "X-API-Key": d.apiKey }), 400, "device_id_required", /\(X-Device-Id, x-ESP32-STA-MAC or the HTTP Basic user name\)$/],
      ["an operator token as a bearer", manifest({ Authorization: `Bearer ${s.creds.operatorToken}` }), 403, "wrong_credential_kind", /cannot be used on the device API; send a device key in X-API-Key$/],
      ["an operator token as a key", manifest({ "X-API-Key": s.creds.operatorToken }), 403, "wrong_credential_kind", /cannot be used on the device API; send a device key in X-API-Key$/],
      ["a revoked fleet key", manifest({ "X-API-Key": spare.key }), 401, "credential_revoked", /has been revoked; use another one \(an admin creates one with ota apikey create\)$/],
      ["a revoked device's key", manifest({ "X-API-Key": gone.apiKey, "x-ESP32-STA-MAC": gone.deviceId }), 401, "credential_revoked", /has been revoked; provision the device again to give it a new key$/],
      ["a fleet key for a revoked id", manifest({ "X-API-Key": fleet, "x-ESP32-STA-MAC": gone.deviceId }), 403, "device_revoked", `device ${gone.deviceId} has been revoked: no key may speak for it; provision it again to give it a new key`],
      ["a fleet key for a provisioned id", manifest({ "X-API-Key": fleet, "x-ESP32-STA-MAC": d.deviceId }), 403, "device_key_required", `device ${d.deviceId} is provisioned: it must use its own key, not a fleet key`],
      ["a report for another device", report({ "X-API-Key": d.apiKey, "x-ESP32-STA-MAC": d.deviceId }, "24:6f:28:aa:bb:77"), 403, "device_mismatch", `this request is authenticated for device ${d.deviceId}, not 24:6f:28:aa:bb:77`],
    ];
    for (const [what, reply, status, errorCode, message] of cases) {
      const r = await reply;
      expect([what, ...code(r)]).toEqual([what, status, errorCode]);
      const said = r.json<{ error: { message: string } }>().error.message;
      if (typeof message === "string") expect([what, said]).toEqual([what, message]);
      else expect([what, said]).toEqual([what, expect.stringMatching(message)]);
    }
  });
});

describe("device authentication failures and the failure limit", () => {
  it("wrong keys and bearer guesses count towards the limit; requests that present nothing do not", async () => {
    const s = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "3" });
    try {
      for (let i = 0; i < 5; i++) expect(code(await s.req("GET", "/firmware/manifest"))).toEqual([401, "missing_credential"]);
      // Refusals that are not 401 are not guesses either.
      for (let i = 0; i < 2; i++) {
        expect(code(await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.operatorToken } }))).toEqual([403, "wrong_credential_kind"]);
        expect(code(await s.req("GET", "/firmware/manifest?api_key=x"))).toEqual([400, "credential_in_query"]);
      }
      const guesses: Record<string, string>[] = [{ Authorization: "Bearer guess-1" }, { "X-API-Key": "otafleet_guess" }, { "X-API-Key": "otadev_guess", "X-Device-Id": "someone" }];
      for (const headers of guesses) expect((await s.req("GET", "/firmware/manifest", { headers })).status).toBe(401);
      expect(code(await s.req("GET", "/firmware/manifest", { headers: { Authorization: "Bearer guess-4" } }))).toEqual([429, "too_many_auth_failures"]);
    } finally {
      await s.close();
    }
  });
});
