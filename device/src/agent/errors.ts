// Failures carry a stable reason code (what a report's `reason` says) in front of the message:
// "block_hash_mismatch: block 3 ...". The VM has no Error subclasses worth relying on, so the code rides
// in the message.

export function fail(code: string, message: string): never {
    throw new Error(code + ": " + message)
}

export function messageOf(e: any): string {
    if (e && e.message !== undefined) return e.message + ""
    return e + ""
}

function isCodeChar(c: number): boolean {
    return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95
}

/** The reason code of an error thrown by fail(); anything else (socket errors, timeouts) is "network". */
export function reasonOf(e: any): string {
    const m = messageOf(e)
    const i = m.indexOf(": ")
    if (i <= 0 || i > 40) return "network"
    for (let k = 0; k < i; k++) if (!isCodeChar(m.charCodeAt(k))) return "network"
    return m.slice(0, i)
}

/** The message without its reason code. */
export function detailOf(e: any): string {
    const m = messageOf(e)
    const r = reasonOf(e)
    if (r !== "network" && m.startsWith(r + ": ")) return m.slice(r.length + 2)
    return m
}
