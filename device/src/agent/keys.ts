// Key rotation (ESP-IDF's conservative revocation): once an image is confirmed, the eFuse key digests in
// slots below the lowest slot whose key signed it are revoked. Keys are used in slot order (key #0, then #1,
// then #2), so these are the old keys a fleet has moved away from. Nothing is revoked while the running image
// is not marked valid, never a digest that signed the running image, so never the last one; a newer key (a
// higher slot) is never revoked by an image signed with an older one. The writer makes ESP-IDF's own checks
// again (device/services/otawriter.md, revoke_key). It runs at every boot of a valid image, so a power cut
// between mark_valid and the eFuse write only defers it; a digest already revoked is not asked for again.

import { Platform, STATE_VALID, W_OK, WriterInfo } from "./platform"

const DIGEST_SLOTS = 3

/** Slots to revoke (bit i: slot i): those still trusted below the lowest slot among the running image's signers. */
export function slotsToRevoke(trusted: number, signers: number): number {
    if (signers === 0) return 0
    let lowest = 0
    while ((signers & (1 << lowest)) === 0) lowest++
    return trusted & ((1 << lowest) - 1)
}

/** Revokes the old key digests when the running image is valid; keeps `info.trustedKeys` up to date. */
export async function revokeOldKeys(p: Platform, info: WriterInfo): Promise<void> {
    if (info.imageState !== STATE_VALID) return
    const mask = slotsToRevoke(info.trustedKeys, info.runningSigners)
    for (let i = 0; i < DIGEST_SLOTS; i++) {
        if ((mask & (1 << i)) === 0) continue
        const st = await p.writer.revokeKey(i)
        if (st === W_OK) {
            info.trustedKeys = info.trustedKeys & ~(1 << i)
            p.sys.emit({ state: "key_revoked", slot: i, version: info.runningVersion })
        } else p.sys.log("revoke_key " + i + " answered status " + st + ": the key stays trusted")
    }
}
