// First start: development credentials made once, in a private file, only on a store without credentials; the
// log names the file and never a secret.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { Credentials } from "../../server/infra/auth/credentials";
import { ensureFirstStartCredentials } from "../../server/infra/auth/first-start";
import { openStore, type Store } from "../../server/infra/store/db";

describe("first-start credentials", () => {
  let dir: string;
  let store: Store;
  let credentials: Credentials;
  let lines: string[];
  const log = () => pino({ level: "info" }, { write: (l: string) => void lines.push(l) });

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-first-start-"));
    lines = [];
    store = await openStore(dir, pino({ level: "silent" }));
    credentials = new Credentials(store.db, randomBytes(32));
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("are made once: a fleet key labelled development and an expiring admin token, in an owner-only file the log names", async () => {
    const before = Date.now();
    const file = await ensureFirstStartCredentials(dir, credentials, log(), 30);
    expect(file).toBe(path.join(dir, "dev-credentials.json"));
    expect(fs.statSync(file!).mode & 0o777).toBe(0o600);
    const text = fs.readFileSync(file!, "utf8");
    expect(text.endsWith("}\n")).toBe(true);
    const saved = JSON.parse(text) as { deviceApiKey: string; operatorToken: string; operatorTokenExpiresAt: string };
    expect(Object.keys(saved)).toEqual(["deviceApiKey", "operatorToken", "operatorTokenExpiresAt"]);

    expect(await credentials.verifyFleetKey(saved.deviceApiKey)).toMatchObject({ ok: true, label: "development" });
    const token = await credentials.verifyOperatorToken(saved.operatorToken);
    expect(token).toMatchObject({ ok: true, identity: { subject: "admin", role: "admin" } });
    const expires = Date.parse(saved.operatorTokenExpiresAt) - before;
    expect(expires).toBeGreaterThanOrEqual(30 * 86_400_000 - 1000);
    expect(expires).toBeLessThanOrEqual(30 * 86_400_000 + 60_000);

    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(line).toMatchObject({
      file,
      operator_token_expires_at: saved.operatorTokenExpiresAt,
      msg: "first start: created a development device API key and an admin operator token (it expires then: make lasting tokens with ota token create); they are in this file (keep it private)",
    });
    expect(lines[0]).not.toContain(saved.deviceApiKey);
    expect(lines[0]).not.toContain(saved.operatorToken);

    // A later start makes nothing and leaves the file as it was.
    expect(await ensureFirstStartCredentials(dir, credentials, log(), 30)).toBeNull();
    expect(fs.readFileSync(file!, "utf8")).toBe(text);
    expect(await credentials.listFleetKeys()).toHaveLength(1);
    expect(await credentials.listOperatorTokens()).toHaveLength(1);
    expect(lines).toHaveLength(1);
  });

  it("are not made where an operator token exists already (ota token create before the first start)", async () => {
    await credentials.issueOperatorToken("ops", "admin");
    expect(await ensureFirstStartCredentials(dir, credentials, log(), 30)).toBeNull();
    expect(fs.existsSync(path.join(dir, "dev-credentials.json"))).toBe(false);
    expect(await credentials.listFleetKeys()).toEqual([]);
  });

  it("are not made where a fleet key exists already (ota apikey create before the first start)", async () => {
    await credentials.createFleetKey("factory");
    expect(await ensureFirstStartCredentials(dir, credentials, log(), 30)).toBeNull();
    expect(fs.existsSync(path.join(dir, "dev-credentials.json"))).toBe(false);
    expect(await credentials.listOperatorTokens()).toEqual([]);
  });
});
