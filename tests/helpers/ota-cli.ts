// The `ota` command as its own process, run asynchronously: a test's in-process server keeps answering it.
import path from "node:path";
import { runNode, type NodeRun } from "./node-process";
import { ROOT } from "./server";

export type OtaRun = NodeRun;

export function runOta(env: NodeJS.ProcessEnv, ...args: string[]): Promise<OtaRun> {
  return runOtaIn(undefined, env, ...args);
}

/** The same, in the folder `cwd` (relative paths in the arguments are taken from there). */
export function runOtaIn(cwd: string | undefined, env: NodeJS.ProcessEnv, ...args: string[]): Promise<OtaRun> {
  return runNode(path.join(ROOT, "bin/ota.js"), args, { cwd, env });
}
