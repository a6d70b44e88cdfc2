// Which release a device gets: the one decision behind every offer. Pure and in memory, so it can run on
// every poll: candidates are the releases of the device's channel, newest first; the first one that targets
// the device, fits its hardware, whose rollout includes it and whose upgrade path it can take, wins. A pin
// overrides all of that except hardware and the upgrade path.
import type { CompiledRelease } from "./release-store";
import { atLeast, compareVersions } from "./version";

export interface DeviceFacts {
  /** null: the client did not say who it is (only finished, fleet-wide releases apply). */
  id: string | null;
  chip: string | null;
  chipRev: number | null;
  version: string | null;
  channel: string;
  group: string | null;
  /** null when no release on the channel targets tags (then they were not loaded). */
  tags: readonly string[] | null;
  pinned: string | null;
}

export interface Assignment {
  /** What the device should install now (the release itself, or a step on its upgrade path). */
  release: CompiledRelease;
  /** The release the device is headed for. */
  target: CompiledRelease;
  pinned: boolean;
}

export interface AssignDeps {
  channel(channel: string): readonly CompiledRelease[];
  get(name: string): CompiledRelease | undefined;
  /** Whether the target's rollout offers it to this device now. */
  includes(release: CompiledRelease, device: DeviceFacts): boolean;
}

function targets(r: CompiledRelease, d: DeviceFacts): boolean {
  if (r.everyone) return true;
  if (d.id === null) return false;
  if (r.deviceSet.has(d.id)) return true;
  if (d.group !== null && r.groupSet.has(d.group)) return true;
  return d.tags !== null && d.tags.some((t) => r.tagSet.has(t));
}

/** Chip must be known and equal; the chip revision, when the device told it, must be in the image's range. */
function fitsHardware(r: CompiledRelease, d: DeviceFacts): boolean {
  if (d.chip === null || d.chip !== r.chip) return false;
  if (d.chipRev === null) return true;
  return d.chipRev >= r.minChipRev && (r.maxChipRev === null || d.chipRev <= r.maxChipRev);
}

/** No release replaces a newer version unless it says so (allow_downgrade). */
function downgradeAllowed(r: CompiledRelease, d: DeviceFacts): boolean {
  if (r.allowDowngrade || d.version === null) return true;
  const c = compareVersions(r.version, d.version);
  return c === null || c >= 0;
}

/** Follows the upgrade path: a device below min_version gets the intermediate release first. */
function throughPath(r: CompiledRelease, d: DeviceFacts, deps: Pick<AssignDeps, "get">): CompiledRelease | null {
  let step: CompiledRelease | undefined = r;
  for (let depth = 0; step && depth < 8; depth++) {
    if (!fitsHardware(step, d)) return null;
    if (d.version !== null && d.version === step.version) return step;
    if (!step.minVersion || atLeast(d.version, step.minVersion)) return step;
    step = step.via ? deps.get(step.via) : undefined;
  }
  return null;
}

/** Why a candidate release is not the device's. */
export type Refusal = "not_targeted" | "hardware" | "not_in_rollout" | "no_upgrade_path" | "downgrade";

/** A candidate judged: the release to install now (itself or a step on its path), or why not. */
type Judgement = CompiledRelease | Refusal;

function judge(r: CompiledRelease, d: DeviceFacts, deps: AssignDeps, pinned: boolean): Judgement {
  if (!pinned) {
    if (!targets(r, d)) return "not_targeted";
    if (!fitsHardware(r, d)) return "hardware";
    if (!deps.includes(r, d)) return "not_in_rollout";
  }
  const release = throughPath(r, d, deps);
  if (!release) return pinned && !fitsHardware(r, d) ? "hardware" : "no_upgrade_path";
  return downgradeAllowed(release, d) ? release : "downgrade";
}

export function assign(d: DeviceFacts, deps: AssignDeps): Assignment | null {
  if (d.pinned !== null) {
    const pin = deps.get(d.pinned);
    const release = pin && judge(pin, d, deps, true);
    return pin && typeof release === "object" ? { release, target: pin, pinned: true } : null;
  }
  for (const r of deps.channel(d.channel)) {
    const release = judge(r, d, deps, false);
    if (typeof release === "object") return { release, target: r, pinned: false };
  }
  return null;
}

/**
 * When assign() found nothing for a device that is not pinned: the newest release of its channel that targets it,
 * fits its hardware and that it could install (upgrade path, downgrade rule; not the version it runs), but whose
 * rollout has not reached it yet (`waiting`: running and its stage leaves the device out, or paused). Null when
 * no release is merely waiting for its rollout.
 */
export function awaitedRelease(
  d: DeviceFacts,
  deps: Pick<AssignDeps, "channel" | "get"> & { waiting(release: CompiledRelease, device: DeviceFacts): boolean },
): CompiledRelease | null {
  if (d.pinned !== null || d.id === null) return null;
  for (const r of deps.channel(d.channel)) {
    if (!targets(r, d) || !fitsHardware(r, d) || d.version === r.version || !deps.waiting(r, d)) continue;
    const release = throughPath(r, d, deps);
    if (release && downgradeAllowed(release, d)) return r;
  }
  return null;
}

export interface Verdict {
  /** The candidate release (the pin, or a release of the device's channel, newest first). */
  release: string;
  /** What the device would install now for it (itself or a step on its upgrade path), or null. */
  installs: string | null;
  /** null: this is the device's; else why not. */
  refusal: Refusal | null;
}

/**
 * The same decision as assign(), told candidate by candidate up to the one that wins: for an operator asking why
 * a device gets what it gets. Reads only (offers nothing).
 */
export function explainAssignment(d: DeviceFacts, deps: AssignDeps): { pinned: string | null; candidates: Verdict[] } {
  const verdict = (r: CompiledRelease, pinned: boolean): Verdict => {
    const j = judge(r, d, deps, pinned);
    return typeof j === "object" ? { release: r.name, installs: j.name, refusal: null } : { release: r.name, installs: null, refusal: j };
  };
  if (d.pinned !== null) {
    const pin = deps.get(d.pinned);
    return { pinned: d.pinned, candidates: pin ? [verdict(pin, true)] : [] };
  }
  const candidates: Verdict[] = [];
  for (const r of deps.channel(d.channel)) {
    const v = verdict(r, false);
    candidates.push(v);
    if (v.refusal === null) break;
  }
  return { pinned: null, candidates };
}
