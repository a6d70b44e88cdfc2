// The agent: wait for provisioning, finish whatever a reset interrupted, then poll forever. Each cycle is one
// check-in and, when the server offers something new and acceptable, one install. Between cycles it listens
// for update notices (notice.ts), which can only bring the next cycle forward.

import { backoffDelay, pollDelay } from "./backoff"
import { CHECKIN_NONE, CHECKIN_OFFER, CHECKIN_UNCHANGED, Manifest, checkIn } from "./checkin"
import { loadCheckpoint } from "./checkpoint"
import { Config, loadConfig } from "./config"
import { detailOf, messageOf, reasonOf } from "./errors"
import { Platform, WriterInfo } from "./platform"
import { Notices } from "./notice"
import { REFUSE, UP_TO_DATE, decide } from "./policy"
import { Reporter } from "./reporter"
import { INSTALL_NETWORK, Updater } from "./update"

/** Held for the whole run when the `ballast` setting asks for it (heap budget tests). */
let ballast: Buffer = null

export class Agent {
    cfg: Config
    p: Platform
    info: WriterInfo
    reporter: Reporter
    updater: Updater
    failures = 0
    /** Server-suggested poll interval, seconds (0: none yet). */
    interval = 0
    /** ETag of the offer already judged (up to date or refused): sent as If-None-Match. */
    judged = ""
    /** Last state reported this boot, with the image it concerned. */
    last = ""

    constructor(cfg: Config, p: Platform, info: WriterInfo, reporter: Reporter, updater: Updater) {
        this.cfg = cfg
        this.p = p
        this.info = info
        this.reporter = reporter
        this.updater = updater
    }

    /** One check-in (and install); returns milliseconds to wait before the next. */
    async cycle(): Promise<number> {
        const p = this.p
        try {
            await this.updater.settle()
            await this.reporter.flush()
            const c = await checkIn(this.cfg, p, this.info, this.judged)
            if (this.failures > 0) p.sys.emit({ state: "online" })
            this.failures = 0
            if (c.kind === CHECKIN_UNCHANGED) return pollDelay(this.cfg, p.sys, this.interval)
            if (c.kind === CHECKIN_NONE) {
                if (c.retryAfter > 0) return c.retryAfter * 1000
                // Reported once per reason: no_firmware, or waiting_for_rollout_stage (a release is for this
                // device, its rollout has not reached it yet).
                const idle = "idle:" + c.reason
                if (this.last !== idle) {
                    await this.reporter.send("idle", { version: this.info.runningVersion, reason: c.reason }, false)
                    this.last = idle
                }
                return pollDelay(this.cfg, p.sys, this.interval)
            }
            if (c.kind === CHECKIN_OFFER) return await this.offer(c.manifest)
        } catch (e) {
            const reason = reasonOf(e)
            if (reason === "network" || reason === "server_error" || reason === "unauthorized") {
                this.failures++
                p.sys.emit({ state: "offline", reason: reason, error: messageOf(e), failures: this.failures })
                return backoffDelay(this.cfg, p.sys, this.failures)
            }
            // An answer that is not authentic, or not for this request: refused and reported, never used.
            await this.reporter.send(
                "rejected",
                { version: this.info.runningVersion, reason: reason, error: detailOf(e) },
                true
            )
            return pollDelay(this.cfg, p.sys, this.interval)
        }
        return pollDelay(this.cfg, p.sys, this.interval)
    }

    private async offer(m: Manifest): Promise<number> {
        const sys = this.p.sys
        this.interval = m.interval
        const d = decide(m, this.info, this.cfg, this.updater.ck)
        if (d.action === UP_TO_DATE) {
            this.judged = m.etag
            const key = m.sha256
            // Right after "confirmed" the device is up to date by definition: no second report for it.
            if (this.last !== "up_to_date:" + key && this.updater.confirmed !== key) {
                await this.reporter.send("up_to_date", { version: this.info.runningVersion, sha256: m.sha256 }, false)
            }
            this.last = "up_to_date:" + key
            return pollDelay(this.cfg, sys, this.interval)
        }
        if (d.action === REFUSE) {
            this.judged = m.etag
            const key = "rejected:" + d.reason + ":" + m.sha256
            if (this.last !== key)
                await this.reporter.send(
                    "rejected",
                    {
                        version: this.info.runningVersion,
                        target_version: m.version,
                        sha256: m.sha256,
                        reason: d.reason,
                        error: d.detail,
                    },
                    true
                )
            this.last = key
            return pollDelay(this.cfg, sys, this.interval)
        }
        // INSTALL: reboots into the new image on success.
        this.judged = ""
        this.last = ""
        const r = await this.updater.install(m)
        if (r === INSTALL_NETWORK) {
            this.failures++
            return backoffDelay(this.cfg, sys, this.failures)
        }
        return pollDelay(this.cfg, sys, this.interval)
    }
}

/** The configuration, once provisioning has put the identity settings in place. */
export async function waitForConfig(p: Platform): Promise<Config> {
    let cfg = await loadConfig(p.store, p.sys)
    if (!cfg) {
        p.sys.emit({ state: "unprovisioned" })
        while (!cfg) {
            await p.sys.sleep(1000)
            cfg = await loadConfig(p.store, p.sys)
        }
    }
    return cfg
}

export async function runAgent(p: Platform, cfg: Config): Promise<void> {
    const sys = p.sys
    if (cfg.ballast > 0) ballast = Buffer.alloc(cfg.ballast)
    // The VM's heap does not compact: the large buffers are allocated first and kept, so that later
    // fragmentation can never leave no room for them.
    const block = Buffer.alloc(cfg.blockBuffer)
    await p.writer.ready()
    const info = await p.writer.info()
    sys.emit({
        state: "boot",
        version: info.runningVersion,
        slot: info.runningSlot,
        image_state: info.imageState,
        sha256: info.runningSha256,
    })
    const reporter = new Reporter(cfg, p)
    const updater = new Updater(cfg, p, reporter, info, await loadCheckpoint(p.store), block)
    const agent = new Agent(cfg, p, info, reporter, updater)
    const notices = p.mqtt && cfg.mqtt ? new Notices(cfg, p) : null
    if (notices) await notices.load()
    await updater.afterBoot()
    for (;;) {
        let wait = 1000
        try {
            wait = await agent.cycle()
        } catch (e) {
            sys.log("cycle failed: " + messageOf(e))
        }
        // The one socket goes to MQTT while waiting; idle connections are closed by servers anyway.
        await p.http.close()
        if (notices) await notices.idle(wait)
        else await sys.sleep(wait)
    }
}
