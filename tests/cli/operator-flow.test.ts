// The operator's whole flow with the `ota` command against a running server over HTTPS: log in, upload with
// a visible progress bar, create a release, roll it out while devices poll and confirm, watch it live until
// it completes; pause, resume and abort; tag, list and provision devices; read the audit log.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { inParallel, mac, offered, Operator, report } from "../helpers/fleet";
import { runOta } from "../helpers/ota-cli";
import { eventually, ROOT, startTestServer, type TestServer } from "../helpers/server";

// Every `ota` command is a process of its own: on a busy machine a test of a dozen commands takes a while.
jest.setTimeout(60_000);

const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";

describe("ota: the operator flow over the API", () => {
  let s: TestServer;
  let env: NodeJS.ProcessEnv;
  let tokenFile: string;
  /** Runs `ota` as a separate process (asynchronously: the server answers from this one). */
  const ota = (...args: string[]) => runOta(env, ...args);
  const fleet = Array.from({ length: 20 }, (_, i) => mac(i + 1, "c1:00:00"));
  const v2sha = createHash("sha256").update(fs.readFileSync(HELLO_WORLD_IDF41)).digest("hex");
  /** Logs the CLI in, unless an earlier test left it logged in (its login is in its config file). */
  const login = async () => {
    if (fs.existsSync(env.OTA_CONFIG!)) return;
    const r = await ota("login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token-file", tokenFile);
    expect([r.status, r.stderr]).toEqual([0, ""]);
  };
  /** Puts app-v1.bin and app-v2.bin on the server, unless they are there already. */
  const images = async () => {
    for (const [file, name] of [
      [HELLO_WORLD, "app-v1.bin"],
      [HELLO_WORLD_IDF41, "app-v2.bin"],
    ] as const) {
      if (s.running.ctx.catalog.imageByName(name)) continue;
      fs.copyFileSync(file, path.join(s.dirs.firmware, name));
      await eventually(() => s.running.ctx.catalog.imageByName(name), 10_000);
    }
  };

  beforeAll(async () => {
    s = await startTestServer();
    tokenFile = path.join(s.dirs.root, "token");
    fs.writeFileSync(tokenFile, s.creds.operatorToken + "\n", { mode: 0o600 });
    // A clean environment: the CLI must find everything from its login, nothing from the server's variables.
    env = { PATH: process.env.PATH, HOME: s.dirs.root, OTA_CONFIG: path.join(s.dirs.root, "cli", "config.json") };
  });
  afterAll(async () => s.close());

  it("login checks the token and the CA, and stores them in a 0600 file", async () => {
    const noCa = await ota("login", "--server", s.url, "--token-file", tokenFile);
    expect(noCa.status).toBe(1);
    expect(noCa.stderr).toMatch(/certificate of https:\/\/localhost:\d+ is not trusted .*--ca/);
    const badToken = path.join(s.dirs.root, "bad-token");
    fs.writeFileSync(badToken, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad");
    const refused = await ota("login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token-file", badToken);
    expect(refused.status).toBe(3);
    expect(refused.stderr).toMatch(/not a valid operator token \(invalid_token\)/);
    expect((await ota("login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token", "x")).status).toBe(2);

    const r = await ota("login", "--server", s.url, "--ca", path.join(s.dirs.certs, "ca.crt"), "--token-file", tokenFile);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^logged in to https:\/\/localhost:\d+ as admin \(admin\); saved to .*config\.json \(mode 0600\)/);
    expect(fs.statSync(env.OTA_CONFIG!).mode & 0o777).toBe(0o600);
    expect((await ota("whoami")).stdout).toBe(`admin (admin) on ${s.url}\n`);
  });

  it("upload shows its progress and reports what the server stored", async () => {
    await login();
    const r = await ota("upload", HELLO_WORLD_IDF41, "--name", "app-v2.bin");
    expect(r.status).toBe(0);
    const size = fs.statSync(HELLO_WORLD_IDF41).size;
    // Off a terminal the bar prints a line at the start, every quarter and the end.
    const lines = r.stderr.trim().split("\n").filter((l) => l !== "" && !l.startsWith("ota: "));
    expect(lines[0]).toMatch(new RegExp(`^uploading esp32_hello-world_idf4.1-dev.bin \\[░+\\] 0% \\| 0/${size} bytes`));
    const percents = lines.map((l) => Number(/\] (\d+)% \|/.exec(l)?.[1]));
    expect(percents.filter((p) => p > 0 && p < 100).length).toBeGreaterThanOrEqual(2);
    expect([...percents].sort((a, b) => a - b)).toEqual(percents);
    expect(lines[lines.length - 1]).toMatch(new RegExp(`\\[█+\\] 100% \\| ${size}/${size} bytes`));
    expect(r.stdout).toMatch(new RegExp(`^uploaded: app-v2.bin  version ${V2}  chip esp32  ${size} bytes  sha256 ${v2sha}`));
    expect((await ota("upload", HELLO_WORLD, "--name", "app-v1.bin")).status).toBe(0);
    const again = await ota("upload", HELLO_WORLD, "--name", "app-v1.bin");
    expect(again.stdout).toMatch(/^already there: app-v1.bin/);
    const notImage = await ota("upload", path.join(ROOT, "partitions.csv"));
    expect(notImage.status).toBe(5);
    expect(notImage.stderr).toMatch(/\(invalid_image: /);
    expect((await ota("upload", "/nonexistent.bin")).status).toBe(2);
  });

  it("device commands: list, tag, set, provision through the API", async () => {
    await login();
    await inParallel(fleet, 8, (id) => offered(s, id, { chip: "esp32", version: V1 }));
    expect((await ota("device", "tag", fleet[0]!, "--add", "canary,north")).stdout).toBe(`${fleet[0]}: tags canary, north\n`);
    expect((await ota("device", "set", fleet[0]!, "--group", "lab")).stdout).toMatch(/group lab, channel stable/);
    const listed = await ota("device", "list", "--tag", "canary");
    expect(listed.stdout.split("\n")[0]).toMatch(/^ID\s+ONLINE\s+CHIP/);
    expect(listed.stdout).toMatch(new RegExp(`^${fleet[0]}\\s+online\\s+esp32\\s+${V1}\\s+-\\s+stable\\s+lab\\s+canary,north\\s+20\\d\\d-`, "m"));
    expect(listed.stdout.trim().split("\n")).toHaveLength(2);
    expect((await ota("device", "list", "--offline")).stdout.trim().split("\n")).toHaveLength(1); // just the header
    const out = path.join(s.dirs.root, "remote-dev.json");
    const p = await ota("device", "provision", "c2:00:00:00:00:01", "--remote", "--out", out);
    expect(p.status).toBe(0);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    const bundle = JSON.parse(fs.readFileSync(out, "utf8"));
    expect(bundle).toMatchObject({ deviceId: "c2:00:00:00:00:01", apiKey: expect.stringMatching(/^otadev_/), serverUrl: s.url });
    expect((await ota("device", "set", "nobody", "--group", "x")).status).toBe(4);
    const badTag = await ota("device", "tag", fleet[0]!, "--add", "bad tag");
    expect([badTag.status, badTag.stderr]).toEqual([5, expect.stringMatching(/add_tags.0: tags and groups are .* \(invalid_request\)/)]);
  });

  it("from upload to a completed rollout, watched live", async () => {
    await login();
    await images();
    expect((await ota("release", "create", "r1", "--image", "app-v1.bin", "--notes", "baseline")).status).toBe(0);
    expect((await ota("rollout", "start", "r1", "--stages", "100")).status).toBe(0);
    expect((await ota("rollout", "advance", "r1")).stdout).toMatch(/: completed, stage 100%/);
    const created = await ota("release", "create", "r2", "--image", v2sha, "--notes", "faster boot");
    expect(created.stdout).toMatch(/^created release r2 on stable: image version v4.1-dev.* for esp32 .*ota rollout start r2/);
    const started = await ota("rollout", "start", "r2", "--stages", "50,100", "--auto", "--min-sample", "2", "--success-threshold", "90");
    expect(started.stdout).toMatch(/^started rollout ro_[0-9a-f]{12} of r2: stages 50% → 100%, auto advance/);

    const watch = spawn(process.execPath, [path.join(ROOT, "bin/ota.js"), "rollout", "watch", "r2", "--interval", "0.2"], { env });
    let watched = "";
    watch.stdout.on("data", (d) => (watched += d));
    const exited = new Promise<number | null>((resolve) => watch.on("close", resolve));
    await eventually(() => watched.includes(" running stage 1/2 (50%)"), 10_000);
    // The devices, round by round: all poll, those offered release 2 install it and confirm.
    const installed = new Set<string>();
    const round = async () => {
      const got = await inParallel(fleet, 8, async (id) => [id, await offered(s, id, { chip: "esp32", version: V1 })] as const);
      const takers = got.filter(([id, h]) => h === v2sha && !installed.has(id)).map(([id]) => id);
      for (const id of takers) {
        installed.add(id);
        await report(s, { device_id: id, status: "downloading", sha256: v2sha, bytes: 0, total: 1 });
        await report(s, { device_id: id, status: "confirmed", version: V2 });
      }
      return takers.length;
    };
    expect(await round()).toBeGreaterThanOrEqual(2);
    await eventually(() => watched.includes(" running stage 2/2 (100%)"), 10_000);
    await round();
    expect(await exited).toBe(0);
    const lines = watched.trim().split("\n");
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d r2 ro_\w+ running stage 1\/2 \(50%\) \| devices \d+: /);
    expect(watched).toMatch(/running stage 2\/2 \(100%\)/);
    expect(lines[lines.length - 1]).toMatch(/ completed stage 2\/2 \(100%\) \| devices \d+: .* failed 0, rolled back 0 \| the last stage met the success threshold$/);
    expect((await ota("release", "list")).stdout).toMatch(/r2\s+stable\s+v4.1-dev-1935-g647cb62-dirty\s+esp32\s+completed 100%/);
    // The rollout completed itself: the audit log names the system, not an operator.
    expect((await ota("audit", "--action", "rollout.complete")).stdout).toMatch(/system\s+-\s+-\s+rollout.complete/);
  });

  it("pause, watch (exit 6), resume, abort; refused transitions exit 5, unknown names 4", async () => {
    await login();
    await images();
    expect((await ota("release", "create", "r3", "--image", "app-v1.bin", "--allow-downgrade", "--group", "lab")).status).toBe(0);
    expect((await ota("rollout", "start", "r3")).status).toBe(0);
    expect((await ota("rollout", "pause", "r3", "--reason", "waiting for QA")).stdout).toMatch(/: paused, stage 10%/);
    const w = await ota("rollout", "watch", "r3");
    expect(w.status).toBe(6);
    expect(w.stderr).toMatch(/rollout paused: waiting for QA; resume it with: ota rollout resume r3/);
    expect((await ota("rollout", "resume", "r3")).stdout).toMatch(/: running/);
    // Running, and no device polls: it would never end by itself. --timeout gives up with exit 9.
    const timedOut = await ota("rollout", "watch", "r3", "--timeout", "1", "--interval", "0.2");
    expect(timedOut.status).toBe(9);
    expect(timedOut.stdout).toMatch(/^\d\d:\d\d:\d\d r3 ro_\w+ running stage 1\/\d+ \(10%\) /);
    expect(timedOut.stderr).toMatch(/rollout still running after 1 s \(r3 ro_\w+ running .*\); watch it again, or pause it with: ota rollout pause r3/);
    const badTimeout = await ota("rollout", "watch", "r3", "--timeout", "0");
    expect(badTimeout.status).toBe(2);
    expect(badTimeout.stderr).toMatch(/--timeout must be more than 0/);
    expect((await ota("rollout", "abort", "r3", "--reason", "wrong build")).stdout).toMatch(/: aborted/);
    const again = await ota("rollout", "resume", "r3");
    expect(again.status).toBe(5);
    expect(again.stderr).toMatch(/it is aborted \(invalid_transition\)/);
    expect((await ota("rollout", "watch", "r3")).status).toBe(7);
    expect((await ota("release", "show", "nope")).status).toBe(4);
    expect((await ota("rollout", "start", "r3", "--stages", "50,10")).status).toBe(5);
  });

  it("the audit log shows every step, and logout forgets the login", async () => {
    await login();
    // One step of each kind, through the API the CLI uses (each `ota` run is a process of its own: slow).
    expect((await ota("upload", HELLO_WORLD_C3, "--name", "audited-c3.bin")).status).toBe(0);
    const op = new Operator(s);
    await op.ok("POST", "/releases", { name: "audited-1", image: "audited-c3.bin", channel: "audited" });
    await op.ok("POST", "/releases/audited-1/rollout", { stages: [50, 100] });
    await op.ok("POST", "/rollouts/audited-1/advance");
    await op.ok("POST", "/rollouts/audited-1/advance");
    await op.ok("POST", "/releases", { name: "audited-2", image: "audited-c3.bin", channel: "audited", allow_downgrade: true });
    await op.ok("POST", "/releases/audited-2/rollout", {});
    for (const step of ["pause", "resume", "abort"]) await op.ok("POST", `/rollouts/audited-2/${step}`, {});
    await offered(s, "c3:00:00:00:00:01", { chip: "esp32c3" });
    await op.ok("PATCH", "/devices/c3:00:00:00:00:01", { group: "audited" });
    await op.ok("POST", "/devices/c3:00:00:00:00:02/provision", {});
    const a = await ota("audit", "--limit", "200");
    expect(a.status).toBe(0);
    for (const action of ["firmware.upload", "release.create", "rollout.start", "rollout.advance", "rollout.complete", "rollout.pause", "rollout.resume", "rollout.abort", "device.update", "device.provision"]) {
      expect(a.stdout).toMatch(new RegExp(`admin\\s+admin\\s+\\S+\\s+${action.replace(".", "\\.")}`));
    }
    expect((await ota("logout")).status).toBe(0);
    const r = await ota("release", "list");
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/not logged in: run `ota login/);
    fs.writeFileSync(env.OTA_CONFIG!, "{not json");
    const damaged = await ota("whoami");
    expect([damaged.status, damaged.stderr]).toEqual([3, expect.stringMatching(/config.json is damaged: run `ota login` again/)]);
  });
});
