// Figure 5: the device pipeline in the DeviceScript VM (manifest, block hashes, Range requests per block,
// SHA-256 per block, writes to the OTA writer) for the 124 KB image: KiB/s and the VM's peak heap.
//
// It needs the device agent and its VM simulator. They are looked up at `device/sim/bench` (built to
// dist/device/sim/bench.js, or a plain .js there), which must export:
//
//   runPipeline(o: { serverUrl: string; ca: Buffer; device: { id, apiKey, hmacKey: Buffer }; imageSize: number })
//     => Promise<{ bytes: number; seconds: number; peakHeapBytes: number }>
//
// Until that module exists the figure is reported as pending, with the reason.
import fs from "node:fs";
import path from "node:path";
import { projectRoot } from "../../server/paths";
import { round } from "../compare";
import type { BenchContext } from "./context";

export type PipelineFigures =
  | { status: "pending"; reason: string; target_kib_s: number; target_heap_kib: number }
  | {
      status: "measured";
      kib_s: number;
      peak_heap_kib: number;
      bytes: number;
      seconds: number;
      target_kib_s: number;
      target_heap_kib: number;
      pass: boolean;
    };

interface AgentSimulator {
  runPipeline(o: {
    serverUrl: string;
    ca: Buffer;
    device: { id: string; apiKey: string; hmacKey: Buffer };
    imageSize: number;
  }): Promise<{ bytes: number; seconds: number; peakHeapBytes: number }>;
}

const TARGETS = { target_kib_s: 64, target_heap_kib: 24 };

export function findAgentSimulator(): string | null {
  const root = projectRoot();
  const candidates = [path.join(root, "dist/device/sim/bench.js"), path.join(root, "device/sim/bench.js")];
  return candidates.find((f) => fs.existsSync(f)) ?? null;
}

export async function measurePipeline(b: BenchContext, imageSize: number): Promise<PipelineFigures> {
  const file = findAgentSimulator();
  if (!file) {
    return {
      status: "pending",
      reason: "the device agent and its DeviceScript VM simulator are not in this tree yet (expected device/sim/bench exporting runPipeline)",
      ...TARGETS,
    };
  }
  const sim = (await import(file)) as AgentSimulator;
  const d = b.fleet.devices[0]!;
  const r = await sim.runPipeline({ serverUrl: `https://localhost:${b.server.port}`, ca: b.fleet.ca, device: d, imageSize });
  const kibs = r.bytes / 1024 / r.seconds;
  const heap = r.peakHeapBytes / 1024;
  return {
    status: "measured",
    kib_s: round(kibs, 1),
    peak_heap_kib: round(heap, 1),
    bytes: r.bytes,
    seconds: round(r.seconds, 2),
    ...TARGETS,
    pass: kibs >= TARGETS.target_kib_s && heap <= TARGETS.target_heap_kib,
  };
}
