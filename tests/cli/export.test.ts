// `ota export`: the files it writes, served by a plain static file server (Python's http.server), are what a
// device reading a {"version", "url"} manifest from a bucket fetches and checks.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { request } from "undici";
import { dropDatabase, ensureDatabase, storageEnv } from "../helpers/database";
import { HELLO_WORLD, HELLO_WORLD_IDF41, HELLO_WORLD_S3, read } from "../helpers/fixtures";
import { eventually, ROOT, startTestServer, tempDirs, type TestServer } from "../helpers/server";
import { startStaticServer, type StaticServer } from "../helpers/static-server";
import { Operator } from "../helpers/fleet";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function fetchBytes(url: string): Promise<{ status: number; length: string | undefined; body: Buffer }> {
  const r = await request(url);
  const body = Buffer.from(await r.body.arrayBuffer());
  return { status: r.statusCode, length: r.headers["content-length"] as string | undefined, body };
}

/** The `ota` command on the server's own data folder and database, as an operator on its machine runs it. */
function otaOn(s: TestServer, ...args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], {
    encoding: "utf8",
    env: { ...process.env, OTA_DATA_DIR: s.dirs.data, OTA_CERT_DIR: s.dirs.certs, OTA_FIRMWARE_DIR: s.dirs.firmware, ...storageEnv(s.dirs) },
  });
}

describe("ota export", () => {
  let s: TestServer;
  let web: StaticServer;
  let webRoot: string;
  const ota = (...args: string[]) => otaOn(s, ...args);
  const ingest = async (file: string, name: string) => {
    fs.copyFileSync(file, path.join(s.dirs.firmware, name));
    await eventually(() => s.running.ctx.catalog.imageByName(name));
  };

  beforeAll(async () => {
    s = await startTestServer();
    await ingest(HELLO_WORLD_S3, "s3.bin");
    await ingest(HELLO_WORLD, "hello.bin"); // the newest: what a client that names no chip is offered
    webRoot = path.join(s.dirs.root, "bucket");
    fs.mkdirSync(webRoot);
    web = await startStaticServer(webRoot);
  });
  afterAll(async () => {
    await web?.close();
    await s.close();
  });

  it("writes manifest.json (version, url, size, sha256) and the binary; served statically, the manifest leads to exactly the image", async () => {
    const out = path.join(webRoot, "ota");
    const r = ota("export", out, "--base-url", `${web.url}/ota/`);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("manifest.json: v1.4.1-2-g0296947-dirty for any chip");

    const m = await fetchBytes(`${web.url}/ota/manifest.json`);
    expect(m.status).toBe(200);
    const manifest = JSON.parse(m.body.toString("utf8"));
    const image = read(HELLO_WORLD);
    expect(manifest).toMatchObject({ version: "v1.4.1-2-g0296947-dirty", size: image.length, sha256: sha256(image), chip: "esp32" });
    expect(manifest.url).toBe(`${web.url}/ota/${sha256(image)}.bin`);

    // What a sketch does with it: fetch url, check length and hash.
    const bin = await fetchBytes(manifest.url);
    expect(bin.status).toBe(200);
    expect(bin.length).toBe(String(manifest.size));
    expect(sha256(bin.body)).toBe(manifest.sha256);
    expect(createHash("md5").update(bin.body).digest("hex")).toBe(manifest.md5);
  });

  it("writes one manifest per chip, each naming that chip's image", async () => {
    const out = path.join(webRoot, "chips");
    expect(ota("export", out, "--base-url", `${web.url}/chips`).status).toBe(0);
    for (const [chip, file] of [
      ["esp32", HELLO_WORLD],
      ["esp32s3", HELLO_WORLD_S3],
    ] as const) {
      const manifest = JSON.parse((await fetchBytes(`${web.url}/chips/manifest-${chip}.json`)).body.toString("utf8"));
      expect(manifest.chip).toBe(chip);
      const bin = await fetchBytes(manifest.url);
      expect(bin.body.equals(read(file))).toBe(true);
    }
  });

  it("without --base-url, binaries are named relative to the manifest", async () => {
    const out = path.join(webRoot, "relative");
    const r = ota("export", out);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("--base-url");
    const manifestUrl = `${web.url}/relative/manifest.json`;
    const manifest = JSON.parse((await fetchBytes(manifestUrl)).body.toString("utf8"));
    expect(manifest.url).toBe(`${manifest.sha256}.bin`);
    const bin = await fetchBytes(new URL(manifest.url, manifestUrl).href);
    expect(sha256(bin.body)).toBe(manifest.sha256);
  });

  it("exporting again keeps what is there; a newer image updates the manifest and leaves the old binary for devices mid-download", async () => {
    const out = path.join(webRoot, "again");
    expect(ota("export", out).status).toBe(0);
    const before = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    const again = ota("export", out);
    expect(again.status).toBe(0);
    expect(again.stderr).toContain(`kept ${before.sha256}.bin`);

    await ingest(HELLO_WORLD_IDF41, "newer.bin");
    expect(ota("export", out).status).toBe(0);
    const after = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    expect(after.sha256).toBe(sha256(read(HELLO_WORLD_IDF41)));
    expect(fs.existsSync(path.join(out, `${before.sha256}.bin`))).toBe(true);
    // No temporary file is left; the one dot file is the export's record of what it wrote.
    expect(fs.readdirSync(out).filter((f) => f.startsWith("."))).toEqual([".ota-export.json"]);

    // One export later the old binary, which the export wrote, is gone; a file it did not write stays.
    fs.writeFileSync(path.join(out, "index.html"), "mine");
    const later = ota("export", out);
    expect(later.status).toBe(0);
    expect(later.stderr).toContain(`ota: removed ${before.sha256}.bin (written by an earlier export, no longer offered)`);
    const s3 = sha256(read(HELLO_WORLD_S3));
    expect(fs.readdirSync(out).sort()).toEqual(
      [".ota-export.json", `${after.sha256}.bin`, `${s3}.bin`, "index.html", "manifest-esp32.json", "manifest-esp32s3.json", "manifest.json"].sort(),
    );
  });

  it("with nothing to offer, exits 1 saying what to do", async () => {
    const empty = tempDirs("ota-export-empty-");
    await ensureDatabase(empty);
    try {
      const r = spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), "export", path.join(empty.root, "out")], {
        encoding: "utf8",
        env: { ...process.env, OTA_DATA_DIR: empty.data, ...storageEnv(empty) },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/nothing to export.*copy an ESP-IDF app \.bin into the firmware folder/);
    } finally {
      fs.rmSync(empty.root, { recursive: true, force: true });
      await dropDatabase(empty);
    }
  });

  it("refuses a base URL that is not plain http(s)", () => {
    for (const bad of ["ftp://x/y", "not a url", "https://user:pw@bucket/ota"]) {
      const r = ota("export", path.join(webRoot, "bad"), "--base-url", bad);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/--base-url/);
    }
  });
});

describe("ota export with releases and rollouts", () => {
  let s: TestServer;
  let op: Operator;
  let out: string;
  const ota = (...args: string[]) => otaOn(s, ...args);
  const json = (file: string) => JSON.parse(fs.readFileSync(path.join(out, file), "utf8"));
  const listing = () =>
    (fs.readdirSync(out, { recursive: true }) as string[]).filter((f) => !fs.statSync(path.join(out, f)).isDirectory()).sort();

  beforeAll(async () => {
    s = await startTestServer();
    op = new Operator(s);
    for (const [file, name] of [
      [HELLO_WORLD_S3, "s3.bin"],
      [HELLO_WORLD, "hello.bin"],
    ] as const) {
      fs.copyFileSync(file, path.join(s.dirs.firmware, name));
      await eventually(() => s.running.ctx.catalog.imageByName(name));
    }
    out = path.join(s.dirs.root, "bucket");
  });
  afterAll(async () => s.close());

  it("exports what every device of each channel is offered, and removes what an earlier export wrote that no longer belongs", async () => {
    const hello = sha256(read(HELLO_WORLD));
    const s3 = sha256(read(HELLO_WORLD_S3));
    expect(ota("export", out).status).toBe(0); // folder mode: both chips
    expect(listing()).toEqual([".ota-export.json", `${hello}.bin`, `${s3}.bin`, "manifest-esp32.json", "manifest-esp32s3.json", "manifest.json"].sort());

    await op.ok("POST", "/releases", { name: "r1", image: "hello.bin" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [10, 50, 100] });
    const partial = ota("export", out);
    expect(partial.status).toBe(1);
    expect(partial.stderr).toMatch(/nothing to export: no release is offered to every device of its channel.*completed or running at 100 %/);

    await op.ok("POST", "/rollouts/r1/advance");
    await op.ok("POST", "/rollouts/r1/advance"); // running, at 100 %
    const full = ota("export", out);
    expect(full.stderr).not.toMatch(/error|nothing/i);
    expect(full.status).toBe(0);
    expect(full.stdout).toContain(`${path.join(out, "manifest.json")}: v1.4.1-2-g0296947-dirty for any chip (release r1 on stable) -> ${hello}.bin`);
    expect(json("manifest.json")).toMatchObject({ version: "v1.4.1-2-g0296947-dirty", sha256: hello, url: `${hello}.bin`, release: "r1", channel: "stable" });
    expect(json("manifest-esp32.json")).toMatchObject({ sha256: hello, release: "r1" });
    // The s3 manifest went at once (no release offers it); its binary stays for one more export.
    expect(full.stderr).toContain("ota: removed manifest-esp32s3.json (written by an earlier export, no longer offered)");
    expect(listing()).toEqual([".ota-export.json", `${hello}.bin`, `${s3}.bin`, "manifest-esp32.json", "manifest.json"].sort());

    await op.ok("POST", "/releases", { name: "b1", image: "s3.bin", channel: "beta" });
    await op.ok("POST", "/releases/b1/rollout", { stages: [100] });
    expect(ota("export", out).status).toBe(0);
    expect(listing()).toEqual([
      ".ota-export.json",
      `${hello}.bin`,
      `${s3}.bin`,
      "channels/beta/manifest-esp32s3.json",
      "channels/beta/manifest.json",
      "manifest-esp32.json",
      "manifest.json",
    ].sort());
    const beta = json("channels/beta/manifest.json");
    expect(beta).toMatchObject({ sha256: s3, chip: "esp32s3", release: "b1", channel: "beta", url: `../../${s3}.bin` });
    expect(sha256(fs.readFileSync(path.resolve(out, "channels/beta", beta.url)))).toBe(s3);

    // Aborted: the beta channel's files go, the stable ones stay.
    await op.ok("POST", "/rollouts/b1/abort", { reason: "test" });
    const after = ota("export", out);
    expect(after.status).toBe(0);
    expect(after.stderr).toContain("ota: removed channels/beta/manifest.json");
    expect(listing()).toEqual([".ota-export.json", `${hello}.bin`, `${s3}.bin`, "manifest-esp32.json", "manifest.json"].sort());
  });
});
