// Reports (POST /firmware/report): one per state change, each with a report_id so a retry is stored once.
// A report that cannot be sent now waits in a short queue and goes out, in order, with the next one.

import { Config } from "./config"
import { messageOf } from "./errors"
import { Platform } from "./platform"
import { apiUrl } from "./url"

const MAX_QUEUED = 8

export interface ReportFields {
    version?: string
    target_version?: string
    reason?: string
    error?: string
    bytes?: number
    total?: number
    sha256?: string
}

export class Reporter {
    private cfg: Config
    private p: Platform
    private queue: any[] = []
    private seq = 0
    private prefix: string

    constructor(cfg: Config, p: Platform) {
        this.cfg = cfg
        this.p = p
        // Unique per boot, so ids never repeat across resets even though the counter restarts.
        this.prefix = p.sys.randomHex(6)
    }

    /**
     * Sends a state change and emits it. `keep`: queue it for later if it cannot be sent now (progress
     * reports are not kept: the next one supersedes them). `id`: a report id that stays the same when the
     * same report is made again after a reset. True when the server has stored it.
     */
    async send(status: string, f: ReportFields, keep: boolean, id?: string): Promise<boolean> {
        const body: any = { device_id: this.cfg.deviceId, status: status }
        const ev: any = { state: status }
        const keys = ["version", "target_version", "reason", "error", "bytes", "total", "sha256"]
        for (let i = 0; i < keys.length; i++) {
            const v = (f as any)[keys[i]]
            if (v !== undefined && v !== null && v !== "") {
                body[keys[i]] = v
                ev[keys[i]] = v
            }
        }
        if (typeof body.error === "string" && body.error.length > 1000) body.error = body.error.slice(0, 1000)
        this.seq++
        body.report_id = id ? id : this.prefix + "-" + this.seq
        let stored = false
        let sent = false
        if (this.queue.length > 0) await this.flush()
        if (this.queue.length === 0) {
            const r = await this.post(body)
            sent = r !== "retry"
            stored = r === "ok"
        }
        if (!sent && keep) {
            if (this.queue.length >= MAX_QUEUED) this.queue.shift()
            this.queue.push(body)
        }
        // The event line says whether the server has the report (false: queued, or it could not be sent).
        ev.reported = stored
        this.p.sys.emit(ev)
        return stored
    }

    /** Sends what is queued, oldest first; stops at the first one the network refuses. True when empty. */
    async flush(): Promise<boolean> {
        while (this.queue.length > 0) {
            const r = await this.post(this.queue[0])
            if (r === "retry") return false
            this.queue.shift()
        }
        return true
    }

    private async post(body: any): Promise<string> {
        try {
            const res = await this.p.http.request({
                method: "POST",
                url: apiUrl(this.cfg.server, "/firmware/report"),
                headers: [
                    "X-API-Key: " + this.cfg.apiKey,
                    "X-Device-Id: " + this.cfg.deviceId,
                    "Content-Type: application/json",
                ],
                body: JSON.stringify(body),
                maxBody: 2048,
            })
            if (res.status === 200) return "ok"
            if (res.status === 429 || res.status >= 500) return "retry"
            // The server refused it for good (bad field, wrong key): sending it again would not help.
            this.p.sys.log("report " + body.status + " refused with HTTP " + res.status)
            return "drop"
        } catch (e) {
            this.p.sys.log("report " + body.status + " not sent: " + messageOf(e))
            return "retry"
        }
    }
}
