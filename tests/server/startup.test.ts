import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { ConfigError, loadConfig } from "../../server/infra/config/config";
import { createLogger } from "../../server/infra/logging/logger";
import { startServer } from "../../server/server";
import { withTestDb } from "../helpers/database";
import { PARTITIONS_DIR } from "../helpers/fixtures";
import { ROOT, startTestServer, tempDirs } from "../helpers/server";

const mode = (f: string) => fs.statSync(f).mode & 0o777;

describe("first start", () => {
  it("generates certificates, the master secret and dev credentials (0600), and logs only the file name", async () => {
    const s = await startTestServer();
    try {
      const { certs, data } = s.dirs;
      for (const f of ["ca.key", "server.key"]) expect(mode(path.join(certs, f))).toBe(0o600);
      expect(mode(path.join(data, "master.key"))).toBe(0o600);
      const credFile = path.join(data, "dev-credentials.json");
      expect(mode(credFile)).toBe(0o600);
      const creds = JSON.parse(fs.readFileSync(credFile, "utf8"));
      expect(Object.keys(creds).sort()).toEqual(["deviceApiKey", "operatorToken", "operatorTokenExpiresAt"]);
      const logs = s.logs.join("");
      expect(logs).toContain(credFile);
      expect(logs).not.toContain(creds.deviceApiKey);
      expect(logs).not.toContain(creds.operatorToken);
      // Keys are stored hashed: the database never holds them.
      const db = await withTestDb(s.dirs, (d) => d.allText());
      expect(db).toContain("admin"); // the stored text is there to look in
      expect(db).not.toContain(creds.deviceApiKey);
      expect(db).not.toContain(creds.operatorToken);
      const who = await s.req("GET", "/api/v1/whoami", { headers: { Authorization: `Bearer ${creds.operatorToken}` } });
      expect(who.json()).toEqual({ subject: "admin", role: "admin" });
    } finally {
      await s.close();
    }
  });

  it("speaks TLS 1.2 and 1.3 with a certificate valid for localhost and 127.0.0.1, and refuses TLS 1.1", async () => {
    const s = await startTestServer();
    const connect = (opts: tls.ConnectionOptions) =>
      new Promise<string>((resolve, reject) => {
        const sock = tls.connect({ port: s.port, ca: s.ca, ...opts }, () => {
          const v = sock.getProtocol() ?? "";
          sock.end();
          resolve(v);
        });
        sock.on("error", reject);
      });
    try {
      expect(await connect({ host: "127.0.0.1", servername: "localhost", maxVersion: "TLSv1.2" })).toBe("TLSv1.2");
      expect(await connect({ host: "127.0.0.1", servername: "localhost" })).toBe("TLSv1.3");
      expect(await connect({ host: "127.0.0.1" })).toMatch(/TLSv1\.[23]/); // IP SAN
      await expect(connect({ host: "127.0.0.1", servername: "localhost", minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" })).rejects.toThrow();
      await expect(connect({ host: "127.0.0.1", servername: "localhost", ca: undefined })).rejects.toThrow(/self-signed|unable to verify|local issuer/);
    } finally {
      await s.close();
    }
  });

  it("uses real certificates by configuration (OTA_TLS_CERT / OTA_TLS_KEY)", async () => {
    const other = tempDirs();
    spawnSync("bash", [path.join(ROOT, "generate-certs.sh"), "--dir", other.certs, "ota.example.test"], { encoding: "utf8" });
    const s = await startTestServer({
      OTA_TLS_CERT: path.join(other.certs, "server.crt"),
      OTA_TLS_KEY: path.join(other.certs, "server.key"),
      OTA_TLS_CA: path.join(other.certs, "ca.crt"),
    }, { ...tempDirs(), certs: other.certs });
    try {
      const peer = await new Promise<tls.PeerCertificate>((resolve, reject) => {
        const sock = tls.connect({ host: "127.0.0.1", port: s.port, servername: "ota.example.test", ca: fs.readFileSync(path.join(other.certs, "ca.crt")) }, () => {
          resolve(sock.getPeerCertificate());
          sock.end();
        });
        sock.on("error", reject);
      });
      expect(peer.subjectaltname).toContain("DNS:ota.example.test");
    } finally {
      await s.close();
      fs.rmSync(other.root, { recursive: true, force: true });
    }
  });
});

describe("configuration", () => {
  it.each([
    [{ PORT: "abc" }, /PORT: must be a whole number/],
    [{ PORT: "70000" }, /PORT: must be between 0 and 65535/],
    [{ OTA_LOG_LEVEL: "loud" }, /OTA_LOG_LEVEL: must be one of/],
    [{ OTA_BLOCK_SIZE: "3000" }, /OTA_BLOCK_SIZE: must be a power of two/],
    [{ OTA_BLOCK_SIZE: "65536" }, /OTA_BLOCK_SIZE: must be between 1024 and 16384/],
    [{ OTA_PUBLIC_URL: "ftp://x" }, /OTA_PUBLIC_URL: must be an absolute http\(s\) URL/],
    [{ OTA_PUBLIC_URL: `https://ota.example.com/${"p".repeat(196)}` }, /OTA_PUBLIC_URL: is longer than the 219 characters the device agent can keep/],
    [{ OTA_POLL_INTERVAL: "1" }, /OTA_POLL_INTERVAL: must be between 10 and 86400/],
    [{ OTA_TRUST_PROXY: "maybe" }, /OTA_TRUST_PROXY: must be true or false/],
    [{ OTA_TLS_CERT: "/x.crt" }, /OTA_TLS_KEY: must be set together with OTA_TLS_CERT/],
    [{ OTA_HANDSHAKE_TIMEOUT_MS: "50" }, /OTA_HANDSHAKE_TIMEOUT_MS: must be between 100 and 120000/],
    [{ OTA_MAX_CONNECTIONS: "0" }, /OTA_MAX_CONNECTIONS: must be between 1 and 1000000/],
    [{ OTA_MAX_CONNECTIONS: "many" }, /OTA_MAX_CONNECTIONS: must be a whole number/],
  ])("%j is refused with a message naming the variable", (env, message) => {
    expect(() => loadConfig(env, "/tmp")).toThrow(ConfigError);
    expect(() => loadConfig(env, "/tmp")).toThrow(message);
  });

  it("has the documented defaults", () => {
    const c = loadConfig({}, "/srv/ota");
    expect(c).toMatchObject({
      port: 8443,
      dataDir: "/srv/ota/data",
      firmwareDir: "/srv/ota/firmware",
      certDir: "/srv/ota/certs",
      partitionsFile: "/srv/ota/partitions.csv",
      logLevel: "info",
      blockSize: 8192,
      pollInterval: 300,
      handshakeTimeoutMs: 10_000,
      maxConnections: 20_000,
    });
  });

  it("a partition table without OTA slots stops the server with a message naming OTA_PARTITIONS", async () => {
    const dirs = tempDirs();
    const config = loadConfig(
      { PORT: "0", OTA_DATA_DIR: dirs.data, OTA_FIRMWARE_DIR: dirs.firmware, OTA_CERT_DIR: dirs.certs, OTA_PARTITIONS: path.join(PARTITIONS_DIR, "esp-serial-flasher_esp32_example_partitions.csv") },
      dirs.root,
    );
    await expect(startServer(config, { log: createLogger("silent") })).rejects.toThrow(/OTA_PARTITIONS: .*at least ota_0 and ota_1/);
    fs.rmSync(dirs.root, { recursive: true, force: true });
  });

  it("the built server exits 1 naming a bad variable, and serves on good ones", async () => {
    const main = path.join(ROOT, "dist/server/main.js");
    const bad = spawnSync(process.execPath, [main], { env: { ...process.env, PORT: "eighty" }, encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/PORT: must be a whole number \(got "eighty"\)/);

    const dirs = tempDirs();
    fs.mkdirSync(dirs.root, { recursive: true });
    const child = spawn(process.execPath, [main], {
      cwd: dirs.root,
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", OTA_PARTITIONS: path.join(ROOT, "partitions.csv") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (c) => {
          out += c;
          const l = out.split("\n").find((x) => x.includes("OTA server listening"));
          if (l) resolve(l);
        });
        child.on("exit", (code) => reject(new Error(`server exited ${code}: ${out}`)));
      });
      expect(JSON.parse(line)).toMatchObject({ level: "info", url: expect.stringMatching(/^https:\/\/localhost:\d+$/) });
      for (const f of ["certs/ca.crt", "certs/server.key", "data/dev-credentials.json", "firmware"]) {
        expect(fs.existsSync(path.join(dirs.root, f))).toBe(true);
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      fs.rmSync(dirs.root, { recursive: true, force: true });
    }
    expect(child.exitCode ?? child.signalCode).toBe(0);
  });
});
