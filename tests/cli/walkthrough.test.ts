// The README's operator steps, as a new user types them: upload a file under the name they gave it, then
// release it by that name.
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { runOta } from "../helpers/ota-cli";
import { startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(60_000);

const V1 = "v1.4.1-2-g0296947-dirty";

describe("the README's walk-through with the ota command", () => {
  let s: TestServer;
  let env: NodeJS.ProcessEnv;
  const ota = (...args: string[]) => runOta(env, ...args);

  beforeAll(async () => {
    s = await startTestServer();
    const tokenFile = path.join(s.dirs.root, "admin.token");
    fs.writeFileSync(tokenFile, s.creds.operatorToken + "\n", { mode: 0o600 });
    env = { PATH: process.env.PATH, HOME: s.dirs.root, OTA_CONFIG: path.join(s.dirs.root, "cli", "config.json") };
    const r = await ota("login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token-file", tokenFile);
    expect(r.status).toBe(0);
  });
  afterAll(async () => s.close());

  it("upload keeps the file's own name, and release create --image takes that name", async () => {
    const file = path.join(s.dirs.root, "app-2.1.0.bin");
    fs.copyFileSync(HELLO_WORLD, file);
    const up = await ota("upload", file);
    expect(up.status).toBe(0);
    expect(up.stdout).toMatch(new RegExp(`^uploaded: app-2\\.1\\.0\\.bin  version ${V1}  chip esp32`));
    expect(up.stderr).toContain("the version is the image's own (its app description); release it under a name of your choice with: ota release create NAME --image app-2.1.0.bin");
    expect(fs.existsSync(path.join(s.dirs.firmware, "app-2.1.0.bin"))).toBe(true);

    const rel = await ota("release", "create", "2.1.0", "--image", "app-2.1.0.bin", "--notes", "faster boot");
    expect([rel.status, rel.stderr]).toEqual([0, ""]);
    expect(rel.stdout).toMatch(new RegExp(`^created release 2\\.1\\.0 on stable: image version ${V1} \\(what devices report\\) for esp32`));
  });

  it("a file name the server cannot take is stored under <project>-<version>.bin, and the CLI says so", async () => {
    const file = path.join(s.dirs.root, "my app.bin");
    fs.copyFileSync(HELLO_WORLD, file);
    const up = await ota("upload", file);
    expect(up.status).toBe(0);
    expect(up.stderr).toContain("my app.bin is not a valid firmware name");
    expect(up.stdout).toMatch(/^uploaded: hello_world-v1\.4\.1-2-g0296947-dirty\.bin /);
  });
});
