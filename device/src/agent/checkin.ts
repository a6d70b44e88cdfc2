// Check-in: GET /firmware/manifest with a fresh nonce, and accept the answer only if it is authenticated
// for this device and this request (docs/protocol.md, "How an agent verifies an update", step 1).

import { Config } from "./config"
import { fail } from "./errors"
import { Platform, WriterInfo } from "./platform"
import { Url, apiUrl, parseUrl } from "./url"
import { isHex, macMatches } from "./verify"

export interface Manifest {
    version: string
    size: number
    sha256: string
    url: Url
    chip: string
    minChipRev: number
    /** -1: no maximum. */
    maxChipRev: number
    secureVersion: number
    blockSize: number
    blockCount: number
    blockHashesUrl: Url
    blockHashesSha256: string
    allowDowngrade: boolean
    /** Seconds to the next poll the server suggests, 0 if none. */
    interval: number
    /** The offer's ETag, for If-None-Match. */
    etag: string
}

export const CHECKIN_OFFER = "offer"
export const CHECKIN_UNCHANGED = "unchanged" // 304, authenticated: the offer has not changed
export const CHECKIN_NONE = "none" // the server offers nothing now (404), or asks to wait (429)

/** Why a 404 offers nothing (its error code): no image or release for this device, or its rollout has not reached it. */
export const NONE_NO_FIRMWARE = "no_firmware"
export const NONE_WAITING = "waiting_for_rollout_stage"

export interface CheckIn {
    kind: string
    manifest: Manifest
    retryAfter: number
    /** CHECKIN_NONE after a 404: NONE_NO_FIRMWARE or NONE_WAITING ("" otherwise). */
    reason: string
}

const MAX_MANIFEST = 4096
export const MAX_BLOCK_SIZE = 16384

function isInt(v: any): boolean {
    return typeof v === "number" && Math.floor(v) === v
}

function isPrintable(s: string): boolean {
    if (s.length === 0 || s.length > 32) return false
    for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i)
        if (c < 32 || c > 126) return false
    }
    return true
}

function unquote(etag: string): string {
    let r = ""
    for (let i = 0; i < etag.length; i++) if (etag.charCodeAt(i) !== 34) r = r + etag.charAt(i)
    return r
}

/** Checks every field the agent relies on; throws invalid_manifest naming the first bad one. */
export function parseManifest(m: any, etag: string): Manifest {
    if (!m || typeof m !== "object") fail("invalid_manifest", "not a JSON object")
    if (typeof m.version !== "string" || !isPrintable(m.version)) fail("invalid_manifest", "version")
    if (!isInt(m.size) || m.size <= 0) fail("invalid_manifest", "size")
    if (!isHex(m.sha256, 64)) fail("invalid_manifest", "sha256")
    if (typeof m.chip !== "string") fail("invalid_manifest", "chip")
    if (!isInt(m.secure_version) || m.secure_version < 0) fail("invalid_manifest", "secure_version")
    const bs = m.block_size
    if (!isInt(bs) || bs < 1024 || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) fail("invalid_manifest", "block_size")
    if (m.block_count !== Math.ceil(m.size / bs)) fail("invalid_manifest", "block_count")
    if (!isHex(m.block_hashes_sha256, 64)) fail("invalid_manifest", "block_hashes_sha256")
    if (typeof m.allow_downgrade !== "boolean") fail("invalid_manifest", "allow_downgrade")
    const minRev = isInt(m.min_chip_rev) ? m.min_chip_rev : 0
    const maxRev = isInt(m.max_chip_rev) ? m.max_chip_rev : -1
    const interval = isInt(m.interval) && m.interval >= 10 && m.interval <= 86400 ? m.interval : 0
    let url: Url = null
    let listUrl: Url = null
    try {
        url = parseUrl(m.url)
        listUrl = parseUrl(m.block_hashes_url)
    } catch (e) {
        fail("invalid_manifest", "url and block_hashes_url must be https:// URLs")
    }
    return {
        version: m.version,
        size: m.size,
        sha256: m.sha256.toLowerCase(),
        url: url,
        chip: m.chip,
        minChipRev: minRev,
        maxChipRev: maxRev,
        secureVersion: m.secure_version,
        blockSize: bs,
        blockCount: m.block_count,
        blockHashesUrl: listUrl,
        blockHashesSha256: m.block_hashes_sha256.toLowerCase(),
        allowDowngrade: m.allow_downgrade,
        interval: interval,
        etag: etag,
    }
}

/**
 * The error code of a 404 (`{"error":{"code":...}}`), as one of the reasons the agent knows: the body is not
 * authenticated, so it only chooses between two words for the report, never anything the device acts on.
 */
function noneReason(body: Buffer): string {
    if (!body || body.length === 0) return NONE_NO_FIRMWARE
    let obj: any = null
    try {
        obj = JSON.parse(body.toString())
    } catch (e) {
        return NONE_NO_FIRMWARE
    }
    if (obj && obj.error && obj.error.code === NONE_WAITING) return NONE_WAITING
    return NONE_NO_FIRMWARE
}

/**
 * Asks the server what to run. `etag`: the offer already judged (sent as If-None-Match), "" for none.
 * Throws hmac_mismatch, replayed_manifest, invalid_manifest, unauthorized or server_error; network errors
 * pass through.
 */
export async function checkIn(cfg: Config, p: Platform, info: WriterInfo, etag: string): Promise<CheckIn> {
    const nonce = p.sys.randomHex(16)
    const headers = [
        "X-API-Key: " + cfg.apiKey,
        "X-Device-Id: " + cfg.deviceId,
        "X-Nonce: " + nonce,
        "X-Device-Chip: " + info.chip,
    ]
    if (isPrintable(info.runningVersion)) headers.push("X-Device-Version: " + info.runningVersion)
    if (etag) headers.push("If-None-Match: " + etag)
    const res = await p.http.request({
        method: "GET",
        url: apiUrl(cfg.server, "/firmware/manifest"),
        headers: headers,
        maxBody: MAX_MANIFEST,
    })

    if (res.status === 304) {
        const text = "not-modified\n" + cfg.deviceId + "\n" + nonce + "\n" + unquote(res.etag)
        if (!macMatches(res.manifestMac, p.sys.hmacSha256(cfg.macKey, Buffer.from(text))))
            fail("hmac_mismatch", "the 304 answer is not authenticated for this device and request")
        return { kind: CHECKIN_UNCHANGED, manifest: null, retryAfter: 0, reason: "" }
    }
    if (res.status === 404) return { kind: CHECKIN_NONE, manifest: null, retryAfter: 0, reason: noneReason(res.body) }
    if (res.status === 401 || res.status === 403)
        fail("unauthorized", "the server refused this device's key (HTTP " + res.status + "): provision the device again")
    if (res.status === 429)
        return { kind: CHECKIN_NONE, manifest: null, retryAfter: res.retryAfter > 0 ? res.retryAfter : 60, reason: "" }
    if (res.status !== 200) fail("server_error", "manifest request answered HTTP " + res.status)

    // The MAC covers the exact bytes received; nothing in them is trusted before it matches.
    if (!macMatches(res.manifestMac, p.sys.hmacSha256(cfg.macKey, res.body)))
        fail("hmac_mismatch", "X-Manifest-HMAC does not match the manifest under this device's key")
    let obj: any = null
    try {
        obj = JSON.parse(res.body.toString())
    } catch (e) {
        fail("invalid_manifest", "the manifest is not JSON")
    }
    if (!obj || obj.nonce !== nonce || obj.device_id !== cfg.deviceId)
        fail("replayed_manifest", "the manifest answers another request (nonce or device id differ)")
    return { kind: CHECKIN_OFFER, manifest: parseManifest(obj, res.etag), retryAfter: 0, reason: "" }
}
