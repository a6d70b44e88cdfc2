// Block-wise download (docs/protocol.md, steps 3 and 4): the block-hash list, authenticated through the
// manifest, then one Range request per block, each block checked against its hash before anyone uses it.

import { Manifest } from "./checkin"
import { Config } from "./config"
import { fail } from "./errors"
import { Platform } from "./platform"
import { blockHashAt, equalBytes } from "./verify"

function authHeaders(cfg: Config): string[] {
    return ["X-API-Key: " + cfg.apiKey, "X-Device-Id: " + cfg.deviceId]
}

/** The SHA-256 of every block, 32 bytes each, checked against the manifest's block_hashes_sha256. */
export async function fetchBlockHashes(cfg: Config, p: Platform, m: Manifest): Promise<Buffer> {
    const list = Buffer.alloc(m.blockCount * 32)
    const res = await p.http.request({ method: "GET", url: m.blockHashesUrl, headers: authHeaders(cfg), into: list })
    if (res.status !== 200) fail("server_error", "block-hash list answered HTTP " + res.status)
    if (!equalBytes(p.sys.sha256([list]), Buffer.from(m.blockHashesSha256, "hex")))
        fail("block_list_mismatch", "the block-hash list does not match block_hashes_sha256 in the manifest")
    return list
}

/**
 * Block `i`, fetched with one Range request into `block` (the agent's one block buffer, at least block_size
 * bytes); returns its length. Throws block_hash_mismatch if its SHA-256 is not the listed one.
 */
export async function fetchBlock(cfg: Config, p: Platform, m: Manifest, i: number, hashes: Buffer, block: Buffer): Promise<number> {
    const start = i * m.blockSize
    const last = Math.min(m.size, start + m.blockSize) - 1
    const n = last - start + 1
    const headers = authHeaders(cfg)
    headers.push("Range: bytes=" + start + "-" + last)
    const res = await p.http.request({ method: "GET", url: m.url, headers: headers, into: block, intoLength: n })
    if (res.status !== 206) fail("server_error", "block " + i + " answered HTTP " + res.status + ", not 206")
    if (res.contentRange !== "bytes " + start + "-" + last + "/" + m.size)
        fail("server_error", "block " + i + " came with Content-Range " + res.contentRange)
    // A block shorter than the buffer (the image's last one) is copied for hashing.
    const digest = p.sys.sha256([n === block.length ? block : block.slice(0, n)])
    if (!equalBytes(digest, blockHashAt(hashes, i)))
        fail("block_hash_mismatch", "block " + i + " (bytes " + start + "-" + last + ") failed its SHA-256 check")
    return n
}
