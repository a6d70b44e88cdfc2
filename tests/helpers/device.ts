// Emulated devices for tests: provisioned on the real test server, the real agent (built from device/src),
// a factory image derived from the real hello_world, the project's partition table.
import fs from "node:fs";
import path from "node:path";
import { EmulatedDevice, type DeviceOptions } from "../../device/host/device";
import { factoryImage, factoryOtadata, loadAgent, loadPartitions } from "../../device/host/setup";
import { vmClock } from "../../device/host/vm/loader";
import type { WriterOp } from "../../device/host/writer-service";
import { provisionDevice } from "../../server/domain/devices/provisioning";
import { HELLO_WORLD, read } from "./fixtures";
import { Relay } from "./relay";
import { eventually, startTestServer, type TestServer } from "./server";

export const HELLO = read(HELLO_WORLD);
export const HELLO_VERSION = "v1.4.1-2-g0296947-dirty";

/** The VM clock runs this much faster in device tests: the server's 10 s poll interval passes in 1 s. */
export const CLOCK = 10;

/**
 * Agent settings for tests, in VM time (divide by CLOCK for real time). The socket timeout is the default
 * (20 s, 2 s real): shorter ones fail requests when the test machine is busy.
 */
export const TEST_SETTINGS = { backoff: 2, backoff_max: 16, retries: 4, health_tries: 3, health_wait: 2 };

/** Server settings for device tests: the shortest poll interval the server allows. */
export const SERVER_ENV = { OTA_POLL_INTERVAL: "10" };

let agent: { program: Buffer; services: unknown[] } | null = null;

export function useFastClock(): void {
  vmClock.setSpeed(CLOCK);
}

/** Puts hello_world in the server's firmware folder and waits until it is offered. */
export async function offerHelloWorld(s: TestServer): Promise<void> {
  fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello_world.bin"));
  await eventually(async () => (await s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": s.creds.deviceApiKey } })).status === 200, 10_000);
}

export interface MakeDevice extends Partial<Omit<DeviceOptions, "provisioning">> {
  id: string;
  /** Where the device finds the server (the relay, usually). */
  url: string;
  factoryVersion?: string;
  factorySecureVersion?: number;
}

export async function makeDevice(s: TestServer, o: MakeDevice): Promise<EmulatedDevice> {
  const bundle = await provisionDevice(s.running.ctx, o.id, { chip: "esp32" });
  return deviceWith(bundle, s.ca, o);
}

/** A device from a provisioning bundle got elsewhere (the operator API of a server in another process). */
export function deviceWith(bundle: Omit<DeviceOptions["provisioning"], "serverUrl">, ca: Buffer, o: MakeDevice): EmulatedDevice {
  agent ??= loadAgent();
  const dev = new EmulatedDevice({
    program: agent.program,
    services: agent.services,
    partitions: loadPartitions(),
    factoryImage: factoryImage(o.factoryVersion ?? "v1.0.0", o.factorySecureVersion),
    otadata: factoryOtadata(),
    ca,
    ...o,
    settings: { ...TEST_SETTINGS, ...o.settings },
    provisioning: { ...bundle, serverUrl: o.url },
  });
  if (process.env.OTA_TEST_LOG) {
    dev.on("agent", (e) => process.stderr.write(`[${o.id}] ${JSON.stringify(e)}\n`));
    dev.on("console", (l) => process.stderr.write(`[${o.id}] ${l}\n`));
  }
  return dev;
}

/** The device as the operator API shows it, with its reports oldest first. */
export async function serverView(s: TestServer, id: string): Promise<{ device: any; reports: any[] }> {
  const r = await s.req("GET", `/api/v1/devices/${encodeURIComponent(id)}/reports?limit=100`, {
    headers: { Authorization: `Bearer ${s.creds.operatorToken}` },
  });
  const d = await s.req("GET", `/api/v1/devices/${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${s.creds.operatorToken}` } });
  return { device: d.json().device, reports: [...r.json().reports].reverse() };
}

/** Writes whose bytes are not the image's bytes at their offset (must be none). */
export function foreignWrites(ops: WriterOp[], image: Buffer): WriterOp[] {
  return ops.filter((op) => {
    if (op.op !== "write" || !op.data) return false;
    const at = op.offset ?? -1;
    return at < 0 || !Buffer.from(op.data).equals(image.subarray(at, at + op.data.length));
  });
}

/** Waits until the device reported this state and the server stored it. */
export function reported(dev: EmulatedDevice, state: string, timeoutMs = 30_000, from = 0) {
  return dev.waitFor((e) => e.state === state && e.reported === true, timeoutMs, from);
}

export interface DeviceTestEnv {
  s: TestServer;
  relay: Relay;
  /** A device that is powered off after the test. */
  device(o: MakeDevice): Promise<EmulatedDevice>;
}

/**
 * The usual setting of a device test file: the real server offering hello_world, a relay in front of it
 * (one for the file, reset after each test, or a new one per test), the fast clock, devices powered off
 * after each test.
 */
export function deviceTestEnv(opts: { relayPerTest?: boolean } = {}): DeviceTestEnv {
  const devices: EmulatedDevice[] = [];
  const env = {
    device: async (o: MakeDevice) => {
      const d = await makeDevice(env.s, o);
      devices.push(d);
      return d;
    },
  } as DeviceTestEnv;
  beforeAll(async () => {
    useFastClock();
    env.s = await startTestServer(SERVER_ENV);
    await offerHelloWorld(env.s);
    if (!opts.relayPerTest) env.relay = await Relay.start(env.s);
  });
  if (opts.relayPerTest) {
    beforeEach(async () => {
      env.relay = await Relay.start(env.s);
    });
  }
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.powerOff()));
    if (opts.relayPerTest) await env.relay.close();
    else {
      env.relay.tamper = null;
      env.relay.setDown(false);
    }
  });
  afterAll(async () => {
    if (!opts.relayPerTest) await env.relay.close();
    await env.s.close();
  });
  return env;
}
