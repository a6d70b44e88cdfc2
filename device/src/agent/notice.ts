// Update notices over MQTT (docs/protocol.md#mqtt-update-notices). While the agent waits for its next poll it
// is subscribed to its topic; a notice whose HMAC verifies under the device's own key, for this device, with a
// seq above the last one accepted, ends the wait at once: the agent polls now. That is all a notice can do: what
// gets installed is what the verified manifest says. Anything else on the topic is counted and ignored.
// The VM has one socket, so the subscription exists only during the wait: it is closed before every HTTPS
// exchange. An unreachable broker costs nothing but the notices: the agent still polls on its period, and tries
// the broker again with backoff.

import { backoffDelay } from "./backoff"
import { Config, mqttNameOf } from "./config"
import { messageOf } from "./errors"
import { MqttMessage, Platform } from "./platform"
import { isHex, macMatches } from "./verify"

/** Setting that keeps the last accepted seq across resets, so a replayed notice is refused after a reboot too. */
export const KEY_NOTICE_SEQ = "mqtt_seq"

const MAGIC = "esp32-ota-notice/1"

function isText(v: any, max: number): boolean {
    return typeof v === "string" && v.length <= max && v.indexOf("\n") < 0
}

function isCount(v: any): boolean {
    return typeof v === "number" && v >= 0 && v <= 9007199254740991 && Math.floor(v) === v
}

/** The exact text the notice's HMAC covers: eight lines joined by "\n", none at the end. */
export function noticeText(deviceId: string, seq: number, offer: any): string {
    let lines = MAGIC + "\n" + deviceId + "\n" + seq + "\n"
    if (!offer) return lines + "\n\n\n\n"
    const release = offer.release === null || offer.release === undefined ? "" : offer.release
    return lines + release + "\n" + offer.version + "\n" + offer.sha256 + "\n" + offer.size + "\n" + offer.url
}

/** Why a message is ignored, or "" when its shape is a notice's (its HMAC still unchecked). */
function shapeProblem(n: any): string {
    if (!n || typeof n !== "object" || n.v !== 1) return "malformed"
    if (!isText(n.device_id, 64) || !isCount(n.seq) || n.seq < 1 || !isHex(n.hmac, 64)) return "malformed"
    const o = n.offer
    if (o === null) return ""
    if (!o || typeof o !== "object") return "malformed"
    if (!(o.release === null || o.release === undefined || isText(o.release, 128))) return "malformed"
    if (!isText(o.version, 64) || !isHex(o.sha256, 64) || !isCount(o.size) || !isText(o.url, 512)) return "malformed"
    return ""
}

export class Notices {
    cfg: Config
    p: Platform
    /** Highest seq accepted (0: none yet). */
    lastSeq = 0
    /** Messages ignored since boot: not a notice, not for this device or a wrong HMAC, seq not above the last. */
    malformed = 0
    forged = 0
    stale = 0
    /** Connections that failed in a row; the next try waits for `retryAt` (millis). */
    failures = 0
    retryAt = 0
    /** The last connection succeeded (mqtt_online was announced). */
    reachable = false

    /** Only for a device with a broker (cfg.mqtt) and an MQTT client (p.mqtt). */
    constructor(cfg: Config, p: Platform) {
        this.cfg = cfg
        this.p = p
    }

    async load(): Promise<void> {
        const v = await this.p.store.read(KEY_NOTICE_SEQ)
        if (isCount(v)) this.lastSeq = v
    }

    /**
     * Waits `ms` milliseconds, subscribed to this device's notices while the broker can be reached.
     * True when a valid new notice ended the wait early. The MQTT connection is closed on return.
     */
    async idle(ms: number): Promise<boolean> {
        const sys = this.p.sys
        const end = sys.millis() + ms
        const cfg = this.cfg
        const mqtt = this.p.mqtt
        try {
            for (;;) {
                const now = sys.millis()
                if (now >= end) return false
                if (now < this.retryAt) {
                    await sys.sleep(Math.min(end, this.retryAt) - now)
                    continue
                }
                try {
                    await mqtt.open(cfg.mqtt, "ota-" + mqttNameOf(cfg.deviceId), cfg.mqttUser, cfg.mqttPass, cfg.mqttTopic, cfg.mqttKeepaliveS)
                    if (!this.reachable) sys.emit({ state: "mqtt_online", topic: cfg.mqttTopic })
                    this.reachable = true
                    this.failures = 0
                    for (;;) {
                        const left = end - sys.millis()
                        if (left <= 0) return false
                        const m = await mqtt.next(left)
                        if (m && (await this.accept(m))) return true
                    }
                } catch (e) {
                    await mqtt.close()
                    this.failures++
                    this.reachable = false
                    this.retryAt = sys.millis() + backoffDelay(cfg, sys, this.failures)
                    sys.emit({ state: "mqtt_offline", error: messageOf(e), failures: this.failures })
                }
            }
        } finally {
            await mqtt.close()
        }
    }

    /** True for a valid new notice (its seq is then remembered); anything else is counted and ignored. */
    async accept(m: MqttMessage): Promise<boolean> {
        // An empty retained message clears the topic: nothing to count.
        if (m.payload.length === 0 && m.retained) return false
        let n: any = null
        try {
            n = JSON.parse(m.payload.toString())
        } catch (e) {
            n = null
        }
        const problem = shapeProblem(n)
        if (problem !== "") return this.ignore(problem, 0)
        const sys = this.p.sys
        const own = mqttNameOf(n.device_id) === mqttNameOf(this.cfg.deviceId)
        const mac = sys.hmacSha256(this.cfg.macKey, Buffer.from(noticeText(n.device_id, n.seq, n.offer)))
        if (!own || !macMatches(n.hmac, mac)) return this.ignore(own ? "hmac_mismatch" : "other_device", n.seq)
        if (n.seq <= this.lastSeq) {
            // The broker's retained copy of the notice already acted on, sent again at each subscription.
            if (n.seq === this.lastSeq && m.retained) return false
            return this.ignore("stale", n.seq)
        }
        this.lastSeq = n.seq
        await this.p.store.write(KEY_NOTICE_SEQ, n.seq, true)
        sys.emit({ state: "notice", seq: n.seq, sha256: n.offer ? n.offer.sha256 : null })
        return true
    }

    private ignore(reason: string, seq: number): boolean {
        if (reason === "malformed") this.malformed++
        else if (reason === "stale") this.stale++
        else this.forged++
        this.p.sys.emit({
            state: "notice_ignored",
            reason: reason,
            seq: seq,
            last_seq: this.lastSeq,
            malformed: this.malformed,
            forged: this.forged,
            stale: this.stale,
        })
        return false
    }
}
