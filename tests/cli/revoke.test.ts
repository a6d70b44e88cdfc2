// `ota token|apikey|device revoke` and the credential lists, as separate processes against a running server:
// locally on its data folder (the server honours the revocation on the credential's next request) and through
// the operator API with --remote (admin only).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { storageEnv } from "../helpers/database";
import { nonce } from "../helpers/device-keys";
import { HELLO_WORLD } from "../helpers/fixtures";
import { runOta, type OtaRun } from "../helpers/ota-cli";
import { eventually, ROOT, startTestServer, type Reply, type TestServer } from "../helpers/server";

// Every `ota` here is a new Node process that opens the data folder or a TLS connection: seconds each on a busy machine.
jest.setTimeout(120_000);

describe("ota: revoking credentials", () => {
  let s: TestServer;
  let local: NodeJS.ProcessEnv;
  const code = (r: Reply) => [r.status, r.json<{ error?: { code: string } }>().error?.code];
  const whoami = (token: string) => s.req("GET", "/api/v1/whoami", { headers: { Authorization: `Bearer ${token}` } });
  const poll = (key: string, id?: string) =>
    s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": key, ...(id ? { "X-Device-Id": id, "X-Nonce": nonce() } : {}) } });
  const auditOf = async (action: string, target: string) =>
    (
      await s.req("GET", `/api/v1/audit?action=${action}&target=${encodeURIComponent(target)}`, { headers: { Authorization: `Bearer ${s.creds.operatorToken}` } })
    ).json<{ entries: { actor: string; source: string; action: string; details: Record<string, unknown> }[] }>().entries;
  /** A saved login (what `ota login` writes; tests/cli/operator-flow.test.ts runs login itself) for --remote. */
  const login = (name: string, token: string) => {
    const file = path.join(s.dirs.root, `${name}.json`);
    const config = { server: s.url, token, ca: s.ca.toString("utf8"), subject: name, role: "unchecked" };
    fs.writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
    return { PATH: process.env.PATH, HOME: s.dirs.root, OTA_CONFIG: file };
  };
  const tokenId = (token: string) => (JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as { jti: string }).jti;

  beforeAll(async () => {
    s = await startTestServer();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    // The server's environment, as on the server machine; no login, so nothing can go through the API by accident.
    local = {
      PATH: process.env.PATH,
      HOME: s.dirs.root,
      OTA_CONFIG: path.join(s.dirs.root, "no-login.json"),
      OTA_DATA_DIR: s.dirs.data,
      OTA_CERT_DIR: s.dirs.certs,
      OTA_PARTITIONS: path.join(ROOT, "partitions.csv"),
      PORT: String(s.port),
      ...storageEnv(s.dirs),
    };
  });
  afterAll(async () => s.close());

  it("token revoke in another process (local data folder): the running server refuses the token on its next request", async () => {
    const created = await runOta(local, "token", "create", "--role", "releaser", "--name", "dave");
    expect(created.status).toBe(0);
    const token = created.stdout.trim();
    expect((await whoami(token)).status).toBe(200);

    const listed = await runOta(local, "token", "list", "--json");
    const entry = JSON.parse(listed.stdout).tokens.find((t: { name: string }) => t.name === "dave");
    expect(entry).toMatchObject({ id: tokenId(token), role: "releaser", state: "active", expires_at: null, revoked_at: null });

    const r = await runOta(local, "token", "revoke", entry.id, "--reason", "left the team");
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(r.stdout).toBe(`revoked operator token ${entry.id} (dave, releaser): it is refused from its next request on\n`);
    expect(code(await whoami(token))).toEqual([401, "token_revoked"]);

    const [audited] = await auditOf("token.revoke", entry.id);
    expect(audited).toMatchObject({ actor: `local:${os.userInfo().username}`, source: "cli", details: { subject: "dave", reason: "left the team", already_revoked: false } });
    expect((await runOta(local, "token", "revoke", entry.id)).stdout).toMatch(/^operator token .* \(dave, releaser\) was already revoked at 20/);
    expect((await runOta(local, "token", "list")).stdout).toMatch(new RegExp(`^${entry.id}\\s+dave\\s+releaser\\s+revoked\\s+20\\S+\\s+never\\s+20`, "m"));
  });

  it("apikey revoke in another process: the running server refuses the fleet key on its next request", async () => {
    const created = await runOta(local, "apikey", "create", "--label", "ci");
    const key = created.stdout.trim();
    expect((await poll(key)).status).toBe(200);
    const id = key.slice("otafleet_".length, "otafleet_".length + 8);

    const r = await runOta(local, "apikey", "revoke", id);
    expect([r.status, r.stdout]).toEqual([0, `revoked fleet key ${id} (ci): it is refused from its next request on\n`]);
    expect(code(await poll(key))).toEqual([401, "credential_revoked"]);
    expect((await poll(s.creds.deviceApiKey)).status).toBe(200);
    const [audited] = await auditOf("apikey.revoke", id);
    expect(audited).toMatchObject({ source: "cli", details: { label: "ci", already_revoked: false } });
  });

  it("device revoke in another process: the device's key and fleet keys for its id are refused on the next request", async () => {
    const provisioned = await runOta(local, "device", "provision", "AA-BB-CC-00-00-09");
    const b = JSON.parse(provisioned.stdout) as { deviceId: string; apiKey: string };
    expect((await poll(b.apiKey, b.deviceId)).status).toBe(200);

    const r = await runOta(local, "device", "revoke", "AA-BB-CC-00-00-09");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^revoked device aa:bb:cc:00:00:09: /);
    expect(code(await poll(b.apiKey, b.deviceId))).toEqual([401, "credential_revoked"]);
    expect(code(await poll(s.creds.deviceApiKey, b.deviceId))).toEqual([403, "device_revoked"]);
    const [audited] = await auditOf("device.revoke", b.deviceId);
    expect(audited).toMatchObject({ source: "cli", details: { key_generation: 0, already_revoked: false } });
  });

  it("the lists never print a token, a key or a hash", async () => {
    const { token } = await s.running.ctx.credentials.issueOperatorToken("eve", "viewer");
    const { key } = await s.running.ctx.credentials.createFleetKey("secretive");
    const hashes = (await s.running.ctx.store.db.selectFrom("api_keys").select("key_hash").execute()).map((x) => x.key_hash);
    const admin = login("admin-lists", s.creds.operatorToken);
    const outputs: OtaRun[] = [];
    for (const [env, ...args] of [
      [local, "token", "list"],
      [local, "apikey", "list"],
      [local, "apikey", "list", "--json"],
      [admin, "token", "list", "--remote", "--json"],
      [admin, "apikey", "list", "--remote"],
    ] as const) {
      outputs.push(await runOta(env, ...args));
    }
    for (const o of outputs) {
      expect(o.status).toBe(0);
      for (const secret of [token, key, s.creds.operatorToken, s.creds.deviceApiKey, ...hashes]) expect(o.stdout).not.toContain(secret);
      expect(o.stdout).not.toMatch(/otafleet_|eyJ/);
    }
    expect(outputs[1]!.stdout).toMatch(/^ID\s+LABEL\s+STATE\s+CREATED\s+REVOKED\n/);
    expect(outputs[1]!.stdout).toMatch(new RegExp(`^${key.slice(9, 17)}\\s+secretive\\s+active\\s+20`, "m"));
    expect(JSON.parse(outputs[2]!.stdout).apikeys).toContainEqual({ id: key.slice(9, 17), label: "secretive", created_at: expect.any(String), revoked_at: null, state: "active" });
    expect(outputs[0]!.stdout).toMatch(/^ID\s+NAME\s+ROLE\s+STATE\s+CREATED\s+EXPIRES\s+REVOKED\n/);
  });

  it("--remote: an admin revokes through the API; viewers and releasers are refused (exit 3, insufficient_role)", async () => {
    const ctx = s.running.ctx;
    const admin = login("admin", s.creds.operatorToken);
    const { key, id: keyId } = await ctx.credentials.createFleetKey("remote");
    const target = (await ctx.credentials.issueOperatorToken("frank", "viewer")).token;
    const r0 = await s.req("POST", "/api/v1/devices/remote-dev/provision", { headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" }, body: "{}" });
    const b = r0.json<{ deviceId: string; apiKey: string }>();

    const revokes = [
      ["token", "revoke", tokenId(target), "--remote"],
      ["apikey", "revoke", keyId, "--remote"],
      ["device", "revoke", b.deviceId, "--remote"],
    ];
    const lists = [
      ["token", "list", "--remote"],
      ["apikey", "list", "--remote"],
    ];
    for (const [role, attempts] of [
      ["viewer", [...revokes, ...lists]],
      ["releaser", revokes],
    ] as const) {
      const env = login(role, (await ctx.credentials.issueOperatorToken(`cli-${role}`, role)).token);
      for (const args of attempts) {
        const r = await runOta(env, ...args);
        expect([role, ...args, r.status, r.stderr]).toEqual([role, ...args, 3, expect.stringMatching(/needs the admin role.*\(insufficient_role\)/)]);
      }
    }
    expect((await whoami(target)).status).toBe(200);
    expect((await poll(key)).status).toBe(200);
    expect((await poll(b.apiKey, b.deviceId)).status).toBe(200);

    const t = await runOta(admin, "token", "revoke", tokenId(target), "--remote", "--reason", "rotation");
    expect([t.status, t.stdout]).toEqual([0, `revoked operator token ${tokenId(target)} (frank, viewer): it is refused from its next request on\n`]);
    expect(code(await whoami(target))).toEqual([401, "token_revoked"]);
    expect((await runOta(admin, "apikey", "revoke", keyId, "--remote")).status).toBe(0);
    expect(code(await poll(key))).toEqual([401, "credential_revoked"]);
    expect((await runOta(admin, "device", "revoke", b.deviceId, "--remote")).status).toBe(0);
    expect(code(await poll(b.apiKey, b.deviceId))).toEqual([401, "credential_revoked"]);
    const [audited] = await auditOf("token.revoke", tokenId(target));
    expect(audited).toMatchObject({ actor: "admin", source: "api", details: { reason: "rotation" } });
  });

  it("unknown ids exit 4, malformed ones 2, locally and remotely", async () => {
    const admin = login("admin-errors", s.creds.operatorToken);
    const t = await runOta(local, "token", "revoke", "00000000-0000-4000-8000-000000000000");
    expect([t.status, t.stderr]).toEqual([4, expect.stringMatching(/no operator token has id 00000000-.*ota token list/)]);
    const k = await runOta(admin, "apikey", "revoke", "nosuchid", "--remote");
    expect([k.status, k.stderr]).toEqual([4, expect.stringMatching(/no fleet key has id nosuchid.*\(apikey_not_found\)/)]);
    expect((await runOta(admin, "device", "revoke", "nobody", "--remote")).status).toBe(4);
    const bad = await runOta(local, "token", "revoke", "not-a-uuid");
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/a token id is a UUID/)]);
  });
});
