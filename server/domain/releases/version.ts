// Firmware versions are free text (esp_app_desc_t.version is usually `git describe`: v1.4.1-2-g0296947-dirty).
// They are ordered by the first x.y.z they contain (semver.coerce); text without one has no order, and
// every check that needs an order fails closed for it.
import semver from "semver";

export function hasOrder(version: string): boolean {
  return semver.coerce(version) !== null;
}

/** -1, 0 or 1 as a is older than, level with or newer than b; null when either has no x.y.z. */
export function compareVersions(a: string, b: string): -1 | 0 | 1 | null {
  const va = semver.coerce(a);
  const vb = semver.coerce(b);
  if (!va || !vb) return null;
  return semver.compare(va, vb);
}

/** True only when `running` is known to be at least `minimum`. */
export function atLeast(running: string | null, minimum: string): boolean {
  if (running === null) return false;
  const c = compareVersions(running, minimum);
  return c !== null && c >= 0;
}
