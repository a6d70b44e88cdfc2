// Byte checks: constant-time comparison of MACs and hashes, and hex parsing that refuses anything odd.

function hexValue(c: number): number {
    if (c >= 48 && c <= 57) return c - 48
    if (c >= 97 && c <= 102) return c - 87
    if (c >= 65 && c <= 70) return c - 55
    return -1
}

/** True when `s` is exactly `len` hex digits. */
export function isHex(s: any, len: number): boolean {
    if (typeof s !== "string" || s.length !== len) return false
    for (let i = 0; i < s.length; i++) if (hexValue(s.charCodeAt(i)) < 0) return false
    return true
}

/** Equal length and content, in time that does not depend on where they differ. */
export function equalBytes(a: Buffer, b: Buffer): boolean {
    if (!a || !b || a.length !== b.length) return false
    let diff = 0
    for (let i = 0; i < a.length; i++) diff = diff | (a[i] ^ b[i])
    return diff === 0
}

/** Compares a MAC sent as hex with the one computed, in constant time. */
export function macMatches(hexMac: string, computed: Buffer): boolean {
    if (!isHex(hexMac, computed.length * 2)) return false
    return equalBytes(Buffer.from(hexMac.toLowerCase(), "hex"), computed)
}

/** Entry `i` of a block-hash list (32 bytes each). */
export function blockHashAt(list: Buffer, i: number): Buffer {
    return list.slice(i * 32, i * 32 + 32)
}
