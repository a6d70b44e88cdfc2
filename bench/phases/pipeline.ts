// Figure 5: the device pipeline in the DeviceScript VM (manifest, block hashes, one Range request per block,
// SHA-256 per block, writes to the emulated OTA writer) for the 124 KB hello_world image: KiB/s and the VM's
// peak heap. It is `npm run bench:device` (bench/device-throughput.ts) run as a child process, so both commands
// give the same figures: the agent in the VM against a native Node.js client doing the same network work.
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

/** What bench/device-throughput.ts prints as its last line. */
interface DeviceBenchLine {
  native_kib_s: number;
  bulk_kib_s: number;
  command_kib_s: number;
  bulk_vs_native: number;
  heap_live_peak_bytes: number;
  rounds: number;
}

export async function measurePipeline(b: BenchContext, rounds: number): Promise<PipelineFigures> {
  const script = path.join(projectRoot(), "dist/bench/device-throughput.js");
  if (!fs.existsSync(script)) return { status: "failed", reason: `${script} is missing: run npm run build`, ...TARGETS };
  const child = spawn(process.execPath, [script, "--rounds", String(rounds)], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    for (const line of d.toString().split("\n")) if (line.startsWith("round ") || line.startsWith("heap:")) b.say(`  device: ${line}`);
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const last = out.trim().split("\n").at(-1) ?? "";
  let r: DeviceBenchLine;
  try {
    r = JSON.parse(last) as DeviceBenchLine;
  } catch {
    return { status: "failed", reason: `bench:device exited ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}`, ...TARGETS };
  }
  const heapKib = r.heap_live_peak_bytes / 1024;
  return {
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
