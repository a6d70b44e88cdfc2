// Secrets the `ota` command writes (--out) are private to their owner, and it warns when git could pick one up;
// the names the README uses are ignored by this repository's .gitignore.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ROOT, tempDirs } from "../helpers/server";

jest.setTimeout(60_000);

describe("secret files", () => {
  const dirs = tempDirs("ota-secrets-");
  const ota = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], {
      encoding: "utf8",
      env: { ...process.env, OTA_DATA_DIR: dirs.data, OTA_CERT_DIR: dirs.certs, OTA_FIRMWARE_DIR: dirs.firmware },
    });
  afterAll(() => fs.rmSync(dirs.root, { recursive: true, force: true }));

  it("--out writes mode 0600, and warns when the file is in a git work tree and not ignored", () => {
    const repo = path.join(dirs.root, "repo");
    fs.mkdirSync(repo);
    expect(spawnSync("git", ["init", "-q", repo]).status).toBe(0);
    fs.writeFileSync(path.join(repo, ".gitignore"), "ignored/\n");

    const exposed = path.join(repo, "fleet.key");
    const r = ota("apikey", "create", "--out", exposed);
    expect(r.status).toBe(0);
    expect(fs.statSync(exposed).mode & 0o777).toBe(0o600);
    expect(r.stderr).toContain(`ota: warning: ${exposed} is in a git work tree and not ignored`);

    const hidden = path.join(repo, "ignored", "fleet.key");
    const q = ota("apikey", "create", "--out", hidden);
    expect(q.status).toBe(0);
    expect(fs.statSync(hidden).mode & 0o777).toBe(0o600);
    expect(q.stderr).not.toContain("warning");

    const outside = path.join(dirs.root, "fleet.key");
    expect(ota("apikey", "create", "--out", outside).stderr).not.toContain("warning");
  });

  it("git ignores the secret files the README's steps write", () => {
    const names = ["data/admin.token", "data/device.json", "admin.token", "device.json", "device-2.json", "secrets/x"];
    const r = spawnSync("git", ["check-ignore", "--no-index", ...names], { cwd: ROOT, encoding: "utf8" });
    expect(r.stdout.trim().split("\n").sort()).toEqual([...names].sort());
  });
});
