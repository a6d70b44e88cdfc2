// The shipped Mosquitto configuration (docs/mosquitto/) on a broker of the test's own, over TLS with the server's
// own CA and certificate: a device's credentials (from its provisioning bundle, in the password file
// `ota mqtt-passwords` writes) read its own topics and no other device's, a wrong password and an anonymous client
// are refused, and the server's user publishes every device's notice over mqtts.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { MqttClient } from "mqtt";
import { HELLO_WORLD } from "../helpers/fixtures";
import { Operator } from "../helpers/fleet";
import { connectClient, describeWithMosquitto, MOSQUITTO_PASSWD, OwnBroker, SHIPPED, shippedConfig } from "../helpers/mosquitto";
import { freePort } from "../helpers/server";
import { runOta } from "../helpers/ota-cli";
import { eventually, startTestServer, testEnv, type TestServer } from "../helpers/server";
import { spawnSync } from "node:child_process";


describeWithMosquitto("the shipped Mosquitto configuration", () => {
  let s: TestServer;
  let broker: OwnBroker;
  let url: string;
  const serverPassword = randomBytes(16).toString("base64url");
  const A = "02:aa:00:00:00:01";
  const B = "02:aa:00:00:00:02";
  const bundles: Record<string, { mqttUser: string; mqttPassword: string }> = {};
  const clients: MqttClient[] = [];
  const connect = async (user: string | undefined, password: string | undefined) => {
    const c = await connectClient(url, { ca: s.ca, username: user, password, clientId: `t-${randomBytes(4).toString("hex")}` });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    const port = await freePort();
    url = `mqtts://localhost:${port}`;
    s = await startTestServer({ OTA_MQTT_URL: url, OTA_MQTT_USERNAME: "ota-server", OTA_MQTT_PASSWORD: serverPassword });
    const op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app.bin"));
    await eventually(() => s.running.ctx.catalog.latest("esp32"));
    for (const id of [A, B]) bundles[id] = await op.ok("POST", `/devices/${id}/provision`, {});

    // The password file, as operations.md says: `ota mqtt-passwords`, hashed by mosquitto_passwd -U, plus the server's user.
    const dir = fs.mkdtempSync(path.join(s.dirs.root, "broker-"));
    const passwd = path.join(dir, "passwd");
    const r = await runOta({ ...process.env, ...testEnv(s.dirs) }, "mqtt-passwords", "-o", passwd);
    expect(r.status).toBe(0);
    expect(fs.readFileSync(passwd, "utf8")).toBe(
      [A, B].map((id) => `${bundles[id]!.mqttUser}:${bundles[id]!.mqttPassword}\n`).join(""),
    );
    expect(spawnSync(MOSQUITTO_PASSWD, ["-U", passwd]).status).toBe(0);
    expect(spawnSync(MOSQUITTO_PASSWD, ["-b", passwd, "ota-server", serverPassword]).status).toBe(0);
    fs.copyFileSync(path.join(SHIPPED, "acl"), path.join(dir, "acl"));
    broker = new OwnBroker(dir, port, shippedConfig(dir, s.dirs.certs, port));
    await broker.start();
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) await c.endAsync(true);
    await s?.close();
    await broker?.stop();
  });

  it("the server's user connects over TLS and publishes: device A reads its own notice", async () => {
    expect(bundles[A]!.mqttUser).toBe("02AA00000001");
    // The devices have no chip yet: tell the server one, which changes what they are offered.
    const op = new Operator(s);
    await op.ok("PATCH", `/devices/${A}`, { chip: "esp32" });
    await op.ok("PATCH", `/devices/${B}`, { chip: "esp32" });
    const a = await connect(bundles[A]!.mqttUser, bundles[A]!.mqttPassword);
    const got = new Map<string, string>();
    a.on("message", (t, p) => got.set(t, p.toString()));
    await a.subscribeAsync("ota/02AA00000001/desired", { qos: 1 });
    await eventually(() => got.get("ota/02AA00000001/desired"), 15_000);
    expect(JSON.parse(got.get("ota/02AA00000001/desired")!)).toMatchObject({ device_id: A, seq: 1, offer: { version: expect.any(String) } });
    expect(s.logs.join("")).toContain('"msg":"mqtt connected"');
    expect(s.logs.join("")).not.toContain(serverPassword);
  });

  it("device A cannot read device B's topic, nor write its own", async () => {
    const a = await connect(bundles[A]!.mqttUser, bundles[A]!.mqttPassword);
    const got: string[] = [];
    a.on("message", (t) => got.push(t));
    // MQTT 3.1.1: Mosquitto grants the subscription but delivers nothing the ACL forbids.
    await a.subscribeAsync(["ota/02AA00000002/desired", "/firmware_update/02AA00000002", "ota/+/desired"], { qos: 1 });
    // B's notice is there (retained): B itself reads it.
    const b = await connect(bundles[B]!.mqttUser, bundles[B]!.mqttPassword);
    const bGot: string[] = [];
    b.on("message", (t) => bGot.push(t));
    await b.subscribeAsync("ota/02AA00000002/desired", { qos: 1 });
    await eventually(() => bGot.length > 0, 10_000);
    // A writes a forged notice to its own topic: dropped by the broker.
    await a.publishAsync("ota/02AA00000001/desired", "forged", { qos: 1, retain: true });
    await new Promise((r) => setTimeout(r, 500));
    expect(got.filter((t) => t !== "ota/02AA00000001/desired")).toEqual([]);
    const check = await connect(bundles[A]!.mqttUser, bundles[A]!.mqttPassword);
    const mine: string[] = [];
    check.on("message", (_t, p) => mine.push(p.toString()));
    await check.subscribeAsync("ota/02AA00000001/desired", { qos: 1 });
    await eventually(() => mine.length > 0, 5000);
    expect(mine[0]).not.toBe("forged");
  });

  it("a wrong password, another device's password and an anonymous client are refused", async () => {
    await expect(connect(bundles[A]!.mqttUser, "otamqtt_wrong")).rejects.toThrow(/Not authorized|Bad username or password/i);
    await expect(connect(bundles[A]!.mqttUser, bundles[B]!.mqttPassword)).rejects.toThrow(/Not authorized|Bad username or password/i);
    await expect(connect(undefined, undefined)).rejects.toThrow(/Not authorized|Bad username or password/i);
  });

  it("without the CA the broker's certificate is refused", async () => {
    await expect(connectClient(url, { username: bundles[A]!.mqttUser, password: bundles[A]!.mqttPassword })).rejects.toThrow(/certificate/i);
  });
});
