// MQTT update notices against the machine's real Mosquitto: a staged rollout's stage, an advance, a pause, a
// resume and an abort each reach exactly the devices whose offer they change, as retained messages whose HMAC
// verifies under each device's own key and whose seq only grows; a plain subscriber reads the existing clients'
// JSON on /firmware_update/<MAC-ID>.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { MqttClient } from "mqtt";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { bucketOracle, Operator, writeMasterKey } from "../helpers/fleet";
import { collect, connectClient, describeWithMosquitto, macId, noticeMac, sharedBroker, type Notice } from "../helpers/mosquitto";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD
const V2 = "v4.1-dev-1935-g647cb62-dirty"; // HELLO_WORLD_IDF41
const SHA2 = sha(HELLO_WORLD_IDF41);

/** What a device does with a notice: its MAC under its own key, then the seq against the last one it accepted. */
function verifies(hmacKeyHex: string, n: Notice): boolean {
  return noticeMac(hmacKeyHex, n) === n.hmac;
}


describeWithMosquitto("MQTT update notices for a staged rollout", () => {
  let s: TestServer;
  let op: Operator;
  let sub: MqttClient;
  let seen: Map<string, string>;
  let broker: { url: string; stop(): Promise<void> };
  const run = randomBytes(4).toString("hex");
  const prefix = `t${run}`;
  // MACs unique to this run: the shared broker keeps retained messages of other runs.
  const macs = Array.from({ length: 40 }, (_, i) => `02:${run.slice(0, 2)}:${run.slice(2, 4)}:${run.slice(4, 6)}:${run.slice(6, 8)}:${(i + 1).toString(16).padStart(2, "0")}`);
  const topic = (id: string) => `${prefix}/ota/${macId(id)}/desired`;
  const keys = new Map<string, string>();
  let bucket: (rollout: string, device: string) => number;
  let rolloutId = "";
  const notice = (id: string): Notice | undefined => {
    const t = seen.get(topic(id));
    return t ? (JSON.parse(t) as Notice) : undefined;
  };

  beforeAll(async () => {
    const dirs = tempDirs();
    writeMasterKey(dirs);
    fs.mkdirSync(path.join(dirs.root, "broker"), { recursive: true });
    broker = await sharedBroker(path.join(dirs.root, "broker"));
    s = await startTestServer(
      { OTA_MQTT_URL: broker.url, OTA_MQTT_TOPIC: `${prefix}/ota/{device}/desired`, OTA_MQTT_COMPAT: "true", OTA_MQTT_CLIENT_ID: `ota-test-${run}` },
      dirs,
    );
    op = new Operator(s);
    bucket = bucketOracle(s.dirs.data);
    sub = await connectClient(broker.url);
    seen = collect(sub);
    await sub.subscribeAsync([`${prefix}/ota/+/desired`], { qos: 1 });
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2) && s.running.ctx.catalog.image(sha(HELLO_WORLD)));
    // A release without a rollout: from now on only releases decide, and this one offers nothing yet.
    await op.ok("POST", "/releases", { name: "r2", image: "app-v2.bin", notes: "the new one" });
    // The devices: provisioned, then each polls once, so the server knows their chip and version.
    for (const id of macs) {
      const b = await op.ok("POST", `/devices/${id}/provision`, {});
      keys.set(id, b.hmacKey);
      const r = await s.req("GET", "/firmware/manifest", {
        headers: { "X-API-Key": b.apiKey, "X-Device-Id": id, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": V1 },
      });
      expect(r.status).toBe(404);
    }
    await s.running.ctx.devices.flush();
  }, 60_000);

  afterAll(async () => {
    // Clear this run's retained messages from the shared broker.
    if (sub) {
      for (const id of macs) {
        await sub.publishAsync(topic(id), "", { retain: true, qos: 1 });
        await sub.publishAsync(`/firmware_update/${macId(id)}`, "", { retain: true, qos: 1 });
      }
      await sub.endAsync();
    }
    await s?.close();
    await broker?.stop();
  });

  it("sends nothing while nothing is offered", async () => {
    await s.running.notifier!.settled();
    await new Promise((r) => setTimeout(r, 300));
    expect(macs.filter((id) => notice(id))).toEqual([]);
  });

  it("a stage's devices get the offer with a valid HMAC; the others get nothing until the stage advances", async () => {
    const started = await op.ok("POST", "/releases/r2/rollout", { stages: [20, 60, 100], advance: "manual" });
    rolloutId = started.rollout.id;
    const inStage = (pct: number) => macs.filter((id) => bucket(rolloutId, id) < pct * 100);
    const first = inStage(20);
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThan(macs.length);
    await eventually(() => first.every((id) => notice(id)), 10_000);
    for (const id of first) {
      const n = notice(id)!;
      expect(n).toMatchObject({ v: 1, device_id: id, seq: 1, offer: { release: "r2", version: V2, sha256: SHA2, size: fs.statSync(HELLO_WORLD_IDF41).size } });
      expect(n.offer!.url).toBe(`${s.url}/firmware/sha256/${SHA2}.bin`);
      expect(verifies(keys.get(id)!, n)).toBe(true);
      // Under another device's key it does not verify: a device accepts only its own notices.
      expect(verifies(keys.get(macs.find((x) => x !== id)!)!, n)).toBe(false);
    }
    await s.running.notifier!.settled();
    await new Promise((r) => setTimeout(r, 300));
    expect(macs.filter((id) => notice(id) && !first.includes(id))).toEqual([]);

    await op.ok("POST", `/rollouts/${rolloutId}/advance`);
    const second = inStage(60);
    await eventually(() => second.every((id) => notice(id)), 10_000);
    // Those of the first stage heard nothing new: their offer did not change.
    for (const id of first) expect(notice(id)!.seq).toBe(1);
    for (const id of second.filter((x) => !first.includes(x))) expect(notice(id)).toMatchObject({ seq: 1, offer: { release: "r2" } });
    expect(macs.filter((id) => notice(id) && !second.includes(id))).toEqual([]);
  });

  it("a pause withdraws the offer from devices that had not taken it yet, a resume gives it back, an abort withdraws it; seq grows", async () => {
    const members = macs.filter((id) => bucket(rolloutId, id) < 6000);
    // One device polls now and becomes a member: a paused rollout keeps offering it to that one.
    const member = members[0]!;
    const pollAs = async (id: string) => {
      const b = await op.ok("POST", `/devices/${id}/provision`, {});
      keys.set(id, b.hmacKey);
      return s.req("GET", "/firmware/manifest", {
        headers: { "X-API-Key": b.apiKey, "X-Device-Id": id, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": V1 },
      });
    };
    // Provisioning again keeps the key (no rotate), so the notices stay verifiable.
    expect((await pollAs(member)).json().sha256).toBe(SHA2);
    await s.running.ctx.rollouts.flush();
    const before = new Map(members.map((id) => [id, notice(id)!.seq]));

    await op.ok("POST", `/rollouts/${rolloutId}/pause`, { reason: "looking" });
    const others = members.filter((id) => id !== member);
    await eventually(() => others.every((id) => notice(id)!.seq > before.get(id)!), 10_000);
    for (const id of others) {
      const n = notice(id)!;
      expect(n.offer).toBeNull();
      expect(n.seq).toBe(before.get(id)! + 1);
      expect(verifies(keys.get(id)!, n)).toBe(true);
    }
    await s.running.notifier!.settled();
    expect(notice(member)).toMatchObject({ seq: before.get(member), offer: { release: "r2" } });

    await op.ok("POST", `/rollouts/${rolloutId}/resume`);
    await eventually(() => others.every((id) => notice(id)!.offer !== null), 10_000);
    for (const id of others) expect(notice(id)!.seq).toBe(before.get(id)! + 2);

    await op.ok("POST", `/rollouts/${rolloutId}/abort`, { reason: "bad build" });
    await eventually(() => others.every((id) => notice(id)!.offer === null && notice(id)!.seq === before.get(id)! + 3), 10_000);
    for (const id of others) expect(verifies(keys.get(id)!, notice(id)!)).toBe(true);
  });

  it("a pin reaches the pinned device alone", async () => {
    const id = macs[macs.length - 1]!;
    const seqBefore = notice(id)?.seq ?? 0;
    await op.ok("PATCH", `/devices/${id}`, { pinned_release: "r2" });
    await eventually(() => notice(id)?.seq === seqBefore + 1, 10_000);
    expect(notice(id)).toMatchObject({ offer: { release: "r2", sha256: SHA2 } });
    expect(verifies(keys.get(id)!, notice(id)!)).toBe(true);
  });

  it("a device given new keys gets its notice again, signed with the new key", async () => {
    const id = macs[macs.length - 1]!;
    const old = notice(id)!;
    const b = await op.ok("POST", `/devices/${id}/provision`, { rotate: true });
    await eventually(() => notice(id)!.seq === old.seq + 1, 10_000);
    expect(notice(id)!.offer).toEqual(old.offer);
    expect(verifies(b.hmacKey, notice(id)!)).toBe(true);
    expect(verifies(keys.get(id)!, notice(id)!)).toBe(false);
  });

  it("a plain MQTT subscriber reads the existing clients' JSON on /firmware_update/<MAC-ID>", async () => {
    const id = macs[macs.length - 1]!; // pinned to r2 above
    const arduino = await connectClient(broker.url);
    try {
      const got = new Promise<string>((resolve) => arduino.on("message", (_t, p) => resolve(p.toString("utf8"))));
      await arduino.subscribeAsync(`/firmware_update/${macId(id)}`, { qos: 1 });
      const doc = JSON.parse(await got) as Record<string, unknown>;
      expect(doc).toMatchObject({ version: V2, sha256: SHA2, url: `${s.url}/firmware/sha256/${SHA2}.bin`, release: "r2", seq: notice(id)!.seq });
      expect(doc.signature).toBe(notice(id)!.hmac);
    } finally {
      await arduino.endAsync();
    }
  });
});
