// Waits: the poll period with jitter, and exponential backoff after failures.

import { Config } from "./config"
import { System } from "./platform"

/** Milliseconds until the next poll: the server's interval when it gave one, else the setting, +- jitter. */
export function pollDelay(cfg: Config, sys: System, serverIntervalS: number): number {
    const base = (serverIntervalS > 0 ? serverIntervalS : cfg.pollS) * 1000
    const spread = (base * cfg.jitterPct) / 100
    return Math.round(base - spread + 2 * spread * sys.random())
}

/** Milliseconds to wait after `failures` failures in a row (1, 2, ...): doubling, capped, half of it random. */
export function backoffDelay(cfg: Config, sys: System, failures: number): number {
    let d = cfg.backoffS * 1000
    for (let i = 1; i < failures && d < cfg.backoffMaxS * 1000; i++) d = d * 2
    if (d > cfg.backoffMaxS * 1000) d = cfg.backoffMaxS * 1000
    return Math.round(d / 2 + (d / 2) * sys.random())
}
