// Revocation through the operator API against the real server: an operator token, a fleet key and a device
// revoked by an admin are refused on their very next request; a fleet key cannot speak for a revoked device id;
// viewers and releasers cannot revoke; listings show no secret; every revocation is in the audit log.
import fs from "node:fs";
import path from "node:path";
import jwt from "jsonwebtoken";
import { operatorSigningKey } from "../../server/infra/auth/keys";
import { HELLO_WORLD } from "../helpers/fixtures";
import { nonce, type Bundle } from "../helpers/device-keys";
import { eventually, startTestServer, type Reply, type TestServer } from "../helpers/server";

interface AuditEntry {
  actor: string;
  role: string | null;
  token_id: string | null;
  source: string;
  action: string;
  target: string | null;
  outcome: string;
  details: Record<string, unknown>;
}

describe("revocation through the operator API", () => {
  let s: TestServer;
  let sha = "";
  let adminJti = "";

  const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
  const admin = () => s.creds.operatorToken;
  const post = (p: string, token: string, body: object = {}) =>
    s.req("POST", `/api/v1${p}`, { headers: { ...bearer(token), "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const get = (p: string, token: string) => s.req("GET", `/api/v1${p}`, { headers: bearer(token) });
  const code = (r: Reply) => [r.status, r.json<{ error?: { code: string } }>().error?.code];
  const poll = (key: string, id?: string, extra: Record<string, string> = {}) =>
    s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": key, ...(id ? { "X-Device-Id": id, "X-Nonce": nonce() } : {}), ...extra } });
  const provision = async (id: string) => {
    const r = await post(`/devices/${encodeURIComponent(id)}/provision`, admin());
    expect(r.status).toBe(201);
    return r.json<Bundle>();
  };
  const audit = async (action: string, target: string) => {
    const r = await get(`/audit?action=${action}&target=${encodeURIComponent(target)}`, admin());
    expect(r.status).toBe(200);
    return r.json<{ entries: AuditEntry[] }>().entries;
  };

  beforeAll(async () => {
    s = await startTestServer({ OTA_FIRST_START_TOKEN_DAYS: "3" });
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    sha = (await eventually(() => s.running.ctx.catalog.latest("esp32"))).sha256;
    adminJti = (JSON.parse(Buffer.from(admin().split(".")[1]!, "base64url").toString()) as { jti: string }).jti;
  });
  afterAll(async () => s.close());

  it("an operator token is refused with 401 token_revoked on its next request, and the revocation is audited", async () => {
    const carol = await s.running.ctx.credentials.issueOperatorToken("carol", "releaser");
    expect((await get("/whoami", carol.token)).status).toBe(200);

    const r = await post(`/tokens/${carol.jti}/revoke`, admin(), { reason: "laptop stolen" });
    expect(r.status).toBe(200);
    const body = r.json();
    expect(body).toMatchObject({ already_revoked: false, token: { id: carol.jti, name: "carol", role: "releaser", state: "revoked" } });
    expect(JSON.stringify(body)).not.toContain(carol.token);

    const refused = await get("/whoami", carol.token);
    expect(refused.json().error).toEqual({ code: "token_revoked", message: "this operator token has been revoked; ask an admin for a new one" });
    expect(code(await get("/devices", carol.token))).toEqual([401, "token_revoked"]);
    // The admin's own token is untouched.
    expect((await get("/whoami", admin())).status).toBe(200);

    // Again: nothing changes, and the first time stays.
    const again = await post(`/tokens/${carol.jti}/revoke`, admin());
    expect(again.json()).toMatchObject({ already_revoked: true, token: { revoked_at: body.token.revoked_at } });

    const entries = await audit("token.revoke", carol.jti);
    expect(entries).toHaveLength(2);
    expect(entries[1]).toMatchObject({
      actor: "admin",
      role: "admin",
      token_id: adminJti,
      source: "api",
      outcome: "ok",
      details: { subject: "carol", role: "releaser", already_revoked: false, reason: "laptop stolen" },
    });
  });

  it("a token's record decides who it is: one signed with the server's own key but naming another role or person is refused", async () => {
    const dave = await s.running.ctx.credentials.issueOperatorToken("dave", "viewer");
    const key = operatorSigningKey(Buffer.from(fs.readFileSync(path.join(s.dirs.data, "master.key"), "utf8").trim(), "hex"));
    const forge = (role: string, subject: string) =>
      jwt.sign({ role }, key, { algorithm: "HS256", subject, jwtid: dave.jti, issuer: "esp32-ota", audience: "operator-api" });
    // The forgery is well made: with the record's own role and name it is accepted.
    expect((await get("/whoami", forge("viewer", "dave"))).status).toBe(200);
    for (const token of [forge("admin", "dave"), forge("viewer", "admin")]) {
      const r = await get("/apikeys", token);
      expect(code(r)).toEqual([401, "invalid_token"]);
      // The same words as any other invalid token: nothing says which claim disagreed with the record.
      expect(r.json<{ error: { message: string } }>().error.message).toBe("the bearer token is not a valid operator token");
    }
    // The same record under another issuer, audience or algorithm is no operator token either.
    const claims = { subject: "dave", jwtid: dave.jti };
    for (const token of [
      jwt.sign({ role: "viewer" }, key, { ...claims, algorithm: "HS256", issuer: "someone-else", audience: "operator-api" }),
      jwt.sign({ role: "viewer" }, key, { ...claims, algorithm: "HS256", issuer: "esp32-ota", audience: "device-api" }),
      jwt.sign({ role: "viewer" }, key, { ...claims, algorithm: "HS512", issuer: "esp32-ota", audience: "operator-api" }),
    ]) {
      expect(code(await get("/whoami", token))).toEqual([401, "invalid_token"]);
    }
  });

  it("a fleet key is refused with 401 credential_revoked on its next request, whatever it asks for", async () => {
    const spare = await s.running.ctx.credentials.createFleetKey("spare");
    expect((await poll(spare.key)).status).toBe(200);
    expect((await poll(spare.key, "fleet-dev-1")).status).toBe(200);

    const r = await post(`/apikeys/${spare.id}/revoke`, admin());
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({
      already_revoked: false,
      apikey: { id: spare.id, label: "spare", created_at: expect.any(String), revoked_at: expect.any(String), state: "revoked" },
    });

    expect(code(await poll(spare.key))).toEqual([401, "credential_revoked"]);
    // A second revocation says so and keeps the first one's time.
    const again = await post(`/apikeys/${spare.id}/revoke`, admin());
    expect(again.json()).toMatchObject({ already_revoked: true, apikey: { revoked_at: r.json().apikey.revoked_at } });
    expect(code(await poll(spare.key, "fleet-dev-1"))).toEqual([401, "credential_revoked"]);
    expect(code(await s.req("GET", `/firmware/sha256/${sha}.bin`, { headers: { "X-API-Key": spare.key } }))).toEqual([401, "credential_revoked"]);
    const rep = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": spare.key, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: "fleet-dev-1", status: "idle" }),
    });
    expect(code(rep)).toEqual([401, "credential_revoked"]);
    // As the HTTP Basic password too.
    const basic = await s.req("GET", "/firmware/manifest", { headers: { Authorization: `Basic ${Buffer.from(`:${spare.key}`).toString("base64")}` } });
    expect(code(basic)).toEqual([401, "credential_revoked"]);
    // Other fleet keys keep working.
    expect((await poll(s.creds.deviceApiKey)).status).toBe(200);

    const entries = await audit("apikey.revoke", spare.id);
    expect(entries.map((e) => e.details.already_revoked)).toEqual([true, false]);
    expect(entries[1]).toMatchObject({ actor: "admin", token_id: adminJti, details: { label: "spare", already_revoked: false } });
  });

  it("a revoked device's key is refused with 401 credential_revoked; provisioning it again gives a new key", async () => {
    const d = await provision("revoked-dev-1");
    expect((await poll(d.apiKey, d.deviceId)).status).toBe(200);

    const r = await post(`/devices/${d.deviceId}/revoke`, admin(), { reason: "decommissioned" });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ already_revoked: false, device: { id: d.deviceId, revoked: true, revoked_at: expect.any(String) } });
    expect(code(await poll(d.apiKey, d.deviceId))).toEqual([401, "credential_revoked"]);
    const rep = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": d.apiKey, "X-Device-Id": d.deviceId, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: d.deviceId, status: "idle" }),
    });
    expect(code(rep)).toEqual([401, "credential_revoked"]);

    const [entry] = await audit("device.revoke", d.deviceId);
    expect(entry).toMatchObject({ actor: "admin", token_id: adminJti, details: { key_generation: 0, already_revoked: false, reason: "decommissioned" } });

    // Provisioning it again (without --rotate) must not bring the revoked key back.
    const again = await provision(d.deviceId);
    expect(again.keyGeneration).toBe(d.keyGeneration + 1);
    expect(again.apiKey).not.toBe(d.apiKey);
    expect(code(await poll(d.apiKey, d.deviceId))).toEqual([401, "invalid_credential"]);
    expect((await poll(again.apiKey, again.deviceId)).status).toBe(200);
  });

  it("a fleet key cannot speak for a revoked device id: manifest, downloads, report (403 device_revoked)", async () => {
    const fleet = s.creds.deviceApiKey;
    // A device that has its own key, and one only ever seen with the fleet key.
    const provisioned = await provision("de:ad:00:00:00:01");
    const unprovisioned = "de:ad:00:00:00:02";
    expect((await poll(fleet, unprovisioned)).status).toBe(200);
    await s.running.ctx.devices.flush();

    for (const id of [provisioned.deviceId, unprovisioned]) {
      expect((await post(`/devices/${id}/revoke`, admin())).status).toBe(200);
      const asMac = id.replace(/:/g, "").toUpperCase();
      const refused: [string, Promise<Reply>][] = [
        ["manifest", poll(fleet, id)],
        ["manifest by STA MAC", s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": fleet, "x-ESP32-STA-MAC": asMac } })],
        ["manifest by Basic user", s.req("GET", "/firmware/manifest", { headers: { Authorization: `Basic ${Buffer.from(`${asMac}:${fleet}`).toString("base64")}` } })],
        ["download by hash", s.req("GET", `/firmware/sha256/${sha}.bin`, { headers: { "X-API-Key": fleet, "X-Device-Id": id } })],
        ["download by name", s.req("GET", "/firmware/hello.bin", { headers: { "X-API-Key": fleet, "X-Device-Id": id } })],
        ["offered download", s.req("GET", "/api/ota/download", { headers: { "X-API-Key": fleet, "x-ESP32-STA-MAC": asMac } })],
        [
          "report naming it in the body",
          s.req("POST", "/firmware/report", {
            headers: { "X-API-Key": fleet, "Content-Type": "application/json" },
            body: JSON.stringify({ device_id: id, status: "confirmed", version: "1.0.0" }),
          }),
        ],
      ];
      for (const [what, reply] of refused) expect([what, ...code(await reply)]).toEqual([what, 403, "device_revoked"]);
    }
    // The fleet key itself still works for other ids.
    expect((await poll(fleet, "de:ad:00:00:00:03")).status).toBe(200);
  });

  it("viewers and releasers cannot list or revoke credentials (403), and each refused revocation is audited", async () => {
    const victim = await s.running.ctx.credentials.issueOperatorToken("victim", "viewer");
    const key = await s.running.ctx.credentials.createFleetKey("kept");
    const dev = await provision("kept-dev");
    for (const role of ["viewer", "releaser"] as const) {
      const t = (await s.running.ctx.credentials.issueOperatorToken(`a-${role}`, role)).token;
      expect(code(await post(`/tokens/${victim.jti}/revoke`, t))).toEqual([403, "insufficient_role"]);
      expect(code(await post(`/apikeys/${key.id}/revoke`, t))).toEqual([403, "insufficient_role"]);
      expect(code(await post(`/devices/${dev.deviceId}/revoke`, t))).toEqual([403, "insufficient_role"]);
      expect(code(await get("/tokens", t))).toEqual([403, "insufficient_role"]);
      expect(code(await get("/apikeys", t))).toEqual([403, "insufficient_role"]);
    }
    expect((await get("/whoami", victim.token)).status).toBe(200);
    expect((await poll(key.key)).status).toBe(200);
    expect((await poll(dev.apiKey, dev.deviceId)).status).toBe(200);
    const denied = await audit("denied", `/api/v1/tokens/${victim.jti}/revoke`);
    expect(denied.map((e) => [e.actor, e.role, e.outcome])).toEqual([
      ["a-releaser", "releaser", "denied"],
      ["a-viewer", "viewer", "denied"],
    ]);
  });

  it("listings show ids, names, roles, dates and state, never a token, key or hash", async () => {
    const t = await s.running.ctx.credentials.issueOperatorToken("lister", "viewer", 30);
    const k = await s.running.ctx.credentials.createFleetKey("listed");
    const tokens = await get("/tokens", admin());
    const keys = await get("/apikeys", admin());
    expect([tokens.status, keys.status]).toEqual([200, 200]);

    const listedToken = tokens.json<{ tokens: Record<string, unknown>[] }>().tokens.find((x) => x.id === t.jti);
    expect(listedToken).toEqual({
      id: t.jti,
      name: "lister",
      role: "viewer",
      created_at: expect.any(String),
      expires_at: t.expiresAt,
      revoked_at: null,
      state: "active",
    });
    const listedKey = keys.json<{ apikeys: Record<string, unknown>[] }>().apikeys.find((x) => x.id === k.id);
    expect(listedKey).toEqual({ id: k.id, label: "listed", created_at: expect.any(String), revoked_at: null, state: "active" });

    const secrets = [t.token, k.key, s.creds.operatorToken, s.creds.deviceApiKey];
    const hashes = (await s.running.ctx.store.db.selectFrom("api_keys").select("key_hash").execute()).map((r) => r.key_hash);
    for (const text of [tokens.text(), keys.text()]) {
      for (const secret of [...secrets, ...secrets.map((x) => x.split(".").pop()!), ...hashes]) expect(text).not.toContain(secret);
      expect(text).not.toMatch(/otafleet_|eyJ|key_hash/);
    }
  });

  it("the admin token made at first start expires after OTA_FIRST_START_TOKEN_DAYS days", async () => {
    const claims = JSON.parse(Buffer.from(admin().split(".")[1]!, "base64url").toString()) as { iat: number; exp?: number };
    expect(claims.exp! - claims.iat).toBe(3 * 86400);
    const file = JSON.parse(fs.readFileSync(path.join(s.dirs.data, "dev-credentials.json"), "utf8"));
    expect(Math.abs(Date.parse(file.operatorTokenExpiresAt) - claims.exp! * 1000)).toBeLessThan(2000);
    const listed = (await get("/tokens", admin())).json<{ tokens: { id: string; expires_at: string | null }[] }>().tokens;
    expect(listed.find((x) => x.id === adminJti)?.expires_at).toBe(file.operatorTokenExpiresAt);
  });

  it("unknown ids are 404, malformed ids 400", async () => {
    expect(code(await post("/tokens/00000000-0000-4000-8000-000000000000/revoke", admin()))).toEqual([404, "token_not_found"]);
    expect(code(await post("/apikeys/nosuchid/revoke", admin()))).toEqual([404, "apikey_not_found"]);
    expect(code(await post("/devices/nobody/revoke", admin()))).toEqual([404, "device_not_found"]);
    expect(code(await post("/tokens/not-a-uuid/revoke", admin()))).toEqual([400, "invalid_request"]);
    expect(code(await post("/apikeys/bad%20id/revoke", admin()))).toEqual([400, "invalid_request"]);
    expect(code(await post(`/tokens/${adminJti}/revoke`, admin(), { why: "x" }))).toEqual([400, "invalid_request"]);
    expect((await get("/whoami", admin())).status).toBe(200);
  });
});
