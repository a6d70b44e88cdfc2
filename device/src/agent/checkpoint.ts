// The update in progress, kept in settings so that a reset or power cut resumes it instead of starting over.
// Saved after every block (and every stage change), read once at boot.

import { Store } from "./platform"
import { isHex } from "./verify"

/** Where an install stands. */
export const STAGE_DOWNLOAD = "download" // `offset` bytes are written and acknowledged
export const STAGE_ENDED = "ended" // the writer checked the whole image
export const STAGE_REBOOTING = "rebooting"
export const STAGE_CONFIRMING = "confirming" // first boot of the new image, health check running
export const STAGE_HEALTH_FAILED = "health_failed" // health check failed: rolling back
export const STAGE_MARK_FAILED = "mark_failed" // health check passed but the writer did not mark the image valid: rolling back
export const STAGE_FAILED = "failed" // the last try did not stick; `attempts` counts tries

export interface Checkpoint {
    /** SHA-256 of the image (hex): the manifest identity. */
    sha: string
    version: string
    size: number
    blockSize: number
    offset: number
    stage: string
    attempts: number
}

const KEY = "ota_ckpt"

export async function loadCheckpoint(store: Store): Promise<Checkpoint> {
    const c = await store.read(KEY)
    if (!c || typeof c !== "object") return null
    if (!isHex(c.sha, 64) || typeof c.stage !== "string" || typeof c.size !== "number" || typeof c.offset !== "number")
        return null
    if (typeof c.attempts !== "number") c.attempts = 0
    if (typeof c.version !== "string") c.version = ""
    if (typeof c.blockSize !== "number") c.blockSize = 0
    return c as Checkpoint
}

/**
 * `durable` for stage changes, which must survive a reset that follows at once; the per-block offset need
 * not be (losing the last one only means a block is fetched again).
 */
export async function saveCheckpoint(store: Store, c: Checkpoint, durable: boolean): Promise<void> {
    await store.write(KEY, c, durable)
}

export async function clearCheckpoint(store: Store): Promise<void> {
    await store.remove(KEY)
}
