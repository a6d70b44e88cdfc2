// What a release offers to whom: folder mode until the first release, then channels, targets (group, tag,
// device list), hardware compatibility from the image header, upgrade paths, pins and downgrades.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_C3, HELLO_WORLD_IDF41, HELLO_WORLD_S3 } from "../helpers/fixtures";
import { offered, Operator, poll } from "../helpers/fleet";
import { eventually, startTestServer, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";
const ESP32_V1 = sha(HELLO_WORLD);
const ESP32_V2 = sha(HELLO_WORLD_IDF41);
const C3 = sha(HELLO_WORLD_C3);
const S3 = sha(HELLO_WORLD_S3);

describe("release assignment", () => {
  let s: TestServer;
  let op: Operator;
  /** Creates a release and rolls it out to all of its target at once. */
  const publish = async (body: { name: string } & Record<string, unknown>) => {
    await op.ok("POST", "/releases", body);
    await op.ok("POST", `/releases/${body.name}/rollout`, { stages: [100] });
    await op.ok("POST", `/rollouts/${body.name}/advance`);
  };
  /** Makes the device known (first poll) and sets its registry fields. */
  const enrol = async (id: string, patch: Record<string, unknown>, chip = "esp32") => {
    await poll(s, id, { chip });
    return op.ok("PATCH", `/devices/${encodeURIComponent(id)}`, patch);
  };

  beforeAll(async () => {
    s = await startTestServer();
    op = new Operator(s);
    for (const f of [HELLO_WORLD, HELLO_WORLD_IDF41, HELLO_WORLD_C3, HELLO_WORLD_S3]) fs.copyFileSync(f, path.join(s.dirs.firmware, path.basename(f)));
    await eventually(() => [ESP32_V1, ESP32_V2, C3, S3].every((h) => s.running.ctx.catalog.image(h)));
  });
  afterAll(async () => s.close());

  it("until the first release exists, the newest image for the chip is offered (folder mode)", async () => {
    expect(await offered(s, "folder-1", { chip: "esp32c3" })).toBe(C3);
    const r = await poll(s, "folder-1", { chip: "esp32c3" });
    expect(r.json()).toMatchObject({ release: null, allow_downgrade: false });
  });

  it("from the first release on, only releases are offered: a release without a rollout reaches nobody", async () => {
    await op.ok("POST", "/releases", { name: "draft", image: ESP32_V1 });
    const r = await poll(s, "folder-1", { chip: "esp32" });
    expect(r.status).toBe(404);
    expect(r.json().error).toEqual({ code: "no_firmware", message: "no release is assigned to this device now" });
  });

  it("the chip must be known and match the image; the chip revision must be in the image's range", async () => {
    await publish({ name: "c3-v1", image: C3, channel: "hw" });
    await publish({ name: "s3-v1", image: S3, channel: "hw" });
    for (const id of ["c3-rev2", "c3-rev3", "c3-rev-unknown", "s3-a", "chipless"]) await enrol(id, { channel: "hw" }, id.startsWith("s3") ? "esp32s3" : "esp32c3");
    // The C3 image needs revision v0.3 to v1.99 (min_chip_rev_full 3, max 199 in its header).
    expect(await offered(s, "c3-rev2", { chip: "esp32c3", chipRev: 2 })).toBeNull();
    expect(await offered(s, "c3-rev3", { chip: "esp32c3", chipRev: 3 })).toBe(C3);
    expect(await offered(s, "c3-rev3", { chip: "esp32c3", chipRev: 200 })).toBeNull();
    expect(await offered(s, "c3-rev-unknown", { chip: "esp32c3" })).toBe(C3);
    expect(await offered(s, "s3-a", { chip: "esp32s3" })).toBe(S3);
    // The registry remembers the chip and revision from earlier polls.
    expect(await offered(s, "c3-rev2", {})).toBeNull();
    // A device whose chip nobody knows gets nothing, and is told why.
    await op.ok("PATCH", "/devices/chipless", { chip: "esp32c3" });
    expect(await offered(s, "chipless", {})).toBe(C3);
    const anon = await poll(s, null, {});
    expect(anon.json().error.message).toMatch(/chip is unknown.*X-Device-Chip/);
  });

  it("targets: a group, a tag or a list of device ids (MACs in any spelling); the rest of the channel is not offered it", async () => {
    await publish({ name: "lab-only", image: ESP32_V2, channel: "tgt", targets: { groups: ["lab"], tags: ["canary"], devices: ["AA-BB-CC-DD-EE-01"] } });
    await enrol("in-group", { channel: "tgt", group: "lab" });
    await enrol("tagged", { channel: "tgt", add_tags: ["canary", "north"] });
    await enrol("aa:bb:cc:dd:ee:01", { channel: "tgt" });
    await enrol("bystander", { channel: "tgt", group: "field", add_tags: ["north"] });
    for (const id of ["in-group", "tagged", "aa:bb:cc:dd:ee:01"]) expect(await offered(s, id, { chip: "esp32", version: V1 })).toBe(ESP32_V2);
    expect(await offered(s, "bystander", { chip: "esp32", version: V1 })).toBeNull();
    // Removing the tag takes the device out of the target.
    const d = await op.ok("PATCH", "/devices/tagged", { remove_tags: ["canary"] });
    expect(d.device.tags).toEqual(["north"]);
    expect(await offered(s, "tagged", { chip: "esp32", version: V1 })).toBeNull();
    const byTag = await op.ok("GET", "/devices?tag=north");
    expect(byTag.devices.map((x: any) => x.id).sort()).toEqual(["bystander", "tagged"]);
    const byGroup = await op.ok("GET", "/devices?group=lab");
    expect(byGroup.devices.map((x: any) => x.id)).toEqual(["in-group"]);
  });

  it("channels: a device follows one channel; releases elsewhere do not reach it", async () => {
    await publish({ name: "beta-1", image: ESP32_V2, channel: "beta" });
    await enrol("beta-dev", { channel: "beta" });
    await enrol("stable-dev", {});
    expect(await offered(s, "beta-dev", { chip: "esp32", version: V1 })).toBe(ESP32_V2);
    expect(await offered(s, "stable-dev", { chip: "esp32", version: V1 })).toBeNull();
    expect((await op.ok("GET", "/releases?channel=beta")).releases.map((r: any) => r.name)).toEqual(["beta-1"]);
  });

  it("upgrade paths: devices below min_version get the intermediate release first", async () => {
    await publish({ name: "step", image: ESP32_V1, channel: "path" });
    await publish({ name: "final", image: ESP32_V2, channel: "path", min_version: "1.2.0", via: "step" });
    for (const id of ["old", "current", "unknown-version"]) await enrol(id, { channel: "path" });
    expect(await offered(s, "old", { chip: "esp32", version: "v1.0.3" })).toBe(ESP32_V1);
    expect(await offered(s, "current", { chip: "esp32", version: V1 })).toBe(ESP32_V2);
    // Without a known version the server cannot tell: the safe path.
    expect(await offered(s, "unknown-version", { chip: "esp32" })).toBe(ESP32_V1);
    const refused = await op.call("POST", "/releases", { name: "bad-path", image: ESP32_V2, channel: "path", min_version: "5.0.0", via: "step" });
    expect(refused.status).toBe(422);
    expect(refused.json().error.code).toBe("via_below_min_version");
  });

  it("no release replaces a newer version unless it allows a downgrade, and the manifest says which", async () => {
    await publish({ name: "old-build", image: ESP32_V1, channel: "down" });
    await enrol("ahead", { channel: "down" });
    expect(await offered(s, "ahead", { chip: "esp32", version: V2 })).toBeNull();
    await publish({ name: "rollback-build", image: ESP32_V1, channel: "down", allow_downgrade: true, notes: "back to v1 after the radio bug" });
    const r = await poll(s, "ahead", { chip: "esp32", version: V2 });
    expect(r.json()).toMatchObject({ sha256: ESP32_V1, release: "rollback-build", allow_downgrade: true });
  });

  it("a pin overrides the channel and rollouts (even a release not rolled out), and unpinning restores them", async () => {
    await publish({ name: "pin-channel-1", image: ESP32_V2, channel: "pin-channel" });
    await op.ok("POST", "/releases", { name: "pinned-draft", image: ESP32_V2, channel: "nobody" });
    await enrol("pinned", { channel: "pin-channel", pinned_release: "pinned-draft" });
    const r = await poll(s, "pinned", { chip: "esp32", version: V1 });
    expect(r.json()).toMatchObject({ sha256: ESP32_V2, release: "pinned-draft" });
    await op.ok("PATCH", "/devices/pinned", { pinned_release: null });
    expect((await poll(s, "pinned", { chip: "esp32", version: V1 })).json().release).toBe("pin-channel-1");
    expect((await op.call("PATCH", "/devices/pinned", { pinned_release: "no-such" })).json().error.code).toBe("pinned_release_not_found");
  });

  it("a client that does not say who it is gets only releases finished for the whole channel", async () => {
    await op.ok("POST", "/releases", { name: "stable-draft", image: ESP32_V1 });
    expect(await offered(s, null, { chip: "esp32", version: V1 })).toBeNull(); // stable holds only drafts
    await publish({ name: "stable-2", image: ESP32_V2 });
    expect(await offered(s, null, { chip: "esp32", version: V1 })).toBe(ESP32_V2);
  });
});
