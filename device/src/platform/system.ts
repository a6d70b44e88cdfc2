// Time, randomness, hashing, settings and the event log, from the DeviceScript runtime.

import * as ds from "@devicescript/core"
import { hmac, randomBuffer } from "@devicescript/crypto"
import { deleteSetting, settings } from "@devicescript/settings"
import { fail } from "../agent/errors"
import { Store, System } from "../agent/platform"
import { request } from "./request"

/** Longest event line in bytes: the runtime's console line buffer holds 300, with "> " before and a NUL after. */
const MAX_EVENT_LINE = 296

export class DeviceSystem implements System {
    millis(): number {
        return ds.millis()
    }
    async sleep(ms: number): Promise<void> {
        await ds.sleep(ms)
    }
    random(): number {
        return Math.random()
    }
    randomHex(bytes: number): string {
        return randomBuffer(bytes).toString("hex")
    }
    sha256(parts: Buffer[]): Buffer {
        // What crypto.digest() does, without spreading the array into arguments.
        return (Buffer as any).digest(undefined, "sha256", parts)
    }
    hmacSha256(key: Buffer, data: Buffer): Buffer {
        return hmac(key, "sha256", data)
    }
    emit(event: any): void {
        // One line per state change: "ota {json}" (the host emulator and device:sim read these). A console line
        // longer than the runtime's line buffer is cut and could no longer be read, so a long error is shortened
        // (the report to the server keeps it whole).
        let line = "ota " + JSON.stringify(event)
        let over = Buffer.from(line).length - MAX_EVENT_LINE
        while (over > 0 && typeof event.error === "string" && event.error.length > 0) {
            const keep = event.error.length - over - 3
            event.error = keep > 0 ? event.error.slice(0, keep) + "..." : ""
            line = "ota " + JSON.stringify(event)
            over = Buffer.from(line).length - MAX_EVENT_LINE
        }
        console.log(line)
    }
    log(message: string): void {
        console.log("agent: " + message)
    }
    reboot(): void {
        ds.reboot()
    }
}

const SETTINGS_GET = 0x80
const GET_TIMEOUT_MS = 2000
/**
 * The settings service answers a read with the key, a NUL and the value in one Jacdac packet, whose payload
 * is at most 232 bytes (a 236-byte frame less the packet header). A longer answer makes the runtime panic
 * (jd_queue_push) at every read of that key, boot after boot: such a value is never written.
 */
const MAX_SETTING = 232

/**
 * Settings through the runtime's settings service. Reads are answered by a report; @devicescript/settings
 * waits for it forever, so a lost frame would stop the agent: here a read is sent again after a timeout.
 */
export class SettingsStore implements Store {
    private replies = ds.emitter<ds.Packet>()

    constructor() {
        const replies = this.replies
        settings.report().subscribe(pkt => {
            if (pkt.serviceCommand === SETTINGS_GET) replies.emit(pkt)
        })
    }

    async read(key: string): Promise<any> {
        const pkt = await request(this.replies, async () => await settings.get(key), p => p.decode()[0] === key, GET_TIMEOUT_MS, 10)
        if (!pkt) throw new Error("settings: no answer for " + key)
        const b: Buffer = pkt.decode()[1]
        if (!b || b.length === 0) return undefined
        try {
            return JSON.parse(b.toString())
        } catch (e) {
            return undefined
        }
    }

    async write(key: string, value: any, durable: boolean): Promise<void> {
        const b = Buffer.from(JSON.stringify(value))
        if (key.length + 1 + b.length > MAX_SETTING)
            fail("write_failed", "setting " + key + " would take " + (key.length + 1 + b.length) + " bytes; at most " + MAX_SETTING + " can be read back")
        await settings.set(key, b)
        // The settings service writes flash when it handles the command, in order: once a read of the same
        // key is answered, the write is in flash.
        if (durable) await this.read(key)
    }

    async remove(key: string): Promise<void> {
        await deleteSetting(key)
    }
}
