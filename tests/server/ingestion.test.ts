import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { BOOTLOADER, ESPHOME, expected, itWithEsphome, HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_IDF41, read } from "../helpers/fixtures";
import { Operator, poll } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("firmware folder ingestion", () => {
  let s: TestServer;
  const dev = () => ({ "X-API-Key": s.creds.deviceApiKey });
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const manifest = async (chip?: string) => s.req("GET", "/firmware/manifest" + (chip ? `?chip=${chip}` : ""), { headers: dev() });
  const files = async () => (await s.req("GET", "/api/v1/firmware/files", { headers: op() })).json().files as any[];
  /** Copies a file into the firmware folder and waits until the watcher has indexed it as a valid image. */
  const drop = async (src: string, name: string) => {
    fs.copyFileSync(src, path.join(s.dirs.firmware, name));
    const want = sha(read(src));
    await eventually(async () => (await files()).find((x) => x.name === name && x.status === "valid" && x.sha256 === want));
  };

  // Each test has a server and a firmware folder of its own.
  beforeEach(async () => {
    s = await startTestServer();
  });
  afterEach(async () => s.close());

  it("answers a clear JSON 404 while the folder is empty", async () => {
    const r = await manifest();
    expect(r.status).toBe(404);
    expect(r.headers["content-type"]).toMatch(/application\/json/);
    expect(r.json().error.code).toBe("no_firmware");
    expect(r.json().error.message).toMatch(/copy an ESP-IDF app \.bin into the firmware folder/);
  });

  it("indexes a copied image within 2 seconds and the manifest describes it", async () => {
    const t0 = Date.now();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "esp32_hello_world_idf5.2.2.bin"));
    const r = await eventually(async () => {
      const m = await manifest();
      return m.status === 200 && m;
    }, 2000, 20);
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(2000);
    const m = r.json();
    expect(m).toMatchObject({
      version: "v1.4.1-2-g0296947-dirty",
      project: "hello_world",
      chip: "esp32",
      size: 124416,
      sha256: sha(read(HELLO_WORLD)),
      md5: "b33546d26b53d14ce95821ba4f6e058e",
      secure_version: 0,
      min_chip_rev: 0,
      max_chip_rev: 399,
      idf_version: "v5.2.2-dirty",
      block_size: 8192,
      block_count: 16,
      allow_downgrade: false,
    });
    expect(m.url).toBe(`${s.url}/firmware/sha256/${m.sha256}.bin`);
    const dl = await s.req("GET", new URL(m.url).pathname, { headers: dev() });
    expect(dl.body.equals(read(HELLO_WORLD))).toBe(true);
  });

  it("refuses the bootloader dropped beside it, with its reason, and keeps serving the app", async () => {
    await drop(HELLO_WORLD, "hello.bin");
    fs.copyFileSync(BOOTLOADER, path.join(s.dirs.firmware, "bootloader.bin"));
    const f = await eventually(async () => (await files()).find((x) => x.name === "bootloader.bin"));
    expect(f).toMatchObject({ status: "rejected", reason_code: "bootloader", sha256: null });
    expect(f.reason).toMatch(/bootloader/);
    const rejected = (await s.req("GET", "/api/v1/firmware/rejected", { headers: op() })).json().files;
    expect(rejected.map((x: any) => x.name)).toEqual(["bootloader.bin"]);
    expect((await manifest()).json().project).toBe("hello_world");
    expect(s.logs.join("")).toMatch(/"file":"bootloader.bin".*firmware file refused/);
  });

  it("offers each chip its own latest image", async () => {
    await drop(HELLO_WORLD, "hello.bin");
    fs.copyFileSync(HELLO_WORLD_C3, path.join(s.dirs.firmware, "c3.bin"));
    await eventually(async () => (await manifest("esp32c3")).status === 200);
    expect((await manifest("esp32c3")).json().chip).toBe("esp32c3");
    expect((await manifest("esp32")).json().sha256).toBe(sha(read(HELLO_WORLD)));
    expect((await manifest("ESP32-S3")).status).toBe(404);
    expect((await manifest("esp8266")).status).toBe(400);
  });

  itWithEsphome("a slow copy of the 1.5 MB image is never indexed half-written", async () => {
    await drop(HELLO_WORLD, "hello.bin");
    const big = read(ESPHOME);
    const dest = path.join(s.dirs.firmware, "esphome.bin");
    const fd = fs.openSync(dest, "w");
    const seen = new Set<string>();
    const watch = async () => {
      const f = (await files()).find((x) => x.name === "esphome.bin");
      if (f) seen.add(f.status);
      const m = await manifest("esp32");
      // The manifest must show either the old image or the complete new one, never anything else.
      expect([sha(read(HELLO_WORLD)), sha(big)]).toContain(m.json().sha256);
    };
    // Copy in 6 pieces, each left at rest until the watcher has looked at the half file of that size.
    const piece = Math.ceil(big.length / 6);
    for (let off = 0; off < big.length; off += piece) {
      const end = Math.min(big.length, off + piece);
      fs.writeSync(fd, big.subarray(off, end));
      if (end < big.length) await eventually(async () => (await files()).find((x) => x.name === "esphome.bin" && x.size === end), 10_000);
      await watch();
    }
    fs.closeSync(fd);
    const done = await eventually(async () => {
      const f = (await files()).find((x) => x.name === "esphome.bin");
      return f?.status === "valid" && f;
    }, 5000);
    expect(done.sha256).toBe(sha(big));
    expect(seen.has("incomplete")).toBe(true);
    expect(seen.has("rejected")).toBe(false);
    expect((await manifest("esp32")).json()).toMatchObject({ sha256: sha(big), version: "9036908-dirty", size: 1545008 });
  });

  it("a file changed after ingestion is served under its new hash, never under the old one", async () => {
    const name = path.join(s.dirs.firmware, "app.bin");
    fs.copyFileSync(HELLO_WORLD, name);
    await eventually(async () => (await files()).find((x) => x.name === "app.bin" && x.status === "valid"));
    const oldHash = sha(read(HELLO_WORLD));
    fs.copyFileSync(HELLO_WORLD_IDF41, name);
    const newHash = sha(read(HELLO_WORLD_IDF41));
    await eventually(async () => (await files()).find((x) => x.name === "app.bin" && x.sha256 === newHash));
    const byName = await s.req("GET", "/firmware/app.bin", { headers: dev() });
    expect(byName.headers.etag).toBe(`"${newHash}"`);
    expect(byName.body.equals(read(HELLO_WORLD_IDF41))).toBe(true);
    const byOldHash = await s.req("GET", `/firmware/sha256/${oldHash}.bin`, { headers: dev() });
    expect(sha(byOldHash.body)).toBe(oldHash);
    expect((await manifest("esp32")).json().sha256).toBe(newHash);
  });

  it("a deleted file stops being offered", async () => {
    await drop(HELLO_WORLD, "hello.bin");
    await drop(HELLO_WORLD_IDF41, "app.bin");
    expect((await manifest("esp32")).json().sha256).toBe(sha(read(HELLO_WORLD_IDF41)));
    fs.rmSync(path.join(s.dirs.firmware, "app.bin"));
    await eventually(async () => (await manifest("esp32")).json().sha256 === sha(read(HELLO_WORLD)));
    const f = (await files()).find((x) => x.name === "app.bin");
    expect(f.status).toBe("removed");
  });

  it("ignores dot-files and other extensions (temporary copies, notes)", async () => {
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, ".partial.bin"));
    fs.writeFileSync(path.join(s.dirs.firmware, "README.txt"), "notes");
    fs.copyFileSync(BOOTLOADER, path.join(s.dirs.firmware, "bad name.bin"));
    const f = await eventually(async () => (await files()).find((x) => x.name === "bad name.bin"));
    expect(f.reason_code).toBe("bad_name");
    const names = (await files()).map((x) => x.name);
    expect(names).not.toContain(".partial.bin");
    expect(names).not.toContain("README.txt");
  });
});

describe("restart", () => {
  it("a release whose stored image was damaged while the server was down is not offered, and the log names the release and what to do", async () => {
    const dirs = tempDirs();
    let s = await startTestServer({}, dirs);
    const hash = sha(read(HELLO_WORLD));
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "a.bin"));
    await eventually(() => s.running.ctx.catalog.image(hash));
    const op = new Operator(s);
    await op.ok("POST", "/releases", { name: "r1", image: hash });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    expect((await poll(s, "aa:bb:cc:00:00:01", { chip: "esp32" })).json()).toMatchObject({ release: "r1", sha256: hash });
    await s.close({ keepDirs: true });

    // While the server is down: the file leaves the folder and the stored copy is damaged.
    fs.rmSync(path.join(dirs.firmware, "a.bin"));
    const blob = path.join(dirs.data, "blobs", `${hash}.bin`);
    expect(fs.existsSync(blob)).toBe(true);
    fs.truncateSync(blob, 4096);

    s = await startTestServer({}, dirs);
    try {
      expect(s.running.ctx.catalog.image(hash)).toBeUndefined();
      const r = await poll(s, "aa:bb:cc:00:00:01", { chip: "esp32" });
      expect([r.status, r.json().error.code]).toEqual([404, "no_firmware"]);
      const line = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.release === "r1" && l.level === "error");
      expect(line).toMatchObject({ sha256: hash, msg: "a release's image is missing from the store; ingest its file again" });
    } finally {
      await s.close();
    }
  });

  it("re-indexes consistently and keeps credentials", async () => {
    const dirs = tempDirs();
    let s = await startTestServer({}, dirs);
    const creds = s.creds;
    fs.copyFileSync(HELLO_WORLD, path.join(dirs.firmware, "a.bin"));
    fs.copyFileSync(HELLO_WORLD_C3, path.join(dirs.firmware, "c3.bin"));
    fs.copyFileSync(BOOTLOADER, path.join(dirs.firmware, "boot.bin"));
    await eventually(() => s.running.ctx.catalog.allFiles().length === 3);
    await s.running.ctx.watcher.idle();
    const before = s.running.ctx.catalog.allFiles().map((f) => [f.name, f.status, f.sha256, f.reasonCode]);
    const offeredBefore = s.running.ctx.catalog.offered().map((i) => i.sha256);
    await s.close({ keepDirs: true });

    // While the server is down: one file replaced, one deleted.
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(dirs.firmware, "a.bin"));
    fs.rmSync(path.join(dirs.firmware, "c3.bin"));

    s = await startTestServer({}, dirs);
    try {
      expect(s.running.devCredentialsFile).toBeNull();
      expect(s.creds).toEqual(creds);
      expect((await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": creds.deviceApiKey } })).status).toBe(200);
      const after = Object.fromEntries(s.running.ctx.catalog.allFiles().map((f) => [f.name, f]));
      expect(after["a.bin"]).toMatchObject({ status: "valid", sha256: sha(read(HELLO_WORLD_IDF41)) });
      expect(after["c3.bin"]!.status).toBe("removed");
      expect(after["boot.bin"]).toMatchObject({ status: "rejected", reasonCode: "bootloader" });
      expect(before).toHaveLength(3);
      expect(offeredBefore).toHaveLength(2);
      expect(s.running.ctx.catalog.offered().map((i) => i.sha256)).toEqual([sha(read(HELLO_WORLD_IDF41))]);
      // Every stored image is still there under its hash.
      for (const f of expected().filter((e) => ["esp32_hello_world_idf5.2.2.bin", "esp32c3_hello_world_idf5.2.2.bin"].includes(e.file))) {
        expect(s.running.ctx.catalog.image(f.parsed.file_sha256)).toBeDefined();
      }
    } finally {
      await s.close();
    }
  });
});
