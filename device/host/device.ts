// One emulated ESP32: flash laid out from partitions.csv, the bootloader's choice of app, the native OTA
// writer, and the real agent running in the DeviceScript VM. Power can be cut at any moment: flash (the
// ESP's and the VM's own, with the agent's settings) survives, RAM does not.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import * as jd from "jacdac-ts";
import { encodePartitionTable, DEFAULT_TABLE_OFFSET, otaSelectCrc as crcOf, type PartitionTable } from "../../server/esp";
import { bootloader, otaSlots, type BootedApp } from "./esp/bootloader";
import { Efuse, type EfuseOptions } from "./esp/efuse";
import { Flash } from "./esp/flash";
import { chipByName, type Chip } from "./esp/image-check";
import { OtaOps, type StatusCode } from "./esp/ota-ops";
import { Otadata, stateName } from "./esp/otadata";
import { VmClockScheduler } from "./vm/loader";
import { VmInstance, type SocketEvent, type VmFlash } from "./vm/vm";
import { OtaWriterServer, parseLargeFrame, type WriterOp } from "./writer-service";

/** The fields of `ota device provision` output the device uses. */
export interface Provisioning {
  deviceId: string;
  apiKey: string;
  hmacKey: string;
  serverUrl: string;
  pollInterval?: number;
  ca?: string | null;
  /** The device's user and password at the MQTT broker (written as mqtt_user and mqtt_pass with `mqttUrl`). */
  mqttUser?: string;
  mqttPassword?: string;
}

export interface DeviceOptions {
  provisioning: Provisioning;
  /** Trust for the VM's TLS connections (default: the provisioning bundle's CA; none: the system's CAs). */
  ca?: string | Buffer;
  /** The agent's compiled bytecode. */
  program: Uint8Array;
  /** Jacdac service specifications the host needs (device/.devicescript/services.json). */
  services: unknown[];
  partitions: PartitionTable;
  /** Written to ota_0 before the first power-on. */
  factoryImage: Buffer;
  /** Initial otadata partition contents (default: erased). */
  otadata?: Buffer;
  chip?: Chip;
  /** eFuses burnt at the factory: trusted key digests (images must then be signed), secure boot, secure_version. */
  efuse?: EfuseOptions;
  /** The MQTT broker of update notices (mqtt:// or mqtts://): the agent listens for them between polls. */
  mqttUrl?: string;
  /** More agent settings (device/README.md), e.g. { poll: 60, backoff: 1 }. */
  settings?: Record<string, string | number | boolean>;
  /** Largest bulk write the writer accepts; 0 serves 232-byte write commands only. */
  bulkWriteMax?: number;
  trackHeap?: boolean;
  gcStress?: boolean;
  readPiece?: number;
  paceMs?: number;
  /** Fault injection for tests: writes to lose between the VM and the writer. */
  dropWrite?: (offset: number, length: number, bulk: boolean) => boolean;
  /** Fault injection for tests: each writer answer's payload on its way to the VM. */
  mangleAnswer?: (op: WriterOp["op"], payload: Uint8Array) => Uint8Array;
  /** Fault injection for tests: set_boot, mark_valid, mark_invalid or revoke_key not carried out, answered with this status. */
  failOp?: (op: WriterOp["op"]) => StatusCode | undefined;
}

export interface AgentEvent {
  state: string;
  /** Milliseconds since the epoch (real time). */
  at: number;
  boot: number;
  [field: string]: unknown;
}

export interface BootEvent {
  boot: number;
  /** Partition the bootloader started, null when nothing could boot. */
  slot: string | null;
  version: string | null;
  /** otadata state of the started image (pending_verify, valid, undefined, ...). */
  state: string | null;
  log: string[];
  otadata: { seq: number; state: string; valid: boolean }[];
}

const DEFAULT_CHIP = chipByName("esp32", 300);
const SETTINGS_SERVICE = 0x1107dc4a;
/** A settings read answers with name, NUL and value in one 232-byte packet payload. */
const MAX_SETTING_BYTES = 232;

/** jacdac-ts logs its own life cycle on console.debug; keep that out of test and CLI output. */
async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const debug = console.debug;
  console.debug = () => undefined;
  try {
    return await fn();
  } finally {
    console.debug = debug;
  }
}

function vmDeviceId(deviceId: string): string {
  return createHash("sha256").update(`esp32-ota-device:${deviceId}`).digest("hex").slice(0, 16);
}

/**
 * Events: "agent" (AgentEvent: one per state change the agent announces), "console" (other agent output),
 * "boot" (BootEvent), "writer" (WriterOp), "socket" (SocketEvent), "bricked" (no bootable image).
 */
export class EmulatedDevice extends EventEmitter {
  readonly flash: Flash;
  readonly vmFlash: VmFlash = { data: null };
  readonly chip: Chip;
  /** Like the flash, the eFuses survive power cuts. */
  readonly efuse: Efuse;
  readonly events: AgentEvent[] = [];
  readonly ops: WriterOp[] = [];
  boots = 0;
  running: BootedApp | null = null;
  /** Most VM heap in use seen so far (with trackHeap), and the heap's size. */
  heapPeak = 0;
  heapTotal = 0;

  private vm: VmInstance | null = null;
  private bus: jd.JDBus | null = null;
  private provisioned = false;
  private resetting: Promise<void> | null = null;
  private powered = false;

  constructor(readonly o: DeviceOptions) {
    super();
    this.chip = o.chip ?? DEFAULT_CHIP;
    this.efuse = new Efuse(o.efuse);
    const end = Math.max(...o.partitions.entries.map((p) => p.offset + p.size));
    this.flash = new Flash(Math.max(4 * 1024 * 1024, Math.ceil(end / 0x100000) * 0x100000));
    // What esptool would flash: partition table, otadata, the factory app in ota_0.
    this.flash.flashAt(DEFAULT_TABLE_OFFSET, encodePartitionTable(o.partitions.entries));
    if (o.otadata && o.partitions.otadata) this.flash.flashAt(o.partitions.otadata.offset, o.otadata);
    const slot0 = otaSlots(o.partitions)[0];
    if (!slot0) throw new Error("the partition table has no OTA slot for the factory image");
    this.flash.flashAt(slot0.offset, o.factoryImage);
  }

  get deviceId(): string {
    return this.o.provisioning.deviceId;
  }

  get isOn(): boolean {
    return this.powered;
  }

  /** Runs the bootloader and starts the agent on the app it chose. */
  async powerOn(): Promise<void> {
    if (this.powered) return;
    this.powered = true;
    this.boots++;
    const booted = bootloader(this.flash, this.o.partitions, this.chip, this.efuse);
    this.running = booted;
    const od = this.otadataStates();
    this.emit("boot", {
      boot: this.boots,
      slot: booted?.partition.name ?? null,
      version: booted?.image.app.version ?? null,
      state: booted ? stateName(new OtaOps(this.flash, this.o.partitions, this.chip, booted, this.efuse).runningState()) : null,
      log: booted?.log ?? [],
      otadata: od,
    } satisfies BootEvent);
    if (!booted) {
      this.emit("bricked");
      return;
    }
    const ops = new OtaOps(this.flash, this.o.partitions, this.chip, booted, this.efuse);
    const bus = new jd.JDBus([], {
      services: this.o.services as never[],
      disableRoleManager: true,
      client: false,
      scheduler: new VmClockScheduler(),
    });
    this.bus = bus;
    const writer = new OtaWriterServer(
      ops,
      {
        onOp: (op) => {
          this.ops.push(op);
          this.emit("writer", op);
        },
        reset: () => this.scheduleReset(),
        dropWrite: this.o.dropWrite,
        mangleAnswer: this.o.mangleAnswer,
        failOp: this.o.failOp,
      },
      this.o.bulkWriteMax ?? 4096,
    );
    jd.addServer(bus, "otaWriter", writer);
    let vm: VmInstance | null = null;
    const bridge = jd.createProxyBridge((data: Uint8Array) => {
      const frame = Uint8Array.from(data);
      setImmediate(() => {
        if (vm && this.vm === vm) vm.deliver(frame);
      });
    });
    bridge.bus = bus;
    bus.on(jd.FRAME_PROCESS_LARGE, (frame: Uint8Array) => {
      const lf = parseLargeFrame(frame);
      if (lf && this.bus === bus) writer.handleLargeFrame(lf.topic, lf.data);
    });

    vm = await VmInstance.start({
      deviceId: vmDeviceId(this.deviceId),
      flash: this.vmFlash,
      ca: this.o.ca ?? this.o.provisioning.ca ?? undefined,
      readPiece: this.o.readPiece,
      paceMs: this.o.paceMs,
      gcStress: this.o.gcStress,
      trackHeap: this.o.trackHeap,
      sendFrame: (frame) =>
        setImmediate(() => {
          if (vm && this.vm === vm && this.bus === bus) bridge.receiveFrameOrPacket(frame);
        }),
      onConsole: (line) => this.onConsole(line),
      onDmesg: (line) => this.emit("dmesg", line),
      onReset: () => this.scheduleReset(),
      onPanic: (code) => this.emit("console", `VM panic ${code}`),
      onSocket: (ev: SocketEvent) => this.emit("socket", ev),
    });
    this.vm = vm;
    if (!this.provisioned) {
      await this.provision(bus, vmDeviceId(this.deviceId));
      vm.deploy(this.o.program);
      this.provisioned = true;
    }
  }

  /** Cuts power: the VM stops wherever it is. */
  async powerOff(): Promise<void> {
    if (!this.powered) return;
    this.powered = false;
    const vm = this.vm;
    const bus = this.bus;
    this.vm = null;
    this.bus = null;
    if (vm) {
      vm.stop();
      this.heapPeak = Math.max(this.heapPeak, vm.heapPeak);
      this.heapTotal = vm.heapTotal || this.heapTotal;
    }
    if (bus) await quietly(() => bus.dispose());
  }

  /** Power off and on again. */
  async powerCycle(): Promise<void> {
    await this.powerOff();
    await this.powerOn();
  }

  /** The chip resets itself (esp_restart): the same as a power cycle for flash and RAM. */
  private scheduleReset(): void {
    if (this.resetting) return;
    this.resetting = new Promise<void>((resolve) =>
      setImmediate(() => {
        this.powerCycle()
          .catch((e) => this.emit("error", e))
          .finally(() => {
            this.resetting = null;
            resolve();
          });
      }),
    );
  }

  /** Waits for an agent event (also one already seen, from index `from` on). */
  waitFor(pred: (e: AgentEvent) => boolean, timeoutMs: number, from = 0): Promise<AgentEvent> {
    const seen = this.events.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("agent", on);
        const last = this.events.slice(-5).map((e) => e.state).join(", ");
        reject(new Error(`device ${this.deviceId}: no matching agent event within ${timeoutMs} ms (last: ${last || "none"})`));
      }, timeoutMs);
      const on = (e: AgentEvent) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        this.off("agent", on);
        resolve(e);
      };
      this.on("agent", on);
    });
  }

  /** Current heap use of the running VM. */
  heapUse(): { used: number; total: number } | null {
    return this.vm?.heapUse() ?? null;
  }

  otadataStates(): { seq: number; state: string; valid: boolean }[] {
    if (!this.o.partitions.otadata) return [];
    const od = new Otadata(this.flash, this.o.partitions.otadata);
    return od.read().map((e) => ({ seq: e.seq, state: stateName(e.state), valid: e.crc === crcOf(e.seq) }));
  }

  private onConsole(line: string): void {
    if (line.startsWith("ota ")) {
      try {
        const obj = JSON.parse(line.slice(4)) as Record<string, unknown>;
        const ev = { ...obj, state: String(obj.state), at: Date.now(), boot: this.boots } as AgentEvent;
        this.events.push(ev);
        this.emit("agent", ev);
        return;
      } catch {
        // not an event line after all
      }
    }
    this.emit("console", line);
  }

  /** Writes the agent's identity and settings into the VM's settings service, as `devs` tooling would. */
  private async provision(bus: jd.JDBus, vmId: string): Promise<void> {
    const p = this.o.provisioning;
    const settings: Record<string, string | number | boolean> = {
      dev_id: p.deviceId,
      api_key: p.apiKey,
      mac_key: p.hmacKey,
      server_url: p.serverUrl,
      ...(p.pollInterval ? { poll: p.pollInterval } : {}),
      ...(this.o.mqttUrl ? { mqtt_url: this.o.mqttUrl } : {}),
      ...(this.o.mqttUrl && p.mqttUser && p.mqttPassword ? { mqtt_user: p.mqttUser, mqtt_pass: p.mqttPassword } : {}),
      ...this.o.settings,
    };
    const deadline = Date.now() + 10_000;
    let service: jd.JDService | undefined;
    while (!service) {
      service = bus.device(vmId, true)?.services({ serviceClass: SETTINGS_SERVICE })[0];
      if (service) break;
      if (Date.now() > deadline) throw new Error("the VM's settings service did not appear on the bus");
      await new Promise((r) => setTimeout(r, 20));
    }
    const client = new jd.SettingsClient(service);
    for (const [k, v] of Object.entries(settings)) {
      if (k.length > 13) throw new Error(`setting name ${k} is longer than 13 characters`);
      // The agent reads a setting back in one packet (name, NUL, value): a longer one would crash it at
      // every read (device/src/platform/system.ts), so it is refused here, before the device ever boots.
      const size = k.length + 1 + Buffer.byteLength(JSON.stringify(v));
      if (size > MAX_SETTING_BYTES) {
        throw new Error(`setting ${k} would take ${size} bytes and the agent reads back at most ${MAX_SETTING_BYTES}; shorten it (for server_url, a shorter OTA_PUBLIC_URL or --server)`);
      }
      await setAcknowledged(() => client.setStringValue(k, JSON.stringify(v)));
    }
  }
}

/**
 * A settings write, sent again while it is not acknowledged, for up to 30 real seconds: with the VM clock running
 * faster, jacdac-ts's ACK window (its retries, in VM time) is a few real milliseconds, which a busy machine can
 * miss many times over (seen for 10 s on 2 cores running several VMs beside Chromium). Writing the same value
 * twice is harmless.
 */
async function setAcknowledged(send: () => Promise<void>, withinMs = 30_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      await send();
      return;
    } catch (e) {
      if (Date.now() >= deadline || !(e instanceof Error) || !jd.isAckError(e)) throw e;
    }
  }
}
