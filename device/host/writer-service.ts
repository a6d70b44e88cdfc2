// The OTA Writer service (device/services/otawriter.md) served to the VM over Jacdac, backed by the
// emulated esp_ota_ops. This is what C code in the ESP32 runtime would serve.
import * as jd from "jacdac-ts";
import type { OtaOps, StatusCode } from "./esp/ota-ops";
import { Status } from "./esp/ota-ops";

const SRV_OTA_WRITER = 0x1f0a7a11;

const CMD = { begin: 0x80, resume: 0x81, write: 0x82, end: 0x83, setBoot: 0x84, markValid: 0x85, markInvalid: 0x86, revokeKey: 0x87 } as const;
const CMD_OF: Record<WriterOp["op"], number> = {
  begin: CMD.begin,
  resume: CMD.resume,
  write: CMD.write,
  end: CMD.end,
  set_boot: CMD.setBoot,
  mark_valid: CMD.markValid,
  mark_invalid: CMD.markInvalid,
  revoke_key: CMD.revokeKey,
};
const REG = {
  runningSlot: 0x180,
  imageState: 0x181,
  bytesWritten: 0x182,
  runningVersion: 0x183,
  secureVersion: 0x184,
  runningSha256: 0x185,
  chip: 0x186,
  chipRevision: 0x187,
  slotSize: 0x188,
  bulkWriteMax: 0x189,
  trustedKeys: 0x18a,
  runningSigners: 0x18b,
} as const;

const BULK_TOPIC = "otawriter/write/";

export interface WriterOp {
  op: "begin" | "resume" | "write" | "end" | "set_boot" | "mark_valid" | "mark_invalid" | "revoke_key";
  status: StatusCode;
  offset?: number;
  length?: number;
  size?: number;
  /** For writes: a bulk write (large frame) rather than a write command. */
  bulk?: boolean;
  /** For writes: the bytes received. */
  data?: Uint8Array;
  reason?: string;
  /** For revoke_key: the eFuse digest slot. */
  index?: number;
}

export interface WriterHooks {
  /** Every command, after it was carried out (tests cut power here). */
  onOp?: (op: WriterOp) => void;
  /** Fault injection: a write for which this returns true is lost on the way (not carried out, not answered). */
  dropWrite?: (offset: number, length: number, bulk: boolean) => boolean;
  /** Fault injection: the payload of each answer on its way back (a native writer that answers short or garbled). */
  mangleAnswer?: (op: WriterOp["op"], payload: Uint8Array) => Uint8Array;
  /**
   * Fault injection: a set_boot, mark_valid, mark_invalid or revoke_key for which this returns a status is not
   * carried out and is answered with that status (a native writer whose flash or eFuse write failed).
   */
  failOp?: (op: WriterOp["op"]) => StatusCode | undefined;
  /** mark_invalid_and_reboot succeeded: reset the chip. */
  reset: () => void;
}

export class OtaWriterServer extends jd.JDServiceServer {
  private readonly imageState: jd.JDRegisterServer<[number]>;
  private readonly bytesWritten: jd.JDRegisterServer<[number]>;
  private readonly trustedKeys: jd.JDRegisterServer<[number]>;
  private readonly runningSigners: jd.JDRegisterServer<[number]>;

  constructor(
    private readonly ops: OtaOps,
    private readonly hooks: WriterHooks,
    bulkWriteMax: number,
  ) {
    super(SRV_OTA_WRITER);
    const r = ops.describeRunning();
    this.addRegister<[number]>(REG.runningSlot, [r.slot]);
    this.imageState = this.addRegister<[number]>(REG.imageState, [r.state]);
    this.bytesWritten = this.addRegister<[number]>(REG.bytesWritten, [0]);
    this.addRegister<[string]>(REG.runningVersion, [r.version]);
    this.addRegister<[number]>(REG.secureVersion, [r.secureVersion]);
    this.addRegister<[Uint8Array]>(REG.runningSha256, [Buffer.from(r.sha256, "hex")]);
    this.addRegister<[string]>(REG.chip, [ops.chip.name]);
    this.addRegister<[number]>(REG.chipRevision, [ops.chip.revision]);
    this.addRegister<[number]>(REG.slotSize, [ops.nextUpdate().partition.size]);
    this.addRegister<[number]>(REG.bulkWriteMax, [bulkWriteMax]);
    this.trustedKeys = this.addRegister<[number]>(REG.trustedKeys, [ops.efuse.trustedMask]);
    this.runningSigners = this.addRegister<[number]>(REG.runningSigners, [ops.runningSigners()]);

    this.addCommand(CMD.begin, (pkt) => {
      const [size] = pkt.jdunpack<[number]>("u32");
      const r = this.ops.begin(size);
      this.afterWrite();
      this.reply("begin", "u8 u8", [r.status, r.slot]);
      this.hooks.onOp?.({ op: "begin", status: r.status, size });
    });
    this.addCommand(CMD.resume, (pkt) => {
      const [size, offset] = pkt.jdunpack<[number, number]>("u32 u32");
      const r = this.ops.resume(size, offset);
      this.afterWrite();
      this.reply("resume", "u32 u8", [r.written, r.status]);
      this.hooks.onOp?.({ op: "resume", status: r.status, size, offset });
    });
    this.addCommand(CMD.write, (pkt) => {
      const [offset, data] = pkt.jdunpack<[number, Uint8Array]>("u32 b");
      this.write(offset, data, false);
    });
    this.addCommand(CMD.end, (pkt) => {
      const [sha] = pkt.jdunpack<[Uint8Array]>("b");
      const r = this.ops.end(sha);
      this.reply("end", "u8 s", [r.status, r.reason]);
      this.hooks.onOp?.({ op: "end", status: r.status, reason: r.reason });
    });
    this.addCommand(CMD.setBoot, () => {
      const st = this.hooks.failOp?.("set_boot") ?? this.ops.setBoot();
      this.reply("set_boot", "u8", [st]);
      this.hooks.onOp?.({ op: "set_boot", status: st });
    });
    this.addCommand(CMD.markValid, () => {
      const st = this.hooks.failOp?.("mark_valid") ?? this.ops.markValid();
      this.imageState.setValues([this.ops.runningState()]);
      this.reply("mark_valid", "u8", [st]);
      this.hooks.onOp?.({ op: "mark_valid", status: st });
    });
    this.addCommand(CMD.revokeKey, (pkt) => {
      const [index] = pkt.jdunpack<[number]>("u8");
      const st = this.hooks.failOp?.("revoke_key") ?? this.ops.revokeKey(index);
      this.trustedKeys.setValues([this.ops.efuse.trustedMask]);
      this.runningSigners.setValues([this.ops.runningSigners()]);
      this.reply("revoke_key", "u8", [st]);
      this.hooks.onOp?.({ op: "revoke_key", status: st, index });
    });
    this.addCommand(CMD.markInvalid, () => {
      const st = this.hooks.failOp?.("mark_invalid") ?? this.ops.markInvalid();
      this.hooks.onOp?.({ op: "mark_invalid", status: st });
      // esp_ota_mark_app_invalid_rollback_and_reboot: on success the chip resets and nothing answers.
      if (st === Status.Ok) this.hooks.reset();
      else this.reply("mark_invalid", "u8", [st]);
    });
  }

  /** A bulk write: a large frame with topic otawriter/write/<offset>. Returns false if the topic is not ours. */
  handleLargeFrame(topic: string, data: Uint8Array): boolean {
    if (!topic.startsWith(BULK_TOPIC)) return false;
    const text = topic.slice(BULK_TOPIC.length);
    if (!/^[0-9]{1,10}$/.test(text)) return false;
    this.write(Number(text), data, true);
    return true;
  }

  private write(offset: number, data: Uint8Array, bulk: boolean): void {
    if (this.hooks.dropWrite?.(offset, data.length, bulk)) return;
    const r = this.ops.write(offset, data);
    this.afterWrite();
    this.reply("write", "u32 u32 u8", [offset, r.written, r.status]);
    this.hooks.onOp?.({ op: "write", status: r.status, offset, length: data.length, bulk, data });
  }

  private afterWrite(): void {
    this.bytesWritten.setValues([this.ops.bytesWritten]);
  }

  private reply(op: WriterOp["op"], fmt: string, values: jd.PackedValues): void {
    const code = CMD_OF[op];
    let pkt = jd.Packet.jdpacked(code, fmt, values);
    if (this.hooks.mangleAnswer) pkt = jd.Packet.from(code, this.hooks.mangleAnswer(op, pkt.data));
    void this.sendPacketAsync(pkt);
  }
}

/** Splits a Jacdac large frame: [crc:2][0xff][..5][device id:8][topic NUL][data]. */
export function parseLargeFrame(frame: Uint8Array): { topic: string; data: Uint8Array } | null {
  if (frame.length < 17 || frame[2] !== 0xff) return null;
  const rest = frame.subarray(16);
  const nul = rest.indexOf(0);
  if (nul < 0) return null;
  return { topic: Buffer.from(rest.subarray(0, nul)).toString("utf8"), data: rest.subarray(nul + 1) };
}
