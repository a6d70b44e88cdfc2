// The update state machine:
//
//   downloading ──► verifying ──► rebooting ══reset══► confirming ──► confirmed
//        │              │                                   │
//        └─ failed ◄────┘                                   └─ health check fails ══reset══► rolled_back
//
// Every step is saved in the checkpoint before the next one starts, so a reset or power cut at any point
// ends on a bootable image and carries on from where it stopped: a download resumes at its last block, a
// finished image is checked again and made bootable, a new image that never confirmed is rolled back by the
// bootloader and reported as such.

import { backoffDelay } from "./backoff"
import {
    Checkpoint,
    STAGE_CONFIRMING,
    STAGE_DOWNLOAD,
    STAGE_ENDED,
    STAGE_FAILED,
    STAGE_HEALTH_FAILED,
    STAGE_MARK_FAILED,
    STAGE_REBOOTING,
    clearCheckpoint,
    saveCheckpoint,
} from "./checkpoint"
import { Manifest } from "./checkin"
import { Config } from "./config"
import { fetchBlock, fetchBlockHashes } from "./download"
import { detailOf, fail, messageOf, reasonOf } from "./errors"
import { revokeOldKeys } from "./keys"
import { EndResult, Platform, STATE_PENDING_VERIFY, STATE_VALID, W_OK, WriterInfo } from "./platform"
import { ReportFields, Reporter } from "./reporter"

/** The image is valid; only the "confirmed" report is still to be stored. */
export const STAGE_CONFIRMED = "confirmed"

export const INSTALL_FAILED = "failed" // this image failed; the next poll decides again
export const INSTALL_NETWORK = "network" // the network failed; resume later from the checkpoint

// Writer statuses with a meaning of their own (device/services/otawriter.md).
const W_HASH_MISMATCH = 5
const W_IMAGE_INVALID = 6
const W_SIGNATURE_INVALID = 11
const W_SECURE_VERSION_TOO_LOW = 12

/** mark_valid commands before a new image that passed its health check is rolled back all the same. */
const MARK_VALID_TRIES = 2

function short(sha: string): string {
    return sha.slice(0, 12)
}

export class Updater {
    cfg: Config
    p: Platform
    reporter: Reporter
    info: WriterInfo
    ck: Checkpoint
    /** SHA-256 of the image reported confirmed during this boot. */
    confirmed = ""
    /** The one block buffer (block_buf bytes), allocated at start. */
    block: Buffer

    constructor(cfg: Config, p: Platform, reporter: Reporter, info: WriterInfo, ck: Checkpoint, block: Buffer) {
        this.cfg = cfg
        this.p = p
        this.reporter = reporter
        this.info = info
        this.ck = ck
        this.block = block
    }

    /** Saves the checkpoint, durably unless it only moved the download offset on. */
    private async save(durable = true): Promise<void> {
        await saveCheckpoint(this.p.store, this.ck, durable)
    }

    private fields(): ReportFields {
        const ck = this.ck
        return { version: this.info.runningVersion, target_version: ck ? ck.version : "", sha256: ck ? ck.sha : "" }
    }

    /**
     * At boot: a new image waiting for verification gets its health check; a valid image revokes the old keys
     * when the revoke_keys setting asks for it (again after a reset that came before the eFuse write).
     */
    async afterBoot(): Promise<void> {
        if (this.info.imageState === STATE_PENDING_VERIFY) await this.confirmNewImage()
        else if (this.cfg.revokeKeys) await revokeOldKeys(this.p, this.info)
    }

    /**
     * First boot of a new image: the health check is to reach the server and have a report stored. If it
     * passes the image is marked valid; if it fails, or the writer does not mark the image valid, the image is
     * marked invalid and the device resets into the previous one.
     */
    private async confirmNewImage(): Promise<void> {
        const info = this.info
        const sys = this.p.sys
        if (!this.ck || this.ck.sha !== info.runningSha256) {
            // Not installed by this agent (or its settings were lost): confirm what runs all the same.
            this.ck = {
                sha: info.runningSha256,
                version: info.runningVersion,
                size: 0,
                blockSize: 0,
                offset: 0,
                stage: STAGE_CONFIRMING,
                attempts: 0,
            }
        }
        this.ck.stage = STAGE_CONFIRMING
        await this.save()
        const id = "cf-" + short(this.ck.sha) + "-" + this.ck.attempts
        let healthy = false
        for (let t = 0; t < this.cfg.healthTries && !healthy; t++) {
            if (t > 0) await sys.sleep(this.cfg.healthWaitS * 1000)
            healthy = await this.reporter.send("confirming", this.fields(), false, id)
        }
        if (!healthy) {
            await this.rollBack(STAGE_HEALTH_FAILED, "health_check_failed", "the health check failed")
            return
        }
        if (!(await this.markValid())) {
            // Still pending verification, so the bootloader would roll it back at the next reset anyway: do it now,
            // and never report as confirmed an image the writer did not mark valid.
            await this.rollBack(STAGE_MARK_FAILED, "write_failed", "the writer did not mark the image valid")
            return
        }
        info.imageState = STATE_VALID
        this.ck.stage = STAGE_CONFIRMED
        await this.save()
        if (this.cfg.revokeKeys) await revokeOldKeys(this.p, info)
        await this.settle()
    }

    /**
     * Marks the running image valid. True once the writer answers Ok or, when its answer was refused, lost or
     * unreadable, once its image_state register says valid (the mark may have taken all the same).
     */
    private async markValid(): Promise<boolean> {
        const sys = this.p.sys
        const w = this.p.writer
        for (let t = 0; t < MARK_VALID_TRIES; t++) {
            try {
                const st = await w.markValid()
                if (st === W_OK) return true
                sys.log("mark_valid answered " + st)
            } catch (e) {
                sys.log("mark_valid: " + messageOf(e))
            }
            try {
                if ((await w.imageState()) === STATE_VALID) return true
            } catch (e) {
                sys.log("image_state: " + messageOf(e))
            }
        }
        return false
    }

    /**
     * Marks the new image invalid and resets into the previous one; `settle` reports it after the reset. Returns
     * only when there is no previous image: then this one is kept rather than brick the device, and the install
     * is reported failed with `reason` (`what` says in words what went wrong).
     */
    private async rollBack(stage: string, reason: string, what: string): Promise<void> {
        const info = this.info
        const sys = this.p.sys
        this.ck.stage = stage
        await this.save()
        sys.emit({ state: "rolling_back", reason: reason, version: info.runningVersion })
        await this.p.http.close()
        const st = await this.p.writer.markInvalidAndReboot()
        // Still here: there is no other image to go back to. Keep this one rather than brick the device.
        sys.log("rollback impossible (writer status " + st + "): keeping " + info.runningVersion)
        await this.markValid()
        this.ck.stage = STAGE_FAILED
        this.ck.attempts++
        await this.save()
        const f = this.fields()
        f.reason = reason
        f.error = what + " but there is no previous image to roll back to"
        await this.reporter.send("failed", f, true)
    }

    /**
     * Finishes what a reset interrupted, once the server can be told: a new image that runs and is valid is
     * reported confirmed; a new image that does not run (rolled back by the bootloader) is reported
     * rolled back. Called at boot and before every check-in until it has been reported.
     */
    async settle(): Promise<void> {
        const ck = this.ck
        if (!ck) return
        const st = ck.stage
        const afterReboot =
            st === STAGE_REBOOTING || st === STAGE_CONFIRMING || st === STAGE_HEALTH_FAILED || st === STAGE_MARK_FAILED
        if (st === STAGE_CONFIRMED || (afterReboot && ck.sha === this.info.runningSha256 && this.info.imageState !== STATE_PENDING_VERIFY)) {
            if (st !== STAGE_CONFIRMED) {
                ck.stage = STAGE_CONFIRMED
                await this.save()
            }
            const f = this.fields()
            f.sha256 = ck.sha
            if (await this.reporter.send("confirmed", f, false, "ok-" + short(ck.sha) + "-" + ck.attempts)) {
                await clearCheckpoint(this.p.store)
                this.ck = null
                this.confirmed = ck.sha
            }
            return
        }
        if (afterReboot) {
            const f = this.fields()
            f.reason = st === STAGE_HEALTH_FAILED ? "health_check_failed" : "not_confirmed"
            const why =
                st === STAGE_HEALTH_FAILED
                    ? " did not pass its health check; "
                    : st === STAGE_MARK_FAILED
                      ? " passed its health check but the writer did not mark it valid; "
                      : " was reset before it was confirmed; "
            f.error = ck.version + why + this.info.runningVersion + " runs again"
            if (await this.reporter.send("rolled_back", f, false, "rb-" + short(ck.sha) + "-" + ck.attempts)) {
                ck.stage = STAGE_FAILED
                ck.attempts++
                ck.offset = 0
                await this.save()
            }
        }
    }

    /** Installs the offer; on success the device resets into it and this never returns. */
    async install(m: Manifest): Promise<string> {
        const cfg = this.cfg
        const p = this.p
        const w = p.writer
        let ck = this.ck
        let resumeAt = 0
        if (ck && ck.sha === m.sha256 && ck.size === m.size && ck.blockSize === m.blockSize) {
            if (ck.stage === STAGE_DOWNLOAD) resumeAt = ck.offset
            else if (ck.stage === STAGE_ENDED) resumeAt = m.size
        }
        if (resumeAt === 0) {
            const attempts = ck && ck.sha === m.sha256 ? ck.attempts : 0
            ck = {
                sha: m.sha256,
                version: m.version,
                size: m.size,
                blockSize: m.blockSize,
                offset: 0,
                stage: STAGE_DOWNLOAD,
                attempts: attempts,
            }
        }
        this.ck = ck
        const f = this.fields()
        f.bytes = resumeAt
        f.total = m.size
        await this.reporter.send("downloading", f, true)
        try {
            let hashes: Buffer = null
            for (let attempt = 1; !hashes; attempt++) {
                try {
                    hashes = await fetchBlockHashes(cfg, p, m)
                } catch (e) {
                    await this.retryOrThrow(e, attempt, m, "block-hash list")
                }
            }
            const block = this.block
            let st = W_OK
            if (resumeAt > 0) {
                st = await w.resume(m.size, resumeAt)
                if (st !== W_OK) {
                    p.sys.log("resume refused (" + st + "): starting over")
                    resumeAt = 0
                }
            }
            if (resumeAt === 0) {
                st = await w.begin(m.size)
                if (st !== W_OK) fail("write_failed", "the writer refused to begin (status " + st + ")")
                ck.offset = 0
                ck.stage = STAGE_DOWNLOAD
                await this.save()
            }
            let nextProgress = (Math.floor(resumeAt / cfg.progressBytes) + 1) * cfg.progressBytes
            // The checkpoint is block aligned, except when the whole image is written (resumeAt = size).
            const first = resumeAt >= m.size ? m.blockCount : Math.floor(resumeAt / m.blockSize)
            for (let i = first; i < m.blockCount; i++) {
                let n = 0
                for (let attempt = 1; n === 0; attempt++) {
                    try {
                        n = await fetchBlock(cfg, p, m, i, hashes, block)
                    } catch (e) {
                        await this.retryOrThrow(e, attempt, m, "block " + i)
                    }
                }
                try {
                    await w.write(block, i * m.blockSize, n)
                } catch (e) {
                    fail("write_failed", detailOf(e))
                }
                ck.offset = Math.min(m.size, (i + 1) * m.blockSize)
                await this.save(false)
                if (ck.offset >= nextProgress && ck.offset < m.size) {
                    const pf = this.fields()
                    pf.bytes = ck.offset
                    pf.total = m.size
                    await this.reporter.send("downloading", pf, false)
                    nextProgress += cfg.progressBytes
                }
            }
        } catch (e) {
            const reason = reasonOf(e)
            if (reason === "network" || reason === "server_error") {
                p.sys.emit({ state: "offline", reason: reason, error: messageOf(e) })
                return INSTALL_NETWORK
            }
            return await this.failed(reason, detailOf(e))
        }

        const vf = this.fields()
        vf.bytes = m.size
        vf.total = m.size
        await this.reporter.send("verifying", vf, true)
        // A writer that does not answer, or answers too short to read, fails this install like a refusal would.
        let r: EndResult = null
        try {
            r = await w.end(Buffer.from(m.sha256, "hex"))
        } catch (e) {
            return await this.failed("write_failed", detailOf(e))
        }
        if (r.status !== W_OK) {
            if (r.status === W_HASH_MISMATCH)
                return await this.failed("image_hash_mismatch", "the image written does not have the manifest's SHA-256")
            if (r.status === W_IMAGE_INVALID)
                return await this.failed("image_invalid", "the writer refused the image: " + r.reason)
            if (r.status === W_SIGNATURE_INVALID)
                return await this.failed(
                    "signature_invalid",
                    "no signature block verifies under a key this chip trusts (" + r.reason + ")"
                )
            if (r.status === W_SECURE_VERSION_TOO_LOW)
                return await this.failed(
                    "secure_version_too_low",
                    "the image's secure_version is below the chip's eFuse secure_version"
                )
            return await this.failed("write_failed", "end answered status " + r.status)
        }
        ck.stage = STAGE_ENDED
        await this.save()
        let bs = 0
        try {
            bs = await w.setBoot()
        } catch (e) {
            return await this.failed("write_failed", detailOf(e))
        }
        if (bs === W_SIGNATURE_INVALID)
            return await this.failed("signature_invalid", "set_boot: no signature block verifies under a key this chip trusts")
        if (bs === W_SECURE_VERSION_TOO_LOW)
            return await this.failed("secure_version_too_low", "set_boot: the image's secure_version is below the chip's eFuse secure_version")
        if (bs !== W_OK) return await this.failed("write_failed", "set_boot answered status " + bs)
        ck.stage = STAGE_REBOOTING
        await this.save()
        await this.reporter.send("rebooting", this.fields(), false)
        await p.http.close()
        p.sys.reboot()
        return INSTALL_FAILED // not reached: the reset ends this program
    }

    private async failed(reason: string, detail: string): Promise<string> {
        const ck = this.ck
        ck.stage = STAGE_FAILED
        ck.attempts++
        ck.offset = 0
        await this.save()
        const f = this.fields()
        f.reason = reason
        f.error = detail
        await this.reporter.send("failed", f, true)
        return INSTALL_FAILED
    }

    /**
     * Bounded retries of a download request: a block that failed its hash is reported and fetched again at
     * once; a network failure waits with backoff. Throws once `retries` tries are used up, or for any other
     * failure.
     */
    private async retryOrThrow(e: any, attempt: number, m: Manifest, what: string): Promise<void> {
        const cfg = this.cfg
        const p = this.p
        const reason = reasonOf(e)
        if (attempt >= cfg.retries) throw e
        if (reason === "block_hash_mismatch" || reason === "block_list_mismatch") {
            const f = this.fields()
            f.reason = reason
            f.error = detailOf(e) + "; fetching it again"
            f.bytes = this.ck.offset
            f.total = m.size
            await this.reporter.send("downloading", f, true)
        } else if (reason === "network" || reason === "server_error") {
            p.sys.log(what + ": " + messageOf(e))
            await p.http.close()
            await p.sys.sleep(backoffDelay(cfg, p.sys, attempt))
        } else throw e
    }
}
