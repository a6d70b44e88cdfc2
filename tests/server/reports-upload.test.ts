import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { openTestDb } from "../helpers/database";
import { BOOTLOADER, ESPHOME, HELLO_WORLD, HELLO_WORLD_S3, itWithEsphome, read } from "../helpers/fixtures";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

describe("device reports", () => {
  let s: TestServer;
  const dev = () => ({ "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" });
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const send = (body: object, headers = dev()) => s.req("POST", "/firmware/report", { headers, body: JSON.stringify(body) });

  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => s.close());

  it("stores each state change, and the device shows its latest state, progress and version", async () => {
    const id = "reporter-1";
    expect((await send({ device_id: id, status: "checking", version: "v1.0.0", report_id: "r1" })).json()).toEqual({ ok: true, duplicate: false });
    await send({ device_id: id, status: "downloading", version: "v1.0.0", target_version: "v2.0.0", bytes: 8192, total: 124416, report_id: "r2" });
    const d1 = (await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json();
    expect(d1.device).toMatchObject({ state: "downloading", version: "v1.0.0", target_version: "v2.0.0", progress: { bytes: 8192, total: 124416 } });
    await send({ device_id: id, status: "confirmed", version: "v2.0.0", report_id: "r3" });
    const d2 = (await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json();
    expect(d2.device).toMatchObject({ state: "confirmed", version: "v2.0.0" });
    expect(d2.reports.map((r: any) => r.status)).toEqual(["confirmed", "downloading", "checking"]);
  });

  it("is idempotent on retry: the same report_id is stored once", async () => {
    const body = { device_id: "reporter-2", status: "failed", reason: "block_hash_mismatch", error: "block 3", report_id: "same-1" };
    expect((await send(body)).json().duplicate).toBe(false);
    expect((await send(body)).json().duplicate).toBe(true);
    expect((await send(body)).json().duplicate).toBe(true);
    const h = (await s.req("GET", "/api/v1/devices/reporter-2/reports", { headers: op() })).json();
    expect(h.reports).toHaveLength(1);
    expect(h.reports[0]).toMatchObject({ status: "failed", reason: "block_hash_mismatch", error: "block 3" });
  });

  it("a client without report ids retrying the same body within a minute is stored once", async () => {
    const body = { device_id: "reporter-3", status: "SUCCESS", version: "1.2.3" };
    await send(body);
    expect((await send(body)).json().duplicate).toBe(true);
  });

  it("accepts the simple {device_id, status: SUCCESS|FAILED, version, error} form", async () => {
    await send({ device_id: "simple-1", status: "FAILED", version: "1.0", error: "flash write failed" });
    const d = (await s.req("GET", "/api/v1/devices/simple-1", { headers: op() })).json().device;
    expect(d).toMatchObject({ state: "failed", state_detail: "flash write failed", version: "1.0" });
  });

  it("accepts exactly 8 KiB, refuses one byte more", async () => {
    const base = { device_id: "big", status: "failed", error: "" };
    const overhead = JSON.stringify(base).length;
    const pad = " ".repeat(8192 - overhead);
    const at = JSON.stringify(base).replace("{", "{" + pad);
    expect(Buffer.byteLength(at)).toBe(8192);
    expect((await s.req("POST", "/firmware/report", { headers: dev(), body: at })).status).toBe(200);
    expect((await s.req("POST", "/firmware/report", { headers: dev(), body: " " + at })).status).toBe(413);
  });

  it("a report that cannot be stored is answered 503 report_not_stored, and nothing of it is stored", async () => {
    const id = "store-fails";
    expect((await send({ device_id: id, status: "checking", report_id: "sf-0" })).status).toBe(200);
    // The database refuses every new report, as a full or broken disk would.
    const db = await openTestDb(s.dirs);
    try {
      await db.refuse("test_no_reports", "reports", "INSERT");
      const r = await send({ device_id: id, status: "failed", reason: "write_failed", report_id: "sf-1" });
      expect(r.status).toBe(503);
      expect(r.json()).toEqual({ error: { code: "report_not_stored", message: expect.stringMatching(/send it again later with the same report_id/) } });
      const d = (await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json();
      expect(d.device).toMatchObject({ state: "checking" });
      expect(d.reports.map((x: { report_id: string }) => x.report_id)).toEqual(["sf-0"]);
    } finally {
      await db.unrefuse("test_no_reports", "reports");
      await db.close();
    }
    // Nothing was claimed stored: the same report, sent again, is new.
    expect((await send({ device_id: id, status: "failed", reason: "write_failed", report_id: "sf-1" })).json()).toEqual({ ok: true, duplicate: false });
    expect((await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json().device).toMatchObject({ state: "failed" });
  });

  it("a fleet key speaking for a provisioned device is refused before anything of the report is stored", async () => {
    const id = "provisioned-1";
    const prov = await s.req("POST", `/api/v1/devices/${id}/provision`, { headers: { ...op(), "Content-Type": "application/json" }, body: "{}" });
    expect(prov.status).toBe(201);
    const body = { device_id: id, status: "confirmed", version: "v9.9.9", report_id: "forged-1" };
    // Naming the device in the request, or only in the body.
    for (const headers of [{ ...dev(), "X-Device-Id": id }, dev()]) {
      const r = await send(body, headers);
      expect(r.status).toBe(403);
      expect(r.json().error.code).toBe("device_key_required");
    }
    const d = (await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json();
    expect(d.reports).toEqual([]);
    expect(d.device).toMatchObject({ state: null, version: null });
  });

  it("lists devices with last seen, version, state and online flag, paginated", async () => {
    for (const id of ["listed-1", "listed-2", "listed-3"]) await send({ device_id: id, status: "checking", version: "v1.0.0" });
    const r = (await s.req("GET", "/api/v1/devices?limit=2", { headers: op() })).json();
    expect(r.devices).toHaveLength(2);
    expect(r.next).toBe(r.devices[1].id);
    expect(r.devices[0]).toEqual(
      expect.objectContaining({ id: expect.any(String), last_seen_at: expect.any(String), online: true, state: expect.any(String) }),
    );
    const rest = (await s.req("GET", `/api/v1/devices?limit=1000&after=${encodeURIComponent(r.next)}`, { headers: op() })).json();
    expect(rest.devices.map((d: any) => d.id)).not.toContain(r.devices[0].id);
  });
});

describe("uploads through the operator API", () => {
  let s: TestServer;
  const agent = () => request(s.url).post("/api/v1/firmware").ca(s.ca).set("Authorization", `Bearer ${s.creds.operatorToken}`);

  /** Names the folder watcher has indexed (rather than the upload itself). */
  const folderIngests: string[] = [];
  /** Uploads hello_world under its default name, unless an earlier test already did. */
  const uploadHello = async () => {
    const r = await agent().attach("file", HELLO_WORLD);
    expect([200, 201]).toContain(r.status);
    return r;
  };

  beforeAll(async () => {
    s = await startTestServer();
    const catalog = s.running.ctx.catalog;
    const ingest = catalog.ingest.bind(catalog);
    catalog.ingest = (name, data, meta) => {
      if (meta.source === "folder") folderIngests.push(name);
      return ingest(name, data, meta);
    };
  });
  afterAll(async () => s.close());

  it("a valid image is indexed, named from its descriptor, written into the folder and offered", async () => {
    const r = await agent().attach("file", HELLO_WORLD);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      name: "hello_world-v1.4.1-2-g0296947-dirty.bin",
      created: true,
      image: { version: "v1.4.1-2-g0296947-dirty", chip: "esp32", offered: true, size: 124416 },
    });
    const onDisk = fs.readFileSync(path.join(s.dirs.firmware, r.body.name));
    expect(onDisk.equals(read(HELLO_WORLD))).toBe(true);
    const m = await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } });
    expect(m.json().sha256).toBe(createHash("sha256").update(read(HELLO_WORLD)).digest("hex"));
    // The watcher sees the new file and agrees: same image, still marked as uploaded.
    await eventually(() => folderIngests.includes(r.body.name), 10_000);
    await s.running.ctx.watcher.idle();
    expect(s.running.ctx.catalog.file(r.body.name)).toMatchObject({ status: "valid", source: "upload" });
  });

  it("uploading the same image again changes nothing (200, not created)", async () => {
    const first = await uploadHello();
    const file = path.join(s.dirs.firmware, first.body.name);
    const before = fs.statSync(file).mtimeMs;
    const r = await agent().attach("file", HELLO_WORLD);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ name: first.body.name, created: false });
    expect(fs.statSync(file).mtimeMs).toBe(before);
  });

  it("a name already used by different bytes is a 409, and nothing is overwritten", async () => {
    await uploadHello();
    const r = await agent().field("name", "hello_world-v1.4.1-2-g0296947-dirty.bin").attach("file", HELLO_WORLD_S3);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe("name_taken");
    expect(fs.readFileSync(path.join(s.dirs.firmware, "hello_world-v1.4.1-2-g0296947-dirty.bin")).equals(read(HELLO_WORLD))).toBe(true);
  });

  it("an explicit name is used", async () => {
    const r = await agent().field("name", "s3-build.bin").attach("file", HELLO_WORLD_S3);
    expect(r.status).toBe(201);
    expect(fs.existsSync(path.join(s.dirs.firmware, "s3-build.bin"))).toBe(true);
  });

  it("a bootloader is refused with its reason (422), nothing is stored", async () => {
    const r = await agent().attach("file", BOOTLOADER);
    expect(r.status).toBe(422);
    expect(r.body.error).toMatchObject({ code: "invalid_image", reason: "bootloader" });
    expect(fs.readdirSync(path.join(s.dirs.data, "uploads"))).toEqual([]);
  });

  itWithEsphome("the 1.5 MB production image fits the 1.75 MiB slot", async () => {
    const ok = await agent().attach("file", ESPHOME);
    expect(ok.status).toBe(201);
    expect(ok.body.image).toMatchObject({ size: 1545008, project: "esp32-arduino-lib-builder" });
  });

  it("more than the slot is 413 and leaves no temp file", async () => {
    const tooBig = Buffer.concat([read(HELLO_WORLD), randomBytes(0x1c0000 - read(HELLO_WORLD).length + 1)]);
    const r = await agent().attach("file", tooBig, "big.bin");
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe("upload_too_large");
    await eventually(() => fs.readdirSync(path.join(s.dirs.data, "uploads")).length === 0);
  });
});
