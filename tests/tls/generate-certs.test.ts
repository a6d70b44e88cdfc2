import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ROOT, tempDirs } from "../helpers/server";

const script = path.join(ROOT, "generate-certs.sh");
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync("bash", [script, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
const sans = (dir: string) =>
  spawnSync("openssl", ["x509", "-in", path.join(dir, "server.crt"), "-noout", "-ext", "subjectAltName"], { encoding: "utf8" }).stdout;
const keyAlg = (file: string) => spawnSync("openssl", ["pkey", "-in", file, "-noout", "-text"], { encoding: "utf8" }).stdout;

describe("generate-certs.sh", () => {
  const roots: string[] = [];
  /** A folder of its own for each test (and, with `generated`, the script already run once in it). */
  const certDir = (generated: boolean) => {
    const { certs, root } = tempDirs();
    roots.push(root);
    if (generated) expect(run(["--dir", certs]).status).toBe(0);
    return certs;
  };
  afterAll(() => {
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });

  it("makes an ECDSA P-256 CA and a server certificate for localhost, 127.0.0.1 and ::1, keys 0600", () => {
    const dir = certDir(false);
    const r = run(["--dir", dir]);
    expect(r.status).toBe(0);
    for (const k of ["ca.key", "server.key"]) {
      expect(fs.statSync(path.join(dir, k)).mode & 0o777).toBe(0o600);
      expect(keyAlg(path.join(dir, k))).toMatch(/prime256v1|P-256/);
    }
    expect(sans(dir)).toMatch(/DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/);
    const verify = spawnSync("openssl", ["verify", "-CAfile", path.join(dir, "ca.crt"), path.join(dir, "server.crt")], { encoding: "utf8" });
    expect(verify.stdout).toMatch(/OK/);
  });

  it("is idempotent: a second run changes nothing", () => {
    const dir = certDir(true);
    const before = ["ca.crt", "ca.key", "server.crt", "server.key"].map((f) => fs.readFileSync(path.join(dir, f), "utf8"));
    const r = run(["--dir", dir]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/nothing to do/);
    expect(["ca.crt", "ca.key", "server.crt", "server.key"].map((f) => fs.readFileSync(path.join(dir, f), "utf8"))).toEqual(before);
  });

  it("adds names from arguments and OTA_CERT_NAMES, keeping the CA", () => {
    const dir = certDir(true);
    const ca = fs.readFileSync(path.join(dir, "ca.crt"), "utf8");
    const r = run(["--dir", dir, "ota.example.com"], { OTA_CERT_NAMES: "10.1.2.3, gateway.local" });
    expect(r.status).toBe(0);
    expect(sans(dir)).toMatch(/DNS:ota\.example\.com/);
    expect(sans(dir)).toMatch(/IP Address:10\.1\.2\.3/);
    expect(sans(dir)).toMatch(/DNS:gateway\.local/);
    expect(fs.readFileSync(path.join(dir, "ca.crt"), "utf8")).toBe(ca);
  });

  it("refuses a name that is neither a DNS name nor an IP address", () => {
    const dir = certDir(false);
    const r = run(["--dir", dir, "not a name"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not a DNS name or IP address/);
  });
});
