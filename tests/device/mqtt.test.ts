// Agents in the DeviceScript VM subscribed to their MQTT update notices, on a Mosquitto of the test's own (with
// persistence, so it can be stopped and started again), the server publishing to it, and devices that poll every
// 300 s of VM time: a rollout stage that takes devices in gets them downloading within seconds, a device outside
// it hears nothing and does not poll early, a forged notice and a replayed old one change nothing, with the broker
// down the devices still update at their next poll, and after the broker is back the retained notices are right.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { MqttClient } from "mqtt";
import type { AgentEvent, EmulatedDevice } from "../../device/host/device";
import type { SocketEvent } from "../../device/host/vm/vm";
import { CLOCK, HELLO_VERSION, makeDevice, reported, serverView, useFastClock } from "../helpers/device";
import { HELLO_WORLD } from "../helpers/fixtures";
import { bucketOracle, Operator, writeMasterKey } from "../helpers/fleet";
import { collect, connectClient, describeWithMosquitto, macId, noticeMac, OwnBroker, type Notice } from "../helpers/mosquitto";
import { eventually, freePort, startTestServer, tempDirs, type TestServer } from "../helpers/server";

jest.setTimeout(240_000);

/** The poll period, VM seconds (the server's OTA_POLL_INTERVAL, and the devices' `poll` from their bundles). */
const POLL_S = 300;
/** The shortest time between two scheduled polls, real milliseconds (jitter is 10 % either side). */
const MIN_GAP_MS = (POLL_S * 0.9 * 1000) / CLOCK - 1000;

const topicOf = (id: string) => `ota/${macId(id)}/desired`;

const signed = noticeMac;

/** A device with its HTTPS connections to the server recorded (real time of each open). */
interface Tracked {
  dev: EmulatedDevice;
  id: string;
  key: string;
  opens: number[];
  /** Sockets opened while another was still open (the VM has one): must stay empty. */
  superseded: string[];
}


describeWithMosquitto("device agent: MQTT update notices", () => {
  let s: TestServer;
  let broker: OwnBroker;
  let brokerUrl: string;
  let op: Operator;
  let rolloutId: string;
  let inStage: Tracked[];
  let outside: Tracked;
  const all: Tracked[] = [];
  let sub: MqttClient | null = null;
  let seen: Map<string, string>;
  /** Notices each device was sent, in order (from a subscriber of the test's own). */
  const sent = new Map<string, Notice[]>();

  const events = (t: Tracked, state: string, from = 0): AgentEvent[] => t.dev.events.slice(from).filter((e) => e.state === state);
  /** Connections to the server opened in [from, to] sooner after the previous one than a poll period allows. */
  const earlyPolls = (t: Tracked, from: number, to: number) =>
    t.opens.filter((at, i) => at >= from && at <= to && (i === 0 || at - t.opens[i - 1]! < MIN_GAP_MS));

  const subscribe = async () => {
    sub = await connectClient(brokerUrl, { clientId: `watcher-${randomBytes(4).toString("hex")}` });
    seen = collect(sub);
    // The server's notices: those signed with the device's key (the test publishes others below).
    sub.on("message", (_topic, payload) => {
      let n: Notice;
      try {
        n = JSON.parse(payload.toString()) as Notice;
      } catch {
        return;
      }
      const t = all.find((x) => x.id === n.device_id);
      if (!t || n.hmac !== signed(t.key, n)) return;
      const list = sent.get(n.device_id) ?? [];
      if (!list.some((x) => x.seq === n.seq)) list.push(n);
      sent.set(n.device_id, list);
    });
    await sub.subscribeAsync("ota/+/desired", { qos: 1 });
  };

  beforeAll(async () => {
    useFastClock();
    const dirs = tempDirs();
    writeMasterKey(dirs);
    const port = await freePort();
    brokerUrl = `mqtt://127.0.0.1:${port}`;
    const bdir = fs.mkdtempSync(path.join(dirs.root, "broker-"));
    broker = new OwnBroker(bdir, port, [`listener ${port} 127.0.0.1`, "allow_anonymous true", "persistence true", `persistence_location ${bdir}/`, ""].join("\n"));
    await broker.start();
    s = await startTestServer({ OTA_POLL_INTERVAL: String(POLL_S), OTA_MQTT_URL: brokerUrl, OTA_MQTT_CLIENT_ID: "ota-agent-test" }, dirs);
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"), 10_000);
    // A release whose first stage (0.01 %: bucket 0) holds none of the devices below: they are offered nothing.
    await op.ok("POST", "/releases", { name: "r1", image: "app.bin", notes: "" });
    rolloutId = (await op.ok("POST", "/releases/r1/rollout", { stages: [0.01, 50, 100], advance: "manual" })).rollout.id;
    const bucket = bucketOracle(dirs.data);
    const ins: string[] = [];
    let out = "";
    while (ins.length < 2 || !out) {
      const b = randomBytes(5).toString("hex");
      const id = `02:${b.slice(0, 2)}:${b.slice(2, 4)}:${b.slice(4, 6)}:${b.slice(6, 8)}:${b.slice(8, 10)}`;
      const k = bucket(rolloutId, id);
      if (k >= 1 && k < 5000 && ins.length < 2) ins.push(id);
      else if (k >= 5000 && !out) out = id;
    }
    await subscribe();
    const serverPort = Number(new URL(s.url).port);
    for (const id of [...ins, out]) {
      const dev = await makeDevice(s, { id, url: s.url, settings: { mqtt_url: brokerUrl } });
      const t: Tracked = { dev, id, key: dev.o.provisioning.hmacKey, opens: [], superseded: [] };
      dev.on("socket", (ev: SocketEvent) => {
        if (ev.kind === "open" && ev.port === serverPort) t.opens.push(Date.now());
        if (ev.kind === "superseded") t.superseded.push(`${ev.host}:${ev.port}`);
      });
      all.push(t);
    }
    inStage = all.slice(0, 2);
    outside = all[2]!;
  }, 60_000);

  afterAll(async () => {
    await Promise.all(all.map((t) => t.dev.powerOff()));
    await sub?.endAsync(true);
    await s?.close();
    await broker?.stop();
  });

  it("devices offered nothing poll once, then wait subscribed to their topics", async () => {
    await Promise.all(all.map((t) => t.dev.powerOn()));
    for (const t of all) {
      await reported(t.dev, "idle", 60_000);
      await t.dev.waitFor((e) => e.state === "mqtt_online", 30_000);
      expect(t.dev.events.find((e) => e.state === "mqtt_online")).toMatchObject({ topic: topicOf(t.id) });
    }
    expect(seen.size).toBe(0);
  });

  it("a stage that takes devices in has them downloading within seconds; a device outside hears nothing and does not poll early", async () => {
    const from = all.map((t) => t.dev.events.length);
    const t0 = Date.now();
    await op.ok("POST", `/rollouts/${rolloutId}/advance`);
    const started = await Promise.all(inStage.map((t, i) => t.dev.waitFor((e) => e.state === "downloading", 20_000, from[i])));
    for (const e of started) {
      // Far less than a poll period (300 s of VM time): the notice brought the poll forward.
      expect(((e.at - t0) * CLOCK) / 1000).toBeLessThan(60);
    }
    for (const [i, t] of inStage.entries()) {
      expect(events(t, "notice", from[i])).toEqual([expect.objectContaining({ seq: 1 })]);
      expect(events(t, "notice_ignored")).toEqual([]);
    }
    const t1 = Date.now();
    await Promise.all(inStage.map((t) => reported(t.dev, "confirmed", 120_000)));
    for (const t of inStage) expect((await serverView(s, t.id)).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });

    expect(seen.has(topicOf(outside.id))).toBe(false);
    expect(events(outside, "notice")).toEqual([]);
    expect(earlyPolls(outside, t0, t1)).toEqual([]);
    // Their notices: seq 1, the stage's offer, signed with each device's own key.
    for (const t of inStage) {
      const n = sent.get(t.id)!;
      expect(n).toEqual([expect.objectContaining({ seq: 1, offer: expect.objectContaining({ release: "r1", version: HELLO_VERSION }) })]);
      expect(n[0]!.hmac).toBe(signed(t.key, n[0]!));
    }
  });

  it("a forged notice and a replayed old one change nothing", async () => {
    const t = inStage[0]!;
    // Back from the update: subscribed again, and its last scheduled poll recent enough that none falls below.
    await t.dev.waitFor((e) => e.state === "mqtt_online" && e.boot === t.dev.boots, 30_000);
    const from = t.dev.events.length;
    const t0 = Date.now();
    const old = sent.get(t.id)![0]!;
    // Forged: a newer seq and another image, without the device's key.
    const forged: Notice = { ...old, seq: old.seq + 5, offer: { ...old.offer!, sha256: "ab".repeat(32) } };
    forged.hmac = signed(randomBytes(32).toString("hex"), forged);
    await sub!.publishAsync(topicOf(t.id), JSON.stringify(forged), { qos: 1 });
    await t.dev.waitFor((e) => e.state === "notice_ignored" && e.reason === "hmac_mismatch", 10_000, from);
    // Replayed: the genuine notice it already acted on, sent again (not as the broker's retained copy).
    await sub!.publishAsync(topicOf(t.id), JSON.stringify(old), { qos: 1 });
    await t.dev.waitFor((e) => e.state === "notice_ignored" && e.reason === "stale", 10_000, from);
    // A message that is not a notice at all.
    await sub!.publishAsync(topicOf(t.id), "hello", { qos: 1 });
    const last = await t.dev.waitFor((e) => e.state === "notice_ignored" && e.reason === "malformed", 10_000, from);
    expect(last).toMatchObject({ forged: 1, stale: 1, malformed: 1, last_seq: 1 });
    await new Promise((r) => setTimeout(r, 2000));
    expect(events(t, "notice", from)).toEqual([]);
    // No connection to the server at all: its scheduled poll is a period away.
    expect(t.opens.filter((at) => at >= t0)).toEqual([]);
  });

  it("with the broker down the devices still update at their next poll; once it is back the retained notices are right", async () => {
    await sub!.endAsync(true);
    sub = null;
    await broker.stop();
    const from = outside.dev.events.length;
    await outside.dev.waitFor((e) => e.state === "mqtt_offline", 30_000, from);
    const lastPoll = outside.opens[outside.opens.length - 1]!;
    await op.ok("POST", `/rollouts/${rolloutId}/advance`); // 100 %: the device outside the first stages too
    const dl = await outside.dev.waitFor((e) => e.state === "downloading", ((POLL_S * 1.1 * 1000) / CLOCK) + 20_000, from);
    // At its scheduled poll, not before: nothing could tell it sooner.
    expect(dl.at - lastPoll).toBeGreaterThanOrEqual(MIN_GAP_MS);
    expect(events(outside, "notice", from)).toEqual([]);
    await reported(outside.dev, "confirmed", 120_000, from);

    // The broker comes back: the server publishes the notice it could not send, the devices subscribe again.
    const marks = all.map((t) => t.dev.events.length);
    await broker.start();
    await subscribe();
    await eventually(() => seen.has(topicOf(outside.id)), 20_000);
    for (const t of all) {
      const n = JSON.parse(seen.get(topicOf(t.id))!) as Notice;
      expect(n).toMatchObject({ device_id: t.id, seq: 1, offer: { release: "r1", version: HELLO_VERSION } });
      expect(n.hmac).toBe(signed(t.key, n));
    }
    for (const [i, t] of all.entries()) await t.dev.waitFor((e) => e.state === "mqtt_online", 30_000, marks[i]);
    // The device that updated without it takes its notice once (one poll: up to date); the others had theirs.
    await outside.dev.waitFor((e) => e.state === "notice" && e.seq === 1, 10_000, marks[2]);
    await new Promise((r) => setTimeout(r, 2000));
    for (const [i, t] of inStage.entries()) expect(events(t, "notice", marks[i])).toEqual([]);
    expect(events(outside, "downloading", marks[2])).toEqual([]);
    expect((await serverView(s, outside.id)).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
    // MQTT and HTTPS took turns on the one socket throughout.
    for (const t of all) expect(t.superseded).toEqual([]);
  });
});
