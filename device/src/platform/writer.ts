// Client of the native OTA writer (device/services/otawriter.md).
//
// Writes are pipelined: several pieces are in flight, each acknowledged by a `write` report that says how
// many contiguous bytes the writer holds. A lost piece shows up as a `gap` report or as silence; either way
// the sender goes back to where the writer's data ends (go-back-N). Duplicates are harmless: writes are
// offset-addressed and idempotent.
//
// Pieces travel as bulk writes (Jacdac large frames, not subject to the runtime's 50 packets/s limit) when
// the writer offers them, else as 232-byte `write` commands (236-byte payload minus the offset).

import * as ds from "@devicescript/core"
import { fail } from "../agent/errors"
import { EndResult, W_GAP, W_OK, Writer, WriterInfo } from "../agent/platform"
import { request } from "./request"

const CMD_BEGIN = 0x80
const CMD_RESUME = 0x81
const CMD_WRITE = 0x82
const CMD_END = 0x83
const CMD_SET_BOOT = 0x84
const CMD_MARK_VALID = 0x85
const CMD_MARK_INVALID = 0x86
const CMD_REVOKE_KEY = 0x87

const COMMAND_PIECE = 232
const COMMAND_WINDOW = 8 // pieces in flight: fits the runtime's transmit queue
const BULK_PIECE = 512 // a piece and its frame copy are what a bulk write adds to the heap
const BULK_WINDOW = 16
// The fixed part of each report (otawriter.md). A shorter answer cannot be read: decoding it would give
// zeros, and status 0 is Ok, so it is refused rather than taken for a success.
const BEGIN_REPORT = 2 // status, slot
const RESUME_REPORT = 5 // bytes_written, status
const WRITE_REPORT = 9 // offset, bytes_written, status
const STATUS_REPORT = 1 // status (end adds its reason, which may be empty)
const ACK_TIMEOUT_MS = 3000
const MAX_STALLS = 10

function statusOf(d: any): number {
    return typeof d === "number" ? d : d[0]
}

export class OtaWriterClient implements Writer {
    private role = new ds.OtaWriter()
    private replies = ds.emitter<ds.Packet>()
    private progress = ds.emitter<number>()
    private acked = 0
    private reports = 0
    private gap = false
    private error = 0
    private short = -1 // the length of a write report too short to read, else -1
    private bulkMax = 0
    private useBulk: boolean
    private pieceBuf: Buffer = null

    constructor(useBulk: boolean) {
        this.useBulk = useBulk
        const self = this // arrow functions cannot use `this` in DeviceScript
        this.role.report().subscribe(pkt => {
            if (pkt.serviceCommand !== CMD_WRITE) self.replies.emit(pkt)
            else if (pkt.payload.length < WRITE_REPORT) {
                self.short = pkt.payload.length
                self.reports++
                self.progress.emit(self.acked)
            } else self.onWrite(pkt.decode())
        })
    }

    private onWrite(d: any) {
        // [offset, bytes_written, status]
        const written: number = d[1]
        const status: number = d[2]
        this.reports++
        if (status === W_OK) {
            if (written > this.acked) this.acked = written
        } else if (status === W_GAP) {
            this.acked = written
            this.gap = true
        } else this.error = status
        this.progress.emit(this.acked)
    }

    /** Bulk writes when the writer offers them (true), or 232-byte write commands only. */
    setBulk(on: boolean) {
        this.useBulk = on
    }

    async ready(): Promise<void> {
        while (!this.role.isBound) await ds.sleep(50)
    }

    async info(): Promise<WriterInfo> {
        const r = this.role
        const sha: Buffer = await r.runningSha256.read()
        const info: WriterInfo = {
            runningSlot: await r.runningSlot.read(),
            imageState: await r.imageState.read(),
            runningVersion: await r.runningVersion.read(),
            secureVersion: await r.secureVersion.read(),
            runningSha256: sha ? sha.toString("hex") : "",
            chip: await r.chip.read(),
            chipRevision: await r.chipRevision.read(),
            slotSize: await r.slotSize.read(),
            bulkWriteMax: await r.bulkWriteMax.read(),
            trustedKeys: await r.trustedKeys.read(),
            runningSigners: await r.runningSigners.read(),
        }
        this.bulkMax = this.useBulk ? Math.min(info.bulkWriteMax, BULK_PIECE) : 0
        this.pieceBuf = Buffer.alloc(this.bulkMax > 0 ? this.bulkMax : COMMAND_PIECE) // at start, kept
        return info
    }

    /** Sends a command and waits for its report; resends a few times when none comes (commands may be lost). */
    private async call(code: number, minBytes: number, send: () => Promise<void>, timeoutMs: number): Promise<any> {
        const pkt = await request(this.replies, send, p => p.serviceCommand === code, timeoutMs, 3)
        if (!pkt) fail("write_failed", "the writer did not answer command " + code)
        const n = pkt.payload.length
        if (n < minBytes) fail("write_failed", "the writer answered command " + code + " with " + n + " bytes, at least " + minBytes + " expected")
        return pkt.decode()
    }

    async begin(size: number): Promise<number> {
        const role = this.role
        const d = await this.call(CMD_BEGIN, BEGIN_REPORT, async () => await role.begin(size), 60000)
        if (statusOf(d) === W_OK) this.acked = 0
        return statusOf(d)
    }

    async resume(size: number, offset: number): Promise<number> {
        const role = this.role
        const d = await this.call(CMD_RESUME, RESUME_REPORT, async () => await role.resume(size, offset), 10000)
        // [bytes_written, status]
        if (d[1] === W_OK) this.acked = d[0]
        return d[1]
    }

    async write(data: Buffer, offset: number, length: number): Promise<void> {
        const end = offset + length
        const piece = this.bulkMax > 0 ? this.bulkMax : COMMAND_PIECE
        const window = piece * (this.bulkMax > 0 ? BULK_WINDOW : COMMAND_WINDOW)
        // Pieces are copied into one reused buffer (a fresh one only for a short last piece).
        if (!this.pieceBuf || this.pieceBuf.length !== piece) this.pieceBuf = Buffer.alloc(piece)
        let sent = offset
        let stalls = 0
        this.error = 0
        this.short = -1
        this.gap = false
        while (this.acked < end) {
            if (this.acked < offset) throw new Error("the writer holds " + this.acked + " bytes, expected " + offset)
            const seen = this.reports
            while (sent < end && sent - this.acked < window) {
                const n = Math.min(piece, end - sent)
                let chunk = this.pieceBuf
                if (n === piece) chunk.blitAt(0, data, sent - offset, n)
                else chunk = data.slice(sent - offset, sent - offset + n)
                if (this.bulkMax > 0) await ds._twinMessage("otawriter/write/" + sent, chunk)
                else await this.role.write(sent, chunk)
                sent += n
            }
            if (this.acked >= end) break
            if (this.reports === seen) {
                const v = await ds.wait(this.progress, ACK_TIMEOUT_MS)
                if (v === undefined) {
                    if (++stalls > MAX_STALLS) fail("write_failed", "the writer acknowledged no write for " + (MAX_STALLS * ACK_TIMEOUT_MS) / 1000 + " s")
                    sent = this.acked // resend everything not acknowledged
                    continue
                }
            }
            if (this.short >= 0) fail("write_failed", "the writer answered a write with " + this.short + " bytes, " + WRITE_REPORT + " expected")
            if (this.error) fail("write_failed", "writer status " + this.error + " at offset " + this.acked)
            if (this.gap) {
                this.gap = false
                sent = this.acked
            }
            stalls = 0
        }
    }

    async end(sha256: Buffer): Promise<EndResult> {
        const role = this.role
        const d = await this.call(CMD_END, STATUS_REPORT, async () => await role.end(sha256), 60000)
        return { status: d[0], reason: d[1] ? d[1] : "" }
    }

    async setBoot(): Promise<number> {
        const role = this.role
        return statusOf(await this.call(CMD_SET_BOOT, STATUS_REPORT, async () => await role.setBoot(), 30000))
    }

    async markValid(): Promise<number> {
        const role = this.role
        return statusOf(await this.call(CMD_MARK_VALID, STATUS_REPORT, async () => await role.markValid(), 10000))
    }

    async imageState(): Promise<number> {
        return await this.role.imageState.read()
    }

    async revokeKey(index: number): Promise<number> {
        const role = this.role
        return statusOf(await this.call(CMD_REVOKE_KEY, STATUS_REPORT, async () => await role.revokeKey(index), 10000))
    }

    /** On success the chip resets and this never returns; returns only the status of a refusal. */
    async markInvalidAndReboot(): Promise<number> {
        const role = this.role
        return statusOf(await this.call(CMD_MARK_INVALID, STATUS_REPORT, async () => await role.markInvalidAndReboot(), 10000))
    }
}
