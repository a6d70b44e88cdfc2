// Loads the DeviceScript WASM VM without the CLI: @devicescript/cli bundles the emscripten module
// (runtime/devicescript-vm) inline, and we evaluate just that part with two substitutions the VM reads
// time through: `Date.now` (its only clock) and `setTimeout` (its step timer), both driven by VmClock.
//
// This depends on the bundle's layout, so the CLI version is pinned (package.json) and checked here, and
// any surprise fails loudly instead of running a different VM.
import fs from "node:fs";
import path from "node:path";
import { CLI_BUNDLE, CLI_PACKAGE, PINNED_CLI_VERSION } from "../paths";

const START_MARKER = "// runtime/devicescript-vm/built/devicescript-vm.js\nvar require_devicescript_vm = __commonJS({";
const WRAPPER_RE = /^\s*"[^"]+"\(exports, module2\) \{/;

/** The VM's clock: real time, optionally running faster (long poll periods pass in seconds in tests). */
class VmClock {
  private speed = 1;
  private baseReal = Date.now();
  private baseVm = Date.now();

  now(): number {
    return Math.floor(this.baseVm + (Date.now() - this.baseReal) * this.speed);
  }

  /** Real milliseconds for `ms` of VM time. */
  realDelay(ms: number): number {
    return ms / this.speed;
  }

  setSpeed(speed: number): void {
    if (!(speed > 0 && speed <= 1000)) throw new RangeError("clock speed must be in (0, 1000]");
    this.baseVm = this.now();
    this.baseReal = Date.now();
    this.speed = speed;
  }
}

/** One clock for every VM in this process. */
export const vmClock = new VmClock();

/**
 * A jacdac-ts scheduler on the VM clock, so the host's Jacdac bus (announces, device timeouts) and the VM
 * keep the same time even when the clock runs faster.
 */
export class VmClockScheduler {
  private readonly start = vmClock.now();

  get timestamp(): number {
    return vmClock.now() - this.start;
  }
  resetTime(): void {
    // the VM clock is never reset
  }
  setTimeout(handler: (...args: unknown[]) => void, delay: number, ...args: unknown[]): NodeJS.Timeout {
    return setTimeout(handler, vmClock.realDelay(delay), ...args);
  }
  clearTimeout(handle: NodeJS.Timeout): void {
    clearTimeout(handle);
  }
  setInterval(handler: (...args: unknown[]) => void, delay: number, ...args: unknown[]): NodeJS.Timeout {
    return setInterval(handler, vmClock.realDelay(delay), ...args);
  }
  clearInterval(handle: NodeJS.Timeout): void {
    clearInterval(handle);
  }
}

/** An instance of the emscripten module (the fields the harness uses). */
export interface VmModule {
  HEAPU8: Uint8Array;
  _malloc(n: number): number;
  _free(p: number): void;
  _jd_em_tcpsock_on_event(type: number, ptr: number, len: number): void;
  _jd_em_process(): number;
  devsSetDeviceId(id: string): void;
  devsStart(): void;
  devsStop(): void;
  devsDeploy(program: Uint8Array): number;
  devsGcStress(on: boolean): void;
  handlePacket(frame: Uint8Array): void;
  sendPacket: (frame: Uint8Array) => void;
  dmesg: (line: string) => void;
  log: (...args: unknown[]) => void;
  error: (...args: unknown[]) => void;
  panicHandler: (code: number) => void;
  flashLoad: () => Uint8Array;
  flashSave: (data: Uint8Array) => void;
  sockOpen: (hostPtr: number, port: number) => number;
  sockWrite: (ptr: number, len: number) => number;
  sockClose: () => number;
  sockIsAvailable: () => boolean;
}

export type VmFactory = (moduleArg?: Record<string, unknown>) => Promise<VmModule>;

let cached: VmFactory | null = null;

function cliVersion(): string {
  return (JSON.parse(fs.readFileSync(`${CLI_PACKAGE}/package.json`, "utf8")) as { version: string }).version;
}

export function loadVmFactory(): VmFactory {
  if (cached) return cached;
  if (!fs.existsSync(CLI_BUNDLE)) throw new Error(`${CLI_BUNDLE} is missing: run npm ci`);
  const version = cliVersion();
  if (version !== PINNED_CLI_VERSION) {
    throw new Error(
      `@devicescript/cli is ${version}, the VM loader was written for ${PINNED_CLI_VERSION}: install the pinned version (npm ci)`,
    );
  }
  const src = fs.readFileSync(CLI_BUNDLE, "utf8");
  const start = src.indexOf(START_MARKER);
  if (start < 0) throw new Error(`the DeviceScript VM was not found in ${CLI_BUNDLE} (bundle layout changed)`);
  const end = src.indexOf("\n});\n", start);
  const body = src.slice(start + START_MARKER.length, end);
  const wrapper = WRAPPER_RE.exec(body);
  if (end < 0 || !wrapper) throw new Error(`unexpected VM module wrapper in ${CLI_BUNDLE} (bundle layout changed)`);
  const inner = body.slice(wrapper[0].length, body.lastIndexOf("}"));
  const prelude = [
    "const module2 = module;",
    "const Date = { now: () => __clock.now() };",
    "const setTimeout = (fn, ms) => globalThis.setTimeout(fn, __clock.realDelay(ms));",
  ].join("\n");
  const mod: { exports: unknown } = { exports: {} };
  // The VM is code from the pinned @devicescript/cli bundle, evaluated with a clock of ours in place of Date and setTimeout.
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const fn = new Function("module", "exports", "require", "__filename", "__dirname", "__clock", `${prelude}\n${inner}`) as (...args: unknown[]) => void;
  fn(mod, mod.exports, require, CLI_BUNDLE, path.dirname(CLI_BUNDLE), vmClock);
  const factory = mod.exports as VmFactory;
  if (typeof factory !== "function") throw new Error("the extracted DeviceScript VM did not export a factory");
  cached = factory;
  return factory;
}
