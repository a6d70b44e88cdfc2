// The agent in the VM against the shipped Mosquitto configuration (docs/mosquitto/: TLS with the project's CA,
// device passwords as `ota mqtt-passwords` writes them, the ACL): with its provisioning bundle's MQTT user and password over mqtts
// it hears of a new image at once and starts downloading within seconds; with a wrong password the broker refuses
// it, and it keeps polling on its period.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EmulatedDevice } from "../../device/host/device";
import { CLOCK, HELLO_VERSION, makeDevice, reported, useFastClock } from "../helpers/device";
import { HELLO_WORLD } from "../helpers/fixtures";
import { describeWithMosquitto, MOSQUITTO_PASSWD, OwnBroker, SHIPPED, shippedConfig } from "../helpers/mosquitto";
import { freePort, startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(120_000);


describeWithMosquitto("device agent: notices over mqtts with the shipped broker configuration", () => {
  let s: TestServer;
  let broker: OwnBroker;
  let good: EmulatedDevice;
  let refused: EmulatedDevice;

  beforeAll(async () => {
    useFastClock();
    const port = await freePort();
    const url = `mqtts://localhost:${port}`;
    const serverPassword = randomBytes(16).toString("base64url");
    s = await startTestServer({ OTA_POLL_INTERVAL: "300", OTA_MQTT_URL: url, OTA_MQTT_USERNAME: "ota-server", OTA_MQTT_PASSWORD: serverPassword });
    good = await makeDevice(s, { id: "02:ab:00:00:00:01", url: s.url, mqttUrl: url });
    refused = await makeDevice(s, { id: "02:ab:00:00:00:02", url: s.url, mqttUrl: url, settings: { mqtt_pass: "otamqtt_wrong" } });
    const dir = fs.mkdtempSync(path.join(s.dirs.root, "broker-"));
    const passwd = path.join(dir, "passwd");
    // What `ota mqtt-passwords` writes (tests/mqtt/broker-security.test.ts checks that it is this): user:password lines.
    fs.writeFileSync(passwd, [good, refused].map((dev) => `${dev.o.provisioning.mqttUser}:${dev.o.provisioning.mqttPassword}\n`).join(""), { mode: 0o600 });
    expect(spawnSync(MOSQUITTO_PASSWD, ["-U", passwd]).status).toBe(0);
    expect(spawnSync(MOSQUITTO_PASSWD, ["-b", passwd, "ota-server", serverPassword]).status).toBe(0);
    fs.copyFileSync(path.join(SHIPPED, "acl"), path.join(dir, "acl"));
    broker = new OwnBroker(dir, port, shippedConfig(dir, s.dirs.certs, port));
    await broker.start();
  }, 60_000);

  afterAll(async () => {
    await Promise.all([good, refused].map((dev) => dev?.powerOff()));
    await s?.close();
    await broker?.stop();
  });

  it("subscribes with its own credentials and downloads a new image within seconds; refused credentials leave it polling", async () => {
    await Promise.all([good.powerOn(), refused.powerOn()]);
    await reported(good, "idle", 60_000); // nothing in the firmware folder yet
    await good.waitFor((e) => e.state === "mqtt_online", 30_000);
    expect(good.events.find((e) => e.state === "mqtt_online")).toMatchObject({ topic: "ota/02AB00000001/desired" });
    const no = await refused.waitFor((e) => e.state === "mqtt_offline", 30_000);
    expect(no.error).toMatch(/connection refused, code [45]/);

    const t0 = Date.now();
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello_world.bin"));
    const dl = await good.waitFor((e) => e.state === "downloading", 30_000);
    expect(((dl.at - t0) * CLOCK) / 1000).toBeLessThan(60); // a poll period is 300 s
    expect(good.events.find((e) => e.state === "notice")).toMatchObject({ seq: 1 });
    // The refused device heard nothing: it downloads only when its poll period is up.
    expect(refused.events.filter((e) => e.state === "notice" || e.state === "downloading" || e.state === "mqtt_online")).toEqual([]);
    await reported(good, "confirmed", 90_000);
    expect(good.events.find((e) => e.state === "confirmed")).toMatchObject({ version: HELLO_VERSION });
  });
});
