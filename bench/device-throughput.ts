// `npm run bench:device`: how fast an image moves through the DeviceScript VM into the writer, and how much
// of the VM heap that takes. One run, three ways, same server, same image (the 124 KB hello_world):
//
//   native   Node.js fetches the same blocks (one Range request each, over one TLS connection) and
//            checks each block's SHA-256: the network and server alone, no VM.          [baseline]
//   command  the agent in the VM, writes as 232-byte Jacdac write commands (8 in flight).
//   bulk     the agent in the VM, writes as bulk frames (the default).
//
// Throughput is measured from the writer's `begin` to its last acknowledged write (every block fetched,
// hashed in the VM and written). Peak heap is the most live data seen in the VM's heap with a collection
// before every allocation. Prints a table and, as the last line, one JSON object; exits 1 if the agent
// misses its targets (64 KiB/s, 24 KiB of heap).
//
//   npm run bench:device [-- --rounds 3]
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Agent, request } from "undici";
import { EmulatedDevice } from "../device/host/device";
import { espFixture, factoryImage, factoryOtadata, HELLO_WORLD_FILE, loadAgent, loadPartitions } from "../device/host/setup";
import { PARTITIONS_CSV } from "../device/host/paths";
import { vmClock } from "../device/host/vm/loader";
import type { WriterOp } from "../device/host/writer-service";
import { loadConfig } from "../server/infra/config/config";
import { provisionDevice } from "../server/domain/devices/provisioning";
import { createLogger } from "../server/infra/logging/logger";
import { startServer, type RunningServer } from "../server/server";

const TARGET_KIB_S = 64;
const HEAP_BUDGET = 24 * 1024;

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const kibPerS = (bytes: number, ms: number) => bytes / 1024 / (ms / 1000);

async function startBenchServer(root: string): Promise<{ running: RunningServer; url: string; ca: string }> {
  const firmware = path.join(root, "firmware");
  fs.mkdirSync(firmware, { recursive: true });
  fs.copyFileSync(espFixture(HELLO_WORLD_FILE), path.join(firmware, HELLO_WORLD_FILE));
  const config = loadConfig(
    {
      PORT: "0",
      HOST: "127.0.0.1",
      OTA_DATA_DIR: path.join(root, "data"),
      OTA_FIRMWARE_DIR: firmware,
      OTA_CERT_DIR: path.join(root, "certs"),
      OTA_PARTITIONS: PARTITIONS_CSV,
      OTA_INGEST_SETTLE_MS: "100",
    },
    root,
  );
  const running = await startServer(config, { log: createLogger("warn", process.stderr) });
  for (let i = 0; i < 100 && !running.ctx.catalog.latest(null); i++) await new Promise((r) => setTimeout(r, 100));
  if (!running.ctx.catalog.latest(null)) throw new Error("the image was not ingested");
  return { running, url: `https://localhost:${running.port}`, ca: fs.readFileSync(path.join(root, "certs", "ca.crt"), "utf8") };
}

/** The baseline: Node.js doing the agent's network work (Range per block, SHA-256 per block). */
async function native(url: string, ca: string, apiKey: string): Promise<number> {
  const image = fs.readFileSync(espFixture(HELLO_WORLD_FILE));
  const sha = createHash("sha256").update(image).digest("hex");
  const dispatcher = new Agent({ connect: { ca }, pipelining: 1 });
  const block = 8192;
  const t0 = performance.now();
  for (let off = 0; off < image.length; off += block) {
    const last = Math.min(image.length, off + block) - 1;
    const r = await request(`${url}/firmware/sha256/${sha}.bin`, {
      headers: { "X-API-Key": apiKey, Range: `bytes=${off}-${last}` },
      dispatcher,
    });
    const body = Buffer.from(await r.body.arrayBuffer());
    const want = createHash("sha256").update(image.subarray(off, last + 1)).digest();
    if (r.statusCode !== 206 || !createHash("sha256").update(body).digest().equals(want)) throw new Error("baseline download failed");
  }
  const ms = performance.now() - t0;
  await dispatcher.close();
  return ms;
}

interface DeviceRun {
  ms: number;
  bytes: number;
  heapPeak: number;
  heapTotal: number;
}

async function deviceRun(
  s: { running: RunningServer; url: string; ca: string },
  id: string,
  opts: { command?: boolean; gcStress?: boolean },
): Promise<DeviceRun> {
  const agent = loadAgent();
  const bundle = await provisionDevice(s.running.ctx, id, { chip: "esp32" });
  const dev = new EmulatedDevice({
    provisioning: { ...bundle, serverUrl: s.url },
    ca: s.ca,
    program: agent.program,
    services: agent.services,
    partitions: loadPartitions(),
    factoryImage: factoryImage(),
    otadata: factoryOtadata(),
    settings: opts.command ? { write_mode: "command" } : {},
    trackHeap: true,
    gcStress: opts.gcStress,
  });
  let begin = 0;
  let lastWrite = 0;
  let bytes = 0;
  dev.on("writer", (op: WriterOp) => {
    if (op.op === "begin") begin = performance.now();
    if (op.op === "write" && op.status === 0) {
      lastWrite = performance.now();
      bytes = Math.max(bytes, op.offset! + op.length!);
    }
  });
  await dev.powerOn();
  await dev.waitFor((e) => e.state === "confirmed" && e.reported === true, 180_000);
  await dev.powerOff();
  return { ms: lastWrite - begin, bytes, heapPeak: dev.heapPeak, heapTotal: dev.heapTotal };
}

async function main(): Promise<number> {
  const rounds = arg("rounds", 3);
  vmClock.setSpeed(1); // throughput in real time
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ota-bench-device-"));
  const s = await startBenchServer(root);
  try {
    const { deviceApiKey: apiKey } = JSON.parse(fs.readFileSync(path.join(root, "data", "dev-credentials.json"), "utf8")) as { deviceApiKey: string };
    const size = fs.statSync(espFixture(HELLO_WORLD_FILE)).size;
    const nativeMs: number[] = [];
    const bulkMs: number[] = [];
    const commandMs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      process.stderr.write(`round ${r + 1}/${rounds}\n`);
      nativeMs.push(await native(s.url, s.ca, apiKey));
      bulkMs.push((await deviceRun(s, `bench-bulk-${r}`, {})).ms);
      commandMs.push((await deviceRun(s, `bench-cmd-${r}`, { command: true })).ms);
    }
    process.stderr.write("heap: one more bulk run, collecting before every allocation\n");
    const heap = await deviceRun(s, "bench-heap", { gcStress: true });

    const nat = kibPerS(size, median(nativeMs));
    const bulk = kibPerS(size, median(bulkMs));
    const cmd = kibPerS(size, median(commandMs));
    const rows: [string, string, string][] = [
      ["native (baseline)", nat.toFixed(1), "1.00"],
      ["agent, bulk writes", bulk.toFixed(1), (bulk / nat).toFixed(3)],
      ["agent, write commands", cmd.toFixed(1), (cmd / nat).toFixed(3)],
    ];
    process.stdout.write(`\n${size} bytes, median of ${rounds} rounds\n`);
    process.stdout.write(`${"".padEnd(24)}${"KiB/s".padStart(10)}${"vs native".padStart(12)}\n`);
    for (const [name, v, ratio] of rows) process.stdout.write(`${name.padEnd(24)}${v.padStart(10)}${ratio.padStart(12)}\n`);
    process.stdout.write(`bulk vs commands: ${(bulk / cmd).toFixed(2)}x; target ${TARGET_KIB_S} KiB/s\n`);
    process.stdout.write(`peak live heap ${heap.heapPeak} of ${heap.heapTotal} bytes (budget ${HEAP_BUDGET})\n\n`);
    const result = {
      image_bytes: size,
      rounds,
      native_kib_s: +nat.toFixed(1),
      bulk_kib_s: +bulk.toFixed(1),
      command_kib_s: +cmd.toFixed(1),
      bulk_vs_native: +(bulk / nat).toFixed(3),
      command_vs_native: +(cmd / nat).toFixed(3),
      bulk_vs_command: +(bulk / cmd).toFixed(2),
      target_kib_s: TARGET_KIB_S,
      heap_live_peak_bytes: heap.heapPeak,
      heap_total_bytes: heap.heapTotal,
      heap_budget_bytes: HEAP_BUDGET,
      meets_throughput: bulk >= TARGET_KIB_S,
      meets_heap: heap.heapPeak <= HEAP_BUDGET,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return result.meets_throughput && result.meets_heap ? 0 : 1;
  } finally {
    await s.running.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench:device: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
