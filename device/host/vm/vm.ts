// One DeviceScript VM, run in this process: its Jacdac frames go to a host bus, its sockets are real TLS
// connections with a pinned CA, reads arrive in ESP32-sized pieces, and its flash (program and settings)
// lives in an object the caller keeps across resets.
import net from "node:net";
import tls from "node:tls";
import { findHeap, walk, type HeapChunk } from "./heap";
import { loadVmFactory, type VmModule } from "./loader";

const EV_OPEN = 1;
const EV_CLOSE = 2;
const EV_ERROR = 3;
const EV_MESSAGE = 4;

/** The VM's own flash: program and settings. Keep the object to keep them across resets. */
export interface VmFlash {
  data: Uint8Array | null;
}

export interface SocketEvent {
  /** "superseded": the program opened a socket while this one was still open (the ESP32 port has one). */
  kind: "open" | "close" | "error" | "superseded";
  host: string;
  port: number;
  message?: string;
}

export interface VmOptions {
  /** 16 hex digits: the VM's Jacdac device id. */
  deviceId: string;
  flash: VmFlash;
  /** TLS trust for the VM's sockets (a private CA is pinned here, as it would be built into the firmware). */
  ca?: string | Buffer;
  /** Largest piece handed to the VM per read (the ESP32 reads into a 1 KiB buffer). */
  readPiece?: number;
  /** Real milliseconds between pieces. */
  paceMs?: number;
  /** Run the garbage collector before every allocation, so heap use is live data only (slow). */
  gcStress?: boolean;
  /** Sample heap use after every VM step and every call from the VM. */
  trackHeap?: boolean;
  sendFrame: (frame: Uint8Array) => void;
  onConsole?: (line: string) => void;
  onDmesg?: (line: string) => void;
  /** The program reset the chip (ds.reboot(), esp_restart()). */
  onReset?: () => void;
  onPanic?: (code: number) => void;
  onSocket?: (ev: SocketEvent) => void;
}

export class VmInstance {
  private inst!: VmModule;
  private dead = false;
  private sock: net.Socket | null = null;
  /** Every socket not yet closed, also those the program has let go of: power off cuts them all. */
  private readonly open = new Set<net.Socket>();
  private heap: HeapChunk | null = null;
  /** Most heap bytes seen in use, and the heap's size. */
  heapPeak = 0;
  heapTotal = 0;

  private constructor(private readonly o: VmOptions) {}

  static async start(o: VmOptions, program?: Uint8Array): Promise<VmInstance> {
    const vm = new VmInstance(o);
    const factory = loadVmFactory();
    const quiet = (...a: unknown[]) => o.onDmesg?.(a.map(String).join(" "));
    vm.inst = await factory({ print: quiet, printErr: quiet });
    vm.wire();
    vm.inst.devsSetDeviceId(o.deviceId);
    vm.inst.devsStart();
    if (o.gcStress) vm.inst.devsGcStress(true);
    if (program) {
      const r = vm.inst.devsDeploy(program);
      if (r !== 0) throw new Error(`the VM refused the program (deploy error ${r})`);
    }
    return vm;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** A Jacdac frame from the host bus. */
  deliver(frame: Uint8Array): void {
    if (!this.dead) this.inst.handlePacket(frame);
  }

  deploy(program: Uint8Array): void {
    const r = this.inst.devsDeploy(program);
    if (r !== 0) throw new Error(`the VM refused the program (deploy error ${r})`);
  }

  /** Power off: the VM stops where it is; nothing of its RAM survives. */
  stop(): void {
    if (this.dead) return;
    this.dead = true;
    const halt = () => {
      try {
        this.inst.devsStop();
      } catch {
        // already stopped by an exit
      }
    };
    halt();
    // Called from inside a VM step (an event the agent printed), the VM's loop re-arms its timer when the
    // step returns: stop it again once it has.
    setImmediate(halt);
    for (const sock of this.open) sock.destroy();
    this.open.clear();
    this.sock = null;
  }

  private locateHeap(): HeapChunk | null {
    if (!this.heap) {
      this.heap = findHeap(this.inst.HEAPU8);
      if (this.heap) this.heapTotal = this.heap.end - this.heap.start - 8;
    }
    return this.heap;
  }

  private sampleHeap(): void {
    if (!this.o.trackHeap || this.dead) return;
    const h = this.locateHeap();
    if (!h) return;
    const u = walk(this.inst.HEAPU8, h);
    if (!u) throw new Error("the VM heap no longer walks cleanly");
    if (u.used > this.heapPeak) this.heapPeak = u.used;
  }

  /** Current heap use (bytes in blocks not yet freed); null before the program has started. */
  heapUse(): { used: number; total: number } | null {
    const h = this.dead ? null : this.locateHeap();
    const u = h ? walk(this.inst.HEAPU8, h) : null;
    return u ? { used: u.used, total: this.heapTotal } : null;
  }

  private wire(): void {
    const inst = this.inst;
    const o = this.o;
    const step = inst._jd_em_process.bind(inst);
    inst._jd_em_process = () => {
      if (this.dead) return 1e6; // powered off: run nothing more (stop() clears the timer)
      const r = step();
      this.sampleHeap();
      return r;
    };
    inst.sendPacket = (frame: Uint8Array) => {
      if (this.dead) return;
      this.sampleHeap();
      o.sendFrame(Uint8Array.from(frame));
    };
    inst.dmesg = (line: string) => {
      // After a power cut the rest of the current VM step still runs; what it prints never happened.
      if (this.dead) return;
      o.onDmesg?.(line);
      const m = /^> (.*)$/s.exec(line);
      if (m) o.onConsole?.(m[1]!);
    };
    inst.log = (...a: unknown[]) => o.onDmesg?.(a.map(String).join(" "));
    inst.error = (...a: unknown[]) => {
      const msg = a.map((x) => (x instanceof Error || (x && typeof x === "object" && "message" in x) ? String((x as Error).message) : String(x))).join(" ");
      o.onDmesg?.(`error: ${msg}`);
      // ds.reboot() ends in target_reset() -> exit(0): the chip resets.
      if (/Program terminated with exit\(\d+\)/.test(msg) && !this.dead) {
        this.stop();
        o.onReset?.();
      }
    };
    inst.panicHandler = (code: number) => o.onPanic?.(code);
    inst.flashLoad = () => (o.flash.data ? o.flash.data.slice() : new Uint8Array(0));
    inst.flashSave = (data: Uint8Array) => {
      this.sampleHeap();
      o.flash.data = new Uint8Array(data);
    };
    this.wireSockets();
  }

  /** The runtime's socket layer (sockOpen/Write/Close), as the ESP32 port behaves: one socket, 1 KiB reads. */
  private wireSockets(): void {
    const inst = this.inst;
    const o = this.o;
    const maxPiece = o.readPiece ?? 1024;
    const paceMs = o.paceMs ?? 2;
    const event = (type: number, data?: Buffer) => {
      if (this.dead) return;
      let ptr = 0;
      const len = data?.length ?? 0;
      if (data && len) {
        ptr = inst._malloc(len);
        inst.HEAPU8.set(data, ptr);
      }
      inst._jd_em_tcpsock_on_event(type, ptr, len);
      if (ptr) inst._free(ptr);
    };
    inst.sockIsAvailable = () => true;
    inst.sockClose = () => {
      this.sampleHeap();
      if (!this.sock) return -10;
      // Closed for good, as close() is on the chip: nothing more is read from it (a half-closed socket left
      // paused would never see the peer's end).
      const sock = this.sock;
      sock.end(() => sock.destroy());
      this.sock = null;
      return 0;
    };
    inst.sockWrite = (ptr: number, len: number) => {
      this.sampleHeap();
      if (!this.sock) return -10;
      this.sock.write(Buffer.from(inst.HEAPU8.slice(ptr, ptr + len)));
      return 0;
    };
    inst.sockOpen = (hostPtr: number, portArg: number) => {
      this.sampleHeap();
      const heap = inst.HEAPU8;
      let e = hostPtr;
      while (heap[e]) e++;
      const host = Buffer.from(heap.subarray(hostPtr, e)).toString("utf8");
      const isTls = portArg < 0;
      const port = Math.abs(portArg);
      const prev = this.sock;
      if (prev) {
        o.onSocket?.({ kind: "superseded", host: prev.remoteAddress ?? "", port: prev.remotePort ?? 0 });
        prev.destroy();
      }
      const sock = isTls
        ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ca: o.ca, minVersion: "TLSv1.2" })
        : net.createConnection({ host, port });
      this.sock = sock;
      this.open.add(sock);
      sock.once("close", () => this.open.delete(sock));
      // Reads are cut into <= 1 KiB pieces and paced, and the socket is paused while pieces wait, like the
      // ESP32's fixed read buffer: a fast server cannot push more than the VM heap holds.
      const queue: { data?: Buffer; type?: number; msg?: string }[] = [];
      let timer: NodeJS.Timeout | null = null;
      const deliver = () => {
        timer = null;
        if (sock !== this.sock || this.dead) return;
        const item = queue.shift();
        if (!item) return;
        if (item.data) event(EV_MESSAGE, item.data);
        else {
          event(item.type!, item.msg ? Buffer.from(item.msg) : undefined);
          this.sock = null;
          return;
        }
        if (queue.length < 4 && sock.isPaused()) sock.resume();
        if (queue.length) timer = setTimeout(deliver, paceMs);
      };
      const push = (item: { data?: Buffer; type?: number; msg?: string }) => {
        queue.push(item);
        if (!timer) timer = setTimeout(deliver, paceMs);
      };
      sock.once(isTls ? "secureConnect" : "connect", () => {
        if (sock !== this.sock) return;
        o.onSocket?.({ kind: "open", host, port });
        event(EV_OPEN);
      });
      sock.on("data", (buf: Buffer) => {
        for (let i = 0; i < buf.length; i += maxPiece) push({ data: Buffer.from(buf.subarray(i, i + maxPiece)) });
        if (queue.length > 8) sock.pause();
      });
      sock.on("error", (err: Error) => {
        o.onSocket?.({ kind: "error", host, port, message: err.message });
        push({ type: EV_ERROR, msg: `${host}:${port}: ${err.message}` });
      });
      sock.on("close", () => {
        o.onSocket?.({ kind: "close", host, port });
        push({ type: EV_CLOSE });
      });
      return 0;
    };
  }
}
