// scripts/ensure-installed.js (npm start's and npm test's first step) on a project of its own: a real `npm ci`
// of a package whose install step waits for the test, so the install is slow exactly as long as needed.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { eventually, ROOT, tempDirs } from "../helpers/server";

jest.setTimeout(60_000);

function project(root: string): void {
  fs.mkdirSync(path.join(root, "scripts"), { recursive: true });
  fs.copyFileSync(path.join(ROOT, "scripts/ensure-installed.js"), path.join(root, "scripts/ensure-installed.js"));
  // The install step waits until the test has seen a progress line and creates "go".
  const wait = "const fs=require('fs');const t=setInterval(()=>{if(fs.existsSync('go')){clearInterval(t)}},50)";
  fs.writeFileSync(path.join(root, "package.json"), JSON.stringify({ name: "p", version: "1.0.0", private: true, scripts: { postinstall: `node -e "${wait}"` } }));
  fs.writeFileSync(
    path.join(root, "package-lock.json"),
    JSON.stringify({ name: "p", version: "1.0.0", lockfileVersion: 3, requires: true, packages: { "": { name: "p", version: "1.0.0" } } }),
  );
}

function run(root: string) {
  const p = spawn(process.execPath, ["scripts/ensure-installed.js"], {
    cwd: root,
    env: { ...process.env, OTA_INSTALL_PROGRESS_MS: "500", npm_config_offline: "true", npm_config_audit: "false", npm_config_fund: "false" },
  });
  let err = "";
  p.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = new Promise<number | null>((resolve) => p.on("close", resolve));
  return { stderr: () => err, code };
}

describe("ensure-installed", () => {
  const dirs = tempDirs("ota-install-");
  afterAll(() => fs.rmSync(dirs.root, { recursive: true, force: true }));

  it("says why npm ci takes time and prints a line every few seconds until it is done", async () => {
    const root = path.join(dirs.root, "fresh");
    project(root);
    const r = run(root);
    await eventually(() => r.stderr().includes("npm ci still running ("), 30_000);
    fs.writeFileSync(path.join(root, "go"), "");
    expect(await r.code).toBe(0);
    const err = r.stderr();
    expect(err).toMatch(/^node_modules is missing: running npm ci\n/);
    expect(err).toContain("compiles from source (python3, make and a C++ compiler), which can take several minutes");
    expect(err).toMatch(/npm ci finished in \d+ s/);

    // Installed (npm's record names what the lock names): a later run does nothing, even when a checkout made
    // the lock file newer than the record.
    const record = path.join(root, "node_modules", ".package-lock.json");
    fs.mkdirSync(path.dirname(record), { recursive: true });
    fs.writeFileSync(record, JSON.stringify({ name: "p", version: "1.0.0", lockfileVersion: 3, requires: true, packages: {} }));
    const earlier = new Date(Date.now() - 60_000);
    fs.utimesSync(record, earlier, earlier);
    const again = run(root);
    expect(await again.code).toBe(0);
    expect(again.stderr()).toBe("");
  });

  it("never runs npm ci through a linked node_modules (it would empty the folder other checkouts use)", async () => {
    const shared = path.join(dirs.root, "shared-modules");
    fs.mkdirSync(shared);
    fs.writeFileSync(path.join(shared, "keep"), "x");
    const root = path.join(dirs.root, "linked");
    project(root);
    fs.symlinkSync(shared, path.join(root, "node_modules"));
    const r = run(root);
    expect(await r.code).toBe(1);
    expect(r.stderr()).toContain(`node_modules is a link to ${fs.realpathSync(shared)} and does not match package-lock.json; run npm ci in the checkout that owns it`);
    expect(fs.readdirSync(shared)).toEqual(["keep"]);
  });
});
