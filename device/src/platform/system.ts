// Time, randomness, hashing, settings and the event log, from the DeviceScript runtime.

import * as ds from "@devicescript/core"
import { hmac, randomBuffer } from "@devicescript/crypto"
import { deleteSetting, readSetting, writeSetting } from "@devicescript/settings"
import { Store, System } from "../agent/platform"

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
        // One line per state change: "ota {json}" (the host emulator and device:sim read these).
        console.log("ota " + JSON.stringify(event))
    }
    log(message: string): void {
        console.log("agent: " + message)
    }
    reboot(): void {
        ds.reboot()
    }
}

export class SettingsStore implements Store {
    async read(key: string): Promise<any> {
        return await readSetting(key, undefined)
    }
    async write(key: string, value: any, durable: boolean): Promise<void> {
        await writeSetting(key, value)
        // The settings service writes flash when it handles the command, in order: once a read of the same
        // key is answered, the write is in flash.
        if (durable) await readSetting(key, undefined)
    }
    async remove(key: string): Promise<void> {
        await deleteSetting(key)
    }
}
