// The `ota` command as its own process, run asynchronously: a test's in-process server keeps answering it.
import { spawn } from "node:child_process";
import path from "node:path";
import { ROOT } from "./server";

export interface OtaRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runOta(env: NodeJS.ProcessEnv, ...args: string[]): Promise<OtaRun> {
  return runOtaIn(undefined, env, ...args);
}

/** The same, in the folder `cwd` (relative paths in the arguments are taken from there). */
export function runOtaIn(cwd: string | undefined, env: NodeJS.ProcessEnv, ...args: string[]): Promise<OtaRun> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(ROOT, "bin/ota.js"), ...args], { env, cwd });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
