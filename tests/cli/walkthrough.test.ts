// The README's walk-through, as a new user types it: its `ota` and `device:sim` commands, read from README.md
// (so the two cannot drift), run in the README's order in a folder laid out like a clone (data/, certs/,
// firmware/) against a fresh server. It must end with the emulated device confirmed on the new release and the
// rollout completed.
import fs from "node:fs";
import path from "node:path";
import { runSim } from "../../device/host/sim";
import { storageEnv } from "../helpers/database";
import { HELLO_WORLD } from "../helpers/fixtures";
import { runOta, runOtaIn, type OtaRun } from "../helpers/ota-cli";
import { ROOT, startTestServer, type TestServer } from "../helpers/server";
import { SERVER_ENV } from "../helpers/device";

jest.setTimeout(180_000);

const V1 = "v1.4.1-2-g0296947-dirty";

/** Splits a shell line into words: double and single quotes, `# comment` after a blank. */
function words(line: string): string[] {
  const out: string[] = [];
  let cur: string | null = null;
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      cur ??= "";
    } else if (c === " " || c === "\t") {
      if (cur !== null) out.push(cur);
      cur = null;
    } else if (c === "#" && cur === null) {
      break;
    } else cur = (cur ?? "") + c;
  }
  if (quote) throw new Error(`unbalanced quote in: ${line}`);
  if (cur !== null) out.push(cur);
  return out;
}

/** The README's `npx ota …` and `npm run device:sim …` commands, in order, from its ```sh blocks. */
function readmeCommands(): string[][] {
  const text = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const commands: string[][] = [];
  for (const m of text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    for (const line of m[1]!.replace(/\\\n\s*/g, " ").split("\n")) {
      const w = words(line);
      if ((w[0] === "npx" && w[1] === "ota") || (w[0] === "npm" && w[1] === "run" && w[2] === "device:sim")) commands.push(w);
    }
  }
  return commands;
}

describe("the README's walk-through with the ota command", () => {
  let s: TestServer;
  let env: NodeJS.ProcessEnv;
  const ota = (...args: string[]) => runOta(env, ...args);

  beforeAll(async () => {
    s = await startTestServer(SERVER_ENV);
    // The CLI's own settings go under HOME; the local commands (provision, token create) find the server's data
    // as `npm start` in a clone would have it.
    env = {
      PATH: process.env.PATH,
      HOME: s.dirs.root,
      OTA_CONFIG: path.join(s.dirs.root, "cli", "config.json"),
      OTA_DATA_DIR: s.dirs.data,
      OTA_CERT_DIR: s.dirs.certs,
      OTA_FIRMWARE_DIR: s.dirs.firmware,
      ...storageEnv(s.dirs),
    };
  });
  afterAll(async () => s.close());

  it("runs as written, top to bottom: the emulated device ends confirmed on release 2.1.0 and the rollout completed", async () => {
    const commands = readmeCommands();
    const name = (c: string[]) => (c[0] === "npm" ? c[2]! : c.slice(2, 4).join(" "));
    expect(commands.map(name)).toEqual([
      "device provision",
      "token create",
      "login --server",
      "image set-version",
      "upload app-2.1.0.bin",
      "release create",
      "rollout start",
      "device:sim",
      "rollout watch",
    ]);
    // The quickstart's `cp …/esp32_hello_world_idf5.2.2.bin firmware/`.
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "esp32_hello_world_idf5.2.2.bin"));

    const at = (a: string) => a.replace("https://localhost:8443", s.url);
    const results: Record<string, OtaRun> = {};
    for (const c of commands) {
      if (c[0] === "npm") {
        // In this process, with the paths the README gives taken from the clone's folder.
        const args = c.slice(c.indexOf("--") + 1).map((a) => (fs.existsSync(path.join(s.dirs.root, a)) ? path.join(s.dirs.root, a) : at(a)));
        const out: string[] = [];
        const spies = [
          jest.spyOn(process.stdout, "write").mockImplementation((x: string | Uint8Array) => (out.push(String(x)), true)),
          jest.spyOn(process.stderr, "write").mockImplementation((x: string | Uint8Array) => (out.push(String(x)), true)),
        ];
        let code: number;
        try {
          code = await runSim([...args, "--timeout", "120"]);
        } finally {
          spies.forEach((x) => x.mockRestore());
        }
        expect({ command: c.join(" "), code, output: out.join("").slice(-3000) }).toMatchObject({ code: 0 });
        continue;
      }
      const r = await runOtaIn(s.dirs.root, env, ...c.slice(2).map(at));
      expect({ command: c.join(" "), ...r }).toMatchObject({ status: 0 });
      results[name(c)] = r;
    }

    expect(results["upload app-2.1.0.bin"]!.stdout).toMatch(/^uploaded: app-2\.1\.0\.bin {2}version 2\.1\.0 {2}chip esp32/);
    expect(results["upload app-2.1.0.bin"]!.stderr).toContain("release it under a name of your choice with: ota release create NAME --image app-2.1.0.bin");
    expect(results["release create"]!.stdout).toMatch(/^created release 2\.1\.0 on stable: image version 2\.1\.0 \(what devices report\) for esp32/);
    expect(results["rollout watch"]!.stdout).toMatch(/2\.1\.0 \S+ completed stage 1\/1 \(100%\) \| devices 1: .*succeeded 1/);
    const show = await runOtaIn(s.dirs.root, env, "device", "show", "24:6F:28:AA:BB:CC");
    expect(show.status).toBe(0);
    expect(JSON.parse(show.stdout).device).toMatchObject({ state: "confirmed", version: "2.1.0", offer: { status: "offered", release: "2.1.0" } });
  });

  it("a file name the server cannot take is stored under <project>-<version>.bin, and the CLI says so", async () => {
    const file = path.join(s.dirs.root, "my app.bin");
    fs.copyFileSync(HELLO_WORLD, file);
    const up = await ota("upload", file);
    expect(up.status).toBe(0);
    expect(up.stderr).toContain("my app.bin is not a valid firmware name");
    expect(up.stdout).toMatch(new RegExp(`^uploaded: hello_world-${V1.replace(/\./g, "\\.")}\\.bin `));
  });
});
