// Asking a Jacdac service something and waiting for its report, with the patience a lossy bus needs: the
// runtime's own helpers wait forever, and one lost frame would stop the agent.

import * as ds from "@devicescript/core"

/**
 * Sends with `send` and returns the first packet on `replies` that `match` accepts; sends again when none
 * comes within `timeoutMs`, `tries` times in all. Null when nothing answered.
 */
export async function request(
    replies: ds.Emitter<ds.Packet>,
    send: () => Promise<void>,
    match: (pkt: ds.Packet) => boolean,
    timeoutMs: number,
    tries: number
): Promise<ds.Packet> {
    for (let attempt = 0; attempt < tries; attempt++) {
        await send()
        const until = ds.millis() + timeoutMs
        for (;;) {
            const left = until - ds.millis()
            if (left <= 0) break
            const pkt = await ds.wait(replies, left)
            if (!pkt) break
            if (match(pkt)) return pkt
        }
    }
    return null
}
