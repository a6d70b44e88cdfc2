// Symbolic links and special files in the firmware folder, against the built server in its own process: a link to
// a file that never ends must not grow the server, a link to a secret must not show a byte or the path of it, and
// neither may stop the server from starting or the watcher from indexing what comes next.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_C3, read } from "../helpers/fixtures";
import { eventually, startTestServer, tempDirs, type Dirs } from "../helpers/server";
import { startServerProcess, type ServerProcess } from "../helpers/server-process";

/** Far above what the server needs (about 100 MiB), far below what an unbounded read reaches (gigabytes). */
const RSS_LIMIT_MIB = 400;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** The links and what must never show of their targets. */
function plantLinks(dirs: Dirs, prefix: string) {
  fs.mkdirSync(dirs.firmware, { recursive: true });
  const key = path.join(dirs.data, "master.key");
  const links: Record<string, string> = {
    [`${prefix}-a.bin`]: key,
    [`${prefix}-b.bin`]: "/proc/self/pagemap", // a regular file of size 0 that reads on for gigabytes
    [`${prefix}-c.bin`]: "/dev/zero",
    [`${prefix}-d.bin`]: "/etc/passwd",
  };
  for (const [name, target] of Object.entries(links)) fs.symlinkSync(target, path.join(dirs.firmware, name));
  return links;
}

/** A master key of our own, so the test knows the bytes that must not leak. */
function writeMasterKey(dirs: Dirs): string {
  fs.mkdirSync(dirs.data, { recursive: true, mode: 0o700 });
  const hex = randomBytes(32).toString("hex");
  fs.writeFileSync(path.join(dirs.data, "master.key"), hex + "\n", { mode: 0o600 });
  return hex;
}

/** Neither a byte of a target (not even the first, as a magic-number message would quote it) nor its path. */
function expectNothingOfTargets(text: string, keyHex: string, alsoNot: string[] = []) {
  const passwd = fs.readFileSync("/etc/passwd", "utf8");
  const firstByte = (s: string) => `0x${s.charCodeAt(0).toString(16)}`;
  for (const secret of [keyHex, keyHex.slice(0, 8), passwd.split("\n")[0]!, "master.key", "/proc/", "pagemap", "/dev/", "/etc/", ...alsoNot]) {
    expect(text).not.toContain(secret);
  }
  expect(text).not.toMatch(new RegExp(`${firstByte(keyHex)}\\b|${firstByte(passwd)}\\b`));
}

describe("links and special files in the firmware folder", () => {
  let dirs: Dirs;
  let s: ServerProcess | undefined;
  const op = () => ({ Authorization: `Bearer ${s!.creds.operatorToken}` });
  const dev = () => ({ "X-API-Key": s!.creds.deviceApiKey });
  const rejected = async () => (await s!.req("GET", "/api/v1/firmware/rejected", { headers: op() })).json().files as any[];

  beforeEach(() => {
    dirs = tempDirs();
  });
  afterEach(async () => {
    await s?.stop();
    s = undefined;
    fs.rmSync(dirs.root, { recursive: true, force: true });
  });

  it("present at start: the server starts, refuses each link without following it, memory stays flat", async () => {
    const keyHex = writeMasterKey(dirs);
    const links = plantLinks(dirs, "start");
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "app.bin"));

    s = await startServerProcess(dirs, { rssLimitMiB: RSS_LIMIT_MIB });

    // The image beside the links was indexed at start and is offered.
    const m = await s.req("GET", "/firmware/manifest", { headers: dev() });
    expect(m.status).toBe(200);
    expect(m.json().sha256).toBe(sha(read(HELLO_WORLD)));

    const r = await s.req("GET", "/api/v1/firmware/rejected", { headers: op() });
    expect(r.status).toBe(200);
    const byName = Object.fromEntries((r.json().files as any[]).map((f) => [f.name, f]));
    expect(Object.keys(byName).sort()).toEqual(Object.keys(links).sort());
    for (const name of Object.keys(links)) {
      expect(byName[name]).toMatchObject({ status: "rejected", reason_code: "link", sha256: null, size: 0 });
      expect(byName[name].reason).toMatch(/symbolic link.*not followed.*copy the image itself/);
    }
    const all = await s.req("GET", "/api/v1/firmware/files", { headers: op() });
    expectNothingOfTargets(r.text() + all.text(), keyHex, [dirs.data]);
    expectNothingOfTargets(s.output(), keyHex); // the log names the data folder at start, never what is in it
    expect(s.peakRssKiB()).toBeGreaterThan(0);
    expect(s.peakRssKiB()).toBeLessThan(RSS_LIMIT_MIB * 1024);
  }, 60_000);

  it("added while running: each is refused likewise, and an image added after them is indexed", async () => {
    s = await startServerProcess(dirs, { rssLimitMiB: RSS_LIMIT_MIB });
    const keyHex = fs.readFileSync(path.join(dirs.data, "master.key"), "utf8").trim();
    const links = plantLinks(dirs, "later");
    const fifo = path.join(dirs.firmware, "later-fifo.bin");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);

    const files = await eventually(async () => {
      const f = await rejected();
      return f.length === Object.keys(links).length + 1 && f;
    }, 10_000);
    const byName = Object.fromEntries(files.map((f) => [f.name, f]));
    for (const name of Object.keys(links)) {
      expect(byName[name]).toMatchObject({ status: "rejected", reason_code: "link", sha256: null, size: 0 });
    }
    expect(byName["later-fifo.bin"]).toMatchObject({ status: "rejected", reason_code: "not_a_file", sha256: null, size: 0 });
    expect(byName["later-fifo.bin"].reason).toMatch(/not a regular file/);

    // The watcher carries on: a real image dropped afterwards is offered.
    fs.copyFileSync(HELLO_WORLD_C3, path.join(dirs.firmware, "c3.bin"));
    const m = await eventually(async () => {
      const r = await s!.req("GET", "/firmware/manifest?chip=esp32c3", { headers: dev() });
      return r.status === 200 && r;
    }, 10_000);
    expect(m.json().sha256).toBe(sha(read(HELLO_WORLD_C3)));

    const all = await s.req("GET", "/api/v1/firmware/files", { headers: op() });
    expectNothingOfTargets(all.text(), keyHex, [dirs.data]);
    expectNothingOfTargets(s.output(), keyHex);
    expect(s.peakRssKiB()).toBeLessThan(RSS_LIMIT_MIB * 1024);
  }, 60_000);
});

describe("a firmware folder that is itself a link", () => {
  it("is watched where it leads (only links inside it are refused)", async () => {
    const dirs = tempDirs();
    const real = path.join(dirs.root, "elsewhere");
    fs.mkdirSync(real);
    fs.symlinkSync(real, dirs.firmware);
    fs.copyFileSync(HELLO_WORLD, path.join(real, "at-start.bin"));
    const s = await startTestServer({}, dirs);
    try {
      expect(s.running.ctx.catalog.file("at-start.bin")?.status).toBe("valid");
      fs.copyFileSync(HELLO_WORLD_C3, path.join(dirs.firmware, "later.bin"));
      const f = await eventually(() => s.running.ctx.catalog.file("later.bin"), 10_000);
      expect(f).toMatchObject({ status: "valid", sha256: sha(read(HELLO_WORLD_C3)) });
    } finally {
      await s.close();
    }
  });
});
