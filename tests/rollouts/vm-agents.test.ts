// A staged rollout to real device agents: each runs in DeviceScript's VM on an emulated ESP32, starts from
// release 1's image (so it is up to date before the rollout), and talks to the real server through its own
// TLS relay, which records every request and what each manifest offered. The 10 % stage reaches exactly the
// agents whose bucket is in it, a device registered mid-rollout joins per its bucket, one failing agent
// pauses the rollout by itself, and an abort takes the offer back from a device still downloading while the
// ones that rebooted into the new image keep running it.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EmulatedDevice } from "../../device/host/device";
import { otaSlots } from "../../device/host/esp/bootloader";
import { foreignWrites, HELLO, HELLO_VERSION, makeDevice, reported, SERVER_ENV, serverView, useFastClock } from "../helpers/device";
import { HELLO_WORLD, HELLO_WORLD_IDF41, read } from "../helpers/fixtures";
import { bucketOracle, inParallel, mac, offered, Operator, rolloutIdOracle, shuffled, writeMasterKey } from "../helpers/fleet";
import { Relay, type RelayedRequest, type Tamper } from "../helpers/relay";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

jest.setTimeout(90_000);

const V1 = HELLO_VERSION; // release 1: hello_world, byte for byte the agents' factory image
const V2 = "v4.1-dev-1935-g647cb62-dirty"; // release 2: hello_world built with IDF 4.1
const IMAGE2 = read(HELLO_WORLD_IDF41);
const SHA1 = createHash("sha256").update(HELLO).digest("hex");
const SHA2 = createHash("sha256").update(IMAGE2).digest("hex");
const BLOCK = 8192;
const asV1 = { chip: "esp32", version: V1 };

/** What one manifest request got: its status and, for a 200, the image offered. */
interface Answer {
  at: number;
  status: number;
  sha256: string | null;
}

interface Agent {
  id: string;
  dev: EmulatedDevice;
  relay: Relay;
  manifests: Answer[];
  /** Extra tampering on this device's relay (after the manifest is recorded). */
  tamper: Tamper | null;
}

const isManifest = (r: RelayedRequest) => r.path.startsWith("/firmware/manifest");
/** Requests for release 2's bytes: its block list or any range of the image. */
const image2Requests = (a: Agent, since = 0) => a.relay.requests.filter((r) => r.at >= since && r.path.includes(SHA2));
const blockStart = (r: RelayedRequest) => (r.range ? Number(/^bytes=(\d+)-/.exec(r.range)?.[1]) : NaN);

describe("a staged rollout to device agents in the VM", () => {
  let s: TestServer;
  let op: Operator;
  let bucket: (rollout: string, device: string) => number;
  let rolloutId: string;
  const agents: Agent[] = [];
  const inStage = (id: string) => bucket(rolloutId, id) < 1000;

  // The fleet before the rollout: A and D in the first stage, C outside; B in it too, but off until later.
  // Registered mid-rollout: E in the first stage, F outside. 200 plain HTTPS pollers with the fleet key: the rest.
  let A: Agent, B: Agent, C: Agent, D: Agent, E: Agent, F: Agent;
  const pollers = Array.from({ length: 200 }, (_, i) => mac(i + 1, "dd:00:00"));
  let pollersInStage: string[];
  let strangers: string[];
  /** The pollers offered release 2 (each polls once, as a release 1 device, in the given order). */
  const offeredRelease2 = async (ids: readonly string[]) => {
    const got = await inParallel(ids, 8, async (id) => [id, await offered(s, id, asV1)] as const);
    for (const [id, h] of got) if (h !== SHA1 && h !== SHA2) throw new Error(`${id} was offered ${h}`);
    return got.filter(([, h]) => h === SHA2).map(([id]) => id).sort();
  };
  let startedAt = 0;

  const status = () => op.ok("GET", `/rollouts/${rolloutId}`);
  const state = async () => (await status()).rollout.state as string;

  async function agent(id: string): Promise<Agent> {
    const relay = await Relay.start(s);
    const a = { id, relay, manifests: [] as Answer[], tamper: null } as Agent;
    relay.tamper = (req, res) => {
      if (isManifest(req)) {
        a.manifests.push({ at: req.at, status: res.status, sha256: res.status === 200 ? (JSON.parse(res.body.toString()).sha256 as string) : null });
      }
      return a.tamper?.(req, res);
    };
    a.dev = await makeDevice(s, { id, url: relay.url, factoryVersion: V1 });
    agents.push(a);
    return a;
  }

  /** Waits until the device has asked for a manifest `n` more times since `since` (real time). */
  const polledSince = (a: Agent, since: number, n: number, timeoutMs = 30_000) =>
    eventually(() => a.manifests.filter((m) => m.at > since).length >= n, timeoutMs, 100);

  /** The device runs release 2 from ota_1, confirmed, and the slot holds exactly the bytes the server served. */
  function expectRunsRelease2(a: Agent): void {
    expect(a.dev.running!.partition.name).toBe("app1");
    expect(a.dev.running!.image.app.version).toBe(V2);
    expect(a.dev.otadataStates().find((e) => e.seq === 2)).toMatchObject({ state: "valid", valid: true });
    expect(foreignWrites(a.dev.ops, IMAGE2)).toEqual([]);
    const slot1 = otaSlots(a.dev.o.partitions)[1]!;
    expect(a.dev.flash.read(slot1.offset, IMAGE2.length).equals(IMAGE2)).toBe(true);
  }

  /** The device still runs release 1 from ota_0 and never began writing an image. */
  function expectUntouched(a: Agent): void {
    expect(a.dev.running!.partition.name).toBe("app0");
    expect(a.dev.running!.image.app.version).toBe(V1);
    expect(a.dev.ops).toEqual([]);
  }

  beforeAll(async () => {
    useFastClock();
    const dirs = tempDirs();
    writeMasterKey(dirs);
    s = await startTestServer(SERVER_ENV, dirs);
    op = new Operator(s);
    bucket = bucketOracle(s.dirs.data);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA1) && s.running.ctx.catalog.image(SHA2), 20_000);
    // Release 1 is what the fleet runs: rolled out to everyone. Release 2 waits for its rollout.
    await op.ok("POST", "/releases", { name: "r1", image: "app-v1.bin" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await op.ok("POST", "/rollouts/r1/advance");
    await op.ok("POST", "/releases", { name: "r2", image: SHA2, notes: "IDF 4.1 build" });

    rolloutId = rolloutIdOracle(s.dirs.data)("r2");
    const pick = (prefix: string, n: number, wanted: boolean) =>
      Array.from({ length: 500 }, (_, i) => mac(i + 1, prefix))
        .filter((id) => inStage(id) === wanted)
        .slice(0, n);
    const [a, b, d] = pick("aa:00:00", 3, true);
    const [c] = pick("aa:00:00", 1, false);
    [A, B, C, D] = await Promise.all([agent(a!), agent(b!), agent(c!), agent(d!)]);
    strangers = pick("cc:00:00", 3, true);
    pollersInStage = pollers.filter(inStage).sort();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.dev.powerOff()));
    await Promise.all(agents.map((a) => a.relay.close()));
    await s?.close();
  });

  it("before the rollout, the agents run release 1 and say they are up to date", async () => {
    await Promise.all([A, C, D].map((a) => a.dev.powerOn()));
    for (const a of [A, C, D]) {
      const e = await reported(a.dev, "up_to_date", 30_000);
      expect(e).toMatchObject({ version: V1, sha256: SHA1 });
      expect((await serverView(s, a.id)).device).toMatchObject({ state: "up_to_date", version: V1, chip: "esp32" });
    }
  });

  it("the 10 % stage offers release 2 to exactly the agents whose bucket is in it; the others never download it", async () => {
    // D loses its connection from block 4 on: it stays mid-download for as long as it is offered release 2.
    D.tamper = (req) => (req.path.includes(SHA2) && blockStart(req) >= 4 * BLOCK ? "cut" : undefined);
    startedAt = Date.now();
    const started = await op.ok("POST", "/releases/r2/rollout", {
      stages: [10, 50, 100],
      advance: "manual",
      failure_min_sample: 2,
      max_failure_rate: 25,
    });
    expect(started.rollout).toMatchObject({ id: rolloutId, state: "running", stage: { index: 0, percent: 10 } });
    expect([A, B, D].map((a) => inStage(a.id))).toEqual([true, true, true]);
    expect(inStage(C.id)).toBe(false);

    await reported(A.dev, "confirmed", 60_000);
    expectRunsRelease2(A);
    expect(A.dev.ops.filter((o) => o.op !== "write").map((o) => o.op)).toEqual(["begin", "end", "set_boot", "mark_valid"]);
    expect((await serverView(s, A.id)).device).toMatchObject({ state: "confirmed", version: V2 });

    // D got as far as the relay lets it, and wrote only the image's own bytes.
    await eventually(() => D.relay.requests.some((r) => r.path.includes(SHA2) && blockStart(r) === 4 * BLOCK), 30_000, 100);
    expect(D.manifests.filter((m) => m.at > startedAt).some((m) => m.sha256 === SHA2)).toBe(true);
    expect(D.dev.ops.map((o) => o.op)).not.toContain("end");
    expect(foreignWrites(D.dev.ops, IMAGE2)).toEqual([]);

    // C polled all along and was only ever told release 1 (or "not modified"); it never asked for a byte of
    // release 2 and never began an install.
    await polledSince(C, startedAt, 3);
    expect(C.manifests.every((m) => (m.status === 200 && m.sha256 === SHA1) || m.status === 304)).toBe(true);
    expect(image2Requests(C)).toEqual([]);
    expectUntouched(C);
    expect((await serverView(s, C.id)).device).toMatchObject({ version: V1 });

    // Plain pollers alongside: exactly those whose bucket is below 1000 are offered it, whatever the order.
    expect(pollersInStage.length).toBeGreaterThanOrEqual(2);
    expect(pollersInStage.length).toBeLessThan(pollers.length / 2);
    expect(await offeredRelease2(shuffled(pollers, 5))).toEqual(pollersInStage);
    expect(await offeredRelease2([...pollers].reverse())).toEqual(pollersInStage);

    // The rollout's members: A finished, D still installing, and the in-stage pollers offered it.
    const st = await status();
    expect(st.devices).toMatchObject({ total: 2 + pollersInStage.length, succeeded: 1, installing: 1, offered: pollersInStage.length, failed: 0 });
    expect(st.stages[0]).toMatchObject({ percent: 10, succeeded: 1, installing: 1 });
  });

  it("a device registered mid-rollout is included per its bucket", async () => {
    const pick = (wanted: boolean) => Array.from({ length: 500 }, (_, i) => mac(i + 1, "bb:00:00")).find((id) => inStage(id) === wanted)!;
    const [e, f] = [pick(true), pick(false)];
    for (const id of [e, f]) {
      expect((await op.call("GET", `/devices/${id}`)).status).toBe(404); // unknown until now
    }
    // Registered through the operator API while the rollout runs; the agents use those very keys.
    const bundles = await Promise.all([e, f].map((id) => op.ok("POST", `/devices/${id}/provision`, {})));
    [E, F] = await Promise.all([agent(e), agent(f)]);
    expect([E, F].map((a) => a.dev.o.provisioning.apiKey)).toEqual(bundles.map((b) => b.apiKey));
    const from = Date.now();
    await Promise.all([E, F].map((a) => a.dev.powerOn()));

    await reported(E.dev, "confirmed", 60_000);
    expectRunsRelease2(E);
    expect((await serverView(s, E.id)).device).toMatchObject({ state: "confirmed", version: V2 });

    await reported(F.dev, "up_to_date", 30_000);
    await polledSince(F, from, 3);
    expect(F.manifests.every((m) => (m.status === 200 && m.sha256 === SHA1) || m.status === 304)).toBe(true);
    expect(image2Requests(F)).toEqual([]);
    expectUntouched(F);

    const st = await status();
    expect(st.rollout.state).toBe("running");
    expect(st.devices).toMatchObject({ total: 3 + pollersInStage.length, succeeded: 2, installing: 1, failed: 0 });
  });

  it("an agent failing past the threshold pauses the rollout with no operator action", async () => {
    // Every copy of B's block 3 arrives with one bit flipped: B fetches it `retries` (4) times, writes none
    // of it, and reports the install failed. 1 failure of 3 finished devices = 33 % > 25 %.
    B.tamper = (req, res) => {
      if (req.path.includes(SHA2) && blockStart(req) === 3 * BLOCK) res.body[100] = res.body[100]! ^ 0x01;
    };
    await B.dev.powerOn();
    const failed = await reported(B.dev, "failed", 60_000);
    expect(failed).toMatchObject({ reason: "block_hash_mismatch", sha256: SHA2, target_version: V2 });
    expect(B.relay.requests.filter((r) => r.at <= failed.at && r.path.includes(SHA2) && blockStart(r) === 3 * BLOCK)).toHaveLength(4);
    expect(foreignWrites(B.dev.ops, IMAGE2)).toEqual([]);
    expect(B.dev.ops.map((o) => o.op)).not.toContain("end");

    await eventually(async () => (await state()) === "paused", 10_000, 100);
    const pausedAt = Date.now();
    const st = await status();
    expect(st.rollout.reason).toMatch(/^failure rate 33\.3% \(1 of 3 finished devices\) passed the 25% threshold/);
    const audit = await op.ok("GET", "/audit?action=rollout.pause");
    expect(audit.entries).toHaveLength(1); // nobody paused it by hand
    expect(audit.entries[0]).toMatchObject({ actor: "system", source: "system", target: rolloutId, details: { automatic: true, state: "paused" } });
    // B has made its point; it would only try again (it is a member) until its attempts are used up.
    await B.dev.powerOff();
    expect(B.dev.running!.partition.name).toBe("app0");

    // Paused: members (D mid-download, the pollers offered it) keep being offered release 2; a device not yet
    // offered it is not.
    await eventually(() => D.manifests.some((m) => m.at > pausedAt && m.status === 200), 30_000, 100);
    expect(D.manifests.filter((m) => m.at > pausedAt && m.status === 200).every((m) => m.sha256 === SHA2)).toBe(true);
    expect(await offeredRelease2(pollers)).toEqual(pollersInStage);
    expect(inStage(strangers[0]!)).toBe(true);
    expect(await offered(s, strangers[0]!, asV1)).toBe(SHA1);
    expect(await state()).toBe("paused");
  });

  it("an abort stops offering release 2, and the agents that rebooted into it keep running it", async () => {
    const opsBefore = new Map([A, E].map((a) => [a.id, a.dev.ops.length]));
    const eventsBefore = new Map([A, D, E].map((a) => [a.id, a.dev.events.length]));
    const aborted = await op.ok("POST", `/rollouts/${rolloutId}/abort`, { reason: "block errors in the field" });
    expect(aborted.rollout).toMatchObject({ state: "aborted", reason: "block errors in the field" });
    const abortedAt = Date.now();

    // D, which never finished downloading, is offered release 1 at its next poll: the image it runs.
    const upToDate = await reported(D.dev, "up_to_date", 30_000, eventsBefore.get(D.id));
    expect(upToDate).toMatchObject({ version: V1, sha256: SHA1 });
    await polledSince(D, abortedAt, 3);
    expect(D.manifests.filter((m) => m.at > abortedAt).every((m) => (m.status === 200 && m.sha256 === SHA1) || m.status === 304)).toBe(true);
    expect(image2Requests(D, upToDate.at)).toEqual([]);
    expect(D.dev.running!.partition.name).toBe("app0");
    expect(D.dev.ops.map((o) => o.op)).not.toContain("set_boot");
    expect((await serverView(s, D.id)).device).toMatchObject({ state: "up_to_date", version: V1 });

    // A and E keep polling and are told to keep what they run: nothing is written, nothing rolls back.
    for (const a of [A, E]) {
      await polledSince(a, abortedAt, 3);
      expect(a.manifests.filter((m) => m.at > abortedAt).every((m) => m.status === 304 || (m.status === 200 && m.sha256 === SHA2))).toBe(true);
      expect(a.dev.ops).toHaveLength(opsBefore.get(a.id)!);
      expect(a.dev.events.slice(eventsBefore.get(a.id)).map((e) => e.state)).not.toContain("rolled_back");
      expectRunsRelease2(a);
      expect((await serverView(s, a.id)).device).toMatchObject({ state: "confirmed", version: V2 });
    }

    // The pollers that were offered it, and a device in the first stage never offered it, are not offered it
    // now; one that runs it would keep it.
    expect(await offeredRelease2(pollers)).toEqual([]);
    expect(await offered(s, strangers[1]!, asV1)).toBe(SHA1);
    expect(await offered(s, strangers[2]!, { chip: "esp32", version: V2 })).toBe(SHA2);

    // Outside the stage nothing ever reached C or F.
    for (const a of [C, F]) {
      expect(image2Requests(a)).toEqual([]);
      expectUntouched(a);
    }
    const audit = await op.ok("GET", "/audit?action=rollout.abort");
    expect(audit.entries[0]).toMatchObject({ actor: "admin", source: "api", target: rolloutId, details: { reason: "block errors in the field" } });
    expect((await op.call("POST", `/rollouts/${rolloutId}/resume`)).status).toBe(409);
  });
});
