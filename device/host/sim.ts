// `npm run device:sim`: emulated ESP32s running the real agent against any server. One JSON line per state
// change on stdout; with --once, exit 0 when every device runs the offered image confirmed.
import fs from "node:fs";
import { Command, InvalidArgumentError } from "commander";
import { z } from "zod";
import { publicKeyDigest, readKey, signImage, trustedKeyFromPem, type TrustedKey } from "../../server/esp";
import { EmulatedDevice, type AgentEvent, type BootEvent, type Provisioning } from "./device";
import { loadAgent, loadPartitions, factoryImage, factoryOtadata } from "./setup";
import { vmClock } from "./vm/loader";

const provisioningSchema = z.object({
  deviceId: z.string().min(1).max(64),
  apiKey: z.string().min(1).max(256),
  hmacKey: z.string().regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex digits"),
  serverUrl: z.string().url().optional(),
  ca: z.string().nullish(),
  pollInterval: z.number().int().positive().optional(),
  mqttUser: z.string().min(1).max(128).optional(),
  mqttPassword: z.string().min(1).max(128).optional(),
});

/** Terminal states for --once: success, or a failure the agent reports. */
const DONE = new Set(["confirmed", "up_to_date"]);
const FAILED = new Set(["failed", "rejected", "rolled_back"]);

/** What an idle device was told (the reason of the server's 404), in words, on stderr. */
const IDLE_WHY: Record<string, string> = {
  waiting_for_rollout_stage:
    "waiting for its rollout stage: a release is for this device, but its rollout has not reached it yet (its current stage leaves it out, or the rollout is paused); it keeps polling (see: ota rollout status <release>)",
  no_firmware: "no firmware offered to this device now (no image for its chip, or no release for it); it keeps polling",
};

export interface SimOptions {
  server?: string;
  ca?: string;
  mqtt?: string;
  device: string[];
  once?: boolean;
  timeout: number;
  clock: number;
  factory?: string;
  factoryVersion: string;
  setting: string[];
  trustedKey: string[];
  secureBoot?: boolean;
  factoryKey?: string;
}

function collect(value: string, prev: string[]): string[] {
  return [...prev, value];
}

function positive(value: string): number {
  const n = Number(value);
  if (!(n > 0)) throw new InvalidArgumentError("must be a positive number");
  return n;
}

function parseSetting(text: string): [string, string | number | boolean] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new Error(`--setting ${text}: write it as name=value`);
  const name = text.slice(0, eq);
  const raw = text.slice(eq + 1);
  if (name.length > 13) throw new Error(`--setting ${name}: setting names have at most 13 characters`);
  if (raw === "true" || raw === "false") return [name, raw === "true"];
  if (raw !== "" && !Number.isNaN(Number(raw))) return [name, Number(raw)];
  return [name, raw];
}

function readProvisioning(file: string, server: string | undefined): Provisioning {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`--device ${file}: ${(e as Error).message} (make it with: npx ota device provision <id> --out ${file})`, { cause: e });
  }
  const r = provisioningSchema.safeParse(json);
  if (!r.success) throw new Error(`--device ${file}: ${r.error.issues.map((i) => `${i.path.join(".")} ${i.message}`).join("; ")}`);
  const url = server ?? r.data.serverUrl;
  if (!url) throw new Error(`--device ${file} has no serverUrl: pass --server https://host:port`);
  if (!url.startsWith("https://")) throw new Error(`the server URL must be https:// (got ${url})`);
  return {
    deviceId: r.data.deviceId,
    apiKey: r.data.apiKey,
    hmacKey: r.data.hmacKey.toLowerCase(),
    serverUrl: url.replace(/\/+$/, ""),
    ca: r.data.ca ?? null,
    pollInterval: r.data.pollInterval,
    mqttUser: r.data.mqttUser,
    mqttPassword: r.data.mqttPassword,
  };
}

export function program(): Command {
  return new Command("device:sim")
    .description("run emulated ESP32s (the real agent in the DeviceScript VM, flash emulated) against an OTA server")
    .requiredOption("--device <file>", "provisioning JSON from `ota device provision <id> --out <file>` (repeat for more devices)", collect, [])
    .option("--server <url>", "server URL (default: serverUrl in the provisioning file)")
    .option("--ca <file>", "CA certificate the device trusts (default: ca in the provisioning file; none: system CAs)")
    .option("--mqtt <url>", "MQTT broker of update notices (mqtt:// or mqtts://; the device's user and password come from its provisioning file)")
    .option("--once", "exit 0 once every device runs the offered image, confirmed; non-zero on a failure")
    .option("--timeout <seconds>", "with --once, give up after this long", positive, 600)
    .option("--clock <factor>", "run the devices' clocks this many times faster (poll periods pass sooner)", positive, 1)
    .option("--factory <file>", "ESP-IDF app image in ota_0 at first power-on (default: hello_world with version --factory-version)")
    .option("--factory-version <version>", "version of the default factory image", "v1.0.0")
    .option("--setting <name=value>", "an agent setting (device/README.md), e.g. poll=60 (repeatable)", collect, [])
    .option("--trusted-key <pub.pem>", "a Secure Boot v2 public key whose digest is burnt in the devices' eFuse (repeatable, at most 3): the writer then refuses images no such key signed", collect, [])
    .option("--secure-boot", "secure boot on: the bootloader also refuses to start an app no trusted key signed (needs --factory-key)")
    .option("--factory-key <key.pem>", "private key that signs the factory image (one of the --trusted-key keys)")
    .exitOverride();
}

function readTrustedKey(file: string): TrustedKey {
  try {
    return trustedKeyFromPem(fs.readFileSync(file), file);
  } catch (e) {
    throw new Error(`--trusted-key ${file}: ${(e as Error).message} (make one with: npx ota keys generate --scheme ecdsa256 --out KEY.pem)`, { cause: e });
  }
}

/** The factory image, signed with --factory-key when given; with --secure-boot it must be signed by a trusted key. */
function signedFactory(image: Buffer, o: SimOptions, trusted: readonly TrustedKey[]): Buffer {
  if (o.secureBoot && trusted.length === 0) throw new Error("--secure-boot needs --trusted-key PUB.pem: the key digests the bootloader checks apps against");
  if (!o.factoryKey) {
    if (o.secureBoot) throw new Error("--secure-boot needs --factory-key KEY.pem to sign the factory image, or the device has nothing it may boot");
    return image;
  }
  let key;
  try {
    key = readKey(fs.readFileSync(o.factoryKey));
  } catch (e) {
    throw new Error(`--factory-key ${o.factoryKey}: ${(e as Error).message}`, { cause: e });
  }
  if (key.type !== "private") throw new Error(`--factory-key ${o.factoryKey} is a public key; give the private key that signs the factory image`);
  const digest = publicKeyDigest(key);
  if (o.secureBoot && !trusted.some((t) => t.digest.equals(digest))) {
    throw new Error(`--factory-key ${o.factoryKey} is not one of the --trusted-key keys: with --secure-boot the device could not boot its factory image`);
  }
  return signImage(image, [key], { append: true });
}

/** A field of an agent event as text (the agent's reasons and errors are strings). */
function text(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function line(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...obj })}\n`);
}

/** Runs the simulation; resolves with the exit code. */
export async function runSim(argv: string[], opts: { signal?: AbortSignal } = {}): Promise<number> {
  let o: SimOptions;
  try {
    o = program().parse(argv, { from: "user" }).opts<SimOptions>();
  } catch (e) {
    const err = e as { code?: string; exitCode?: number };
    if (err.code === "commander.helpDisplayed" || err.code === "commander.help") return 0;
    return 2;
  }
  if (o.device.length === 0) {
    process.stderr.write("device:sim: --device <provisioning json> is required (make one with: npx ota device provision <id> --out device.json)\n");
    return 2;
  }
  let devices: EmulatedDevice[];
  try {
    const settings = Object.fromEntries(o.setting.map(parseSetting));
    const ca = o.ca ? fs.readFileSync(o.ca, "utf8") : undefined;
    if (o.mqtt && !/^mqtts?:\/\/[^/@]+\/?$/.test(o.mqtt)) throw new Error(`--mqtt ${o.mqtt}: write it as mqtt://host[:port] or mqtts://host[:port], without credentials`);
    const agent = loadAgent((l) => process.stderr.write(`device:sim: ${l}\n`));
    const partitions = loadPartitions();
    const trustedKeys = o.trustedKey.map((f) => readTrustedKey(f));
    const factory = signedFactory(o.factory ? fs.readFileSync(o.factory) : factoryImage(o.factoryVersion), o, trustedKeys);
    const otadata = factoryOtadata();
    vmClock.setSpeed(o.clock);
    devices = o.device.map(
      (file) =>
        new EmulatedDevice({
          provisioning: readProvisioning(file, o.server),
          ca,
          program: agent.program,
          services: agent.services,
          partitions,
          factoryImage: factory,
          otadata,
          mqttUrl: o.mqtt,
          settings,
          efuse: { trustedKeys, secureBoot: o.secureBoot },
        }),
    );
  } catch (e) {
    process.stderr.write(`device:sim: ${(e as Error).message}\n`);
    return 2;
  }

  const finished = new Map<string, boolean>();
  /** Devices idle now, with the reason the server gave (for the timeout message). */
  const idle = new Map<string, string>();
  return new Promise<number>((resolve) => {
    let settled = false;
    const finish = async (code: number, why?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (why) process.stderr.write(`device:sim: ${why}\n`);
      await Promise.all(devices.map((d) => d.powerOff()));
      resolve(code);
    };
    const timer = o.once
      ? setTimeout(() => {
          const why = [...idle].map(([id, reason]) => `${id} is idle: ${reason}`).join("; ");
          void finish(1, `timed out after ${o.timeout} s without every device confirmed${why ? ` (${why})` : ""}`);
        }, o.timeout * 1000)
      : undefined;
    opts.signal?.addEventListener("abort", () => void finish(0));
    for (const d of devices) {
      d.on("boot", (b: BootEvent) => line({ device: d.deviceId, event: "boot", slot: b.slot, version: b.version, image_state: b.state }));
      d.on("bricked", () => {
        line({ device: d.deviceId, event: "bricked" });
        void finish(1, `${d.deviceId} has no bootable image`);
      });
      d.on("console", (l: string) => process.stderr.write(`${d.deviceId}: ${l}\n`));
      d.on("error", (e: Error) => void finish(1, `${d.deviceId}: ${e.message}`));
      d.on("agent", (e: AgentEvent) => {
        const { at: _at, boot: _boot, ...rest } = e;
        line({ device: d.deviceId, ...rest });
        if (e.state === "idle") idle.set(d.deviceId, text(e.reason));
        else idle.delete(d.deviceId);
        if (e.state === "idle") process.stderr.write(`device:sim: ${d.deviceId}: ${IDLE_WHY[text(e.reason)] ?? `nothing offered (${text(e.reason)})`}\n`);
        if (!o.once) return;
        if (FAILED.has(e.state)) void finish(1, `${d.deviceId}: ${e.state}${e.reason ? ` (${text(e.reason)})` : ""}${e.error ? `: ${text(e.error)}` : ""}`);
        // Done once the server has stored it: the device list then shows the device confirmed.
        if (DONE.has(e.state) && e.reported === true) {
          finished.set(d.deviceId, true);
          if (devices.every((x) => finished.get(x.deviceId))) void finish(0);
        }
      });
    }
    Promise.all(devices.map((d) => d.powerOn())).catch((e) => void finish(1, (e as Error).message));
  });
}

if (require.main === module) {
  const ac = new AbortController();
  process.once("SIGINT", () => ac.abort());
  process.once("SIGTERM", () => ac.abort());
  void runSim(process.argv.slice(2), { signal: ac.signal }).then((code) => process.exit(code));
}
