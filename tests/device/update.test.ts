// End to end: the real agent in the DeviceScript VM, on an emulated ESP32 starting from its factory image,
// against the real HTTPS server (CA pinned), through a TLS relay that can tamper with answers.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { otaSlots } from "../../device/host/esp/bootloader";
import type { BootEvent } from "../../device/host/device";
import { deriveImage } from "../../device/host/esp/factory-image";
import { deviceTestEnv, foreignWrites, HELLO, HELLO_VERSION, reported, serverView } from "../helpers/device";
import { eventually } from "../helpers/server";

jest.setTimeout(60_000);

const HELLO_SHA = createHash("sha256").update(HELLO).digest("hex");
const BLOCK = 8192;

describe("device agent: updates end to end", () => {
  const env = deviceTestEnv();

  it("takes a device from its factory image to the new one, confirmed, and the server shows it", async () => {
    const dev = await env.device({ id: "dev-update", url: env.relay.url });
    const from = env.relay.requests.length;
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);

    const view = await serverView(env.s, "dev-update");
    expect(view.device).toMatchObject({ state: "confirmed", version: HELLO_VERSION, chip: "esp32" });
    const statuses = view.reports.map((r) => r.status);
    expect(statuses.filter((x) => x !== "downloading")).toEqual(["verifying", "rebooting", "confirming", "confirmed"]);
    expect(view.reports.filter((r) => r.status === "downloading").map((r) => r.bytes)).toEqual([0, 65536]); // progress
    expect(view.reports.find((r) => r.status === "verifying")).toMatchObject({ target_version: HELLO_VERSION, sha256: HELLO_SHA });

    // Running the new image from ota_1, marked valid; the slot holds exactly the served bytes.
    expect(dev.running!.partition.name).toBe("app1");
    expect(dev.running!.image.app.version).toBe(HELLO_VERSION);
    expect(dev.otadataStates()).toEqual([
      { seq: 1, state: "undefined", valid: true },
      { seq: 2, state: "valid", valid: true },
    ]);
    const slot1 = otaSlots(dev.o.partitions)[1]!;
    expect(dev.flash.read(slot1.offset, HELLO.length).equals(HELLO)).toBe(true);

    // One Range request per 8 KiB block, in order, each block fetched once; writes pipelined as bulk frames.
    const blocks = env.relay.blockRequests(from).map((r) => r.range);
    expect(blocks).toEqual(Array.from({ length: 16 }, (_, i) => `bytes=${i * BLOCK}-${Math.min(HELLO.length, (i + 1) * BLOCK) - 1}`));
    const writes = dev.ops.filter((o) => o.op === "write");
    expect(writes.every((w) => w.bulk && w.length! <= 4096)).toBe(true);
    expect(foreignWrites(dev.ops, HELLO)).toEqual([]);
    expect(dev.ops.filter((o) => o.op !== "write").map((o) => o.op)).toEqual(["begin", "end", "set_boot", "mark_valid"]);
  });

  it("a block corrupted in transit is fetched again and never written", async () => {
    let corrupted = 0;
    env.relay.tamper = (req, res) => {
      if (req.range === `bytes=${3 * BLOCK}-${4 * BLOCK - 1}` && corrupted === 0) {
        corrupted++;
        res.body[100] = res.body[100]! ^ 0x01; // one bit, well inside the block
      }
    };
    const dev = await env.device({ id: "dev-corrupt", url: env.relay.url });
    const from = env.relay.requests.length;
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(corrupted).toBe(1);
    expect(env.relay.blockRequests(from).filter((r) => r.range === `bytes=${3 * BLOCK}-${4 * BLOCK - 1}`)).toHaveLength(2);
    expect(foreignWrites(dev.ops, HELLO)).toEqual([]);
    const mismatch = (await serverView(env.s, "dev-corrupt")).reports.find((r) => r.reason === "block_hash_mismatch");
    expect(mismatch).toMatchObject({ status: "downloading" });
    expect(mismatch.error).toMatch(/block 3 .*SHA-256/);
    expect((await serverView(env.s, "dev-corrupt")).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
  });

  it("a manifest with a wrong HMAC, or one replayed from an earlier request, is refused and reported", async () => {
    const isManifest = (p: string) => p.startsWith("/firmware/manifest");
    env.relay.tamper = (req, res) => {
      if (!isManifest(req.path) || res.status !== 200) return;
      const mac = res.headers["x-manifest-hmac"]!;
      res.headers["x-manifest-hmac"] = (mac[0] === "0" ? "1" : "0") + mac.slice(1);
    };
    const dev = await env.device({ id: "dev-hmac", url: env.relay.url });
    await dev.powerOn();
    const bad = await reported(dev, "rejected", 30_000);
    expect(bad).toMatchObject({ reason: "hmac_mismatch" });

    // Now a genuine manifest recorded once and played back for every later request.
    let recorded: { headers: Record<string, string>; body: Buffer } | null = null;
    env.relay.tamper = (req, res) => {
      if (!isManifest(req.path) || res.status !== 200) return;
      if (!recorded) {
        recorded = { headers: { ...res.headers }, body: Buffer.from(res.body) };
        res.status = 503; // the device never sees the original
        res.body = Buffer.from("{}");
        return;
      }
      res.headers = { ...recorded.headers };
      res.body = Buffer.from(recorded.body);
    };
    const replay = await dev.waitFor((e) => e.state === "rejected" && e.reason === "replayed_manifest" && e.reported === true, 30_000);
    expect(replay.error).toMatch(/nonce/);
    expect(dev.ops.filter((o) => o.op === "begin")).toEqual([]); // nothing was installed from either
    const rejected = (await serverView(env.s, "dev-hmac")).reports.filter((r) => r.status === "rejected").map((r) => r.reason);
    expect(rejected).toEqual(expect.arrayContaining(["hmac_mismatch", "replayed_manifest"]));

    // Genuine answers again: the update goes through.
    env.relay.tamper = null;
    await reported(dev, "confirmed", 60_000);
  });

  it("with 232-byte write commands, several in flight, a lost write is sent again and the image is intact", async () => {
    let dropped = 0;
    const dev = await env.device({
      id: "dev-commands",
      url: env.relay.url,
      bulkWriteMax: 0, // a writer that serves write commands only
      dropWrite: (offset) => offset === 5 * 232 && dropped++ === 0, // the sixth piece is lost once
    });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(dropped).toBeGreaterThanOrEqual(2); // lost once, then sent again
    const writes = dev.ops.filter((o) => o.op === "write");
    expect(writes.every((w) => !w.bulk && w.length! <= 232)).toBe(true);
    // Pieces after the lost one were already in flight: the writer refused them as gaps, then got them again.
    expect(writes.filter((w) => w.status === 2 /* gap */).length).toBeGreaterThan(0);
    expect(writes.filter((w) => w.status === 0).reduce((n, w) => n + w.length!, 0)).toBeGreaterThanOrEqual(HELLO.length);
    expect(foreignWrites(dev.ops, HELLO)).toEqual([]);
    expect(dev.flash.read(otaSlots(dev.o.partitions)[1]!.offset, HELLO.length).equals(HELLO)).toBe(true);
  });

  it("an answer from the writer too short to read is never taken for Ok: the install fails and the device keeps its image", async () => {
    // An empty set_boot answer decodes as status 0 (Ok); a write report cut to 8 bytes as a write of 0 bytes.
    const cases = [
      { id: "dev-short-set-boot", op: "set_boot", bytes: 0, error: "the writer answered command 132 with 0 bytes, at least 1 expected" },
      { id: "dev-short-write", op: "write", bytes: 8, error: "the writer answered a write with 8 bytes, 9 expected" },
    ] as const;
    for (const c of cases) {
      const dev = await env.device({
        id: c.id,
        url: env.relay.url,
        mangleAnswer: (op, payload) => (op === c.op ? payload.subarray(0, c.bytes) : payload),
      });
      await dev.powerOn();
      await reported(dev, "failed", 60_000);
      const view = await serverView(env.s, c.id);
      expect(view.reports.find((r) => r.status === "failed")).toMatchObject({ reason: "write_failed", error: c.error });
      expect(view.reports.map((r) => r.status)).not.toContain("rebooting");
      expect(dev.running!.image.app.version).toBe("v1.0.0");
      await dev.powerOff();
    }
  });

  it("a new image the writer does not mark valid is never reported confirmed: it is rolled back, and the next try confirms", async () => {
    let refused = 0; // the first install's two mark_valid commands fail; after that the writer works again
    const dev = await env.device({
      id: "dev-mark-refused",
      url: env.relay.url,
      failOp: (op) => (op === "mark_valid" && refused < 2 ? (refused++, 7) /* FlashError */ : undefined),
    });
    const boots: BootEvent[] = [];
    dev.on("boot", (b: BootEvent) => boots.push(b));
    await dev.powerOn();
    const rb = await reported(dev, "rolled_back", 60_000);
    expect(rb).toMatchObject({ reason: "not_confirmed", version: "v1.0.0", target_version: HELLO_VERSION });
    expect(dev.ops.filter((o) => o.op === "mark_valid").map((o) => o.status)).toEqual([7, 7]); // tried twice
    expect(dev.ops.find((o) => o.op === "mark_invalid")).toMatchObject({ status: 0 });
    expect(boots.slice(0, 3).map((b) => [b.slot, b.state])).toEqual([
      ["app0", "undefined"],
      ["app1", "pending_verify"],
      ["app0", "undefined"],
    ]);
    const reports = (await serverView(env.s, "dev-mark-refused")).reports;
    const error = `${HELLO_VERSION} passed its health check but the writer did not mark it valid; v1.0.0 runs again`;
    expect(reports.find((r) => r.status === "rolled_back")).toMatchObject({ reason: "not_confirmed", error });
    // The event line is shortened to fit the console's line buffer; the report keeps the whole error.
    expect(error.startsWith(String(rb.error).replace(/\.\.\.$/, ""))).toBe(true);
    let statuses = reports.map((r) => r.status);
    expect(statuses).not.toContain("confirmed");
    expect(statuses.indexOf("rolled_back")).toBeGreaterThan(statuses.indexOf("confirming"));

    // The writer works again: the next try installs and confirms.
    await reported(dev, "confirmed", 60_000);
    expect(dev.running!.image.app.version).toBe(HELLO_VERSION);
    expect(dev.otadataStates().map((e) => e.state)).toContain("valid");
    statuses = (await serverView(env.s, "dev-mark-refused")).reports.map((r) => r.status);
    expect(statuses.filter((s) => s === "confirmed")).toHaveLength(1);
    await dev.powerOff();
  }, 150_000);

  it("with no previous image to go back to, a new image the writer does not mark valid is kept and the install reported failed", async () => {
    const dev = await env.device({
      id: "dev-mark-kept",
      url: env.relay.url,
      failOp: (op) => (op === "mark_valid" ? 7 /* FlashError */ : op === "mark_invalid" ? 9 /* RollbackImpossible */ : undefined),
    });
    await dev.powerOn();
    await reported(dev, "failed", 60_000);
    const reports = (await serverView(env.s, "dev-mark-kept")).reports;
    expect(reports.find((r) => r.status === "failed")).toMatchObject({
      reason: "write_failed",
      version: HELLO_VERSION,
      error: "the writer did not mark the image valid but there is no previous image to roll back to",
    });
    expect(reports.map((r) => r.status)).not.toContain("confirmed");
    expect(dev.ops.filter((o) => o.op === "mark_invalid").map((o) => o.status)).toEqual([9]);
    expect(dev.ops.filter((o) => o.op === "mark_valid").map((o) => o.status)).toEqual([7, 7, 7, 7]); // twice before, twice after
    expect(dev.running!.image.app.version).toBe(HELLO_VERSION); // kept rather than bricked
    await dev.powerOff();
  });

  it("a mark_valid whose answer is lost after it took is confirmed from the writer's image_state, not rolled back", async () => {
    const dev = await env.device({
      id: "dev-mark-unread",
      url: env.relay.url,
      mangleAnswer: (op, payload) => (op === "mark_valid" ? payload.subarray(0, 0) : payload),
    });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(dev.ops.filter((o) => o.op === "mark_valid").map((o) => o.status)).toEqual([0]);
    expect(dev.ops.find((o) => o.op === "mark_invalid")).toBeUndefined();
    expect(dev.running!.partition.name).toBe("app1");
    expect((await serverView(env.s, "dev-mark-unread")).reports.map((r) => r.status)).not.toContain("rolled_back");
    await dev.powerOff();
  });

  it("refuses a downgrade by version order, and by secure_version", async () => {
    const newer = await env.device({ id: "dev-newer", url: env.relay.url, factoryVersion: "v9.0.0" });
    await newer.powerOn();
    const r1 = await reported(newer, "rejected", 30_000);
    expect(r1).toMatchObject({ reason: "downgrade_refused", version: "v9.0.0", target_version: HELLO_VERSION });
    expect(r1.error).toMatch(/older than the running v9\.0\.0/);

    const secure = await env.device({ id: "dev-secure", url: env.relay.url, factoryVersion: "v1.0.0", factorySecureVersion: 1 });
    await secure.powerOn();
    const r2 = await reported(secure, "rejected", 30_000);
    expect(r2).toMatchObject({ reason: "downgrade_refused" });
    expect(r2.error).toMatch(/secure_version 0 is lower than the running 1/);

    for (const d of [newer, secure]) {
      expect(d.ops.filter((o) => o.op === "begin")).toEqual([]);
      expect(d.running!.partition.name).toBe("app0");
    }
    expect((await serverView(env.s, "dev-newer")).device).toMatchObject({ state: "rejected", version: "v9.0.0" });
  });
});

describe("device agent: settings that fill a settings packet (31-character versions, a long server URL)", () => {
  const env = deviceTestEnv();

  // The checkpoint (image SHA-256, version, sizes, stage) is one setting; read back, it must fit one Jacdac
  // packet, or the runtime panics at every read of it.
  it("updates from one to another, through every checkpoint stage, and confirms", async () => {
    const from = "v1.0.0-rc.1+build.0123456789abc";
    const to = "v1.0.1-rc.1+build.0123456789abc";
    expect([from.length, to.length]).toEqual([31, 31]);
    const image = deriveImage(HELLO, { version: to });
    const sha = createHash("sha256").update(image).digest("hex");
    fs.writeFileSync(path.join(env.s.dirs.firmware, "long-version.bin"), image);
    await eventually(async () => (await env.s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": env.s.creds.deviceApiKey } })).json().sha256 === sha, 10_000);

    const dev = await env.device({ id: "dev-long-version", url: env.relay.url, factoryVersion: from });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(dev.running!.partition.name).toBe("app1");
    expect(dev.running!.image.app.version).toBe(to);
    expect(foreignWrites(dev.ops, image)).toEqual([]);
    expect((await serverView(env.s, "dev-long-version")).device).toMatchObject({ state: "confirmed", version: to });
  });

  it("refuses to provision a setting the agent could not read back (a server URL too long for one packet)", async () => {
    // name + NUL + JSON value: 10 + 1 + 2 + 219 = 232 fits; one character more does not.
    const url = (n: number) => `${env.relay.url}/${"p".repeat(n - env.relay.url.length - 1)}`;
    const fits = await env.device({ id: "dev-url-fits", url: url(219) });
    const prefix = new URL(url(219)).pathname;
    await fits.powerOn();
    // It read the setting back and used it: its check-in reached the relay under that long path.
    await eventually(() => env.relay.requests.some((r) => r.path.startsWith(`${prefix}/firmware/manifest`)), 30_000);
    const tooLong = await env.device({ id: "dev-url-long", url: url(220) });
    await expect(tooLong.powerOn()).rejects.toThrow(/setting server_url would take 233 bytes .* at most 232/);
  });
});
