// What the disk itself sustains, the reference for durable reports: flushes per second of a small file in a given
// folder (ours: append 512 bytes and fsync, as a database appends to its log), and PostgreSQL's own pg_test_fsync.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const BLOCK = Buffer.alloc(512, 0x5a);

/** Appends BLOCK and fsyncs, over and over for `seconds`, in a new file in `dir` (removed after). */
export function fsyncsPerSecond(dir: string, seconds: number): number {
  const file = path.join(dir, `.bench-fsync-${process.pid}`);
  const fd = fs.openSync(file, "w");
  try {
    let n = 0;
    const t0 = performance.now();
    const until = t0 + seconds * 1000;
    let now = t0;
    while (now < until) {
      fs.writeSync(fd, BLOCK);
      fs.fsyncSync(fd);
      n++;
      now = performance.now();
    }
    return n / ((now - t0) / 1000);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

export interface PgTestFsync {
  /** The method the cluster's WAL uses (wal_sync_method), whose line is reported. */
  method: string;
  /** Its flushes per second, one 8 kB write each. */
  ops_per_s: number;
}

/**
 * Runs pg_test_fsync (from `bin`) on a file in `dir` for `seconds` per test and reads the line of `method` in its
 * "one 8kB write" section. Null when the program is absent or its output has no such line.
 */
export function pgTestFsync(bin: string, dir: string, method: string, seconds: number, asUser: string | null): PgTestFsync | null {
  const exe = path.join(bin, "pg_test_fsync");
  if (!fs.existsSync(exe)) return null;
  const file = path.join(dir, `bench_pg_test_fsync.${process.pid}`);
  const args = ["-f", file, "-s", String(seconds)];
  const [cmd, argv] = asUser ? ["runuser", ["-u", asUser, "--", exe, ...args]] : [exe, args];
  const r = spawnSync(cmd, argv, { encoding: "utf8", timeout: 120_000 });
  fs.rmSync(file, { force: true });
  if (r.status !== 0) return null;
  const section = r.stdout.split(/\n\s*\n/).find((s) => /one 8kB write/.test(s)) ?? "";
  const line = section.split("\n").find((l) => l.trim().split(/\s+/)[0] === method);
  const ops = line && /([\d.]+) ops\/sec/.exec(line);
  return ops ? { method, ops_per_s: Math.round(Number(ops[1])) } : null;
}
