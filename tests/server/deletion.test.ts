// Deleting what is no longer needed: a release (refused while its rollout is unfinished, a release leads through
// it or a device is pinned to it), an image (refused while a release uses it; its files leave the folder and are
// not ingested again, its blob goes), a rejected file, and blobs no image names. Every deletion is audited;
// viewers may not delete; the `ota` command does the same through the API.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41, read } from "../helpers/fixtures";
import { mac, offered, Operator, report } from "../helpers/fleet";
import { runOta } from "../helpers/ota-cli";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

const SHA1 = createHash("sha256").update(read(HELLO_WORLD)).digest("hex");
const SHA2 = createHash("sha256").update(read(HELLO_WORLD_IDF41)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty";

describe("deleting releases, images, files and blobs", () => {
  let s: TestServer;
  let op: Operator;
  let viewer: Operator;
  const blob = (sha: string) => path.join(s.dirs.data, "blobs", `${sha}.bin`);
  const audit = async (action: string) => (await op.ok("GET", `/audit?action=${action}`)).entries as { target: string; details: Record<string, unknown> }[];
  const login = () => {
    const file = path.join(s.dirs.root, "login.json");
    fs.writeFileSync(file, JSON.stringify({ server: s.url, token: s.creds.operatorToken, ca: s.ca.toString("utf8"), subject: "admin", role: "admin" }), { mode: 0o600 });
    return { PATH: process.env.PATH, HOME: s.dirs.root, OTA_CONFIG: file };
  };

  beforeAll(async () => {
    s = await startTestServer();
    op = new Operator(s);
    viewer = new Operator(s, (await s.running.ctx.credentials.issueOperatorToken("vera", "viewer")).token);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA1) && s.running.ctx.catalog.image(SHA2));
  });
  afterAll(async () => s?.close());

  it("a release is refused while its rollout runs, a release leads through it or a device is pinned to it; then it goes with its rollout", async () => {
    await op.ok("POST", "/releases", { name: "base", image: "v1.bin" });
    await op.ok("POST", "/releases/base/rollout", { stages: [100] });
    await op.ok("POST", "/rollouts/base/advance");
    await op.ok("POST", "/releases", { name: "next", image: "v2.bin" });
    const rolloutId = (await op.ok("POST", "/releases/next/rollout", { stages: [100] })).rollout.id as string;
    expect(await offered(s, mac(1), { chip: "esp32", version: V1 })).toBe(SHA2);
    await report(s, { device_id: mac(1), status: "downloading", sha256: SHA2, bytes: 1, total: 2 });

    const refused = async (why: RegExp) => {
      const r = await op.call("DELETE", "/releases/next");
      expect(r.status).toBe(409);
      expect(r.json().error).toMatchObject({ code: "release_in_use" });
      expect(r.json().error.message).toMatch(why);
    };
    await refused(/rollout ro_\w+ is running: abort it first/);
    await op.ok("POST", "/rollouts/next/pause");
    await refused(/is paused/);
    await op.ok("POST", "/rollouts/next/abort");
    await op.ok("POST", "/releases", { name: "later", image: "v2.bin", via: "next", min_version: "v4.0" });
    await refused(/releases later lead through it/);
    await op.ok("DELETE", "/releases/later");
    await offered(s, mac(2), { chip: "esp32", version: V1 });
    await op.ok("PATCH", `/devices/${encodeURIComponent(mac(2))}`, { pinned_release: "next" });
    await refused(new RegExp(`devices ${mac(2)} are pinned to it`));
    await op.ok("PATCH", `/devices/${encodeURIComponent(mac(2))}`, { pinned_release: null });

    // A viewer may not; a releaser may.
    expect((await viewer.call("DELETE", "/releases/next")).status).toBe(403);
    expect(await op.ok("DELETE", "/releases/next")).toEqual({ deleted: { name: "next" } });
    expect((await op.call("GET", "/releases/next")).status).toBe(404);
    expect((await op.call("GET", `/rollouts/${rolloutId}`)).status).toBe(404);
    expect((await op.call("DELETE", "/releases/next")).json().error.code).toBe("release_not_found");
    // The fleet is offered what its channel has without it.
    expect(await offered(s, mac(3), { chip: "esp32" })).toBe(SHA1);
    expect((await audit("release.delete")).map((e) => e.target).sort()).toEqual(["later", "next"]);
  });

  it("an image is refused while a release uses it; deleted, its file leaves the folder for good and its blob goes", async () => {
    const inUse = await op.call("DELETE", `/firmware/${SHA1}`);
    expect(inUse.status).toBe(409);
    expect(inUse.json().error).toMatchObject({ code: "image_in_use", message: expect.stringContaining("base") });

    expect(fs.existsSync(blob(SHA2))).toBe(true);
    expect((await viewer.call("DELETE", `/firmware/${SHA2}`)).status).toBe(403);
    expect(await op.ok("DELETE", `/firmware/${SHA2}`)).toEqual({ deleted: { sha256: SHA2, files: ["v2.bin"] } });
    expect(fs.existsSync(path.join(s.dirs.firmware, "v2.bin"))).toBe(false);
    expect(fs.existsSync(blob(SHA2))).toBe(false);
    expect((await op.call("GET", `/firmware/${SHA2}`)).status).toBe(404);
    // The folder watcher saw the file go: nothing comes back, not even as a removed file.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await op.ok("GET", "/firmware/files")).files.map((f: { name: string }) => f.name)).toEqual(["v1.bin"]);
    expect((await op.call("DELETE", `/firmware/${SHA2}`)).json().error.code).toBe("firmware_not_found");
    expect((await audit("image.delete"))[0]).toMatchObject({ target: SHA2, details: { files: ["v2.bin"] } });
  });

  it("a rejected file is forgotten and leaves the folder; a file that holds an image is refused", async () => {
    fs.writeFileSync(path.join(s.dirs.firmware, "junk.bin"), Buffer.alloc(4096, 7));
    await eventually(() => s.running.ctx.catalog.file("junk.bin")?.status === "rejected", 10_000);
    const holds = await op.call("DELETE", "/firmware/files/v1.bin");
    expect(holds.status).toBe(409);
    expect(holds.json().error.code).toBe("file_holds_image");
    expect(await op.ok("DELETE", "/firmware/files/junk.bin")).toEqual({ deleted: { name: "junk.bin" } });
    expect(fs.existsSync(path.join(s.dirs.firmware, "junk.bin"))).toBe(false);
    expect(s.running.ctx.catalog.file("junk.bin")).toBeUndefined();
    expect((await op.call("DELETE", "/firmware/files/junk.bin")).json().error.code).toBe("file_not_found");
    expect((await op.call("DELETE", "/firmware/files/..%2Fdata%2Fmaster.key")).status).toBe(400);
  });

  it("blobs no image names are collected once old enough; the ota command deletes and collects through the API", async () => {
    const stray = "ab".repeat(32);
    fs.writeFileSync(blob(stray), "left by a crash");
    expect(await op.ok("POST", "/firmware/gc", {})).toEqual({ removed: 0, bytes: 0 }); // younger than an hour
    const old = new Date(Date.now() - 2 * 3600_000);
    fs.utimesSync(blob(stray), old, old);
    expect((await viewer.call("POST", "/firmware/gc", {})).status).toBe(403);
    expect(await op.ok("POST", "/firmware/gc", {})).toEqual({ removed: 1, bytes: 15 });
    expect(fs.existsSync(blob(SHA1))).toBe(true);

    const env = login();
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "again.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2), 10_000);
    const del = await runOta(env, "firmware", "delete", "again.bin");
    expect(del).toMatchObject({ status: 0, stdout: `deleted image ${SHA2} and its files again.bin\n` });
    fs.writeFileSync(blob(stray), "again");
    fs.utimesSync(blob(stray), old, old);
    expect(await runOta(env, "firmware", "gc")).toMatchObject({ status: 0, stdout: "removed 1 stored copy (5 bytes)\n" });
    // A completed rollout keeps nothing: its release goes, and with no release left nothing is offered.
    expect(await runOta(env, "release", "delete", "base")).toMatchObject({ status: 0, stdout: "deleted release base\n" });
    expect((await op.ok("GET", "/releases")).releases).toEqual([]);
    expect(await runOta(env, "firmware", "delete", SHA1)).toMatchObject({ status: 0, stdout: `deleted image ${SHA1} and its files v1.bin\n` });
  });
});
