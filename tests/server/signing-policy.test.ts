// The server's signing policy (OTA_SIGNING_KEYS) on the real server with images signed by espsecure.py: what is
// refused and why, dropped in the folder or uploaded; what is offered, with its signing key in the manifest, the
// operator API and the release; what a restart under other keys offers; and the server without the variable.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ConfigError, loadConfig } from "../../server/infra/config/config";
import { BOOTLOADER, HELLO_WORLD, HELLO_WORLD_S3, read, SIGNED_DIR, SIGNED_KEYS_DIR } from "../helpers/fixtures";
import { Operator } from "../helpers/fleet";
import { eventually, ROOT, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const signed = (name: string) => path.join(SIGNED_DIR, name);
const ECDSA = signed("esp32_hello_world_signed_ecdsa256.bin");
const ECDSA_S3 = signed("esp32s3_hello_world_signed_ecdsa256.bin");
const RSA = signed("esp32_hello_world_signed_rsa3072.bin");
const TAMPERED = signed("esp32_hello_world_signed_ecdsa256_image_tampered.bin");
const ECDSA_PUB = path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pub.pem");
const RSA_PUB = path.join(SIGNED_KEYS_DIR, "release-rsa3072.pub.pem");
const digestHex = (key: string) => fs.readFileSync(path.join(SIGNED_KEYS_DIR, `${key}.digest.bin`)).toString("hex");
const ECDSA_DIGEST = digestHex("release-ecdsa256");
const RSA_DIGEST = digestHex("release-rsa3072");

function multipart(file: { name: string; data: Buffer }) {
  const boundary = "----ota" + randomBytes(8).toString("hex");
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n${file.name}\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    file.data,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

function client(s: TestServer) {
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  return {
    manifest: (chip: string) => s.req("GET", `/firmware/manifest?chip=${chip}`, { headers: { "X-API-Key": s.creds.deviceApiKey } }),
    files: async () => (await s.req("GET", "/api/v1/firmware/files", { headers: op() })).json().files as any[],
    info: async () => (await s.req("GET", "/api/v1", { headers: op() })).json(),
    upload: (name: string, data: Buffer) => {
      const m = multipart({ name, data });
      return s.req("POST", "/api/v1/firmware", { headers: { ...op(), "Content-Type": m.type }, body: m.body });
    },
  };
}

describe("signing policy: OTA_SIGNING_KEYS set to the ECDSA public key", () => {
  let s: TestServer;
  let c: ReturnType<typeof client>;

  beforeAll(async () => {
    s = await startTestServer({ OTA_SIGNING_KEYS: ECDSA_PUB });
    c = client(s);
  });
  afterAll(async () => s.close());

  it("says so in its start log and in GET /api/v1, with the trusted key digest", async () => {
    expect(s.logs.join("")).toMatch(/images are accepted only when signed/);
    expect(s.logs.join("")).toContain(ECDSA_DIGEST);
    expect((await c.info()).image_signatures).toMatchObject({ checked: true, trusted_key_digests: [ECDSA_DIGEST] });
  });

  it("refuses unsigned, tampered and untrusted images dropped in the folder, each with its reason, and offers the signed ones", async () => {
    const drops: [string, string][] = [
      [HELLO_WORLD, "unsigned.bin"],
      [TAMPERED, "tampered.bin"],
      [RSA, "rsa.bin"],
      [ECDSA, "ecdsa.bin"],
      [ECDSA_S3, "ecdsa-s3.bin"],
      [BOOTLOADER, "bootloader.bin"],
    ];
    for (const [from, to] of drops) fs.copyFileSync(from, path.join(s.dirs.firmware, to));
    const files = await eventually(async () => {
      const f = await c.files();
      return f.length === drops.length && f.every((x) => x.status !== "incomplete") && f;
    });
    const byName = Object.fromEntries(files.map((f) => [f.name, f]));
    expect(byName["unsigned.bin"]).toMatchObject({ status: "rejected", reason_code: "unsigned", sha256: null });
    expect(byName["tampered.bin"]).toMatchObject({ status: "rejected", reason_code: "signature_digest_mismatch" });
    expect(byName["rsa.bin"]).toMatchObject({ status: "rejected", reason_code: "untrusted_signer" });
    expect(byName["rsa.bin"].reason).toMatch(/OTA_SIGNING_KEYS/);
    // Not an app at all: refused for what it is, not for its (absent) signature.
    expect(byName["bootloader.bin"]).toMatchObject({ status: "rejected", reason_code: "bootloader" });
    expect(byName["ecdsa.bin"]).toMatchObject({ status: "valid", sha256: sha(read(ECDSA)) });
    expect(byName["ecdsa-s3.bin"]).toMatchObject({ status: "valid", sha256: sha(read(ECDSA_S3)) });

    const m = (await c.manifest("esp32")).json();
    expect(m.sha256).toBe(sha(read(ECDSA)));
    expect(m.signatures).toEqual([{ scheme: "ecdsa256", key_digest: ECDSA_DIGEST }]);
    expect((await c.manifest("esp32s3")).json().sha256).toBe(sha(read(ECDSA_S3)));

    const img = (await s.req("GET", `/api/v1/firmware/${m.sha256}`, { headers: { Authorization: `Bearer ${s.creds.operatorToken}` } })).json().image;
    expect(img.signatures).toEqual([{ scheme: "ecdsa256", key_digest: ECDSA_DIGEST }]);
    expect(img.signed_by).toEqual({ scheme: "ecdsa256", key_digest: ECDSA_DIGEST });
    const listed = (await s.req("GET", "/api/v1/firmware", { headers: { Authorization: `Bearer ${s.creds.operatorToken}` } })).json().images;
    expect(listed.map((i: any) => i.sha256).sort()).toEqual([sha(read(ECDSA)), sha(read(ECDSA_S3))].sort());
  });

  it("answers an upload of an unsigned, tampered or untrusted image 422 invalid_image with the reason, and takes a signed one", async () => {
    for (const [file, reason] of [
      [HELLO_WORLD, "unsigned"],
      [TAMPERED, "signature_digest_mismatch"],
      [RSA, "untrusted_signer"],
    ] as const) {
      const r = await c.upload(`up-${reason}.bin`, read(file));
      expect([reason, r.status, r.json().error.code, r.json().error.reason]).toEqual([reason, 422, "invalid_image", reason]);
      expect(fs.existsSync(path.join(s.dirs.firmware, `up-${reason}.bin`))).toBe(false);
    }
    const ok = await c.upload("up-signed.bin", read(ECDSA));
    expect(ok.status).toBe(201);
    expect(ok.json().image.signed_by).toEqual({ scheme: "ecdsa256", key_digest: ECDSA_DIGEST });
  });

  it("records in a release which key signed its image", async () => {
    const op = new Operator(s);
    const created = (await op.ok("POST", "/releases", { name: "signed-1", image: sha(read(ECDSA)) })).release;
    expect(created.signed_by).toEqual({ scheme: "ecdsa256", key_digest: ECDSA_DIGEST, trusted: true });
    expect((await op.ok("GET", "/releases/signed-1")).release.signed_by).toEqual({ scheme: "ecdsa256", key_digest: ECDSA_DIGEST, trusted: true });
    const row = await s.running.ctx.store.db.selectFrom("releases").select(["signer_scheme", "signer_key_digest", "signer_trusted"]).where("name", "=", "signed-1").executeTakeFirstOrThrow();
    expect(row).toEqual({ signer_scheme: "ecdsa256", signer_key_digest: ECDSA_DIGEST, signer_trusted: 1 });
  });
});

describe("signing policy across restarts", () => {
  it("an image accepted without OTA_SIGNING_KEYS is not offered after a restart that sets it, and is offered again without it", async () => {
    const dirs = tempDirs();
    let s = await startTestServer({}, dirs);
    let c = client(s);
    const up = await c.upload("plain.bin", read(HELLO_WORLD));
    expect(up.status).toBe(201);
    expect((await c.manifest("esp32")).json().sha256).toBe(sha(read(HELLO_WORLD)));
    await s.close({ keepDirs: true });
    // Its folder copy goes away while the server is down: only the stored image remains, which the start must judge.
    fs.rmSync(path.join(dirs.firmware, "plain.bin"));

    s = await startTestServer({ OTA_SIGNING_KEYS: RSA_PUB }, dirs);
    c = client(s);
    try {
      expect((await c.manifest("esp32")).status).toBe(404);
      const op = { Authorization: `Bearer ${s.creds.operatorToken}` };
      expect((await s.req("GET", `/api/v1/firmware/${sha(read(HELLO_WORLD))}`, { headers: op })).status).toBe(404);
      const r = await new Operator(s).call("POST", "/releases", { name: "old", image: sha(read(HELLO_WORLD)) });
      expect([r.status, r.json().error.code]).toEqual([422, "image_not_found"]);
      expect(s.logs.join("")).toMatch(/"reason":"unsigned".*not signed by a key in OTA_SIGNING_KEYS/);

      // Put back in the folder, it is listed as refused for that reason.
      fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "plain.bin"));
      const f = await eventually(async () => (await c.files()).find((x) => x.name === "plain.bin" && x.status === "rejected"));
      expect(f.reason_code).toBe("unsigned");
      expect((await c.manifest("esp32")).status).toBe(404);
      // The RSA-signed image is the one this server offers now.
      fs.copyFileSync(RSA, path.join(dirs.firmware, "rsa.bin"));
      const m = await eventually(async () => {
        const r = await c.manifest("esp32");
        return r.status === 200 ? r.json<{ sha256: string; signatures: unknown[] }>() : null;
      });
      expect(m.signatures).toEqual([{ scheme: "rsa3072", key_digest: RSA_DIGEST }]);
    } finally {
      await s.close({ keepDirs: true });
    }

    s = await startTestServer({}, dirs);
    c = client(s);
    try {
      const offered = await eventually(async () => (await c.files()).find((x) => x.name === "plain.bin" && x.status === "valid"));
      expect(offered.sha256).toBe(sha(read(HELLO_WORLD)));
    } finally {
      await s.close();
    }
  });
});

describe("without OTA_SIGNING_KEYS", () => {
  let s: TestServer;
  let c: ReturnType<typeof client>;

  beforeAll(async () => {
    s = await startTestServer();
    c = client(s);
  });
  afterAll(async () => s.close());

  it("says images are not signature-checked, in its start log and in GET /api/v1", async () => {
    expect(s.logs.join("")).toMatch(/images are not signature-checked/);
    const info = await c.info();
    expect(info.image_signatures).toMatchObject({ checked: false, trusted_key_digests: [] });
    expect(info.image_signatures.note).toMatch(/not signature-checked/);
  });

  it("offers an unsigned image as before, and shows the signatures of a signed one without vouching for its key", async () => {
    fs.copyFileSync(HELLO_WORLD_S3, path.join(s.dirs.firmware, "s3.bin"));
    const m = await eventually(async () => {
      const r = await c.manifest("esp32s3");
      return r.status === 200 ? r.json<{ sha256: string; signatures: unknown[] }>() : null;
    });
    expect(m.sha256).toBe(sha(read(HELLO_WORLD_S3)));
    expect(m.signatures).toEqual([]);

    const up = await c.upload("rsa.bin", read(RSA));
    expect(up.status).toBe(201);
    expect(up.json().image).toMatchObject({ signatures: [{ scheme: "rsa3072", key_digest: RSA_DIGEST }], signed_by: null });
    const tampered = await c.upload("tampered.bin", read(TAMPERED));
    expect([tampered.status, tampered.json().error.reason]).toEqual([422, "checksum_mismatch"]);
    const release = (await new Operator(s).ok("POST", "/releases", { name: "rsa-1", image: "rsa.bin" })).release;
    expect(release.signed_by).toEqual({ scheme: "rsa3072", key_digest: RSA_DIGEST, trusted: false });
  });
});

describe("OTA_SIGNING_KEYS validation", () => {
  const env = (keys: string) => ({ OTA_SIGNING_KEYS: keys });

  it("reads every listed key, relative to the working folder, and ignores repeats", () => {
    const config = loadConfig(env(` ${path.relative(SIGNED_DIR, ECDSA_PUB)} , ${RSA_PUB},${ECDSA_PUB}`), SIGNED_DIR);
    expect(config.signingKeys!.map((k) => k.digest.toString("hex"))).toEqual([ECDSA_DIGEST, RSA_DIGEST]);
    expect(loadConfig({}).signingKeys).toBeNull();
  });

  it("the built server exits 1 naming a key file it cannot use", () => {
    const main = path.join(ROOT, "dist/server/main.js");
    const key = path.join(SIGNED_KEYS_DIR, "release-rsa3072.pem");
    const dirs = tempDirs();
    try {
      // Were the key accepted, the server would start: the time limit ends it, and the test fails.
      const r = spawnSync(process.execPath, [main], {
        cwd: dirs.root,
        env: { ...process.env, PORT: "0", HOST: "127.0.0.1", OTA_PARTITIONS: path.join(ROOT, "partitions.csv"), OTA_SIGNING_KEYS: `${ECDSA_PUB},${key}` },
        encoding: "utf8",
        timeout: 10_000,
      });
      expect(r.stderr).toContain(`OTA_SIGNING_KEYS: ${key} is a private key`);
      expect(r.status).toBe(1);
    } finally {
      fs.rmSync(dirs.root, { recursive: true, force: true });
    }
  });

  it.each([
    ["a missing file", () => "/nonexistent/key.pub.pem", /OTA_SIGNING_KEYS: cannot read \/nonexistent\/key\.pub\.pem \(ENOENT\)/],
    ["a private key", () => path.join(SIGNED_KEYS_DIR, "release-ecdsa256.pem"), /release-ecdsa256\.pem is a private key: give its public key/],
    ["a file that is no key", () => HELLO_WORLD, /is not a PEM key file|esp32_hello_world_idf5\.2\.2\.bin: not a usable PEM key/],
    ["only commas", () => " , ", /names no key file/],
  ])("stops the start on %s, naming it", (_what, value, message) => {
    let err: unknown;
    try {
      loadConfig(env(value()));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
  });
});
