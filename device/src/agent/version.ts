// Version order (docs/protocol.md, "Version order"). A version is MAJOR.MINOR[.PATCH] after an optional
// "v", then an optional suffix:
//   "-<pre>"         a pre-release ("-dev", "-rc1", "-beta"): before the release of the same number
//   "-<N>-g<hash>"   git describe, N commits after the tag: after the tag itself
//   "-dirty", "+..." ignored
// Anything else (a bare commit hash, "1") cannot be ordered: compareVersions returns null and only
// secure_version guards against a rollback.

function isDigit(c: number): boolean {
    return c >= 48 && c <= 57
}

function isHexChar(c: number): boolean {
    return isDigit(c) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)
}

function isLetter(c: number): boolean {
    return (c >= 97 && c <= 122) || (c >= 65 && c <= 90)
}

function allDigits(s: string): boolean {
    if (s.length === 0) return false
    for (let i = 0; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return false
    return true
}

function isGitHash(s: string): boolean {
    if (s.length < 5 || s.charCodeAt(0) !== 103) return false // "g" + at least 4 hex digits
    for (let i = 1; i < s.length; i++) if (!isHexChar(s.charCodeAt(i))) return false
    return true
}

/** [major, minor, patch, release (0 pre-release, 1 release), commits after tag], or null. */
export function versionKey(v: string): number[] {
    if (typeof v !== "string") return null
    let s = v.trim()
    if (s.startsWith("v") || s.startsWith("V")) s = s.slice(1)
    const plus = s.indexOf("+")
    if (plus >= 0) s = s.slice(0, plus)
    const nums: number[] = []
    let i = 0
    for (;;) {
        const start = i
        while (i < s.length && isDigit(s.charCodeAt(i))) i++
        if (i === start || i - start > 9) return null
        nums.push(parseInt(s.slice(start, i)))
        if (nums.length === 3 || i >= s.length || s.charCodeAt(i) !== 46) break
        i++ // "."
    }
    if (nums.length < 2) return null // "1" or a bare hash: no order
    while (nums.length < 3) nums.push(0)
    const rest = s.slice(i)
    if (rest.length > 0 && rest.charCodeAt(0) !== 45) return null // after the number only "-..." may follow
    const parts = rest.split("-")
    const kept: string[] = []
    for (let k = 0; k < parts.length; k++) {
        const p = parts[k]
        if (p.length > 0 && p !== "dirty") kept.push(p)
    }
    let commits = 0
    if (kept.length >= 2 && isGitHash(kept[kept.length - 1]) && allDigits(kept[kept.length - 2])) {
        commits = parseInt(kept[kept.length - 2])
        kept.pop()
        kept.pop()
    }
    let release = 1
    if (kept.length > 0) {
        if (!isLetter(kept[0].charCodeAt(0))) return null
        release = 0
    }
    nums.push(release)
    nums.push(commits)
    return nums
}

/** -1, 0, 1 as a is older, the same as, newer than b; null when either cannot be ordered. */
export function compareVersions(a: string, b: string): number {
    const ka = versionKey(a)
    const kb = versionKey(b)
    if (!ka || !kb) return null
    for (let i = 0; i < ka.length; i++) {
        if (ka[i] < kb[i]) return -1
        if (ka[i] > kb[i]) return 1
    }
    return 0
}
