// Whether to install an offer (docs/protocol.md, "How an agent verifies an update", step 2): the right chip
// and revision, a size the slot can hold, and never older than what runs unless the manifest allows it.

import { Checkpoint, STAGE_FAILED } from "./checkpoint"
import { Config } from "./config"
import { Manifest } from "./checkin"
import { WriterInfo } from "./platform"
import { compareVersions } from "./version"

export const INSTALL = "install"
export const UP_TO_DATE = "up_to_date"
export const REFUSE = "refuse"

export interface Decision {
    action: string
    reason: string
    detail: string
}

function decision(action: string, reason: string, detail: string): Decision {
    return { action: action, reason: reason, detail: detail }
}

export function decide(m: Manifest, info: WriterInfo, cfg: Config, ck: Checkpoint): Decision {
    if (m.sha256 === info.runningSha256) return decision(UP_TO_DATE, "", "")
    if (m.chip !== info.chip)
        return decision(REFUSE, "chip_mismatch", "image is for " + m.chip + ", this device is " + info.chip)
    if (info.chipRevision < m.minChipRev || (m.maxChipRev >= 0 && info.chipRevision > m.maxChipRev))
        return decision(
            REFUSE,
            "chip_mismatch",
            "image needs chip revision " + m.minChipRev + " to " + m.maxChipRev + ", this chip is " + info.chipRevision
        )
    if (m.blockSize > cfg.blockBuffer)
        return decision(
            REFUSE,
            "block_too_large",
            "block_size " + m.blockSize + " is larger than the agent's block buffer (" + cfg.blockBuffer + ", setting block_buf)"
        )
    if (m.size > info.slotSize)
        return decision(REFUSE, "image_too_large", m.size + " bytes do not fit the " + info.slotSize + "-byte slot")
    if (!m.allowDowngrade) {
        if (m.secureVersion < info.secureVersion)
            return decision(
                REFUSE,
                "downgrade_refused",
                "secure_version " + m.secureVersion + " is lower than the running " + info.secureVersion
            )
        const order = compareVersions(m.version, info.runningVersion)
        if (order !== null && order < 0)
            return decision(
                REFUSE,
                "downgrade_refused",
                m.version + " is older than the running " + info.runningVersion
            )
    }
    if (ck && ck.sha === m.sha256 && ck.stage === STAGE_FAILED && ck.attempts >= cfg.attempts)
        return decision(
            REFUSE,
            "too_many_attempts",
            "this image failed " + ck.attempts + " times; it is not tried again until another one is offered"
        )
    return decision(INSTALL, "", "")
}
