// `ota image set-version`: the copy is a valid app image (checksum and appended SHA-256 verified by the same
// parser the server uses) that differs from the original only in the version field, its checksum and its hash;
// the server takes it as a new image with the new version.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { APP_DESC_OFFSET, parseAppImage } from "../../server/esp";
import { HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_IDF41, HELLO_WORLD_S3, SIGNED_DIR } from "../helpers/fixtures";
import { eventually, ROOT, startTestServer, tempDirs } from "../helpers/server";

jest.setTimeout(60_000);

const ota = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], { encoding: "utf8" });

describe("ota image set-version", () => {
  const dirs = tempDirs("ota-setversion-");
  afterAll(() => fs.rmSync(dirs.root, { recursive: true, force: true }));

  it.each([HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_S3, HELLO_WORLD_IDF41])("writes a valid copy of %s with only the version changed", (file) => {
    const original = fs.readFileSync(file);
    const before = parseAppImage(original);
    const out = path.join(dirs.root, `${path.basename(file)}-2.1.0.bin`);
    const r = ota("image", "set-version", file, "2.1.0", "--out", out);
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(r.stdout).toBe(`wrote ${out}: version 2.1.0 (was ${before.app.version}), ${before.imageLength} bytes\n`);

    const copy = fs.readFileSync(out);
    const after = parseAppImage(copy); // throws on a wrong checksum or appended SHA-256
    expect(after.app.version).toBe("2.1.0");
    expect({ ...after.app, version: "" }).toEqual({ ...before.app, version: "" });
    expect(after.header.hashAppended).toBe(before.header.hashAppended);
    const changed = [...copy.keys()].filter((i) => copy[i] !== original[i]);
    const versionField = (i: number) => i >= APP_DESC_OFFSET + 16 && i < APP_DESC_OFFSET + 48;
    const trailer = (i: number) => i >= after.checksumOffset;
    expect(changed.filter((i) => !versionField(i) && !trailer(i))).toEqual([]);
  });

  it("leaves out a Secure Boot signature (it signed other bytes) and says to sign again", () => {
    const signed = path.join(SIGNED_DIR, "esp32_hello_world_signed_ecdsa256.bin");
    const before = parseAppImage(fs.readFileSync(signed));
    expect(before.trailingBytes).toBeGreaterThan(0);
    const out = path.join(dirs.root, "signed-2.1.0.bin");
    const r = ota("image", "set-version", signed, "2.1.0", "--out", out);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(`ota: the ${before.trailingBytes} bytes after the image (a signature) were left out: sign the copy again (ota sign)\n`);
    const after = parseAppImage(fs.readFileSync(out));
    expect([after.app.version, after.trailingBytes]).toEqual(["2.1.0", 0]);
  });

  it("refuses a bad version, an existing --out and a file that is not an app image", () => {
    const out = path.join(dirs.root, "refused.bin");
    expect(ota("image", "set-version", HELLO_WORLD, "x".repeat(32), "--out", out).stderr).toMatch(/the version must be 1-31 printable ASCII characters/);
    expect(ota("image", "set-version", HELLO_WORLD, "x".repeat(32), "--out", out).status).toBe(2);
    fs.writeFileSync(out, "mine");
    const taken = ota("image", "set-version", HELLO_WORLD, "2.1.0", "--out", out);
    expect([taken.status, fs.readFileSync(out, "utf8")]).toEqual([2, "mine"]);
    const notImage = ota("image", "set-version", path.join(ROOT, "partitions.csv"), "2.1.0", "--out", path.join(dirs.root, "x.bin"));
    expect(notImage.status).toBe(1);
    expect(notImage.stderr).toMatch(/is not a valid app image/);
  });

  it("the server takes the copy as a new image with the new version", async () => {
    const s = await startTestServer();
    try {
      const out = path.join(dirs.root, "app-2.1.0.bin");
      expect(ota("image", "set-version", HELLO_WORLD, "2.1.0", "--out", out).status).toBe(0);
      fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-1.bin"));
      await eventually(() => s.running.ctx.catalog.imageByName("app-1.bin"), 10_000);
      fs.copyFileSync(out, path.join(s.dirs.firmware, "app-2.1.0.bin"));
      const image = await eventually(() => s.running.ctx.catalog.imageByName("app-2.1.0.bin"), 10_000);
      expect(image.version).toBe("2.1.0");
      expect(s.running.ctx.catalog.latest("esp32")?.version).toBe("2.1.0");
    } finally {
      await s.close();
    }
  });
});
