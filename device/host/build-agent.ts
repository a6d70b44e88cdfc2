// Builds the agent's bytecode from device/src with the pinned DeviceScript compiler, when the sources are
// newer than the last build. Safe to call from several processes at once (a lock directory serialises it).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { stripVTControlCharacters } from "node:util";
import { AGENT_BYTECODE, AGENT_ENTRY, CLI_BUNDLE, DEVICE_DIR, SERVICES_JSON } from "./paths";

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

function inputsMtime(): number {
  return Math.max(
    newestSource(path.join(DEVICE_DIR, "src")),
    newestSource(path.join(DEVICE_DIR, "services")),
    fs.statSync(path.join(DEVICE_DIR, "devsconfig.json")).mtimeMs,
  );
}

function isFresh(): boolean {
  if (!fs.existsSync(AGENT_BYTECODE) || !fs.existsSync(SERVICES_JSON)) return false;
  return fs.statSync(AGENT_BYTECODE).mtimeMs >= inputsMtime();
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Builds if needed; returns the bytecode path. Throws with the compiler's output when the build fails. */
export function buildAgent(opts: { force?: boolean; log?: (line: string) => void } = {}): string {
  if (!opts.force && isFresh()) return AGENT_BYTECODE;
  if (!fs.existsSync(CLI_BUNDLE)) {
    throw new Error(`${CLI_BUNDLE} is missing: run npm ci (the DeviceScript compiler is a pinned devDependency)`);
  }
  const lock = path.join(DEVICE_DIR, ".build-lock");
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      // Another process is building: wait for it, then use its result if it is fresh.
      if (Date.now() > deadline) throw new Error(`${lock} has existed for 2 minutes: remove it if no build is running`);
      sleepSync(200);
      if (!opts.force && isFresh()) return AGENT_BYTECODE;
    }
  }
  try {
    if (!opts.force && isFresh()) return AGENT_BYTECODE;
    opts.log?.("building the device agent (devs build)");
    const r = spawnSync(process.execPath, [CLI_BUNDLE, "build", AGENT_ENTRY, "--quiet"], {
      cwd: DEVICE_DIR,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
      timeout: 120_000,
    });
    const out = stripVTControlCharacters(`${r.stdout ?? ""}${r.stderr ?? ""}`);
    if (r.status !== 0 || /error/i.test(out) || !fs.existsSync(AGENT_BYTECODE)) {
      throw new Error(`devs build failed (exit ${r.status}):\n${out.trim()}`);
    }
    // devs does not rewrite an unchanged output; touch it so freshness is judged against this build.
    const now = new Date();
    fs.utimesSync(AGENT_BYTECODE, now, now);
    return AGENT_BYTECODE;
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

if (require.main === module) {
  try {
    const out = buildAgent({ force: process.argv.includes("--force"), log: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`device agent: ${path.relative(process.cwd(), out)} (${fs.statSync(out).size} bytes)\n`);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
