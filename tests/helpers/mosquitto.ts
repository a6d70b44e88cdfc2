// Real Mosquitto brokers for the MQTT tests: the machine's anonymous one (127.0.0.1:1883, or OTA_TEST_MQTT_URL),
// or one of a test's own (/usr/sbin/mosquitto on a free port, with the configuration the test writes), which the
// test can stop and start again on the same port and data folder.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { freePort, ROOT } from "./server";

const MOSQUITTO = "/usr/sbin/mosquitto";
export const MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd";

/** The shared anonymous broker the machine runs. */
const SHARED_BROKER = process.env.OTA_TEST_MQTT_URL ?? "mqtt://127.0.0.1:1883";

/** Whether the MQTT tests can run here: under CI they must (a missing broker fails them, see .ci/run). */
export function haveMosquitto(): boolean {
  const ok = fs.existsSync(MOSQUITTO) && fs.existsSync(MOSQUITTO_PASSWD);
  if (!ok && process.env.CI) throw new Error(`${MOSQUITTO} and ${MOSQUITTO_PASSWD} are required (Debian package mosquitto; .ci/run installs it)`);
  return ok;
}

/** `describe`, or a skip that says why when Mosquitto is not installed (under CI its absence fails instead). */
export function describeWithMosquitto(name: string, fn: () => void): void {
  if (haveMosquitto()) return describe(name, fn);
  return describe.skip(`${name} [skipped: ${MOSQUITTO} is not installed (Debian package mosquitto)]`, fn);
}


async function accepts(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** A Mosquitto of the test's own. `config` is the whole mosquitto.conf (paths absolute). */
export class OwnBroker {
  private proc: ChildProcess | null = null;
  readonly confFile: string;
  readonly output: string[] = [];

  constructor(
    readonly dir: string,
    readonly port: number,
    config: string,
  ) {
    this.confFile = path.join(dir, "mosquitto.conf");
    // Run as root (a CI container), Mosquitto would switch to the user "mosquitto", which cannot read the test's files.
    const user = os.userInfo().uid === 0 ? "user root\n" : "";
    fs.writeFileSync(this.confFile, user + config);
  }

  async start(): Promise<void> {
    const proc = spawn(MOSQUITTO, ["-c", this.confFile], { stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stdout.on("data", (b: Buffer) => this.output.push(b.toString()));
    proc.stderr.on("data", (b: Buffer) => this.output.push(b.toString()));
    const until = Date.now() + 10_000;
    while (!(await accepts(this.port))) {
      if (proc.exitCode !== null) throw new Error(`mosquitto exited (${proc.exitCode}): ${this.output.join("")}`);
      if (Date.now() > until) throw new Error(`mosquitto did not listen on ${this.port}: ${this.output.join("")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM: Mosquitto saves its persistence file (retained messages) on the way out. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    this.proc = null;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill("SIGTERM");
    });
  }
}

/**
 * The machine's shared broker when it answers; otherwise (a machine that runs none) an anonymous one of the
 * test's own, in `dir`.
 */
export async function sharedBroker(dir: string): Promise<{ url: string; stop(): Promise<void> }> {
  const u = new URL(SHARED_BROKER);
  if (await accepts(Number(u.port || 1883), u.hostname)) return { url: SHARED_BROKER, stop: () => Promise.resolve() };
  const port = await freePort();
  const own = new OwnBroker(dir, port, `listener ${port} 127.0.0.1\nallow_anonymous true\n`);
  await own.start();
  return { url: `mqtt://127.0.0.1:${port}`, stop: () => own.stop() };
}

/** A plain MQTT.js client, connected (rejects on a refused connection instead of retrying). */
export async function connectClient(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...opts });
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", (err) => {
      client.end(true);
      reject(err);
    });
  });
  return client;
}

/** The last message on each topic a client sees (retained ones included), as text. */
export function collect(client: MqttClient): Map<string, string> {
  const last = new Map<string, string>();
  client.on("message", (topic, payload) => last.set(topic, payload.toString("utf8")));
  return last;
}

/** The Mosquitto configuration shipped for production. */
export const SHIPPED = path.join(ROOT, "docs/mosquitto");

/** The shipped mosquitto.conf with its paths and port pointed at the test's folder. */
export function shippedConfig(dir: string, certs: string, port: number): string {
  const replace: Record<string, string> = {
    password_file: path.join(dir, "passwd"),
    acl_file: path.join(dir, "acl"),
    persistence_location: dir + "/",
    cafile: path.join(certs, "ca.crt"),
    certfile: path.join(certs, "server.crt"),
    keyfile: path.join(certs, "server.key"),
    listener: String(port),
  };
  /** The system's pid file and log file: the test's broker writes neither. */
  const drop = new Set(["pid_file", "log_dest"]);
  const seen = new Set<string>();
  const text = fs
    .readFileSync(path.join(SHIPPED, "mosquitto.conf"), "utf8")
    .split("\n")
    .map((line) => {
      const key = line.split(/\s+/)[0]!;
      if (drop.has(key)) return "";
      if (line.startsWith("#") || !(key in replace)) return line;
      seen.add(key);
      return `${key} ${replace[key]}`;
    })
    .join("\n");
  // Each of them must be in the shipped file, or the test would not be testing it.
  const missing = Object.keys(replace).filter((k) => !seen.has(k));
  if (missing.length > 0) throw new Error(`the shipped mosquitto.conf no longer sets ${missing.join(", ")}`);
  return text + "\nlog_dest stdout\n";
}

/** An update notice as docs/protocol.md describes it. */
export interface Notice {
  v: number;
  device_id: string;
  seq: number;
  offer: { release: string | null; version: string; sha256: string; size: number; url: string } | null;
  issued_at: string;
  hmac: string;
}

/** A notice's HMAC under a device's key (hex), over the text docs/protocol.md gives (not from the server's code). */
export function noticeMac(hmacKeyHex: string, n: Notice): string {
  const o = n.offer;
  const fields = o ? [o.release ?? "", o.version, o.sha256, String(o.size), o.url] : ["", "", "", "", ""];
  const text = ["esp32-ota-notice/1", n.device_id, String(n.seq), ...fields].join("\n");
  return createHmac("sha256", Buffer.from(hmacKeyHex, "hex")).update(text).digest("hex");
}

/** The MQTT name of a device whose id is a MAC: its 12 hex digits, upper case. */
export const macId = (id: string) => id.replace(/:/g, "").toUpperCase();
