// Update notices across broker and server restarts, on a Mosquitto of the test's own (with persistence): a change
// made while the broker is down is stored as pending and published once it is back, so the retained notices are
// right after the restart; the sequence numbers carry on across a server restart; publishing keeps to the rate.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { HELLO_WORLD } from "../helpers/fixtures";
import { Operator, writeMasterKey } from "../helpers/fleet";
import { connectClient, describeWithMosquitto, OwnBroker } from "../helpers/mosquitto";
import { type Dirs, eventually, freePort, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const V1 = "v1.4.1-2-g0296947-dirty"; // HELLO_WORLD

interface Notice {
  device_id: string;
  seq: number;
  offer: { release: string | null } | null;
}


describeWithMosquitto("update notices across broker and server restarts", () => {
  let s: TestServer;
  let dirs: Dirs;
  let broker: OwnBroker;
  let url: string;
  const RATE = 10;
  const ids = Array.from({ length: 20 }, (_, i) => `dev-${String(i).padStart(2, "0")}`);
  const env = () => ({ OTA_MQTT_URL: url, OTA_MQTT_RATE: String(RATE), OTA_MQTT_CLIENT_ID: "ota-restart-test" });

  /** What a client connecting now finds retained on every device's topic. */
  const retained = async (): Promise<Map<string, Notice>> => {
    const c = await connectClient(url, { clientId: `reader-${randomBytes(4).toString("hex")}` });
    const got = new Map<string, Notice>();
    c.on("message", (t, p) => {
      if (p.length > 0) got.set(t.split("/")[1]!, JSON.parse(p.toString()) as Notice);
    });
    await c.subscribeAsync("ota/+/desired", { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    await c.endAsync();
    return got;
  };
  const pending = async () =>
    Number((await s.running.ctx.store.db.selectFrom("mqtt_notices").select((eb) => eb.fn.countAll().as("n")).where("pending", "=", 1).executeTakeFirstOrThrow()).n);

  beforeAll(async () => {
    const port = await freePort();
    url = `mqtt://127.0.0.1:${port}`;
    dirs = tempDirs();
    writeMasterKey(dirs);
    const bdir = fs.mkdtempSync(path.join(dirs.root, "broker-"));
    broker = new OwnBroker(
      bdir,
      port,
      [`listener ${port} 127.0.0.1`, "allow_anonymous true", "persistence true", `persistence_location ${bdir}/`, "log_dest stdout", ""].join("\n"),
    );
    await broker.start();
    s = await startTestServer(env(), dirs);
    const op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    await op.ok("POST", "/releases", { name: "r1", image: "app.bin", notes: "" });
    // The devices poll once with the fleet key: the server learns their chip and version.
    for (const id of ids) {
      const r = await s.req("GET", "/firmware/manifest", {
        headers: { "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": id, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": V1 },
      });
      expect(r.status).toBe(404);
    }
    await s.running.ctx.devices.flush();
  }, 60_000);

  afterAll(async () => {
    await s?.close();
    await broker?.stop();
  });

  it("publishes a rollout's notices at the configured rate", async () => {
    const c = await connectClient(url, { clientId: "timer" });
    const at = new Map<string, number>();
    c.on("message", (t) => at.set(t, Date.now()));
    await c.subscribeAsync("ota/+/desired", { qos: 1 });
    await new Operator(s).ok("POST", "/releases/r1/rollout", { stages: [100] });
    await eventually(() => at.size === ids.length, 15_000);
    await c.endAsync();
    const times = [...at.values()].sort((a, b) => a - b);
    // 20 messages at 10 a second: about 1.9 s from the first to the last.
    expect(times[times.length - 1]! - times[0]!).toBeGreaterThanOrEqual(((ids.length - 1) * 1000) / RATE - 300);
    const got = await retained();
    expect([...got.keys()].sort()).toEqual(ids);
    for (const n of got.values()) expect(n).toMatchObject({ seq: 1, offer: { release: "r1" } });
    await eventually(async () => (await pending()) === 0);
  }, 30_000);

  it("a change made while the broker is down is published once it is back, and the retained notices are right", async () => {
    await broker.stop();
    await eventually(() => s.logs.some((l) => l.includes('"msg":"mqtt connection lost; reconnecting"')));
    await new Operator(s).ok("POST", "/rollouts/r1/pause", { reason: "broker test" });
    await s.running.notifier!.settled();
    expect(await pending()).toBe(ids.length);

    await broker.start();
    await eventually(async () => (await pending()) === 0, 15_000);
    const got = await retained();
    expect([...got.keys()].sort()).toEqual(ids);
    for (const n of got.values()) expect(n).toMatchObject({ seq: 2, offer: null });

    // And once more without a change: the broker's persistence keeps them.
    await broker.stop();
    await broker.start();
    const again = await retained();
    for (const n of again.values()) expect(n).toMatchObject({ seq: 2, offer: null });
  }, 30_000);

  it("the sequence numbers carry on after the server restarts", async () => {
    await s.close({ keepDirs: true });
    s = await startTestServer(env(), dirs);
    await new Operator(s).ok("POST", "/rollouts/r1/resume");
    await eventually(async () => {
      const got = await retained();
      return ids.every((id) => got.get(id)?.seq === 3 && got.get(id)?.offer?.release === "r1");
    }, 15_000, 200);
  }, 30_000);
});
