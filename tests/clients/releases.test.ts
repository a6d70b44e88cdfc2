// Clients we do not control follow releases and rollouts like our own agent: the Arduino HTTPUpdate endpoint
// offers what the device's release assigns it (and "no update" when none does), and `ota export` writes only
// what a finished rollout gives every device.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { httpUpdate, type Sketch } from "../helpers/arduino-httpupdate";
import { storageEnv } from "../helpers/database";
import { expected, HELLO_WORLD, HELLO_WORLD_IDF41, read } from "../helpers/fixtures";
import { eventually, ROOT, startTestServer, type TestServer } from "../helpers/server";

const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** An Arduino sketch running hello_world v1.4.1 (an older version than the idf4.1 build's v4.1). */
function sketch(staMac: string): Sketch {
  const t = expected().find((f) => f.file === path.basename(HELLO_WORLD))!.parsed;
  return {
    staMac,
    apMac: "24:6F:28:00:00:FF",
    freeSpace: 0x1c0000,
    sketchSize: t.image_len,
    sketchMd5: md5(read(HELLO_WORLD).subarray(0, t.image_len)),
    sketchSha256: String(t.sha256_stored).toUpperCase(),
    chipSize: 4 * 1024 * 1024,
    sdkVersion: "v4.4.7",
  };
}

describe("update clients under releases and rollouts", () => {
  let s: TestServer;
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" });
  const api = async (method: string, p: string, body?: unknown) => {
    const r = await s.req(method, `/api/v1${p}`, { headers: op(), body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.text()}`);
    return r.json();
  };
  const update = (mac: string) =>
    httpUpdate({ port: s.port, ca: s.ca }, sketch(mac), { uri: "/api/ota/download", basicAuth: { user: "", pass: s.creds.deviceApiKey } });
  const ota = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], {
      encoding: "utf8",
      env: { ...process.env, OTA_DATA_DIR: s.dirs.data, OTA_CERT_DIR: s.dirs.certs, OTA_FIRMWARE_DIR: s.dirs.firmware, ...storageEnv(s.dirs) },
    });

  beforeAll(async () => {
    s = await startTestServer();
    for (const [file, name] of [
      [HELLO_WORLD, "hello.bin"],
      [HELLO_WORLD_IDF41, "v41.bin"],
    ] as const) {
      fs.copyFileSync(file, path.join(s.dirs.firmware, name));
      await eventually(() => s.running.ctx.catalog.imageByName(name));
    }
  });
  afterAll(async () => s.close());

  it("HTTPUpdate gets the release its device is targeted by, and 'no update' when no release is for it", async () => {
    await api("POST", "/releases", { name: "v41-lab", image: "v41.bin", targets: { devices: ["24:6F:28:00:00:01"] } });
    await api("POST", "/releases/v41-lab/rollout", { stages: [100] });

    const targeted = await update("24:6F:28:00:00:01");
    expect(targeted.outcome.result).toBe("HTTP_UPDATE_OK");
    if (targeted.outcome.result === "HTTP_UPDATE_OK") expect(targeted.outcome.image.equals(read(HELLO_WORLD_IDF41))).toBe(true);

    // A device no release is for: nothing to do, which HTTPUpdate understands only as 304.
    const other = await update("24:6F:28:00:00:02");
    expect(other.response.statusLine).toMatch(/ 304 /);
    expect(other.outcome.result).toBe("HTTP_UPDATE_NO_UPDATES");
  });

  it("ota export writes a release only once its rollout gives it to every device", async () => {
    const out = path.join(s.dirs.root, "bucket");
    // Targeted at one device: a static manifest cannot tell devices apart, so nothing is exported.
    await api("POST", "/releases", { name: "v41-one", image: "v41.bin", targets: { devices: ["24:6F:28:00:00:03"] } });
    await api("POST", "/releases/v41-one/rollout", { stages: [100] });
    const none = ota("export", out);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/nothing to export/);

    await api("POST", "/releases", { name: "v41-all", image: "v41.bin" });
    await api("POST", "/releases/v41-all/rollout", { stages: [50, 100] });
    expect(ota("export", out).status).toBe(1); // still staged: not for everyone yet
    await api("POST", "/rollouts/v41-all/advance", {});
    await api("POST", "/rollouts/v41-all/advance", {});
    expect((await api("GET", "/rollouts/v41-all")).rollout.state).toBe("completed");

    const r = ota("export", out);
    expect(r.status).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, "manifest-esp32.json"), "utf8"));
    expect(manifest).toMatchObject({ version: "v4.1-dev-1935-g647cb62-dirty", sha256: sha256(read(HELLO_WORLD_IDF41)) });
    expect(fs.readFileSync(path.join(out, `${manifest.sha256}.bin`)).equals(read(HELLO_WORLD_IDF41))).toBe(true);

    // And every HTTPUpdate device now gets it.
    expect((await update("24:6F:28:00:00:02")).outcome.result).toBe("HTTP_UPDATE_OK");
  });
});
