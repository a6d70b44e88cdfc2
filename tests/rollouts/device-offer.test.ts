// What a device would be offered and why (GET /api/v1/devices/{id}/offer): the newest image for its chip before
// any release exists; then each release judged in order, with the reason it is not the device's (not targeted,
// wrong hardware, not in its rollout), and the winner; asking writes no rollout membership, polling does.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { offered, Operator, poll, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty";
const SHA1 = sha(HELLO_WORLD);
const SHA2 = sha(HELLO_WORLD_IDF41);

describe("a device's offer, explained", () => {
  let s: TestServer;
  let op: Operator;
  const why = (id: string) => op.ok("GET", `/devices/${encodeURIComponent(id)}/offer`);

  beforeAll(async () => {
    const dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "v1.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA1));
    await poll(s, "dev-1", { chip: "esp32", version: V1 });
    await poll(s, "dev-c3", { chip: "esp32c3", version: V1 });
  });
  afterAll(async () => s.close());

  it("before any release: the newest image for the device's chip, or why there is none", async () => {
    expect(await why("dev-1")).toEqual({ mode: "latest", offer: { sha256: SHA1, version: V1, release: null }, pinned: null, candidates: [], message: null });
    expect(await why("dev-c3")).toMatchObject({ mode: "latest", offer: null, message: expect.stringContaining("no firmware for esp32c3") });
    expect((await op.call("GET", "/devices/nobody/offer")).status).toBe(404);
  });

  it("with releases: each one judged in order up to the winner, and asking enrols no one", async () => {
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2));
    await op.ok("POST", "/releases", { name: "r1", image: "v1.bin" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await op.ok("POST", "/releases", { name: "r2", image: "v2.bin", targets: { groups: ["lab"] } });
    const r1 = { release: "r1", installs: "r1", refusal: null };
    expect(await why("dev-1")).toEqual({
      mode: "releases",
      offer: { sha256: SHA1, version: V1, release: "r1" },
      pinned: null,
      candidates: [{ release: "r2", installs: null, refusal: "not_targeted" }, r1],
      message: null,
    });
    for (const id of ["dev-1", "dev-c3"]) await op.ok("PATCH", `/devices/${id}`, { group: "lab" });
    expect((await why("dev-1")).candidates[0]).toEqual({ release: "r2", installs: null, refusal: "not_in_rollout" });
    const c3 = await why("dev-c3");
    expect(c3.candidates.map((c: any) => c.refusal)).toEqual(["hardware", "hardware"]);
    expect(c3).toMatchObject({ offer: null, message: "no release is assigned to this device now" });

    await op.ok("POST", "/releases/r2/rollout", { stages: [100] });
    expect(await why("dev-1")).toMatchObject({ offer: { sha256: SHA2, release: "r2" }, candidates: [{ release: "r2", installs: "r2", refusal: null }] });
    expect((await op.ok("GET", "/rollouts/r2")).devices.total).toBe(0);
    expect(await offered(s, "dev-1", { chip: "esp32", version: V1 })).toBe(SHA2);
    await eventually(async () => (await op.ok("GET", "/rollouts/r2")).devices.total === 1);

    // A pin alone is judged.
    await op.ok("PATCH", "/devices/dev-1", { pinned_release: "r1" });
    expect(await why("dev-1")).toMatchObject({ pinned: "r1", offer: { sha256: SHA1, release: "r1" }, candidates: [r1] });
  });
});
