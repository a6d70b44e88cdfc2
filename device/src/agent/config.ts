// Configuration, read from settings (device/README.md lists every key). The four identity settings come
// from `ota device provision`; the rest have defaults that suit a real device.

import { messageOf } from "./errors"
import { Store, System } from "./platform"
import { Url, parseUrl } from "./url"
import { isHex } from "./verify"

export interface Config {
    deviceId: string
    apiKey: string
    macKey: Buffer
    server: Url
    /** Seconds between polls when the server suggests nothing. */
    pollS: number
    /** Poll period spread, percent either side. */
    jitterPct: number
    /** First and longest wait after a network failure, seconds. */
    backoffS: number
    backoffMaxS: number
    /** Tries of one request (a block, a report) before the cycle gives up. */
    retries: number
    /** Tries of the first-boot health check, and seconds between them. */
    healthTries: number
    healthWaitS: number
    /** Installs of one image (rolled back or failed) before it is no longer tried. */
    attempts: number
    /** "auto" (bulk writes when the writer offers them) or "command" (232-byte write commands only). */
    writeMode: string
    /** Bytes between progress reports while downloading. */
    progressBytes: number
    /** Size of the block buffer, allocated once at start: the largest block_size the agent accepts. */
    blockBuffer: number
    /** Bytes set aside at start and never used: proves the agent fits in what is left of the heap. */
    ballast: number
    /** Socket timeout, milliseconds. */
    timeoutMs: number
    /** Revoke the key digests older than the running image's signer once it is confirmed (agent/keys.ts). */
    revokeKeys: boolean
}

export const KEY_DEVICE_ID = "dev_id"
export const KEY_API_KEY = "api_key"
export const KEY_MAC_KEY = "mac_key"
export const KEY_SERVER_URL = "server_url"

async function num(store: Store, key: string, dflt: number, min: number, max: number, sys: System) {
    const v = await store.read(key)
    if (v === undefined || v === null) return dflt
    if (typeof v !== "number" || v < min || v > max) {
        sys.log("setting " + key + " must be a number from " + min + " to " + max + "; using " + dflt)
        return dflt
    }
    return v
}

/** The configuration, or null while the identity settings are missing or unusable. */
export async function loadConfig(store: Store, sys: System): Promise<Config> {
    const deviceId = await store.read(KEY_DEVICE_ID)
    const apiKey = await store.read(KEY_API_KEY)
    const macHex = await store.read(KEY_MAC_KEY)
    const serverUrl = await store.read(KEY_SERVER_URL)
    if (typeof deviceId !== "string" || deviceId.length === 0 || deviceId.length > 64) return null
    if (typeof apiKey !== "string" || apiKey.length === 0 || apiKey.length > 256) return null
    if (!isHex(macHex, 64)) {
        if (macHex !== undefined && macHex !== null) sys.log("setting mac_key must be 64 hex digits")
        return null
    }
    let server: Url = null
    try {
        server = parseUrl(serverUrl)
    } catch (e) {
        if (serverUrl !== undefined && serverUrl !== null) sys.log("setting server_url: " + messageOf(e))
        return null
    }
    let writeMode = await store.read("write_mode")
    if (writeMode !== "command") writeMode = "auto"
    return {
        deviceId: deviceId,
        apiKey: apiKey,
        macKey: Buffer.from(macHex.toLowerCase(), "hex"),
        server: server,
        pollS: await num(store, "poll", 300, 1, 86400, sys),
        jitterPct: await num(store, "jitter", 10, 0, 50, sys),
        backoffS: await num(store, "backoff", 10, 0.1, 3600, sys),
        backoffMaxS: await num(store, "backoff_max", 600, 1, 86400, sys),
        retries: await num(store, "retries", 5, 1, 100, sys),
        healthTries: await num(store, "health_tries", 5, 1, 100, sys),
        healthWaitS: await num(store, "health_wait", 10, 0.1, 3600, sys),
        attempts: await num(store, "attempts", 3, 1, 100, sys),
        writeMode: writeMode,
        progressBytes: await num(store, "progress", 65536, 1024, 16777216, sys),
        blockBuffer: await num(store, "block_buf", 8192, 1024, 16384, sys),
        ballast: await num(store, "ballast", 0, 0, 57000, sys),
        timeoutMs: await num(store, "timeout", 20000, 500, 600000, sys),
        revokeKeys: (await store.read("revoke_keys")) === true,
    }
}
