// A Node script as its own process, awaited rather than run with spawnSync: a long child (a bench, the CLI)
// must not block the jest worker's event loop, or the worker cannot answer jest while it runs or exit on time after.
import { spawn } from "node:child_process";

export interface NodeRun {
  /** The exit code, or null when the process was killed (by `timeoutMs` or a signal). */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface NodeRunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** SIGKILL the process after this many milliseconds (then `status` is null). */
  timeoutMs?: number;
}

export function runNode(script: string, args: string[], opts: NodeRunOptions = {}): Promise<NodeRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { cwd: opts.cwd, env: opts.env });
    let stdout = "";
    let stderr = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs);
    p.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}
