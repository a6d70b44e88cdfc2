// Figure 5: the device pipeline in the DeviceScript VM (manifest, block hashes, one Range request per block,
// SHA-256 per block, writes to the emulated OTA writer) for the 124 KB hello_world image: KiB/s and the VM's
// peak heap. It is `npm run bench:device` (bench/device-throughput.ts) run as a child process, so both commands
// give the same figures: the agent in the VM against a native Node.js client doing the same network work.
// With --compare the baseline build's own bench:device runs after ours (its agent and its server, from its
// folder), one at a time.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { projectRoot } from "../../server/paths";
import type { BenchContext } from "./context";

const TARGETS = { target_kib_s: 64, target_heap_kib: 24 };

export type PipelineFigures =
  | { status: "failed"; reason: string; target_kib_s: number; target_heap_kib: number }
  | {
      status: "measured";
      kib_s: number;
      peak_heap_kib: number;
      native_kib_s: number;
      ratio_vs_native: number;
      command_kib_s: number;
      rounds: number;
      target_kib_s: number;
      target_heap_kib: number;
      pass: boolean;
    };

/** With --compare: the baseline build's bench:device, or why there is none. */
export type BaselinePipeline =
  | { baseline_kib_s: number; baseline_peak_heap_kib: number; baseline_native_kib_s: number; kib_s_vs_baseline: number | null }
  | { baseline: null; baseline_reason: string };

/** What bench/device-throughput.ts prints as its last line. */
interface DeviceBenchLine {
  native_kib_s: number;
  bulk_kib_s: number;
  command_kib_s: number;
  bulk_vs_native: number;
  heap_live_peak_bytes: number;
  rounds: number;
}

/** Runs `dist/bench/device-throughput.js` of the build in `root` (cwd root) and reads its JSON line. */
async function deviceBench(b: BenchContext, root: string, rounds: number, label: string): Promise<DeviceBenchLine | { failed: string }> {
  const script = path.join(root, "dist/bench/device-throughput.js");
  if (!fs.existsSync(script)) return { failed: `${script} is missing: run npm run build${root === projectRoot() ? "" : ` in ${root}`}` };
  const child = spawn(process.execPath, [script, "--rounds", String(rounds)], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    for (const line of d.toString().split("\n")) if (line.startsWith("round ") || line.startsWith("heap:")) b.say(`  ${label}: ${line}`);
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const last = out.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(last) as DeviceBenchLine;
  } catch {
    return { failed: `bench:device exited ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}` };
  }
}

export async function measurePipeline(b: BenchContext, rounds: number): Promise<PipelineFigures & Partial<BaselinePipeline>> {
  const r = await deviceBench(b, projectRoot(), rounds, "device");
  let figures: PipelineFigures;
  if ("failed" in r) {
    figures = { status: "failed", reason: r.failed, ...TARGETS };
  } else {
    const heapKib = r.heap_live_peak_bytes / 1024;
    figures = {
      status: "measured",
      kib_s: r.bulk_kib_s,
      peak_heap_kib: Math.round(heapKib * 10) / 10,
      native_kib_s: r.native_kib_s,
      ratio_vs_native: r.bulk_vs_native,
      command_kib_s: r.command_kib_s,
      rounds: r.rounds,
      ...TARGETS,
      pass: r.bulk_kib_s >= TARGETS.target_kib_s && heapKib <= TARGETS.target_heap_kib,
    };
  }
  if (!b.baseline) return figures;
  b.say("  the baseline's device pipeline");
  const base = await deviceBench(b, b.baseline.root, rounds, "baseline device");
  if ("failed" in base) return { ...figures, baseline: null, baseline_reason: base.failed };
  return {
    ...figures,
    baseline_kib_s: base.bulk_kib_s,
    baseline_peak_heap_kib: Math.round((base.heap_live_peak_bytes / 1024) * 10) / 10,
    baseline_native_kib_s: base.native_kib_s,
    kib_s_vs_baseline: figures.status === "measured" ? Math.round((figures.kib_s / base.bulk_kib_s) * 1000) / 1000 : null,
  };
}
