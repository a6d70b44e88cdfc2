// Configuration, read from settings (device/README.md lists every key). The four identity settings come
// from `ota device provision`; the rest have defaults that suit a real device.

import { messageOf } from "./errors"
import { Store, System } from "./platform"
import { BrokerUrl, Url, parseBrokerUrl, parseUrl } from "./url"
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
    /** The MQTT broker for update notices (agent/notice.ts); null: none, poll only. */
    mqtt: BrokerUrl
    /** User name and password at the broker ("": connect without). */
    mqttUser: string
    mqttPass: string
    /** The topic the server publishes this device's notices on. */
    mqttTopic: string
    /** MQTT keep-alive, seconds: a ping goes out this often while subscribed. */
    mqttKeepaliveS: number
}

export const KEY_DEVICE_ID = "dev_id"
export const KEY_API_KEY = "api_key"
export const KEY_MAC_KEY = "mac_key"
export const KEY_SERVER_URL = "server_url"

function hexDigit(c: number): boolean {
    return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)
}

/**
 * The device's name at the broker, as the server derives it (docs/protocol.md#topics): a MAC id in any spelling
 * (aa:bb:cc:dd:ee:ff, AA-BB-..., aabbccddeeff) as its 12 hex digits in upper case, any other id unchanged.
 */
export function mqttNameOf(deviceId: string): string {
    const n = deviceId.length
    if (n !== 12 && n !== 17) return deviceId
    let hex = ""
    for (let i = 0; i < n; i++) {
        const c = deviceId.charCodeAt(i)
        if (n === 17 && i % 3 === 2) {
            if (c !== 58 && c !== 45) return deviceId
        } else {
            if (!hexDigit(c)) return deviceId
            hex = hex + deviceId.charAt(i)
        }
    }
    return hex.toUpperCase()
}

async function str(store: Store, key: string, max: number, sys: System): Promise<string> {
    const v = await store.read(key)
    if (v === undefined || v === null) return ""
    if (typeof v !== "string" || v.length > max) {
        sys.log("setting " + key + " must be text of at most " + max + " characters; ignored")
        return ""
    }
    return v
}

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
    let mqtt: BrokerUrl = null
    const mqttUrl = await store.read("mqtt_url")
    if (mqttUrl !== undefined && mqttUrl !== null && mqttUrl !== "") {
        try {
            mqtt = parseBrokerUrl(mqttUrl)
        } catch (e) {
            sys.log("setting mqtt_url: " + messageOf(e) + "; polling only")
        }
    }
    let mqttTopic = ""
    let mqttUser = ""
    let mqttPass = ""
    if (mqtt) {
        const name = mqttNameOf(deviceId)
        mqttTopic = await str(store, "mqtt_topic", 200, sys)
        if (mqttTopic === "") mqttTopic = "ota/" + name + "/desired"
        mqttUser = await str(store, "mqtt_user", 128, sys)
        mqttPass = await str(store, "mqtt_pass", 128, sys)
        if (mqttUser === "" && mqttPass !== "") mqttUser = name
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
        mqtt: mqtt,
        mqttUser: mqttUser,
        mqttPass: mqttPass,
        mqttTopic: mqttTopic,
        mqttKeepaliveS: await num(store, "mqtt_keepalive", 60, 5, 3600, sys),
    }
}
