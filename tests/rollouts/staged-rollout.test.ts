// A staged rollout over HTTPS to 200 polling devices (plus devices registered mid-rollout): the 10 % stage is
// exactly the deterministic subset whatever the poll order, failures past the threshold pause it with no
// operator, pause/resume/advance/abort each do what docs/operations.md promises.
import { createHash, createHmac, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { bucketOracle, inParallel, mac, offered, Operator, poll, report, shuffled, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD
const V2 = "v4.1-dev-1935-g647cb62-dirty"; // HELLO_WORLD_IDF41

describe("a staged rollout to 200 devices over HTTPS", () => {
  let s: TestServer;
  let op: Operator;
  let bucket: (rollout: string, device: string) => number;
  let rolloutId: string;
  const SHA1 = sha(HELLO_WORLD);
  const SHA2 = sha(HELLO_WORLD_IDF41);
  const fleet = Array.from({ length: 200 }, (_, i) => mac(i + 1));
  const asV1 = { chip: "esp32", version: V1 };
  const inStage = (pct: number) => (id: string) => bucket(rolloutId, id) < pct * 100;
  /** Which of these devices are offered release 2 (each polls once, in the given order). */
  const offeredV2 = async (ids: readonly string[], o = asV1) => {
    const got = await inParallel(ids, 16, async (id) => [id, await offered(s, id, o)] as const);
    for (const [id, h] of got) if (h !== SHA1 && h !== SHA2) throw new Error(`${id} was offered ${h}`);
    return new Set(got.filter(([, h]) => h === SHA2).map(([id]) => id));
  };
  const state = async () => (await op.ok("GET", `/rollouts/${rolloutId}`)).rollout.state as string;
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  /** The devices of the 10 % stage, from the bucket oracle (the same subset every run: fixed master key). */
  let stage10: string[];
  /** Failures of devices a-f of the stage: what the policy sees when the rollout pauses itself. */
  const finishStage10 = async () => {
    const [a, b, c, d, e, f] = stage10;
    for (const id of [a, b, c, d]) {
      await report(s, { device_id: id, status: "downloading", target_version: V2, bytes: 8192, total: 100000 });
      await report(s, { device_id: id, status: "rebooting", target_version: V2 });
      await report(s, { device_id: id, status: "confirmed", version: V2 });
    }
    await report(s, { device_id: e, status: "failed", target_version: V2, reason: "block_hash_mismatch" });
    await report(s, { device_id: f, status: "failed", sha256: SHA2, reason: "write_failed" });
  };
  /** The rollout's device counts once the reports sent so far have reached it. */
  const counted = async (want: Record<string, number>) =>
    eventually(async () => {
      const d = (await op.ok("GET", `/rollouts/${rolloutId}`)).devices;
      return Object.entries(want).every(([k, v]) => d[k] === v) && d;
    }, 5000);

  // Each test starts from the same point, on a server of its own: release 1 everywhere, release 2 in its 10 %
  // stage, no device polled yet.
  beforeEach(async () => {
    const dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    bucket = bucketOracle(s.dirs.data);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA1) && s.running.ctx.catalog.image(SHA2));
    // Release 1 is what the whole fleet runs: rolled out to everyone and completed.
    await op.ok("POST", "/releases", { name: "r1", image: "app-v1.bin", notes: "baseline" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await op.ok("POST", "/rollouts/r1/advance");
    await op.ok("POST", "/releases", { name: "r2", image: SHA2, notes: "the new one" });
    const started = await op.ok("POST", "/releases/r2/rollout", {
      stages: [10, 50, 100],
      advance: "manual",
      max_failure_rate: 25,
      failure_min_sample: 6,
      max_rollback_rate: 50,
    });
    rolloutId = started.rollout.id;
    expect(started.rollout).toMatchObject({ state: "running", stage: { index: 0, percent: 10 } });
    stage10 = sorted(fleet.filter(inStage(10)));
  }, 60_000);
  afterEach(async () => s?.close());

  it("the 10 % stage offers release 2 to exactly the devices whose bucket is below 1000, whatever the poll order", async () => {
    const expected = sorted(fleet.filter(inStage(10)));
    // The fixed master key makes the subset the same on every run; its size is a fair 10 % of 200.
    expect(expected.length).toBeGreaterThanOrEqual(10);
    expect(expected.length).toBeLessThanOrEqual(30);
    const first = await offeredV2(shuffled(fleet, 1));
    expect(sorted(first)).toEqual(expected);
    const again = await offeredV2([...fleet].reverse());
    expect(sorted(again)).toEqual(expected);
    const status = await op.ok("GET", `/rollouts/${rolloutId}`);
    expect(status.devices).toMatchObject({ total: expected.length, offered: expected.length });
    expect(status.stages[0]).toMatchObject({ percent: 10, offered: expected.length });
  });

  it("the manifest of an included device says which release it comes from, and that it may not downgrade", async () => {
    const r = await poll(s, stage10[0]!, asV1);
    expect(r.json()).toMatchObject({ sha256: SHA2, version: V2, release: "r2", allow_downgrade: false });
    const other = fleet.find((id) => !inStage(10)(id))!;
    expect((await poll(s, other, asV1)).json()).toMatchObject({ sha256: SHA1, release: "r1" });
  });

  it("a device registered mid-rollout is included per its bucket, with its own keys", async () => {
    const candidates = Array.from({ length: 400 }, (_, i) => mac(i + 1, "bb:00:00"));
    const inId = candidates.find(inStage(10))!;
    const outId = candidates.find((id) => !inStage(10)(id))!;
    for (const id of [inId, outId]) {
      const b = await op.ok("POST", `/devices/${id}/provision`, {});
      const nonce = randomBytes(12).toString("base64url");
      const r = await s.req("GET", "/firmware/manifest", {
        headers: { "X-API-Key": b.apiKey, "X-Device-Id": id, "X-Nonce": nonce, "X-Device-Chip": "esp32", "X-Device-Version": V1 },
      });
      expect(r.status).toBe(200);
      expect(r.headers["x-manifest-hmac"]).toBe(createHmac("sha256", Buffer.from(b.hmacKey, "hex")).update(r.body).digest("hex"));
      expect(r.json().sha256).toBe(id === inId ? SHA2 : SHA1);
    }
  });

  it("failure reports past the threshold pause the rollout with no operator action", async () => {
    await offeredV2(stage10);
    const [a, b, c, d, e, f] = stage10;
    for (const id of [a, b, c, d]) {
      await report(s, { device_id: id, status: "downloading", target_version: V2, bytes: 8192, total: 100000 });
      await report(s, { device_id: id, status: "rebooting", target_version: V2 });
      await report(s, { device_id: id, status: "confirmed", version: V2 });
    }
    await report(s, { device_id: e, status: "failed", target_version: V2, reason: "block_hash_mismatch" });
    // 1 failure in 5 finished devices: below the minimum sample of 6, nothing is judged yet (the rollout has
    // counted the failure, and judging follows each report at once).
    await counted({ succeeded: 4, failed: 1 });
    expect(await state()).toBe("running");
    await report(s, { device_id: f, status: "failed", sha256: SHA2, reason: "write_failed" });
    // 2 of 6 = 33 % > 25 %.
    await eventually(async () => (await state()) === "paused", 5000);
    const status = await op.ok("GET", `/rollouts/${rolloutId}`);
    expect(status.rollout.reason).toMatch(/failure rate 33.3% \(2 of 6 finished devices\) passed the 25% threshold/);
    expect(status.devices).toMatchObject({ succeeded: 4, failed: 2 });
    const audit = await op.ok("GET", `/audit?action=rollout.pause`);
    expect(audit.entries[0]).toMatchObject({ actor: "system", source: "system", target: rolloutId, details: { automatic: true } });
  });

  it("while paused, devices already offered the release keep it and no other device gets it", async () => {
    await offeredV2(stage10);
    await finishStage10();
    await eventually(async () => (await state()) === "paused", 5000);
    const offeredOnly = stage10[6]!; // polled, never reported
    expect(await offered(s, offeredOnly, asV1)).toBe(SHA2);
    const fresh = Array.from({ length: 400 }, (_, i) => mac(i + 1, "cc:00:00")).filter(inStage(10));
    expect(await offered(s, fresh[0]!, asV1)).toBe(SHA1);
    // After resuming, the same never-seen device joins (its bucket is in the stage).
    await op.ok("POST", `/rollouts/${rolloutId}/resume`);
    expect(await state()).toBe("running");
    expect(await offered(s, fresh[1]!, asV1)).toBe(SHA2);
  });

  it("resuming counts failures afresh, and advancing to 50 % offers it to exactly the buckets below 5000", async () => {
    await offeredV2(stage10);
    await finishStage10();
    await eventually(async () => (await state()) === "paused", 5000);
    await op.ok("POST", `/rollouts/${rolloutId}/resume`);
    // The two earlier failures no longer count: one more failure among new finishers does not pause.
    await report(s, { device_id: stage10[7]!, status: "failed", target_version: V2 });
    await counted({ failed: 3 });
    expect(await state()).toBe("running");
    await op.ok("POST", `/rollouts/${rolloutId}/advance`);
    const now = await op.ok("GET", `/rollouts/${rolloutId}`);
    expect(now.rollout.stage).toEqual({ index: 1, percent: 50 });
    // Devices that already finished keep what they have; the rest of the fleet is offered per bucket.
    const fresh = fleet.filter((id) => !stage10.includes(id));
    const got = await offeredV2(shuffled(fresh, 7));
    expect(sorted(got)).toEqual(sorted(fresh.filter(inStage(50))));
  });

  it("abort stops offering it, except to devices that have rebooted into it", async () => {
    await offeredV2(stage10);
    await finishStage10();
    const [confirmedA, confirmedB] = stage10;
    const rebooting = stage10[8]!;
    await report(s, { device_id: rebooting, status: "rebooting", target_version: V2 });
    await eventually(async () => (await op.ok("GET", `/rollouts/${rolloutId}`)).devices.rebooted === 1);
    const aborted = await op.ok("POST", `/rollouts/${rolloutId}/abort`, { reason: "bad radio calibration" });
    expect(aborted.rollout).toMatchObject({ state: "aborted", reason: "bad radio calibration" });

    // The whole fleet, polling as v1 devices: only the ones that rebooted into release 2 are still offered it.
    const still = await offeredV2(shuffled(fleet, 3));
    expect(sorted(still)).toEqual(sorted(stage10.slice(0, 4).concat(rebooting)));
    // A device running release 2 (it says so) is never told to go back, member or not.
    expect(await offered(s, confirmedA!, { chip: "esp32", version: V2 })).toBe(SHA2);
    expect(await offered(s, mac(999, "dd:00:00"), { chip: "esp32", version: V2 })).toBe(SHA2);
    expect(await offered(s, confirmedB!, { chip: "esp32" })).toBe(SHA2);
    // Nothing moves an aborted rollout again.
    expect((await op.call("POST", `/rollouts/${rolloutId}/resume`)).status).toBe(409);
    const audit = await op.ok("GET", `/audit?action=rollout.abort`);
    expect(audit.entries[0]).toMatchObject({ actor: "admin", role: "admin", source: "api", ip: "127.0.0.1", target: rolloutId });
    expect(audit.entries[0].details).toMatchObject({ reason: "bad radio calibration" });
  });
});
