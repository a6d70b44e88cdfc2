// Figure 3: firmware download throughput with the real 1.5 MB image against nginx's, and our server's
// resident memory per download with many slow clients holding downloads open (with --compare, both also for
// the baseline build).
import { createHash } from "node:crypto";
import tls from "node:tls";
import { alternate, best, round } from "../compare";
import { get } from "../client";
import { rssKiB, type ServerProcess } from "../processes";
import { runWrk, type WrkResult } from "../wrk";
import { capacity, errorsOf } from "./polls";
import type { BenchContext } from "./context";

export interface DownloadFigures {
  server_mib_s: number;
  nginx_mib_s: number;
  bare_node_mib_s: number;
  ratio: number;
  target: number;
  pass: boolean;
  connections: number;
  rounds: { server: number[]; nginx: number[]; bare_node: number[] };
  server_errors: number;
  busy: { server: number | null; nginx: number | null };
  /** MiB served per CPU-second (median of rounds), ours over nginx's. */
  capacity_ratio: number;
}

/** With --compare: the baseline build under the same download load, and ours over it. */
export interface BaselineDownloads {
  /** The baseline's best round. */
  baseline_mib_s: number;
  /** server_mib_s / baseline_mib_s (best rounds). */
  mib_s_vs_baseline: number;
  /** MiB served per CPU-second (median of rounds), ours over the baseline's. */
  capacity_vs_baseline: number;
  baseline_errors: number;
  baseline_rounds: number[];
  baseline_busy: number | null;
}

export interface SlowDownloadFigures {
  downloads: number;
  opened: number;
  rss_idle_kib: number;
  rss_peak_kib: number;
  kib_per_download: number;
  /** The same measure for bare Node.js holding as many idle keep-alive TLS connections (one small answer each). */
  bare_node_kib_per_idle_connection: number;
  target_kib: number;
  pass: boolean;
}

/** With --compare: the same measure for the baseline build (a fresh process of its own, after ours). */
export interface BaselineSlowDownloads {
  baseline_opened: number;
  baseline_rss_idle_kib: number;
  baseline_rss_peak_kib: number;
  baseline_kib_per_download: number;
  /** kib_per_download / baseline_kib_per_download: below 1, ours holds less per download. */
  kib_per_download_vs_baseline: number;
}

const MIB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One full download checked against the image's SHA-256, so the throughput figure is of correct bytes. */
async function checkDownload(b: BenchContext, port: number, headers: Record<string, string>): Promise<void> {
  const r = await get(port, b.fleet.ca, b.largePath, headers);
  const sha = createHash("sha256").update(r.body).digest("hex");
  if (r.status !== 200 || sha !== b.largeSha256) throw new Error(`download on port ${port} answered ${r.status} with the wrong bytes`);
}

export async function measureDownloads(b: BenchContext): Promise<DownloadFigures & Partial<BaselineDownloads>> {
  const d = b.fleet.devices[0]!;
  await checkDownload(b, b.server.port, { "X-API-Key": d.apiKey, "X-Device-Id": d.id });
  if (b.baseline) await checkDownload(b, b.baseline.server.port, { "X-API-Key": d.apiKey, "X-Device-Id": d.id });
  await checkDownload(b, b.nginx.port, {});
  const run = (port: number, serverPid: number) =>
    runWrk({
      serverPid,
      wrk: b.tools.wrk,
      cpu: b.cpu.load,
      url: `https://127.0.0.1:${port}`,
      script: "download",
      threads: b.opts.loadThreads,
      connections: b.opts.downloadConnections,
      seconds: b.opts.seconds,
      env: { BENCH_DEVICES: b.fleet.luaDevices, BENCH_PATH: b.largePath },
    });
  const ok = (r: WrkResult) => ((r.requests - r.errors.status) * b.largeSize) / r.seconds / MIB;
  await checkDownload(b, b.bare.port, {});
  const r = await alternate(b.opts.rounds, {
    server: () => run(b.server.port, b.server.pid),
    baseline: b.baseline && (() => run(b.baseline!.server.port, b.baseline!.server.pid)),
    nginx: () => run(b.nginx.port, b.nginx.workerPid),
    bare: () => run(b.bare.port, b.bare.pid),
  });
  const s = r.server.map(ok);
  const n = r.nginx.map(ok);
  const bare = r.bare.map(ok);
  const ratio = best(s) / best(n);
  return {
    server_mib_s: round(best(s), 1),
    nginx_mib_s: round(best(n), 1),
    bare_node_mib_s: round(best(bare), 1),
    ratio: round(ratio, 3),
    target: 0.8,
    pass: ratio >= 0.8,
    connections: b.opts.downloadConnections,
    rounds: { server: s.map((x) => round(x, 1)), nginx: n.map((x) => round(x, 1)), bare_node: bare.map((x) => round(x, 1)) },
    server_errors: r.server.reduce((a, x) => a + x.errors.status + x.errors.read + x.errors.timeout, 0),
    busy: { server: r.server[s.indexOf(best(s))]!.serverBusy, nginx: r.nginx[n.indexOf(best(n))]!.serverBusy },
    capacity_ratio: round(capacity(r.server) / capacity(r.nginx), 3),
    ...(b.baseline && baselineDownloads(r.server, r.baseline, ok)),
  };
}

function baselineDownloads(ours: WrkResult[], baseline: WrkResult[], ok: (r: WrkResult) => number): BaselineDownloads {
  const s = ours.map(ok);
  const base = baseline.map(ok);
  return {
    baseline_mib_s: round(best(base), 1),
    mib_s_vs_baseline: round(best(s) / best(base), 3),
    capacity_vs_baseline: round(capacity(ours) / capacity(baseline), 3),
    baseline_errors: baseline.reduce((a, x) => a + errorsOf(x), 0),
    baseline_rounds: base.map((x) => round(x, 1)),
    baseline_busy: baseline[base.indexOf(best(base))]!.serverBusy,
  };
}

/** Opens a download and stops reading after the first bytes, the way a device on a bad link does. */
function slowDownload(b: BenchContext, port: number, headers: Record<string, string>, path = b.largePath): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: b.fleet.ca }, () => {
      const lines = [`GET ${path} HTTP/1.1`, "Host: localhost", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
      s.write(lines.join("\r\n") + "\r\n\r\n");
    });
    s.setTimeout(30_000, () => s.destroy(new Error("no answer within 30 s")));
    s.once("data", (chunk: Buffer) => {
      s.pause();
      s.setTimeout(0);
      if (!chunk.toString("latin1", 0, 16).startsWith("HTTP/1.1 200")) reject(new Error(`slow download answered ${chunk.toString("latin1", 0, 40)}`));
      else resolve(s);
    });
    s.once("error", reject);
  });
}

async function steadyRss(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssKiB(pid));
    await sleep(200);
  }
  return samples.sort((x, y) => x - y)[2]!;
}

/**
 * What Node.js itself needs per open TLS connection: a fresh bare Node process, warmed like our server, holding
 * `count` idle keep-alive connections (one small answer each).
 */
async function idleConnectionCost(b: BenchContext, count: number): Promise<number> {
  const bare = await b.startBare();
  const sockets: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < 20; i++) (await slowDownload(b, bare.port, {}, "/firmware/manifest")).destroy();
    await sleep(1000);
    const idle = await steadyRss(bare.pid);
    for (let i = 0; i < count; i += 50) {
      const batch = Array.from({ length: Math.min(50, count - i) }, () => slowDownload(b, bare.port, {}, "/firmware/manifest"));
      sockets.push(...(await Promise.all(batch)));
    }
    await sleep(1000);
    return ((await steadyRss(bare.pid)) - idle) / count;
  } finally {
    for (const s of sockets) s.destroy();
    await bare.stop();
  }
}

/**
 * Opens `count` slow downloads on a fresh server process, warmed by a few whole downloads first: its resident
 * memory before and with the slow downloads open then differ by what those downloads hold, not by what earlier
 * phases left for the collector. `whileOpen` runs before the downloads are closed.
 */
async function slowDownloadMemory<T>(
  b: BenchContext,
  server: ServerProcess,
  whileOpen: () => Promise<T>,
): Promise<{ opened: number; idle: number; peak: number; during: T }> {
  const count = b.opts.slowDownloads;
  const d = b.fleet.devices[0]!;
  for (let i = 0; i < 20; i++) await checkDownload(b, server.port, { "X-API-Key": d.apiKey, "X-Device-Id": d.id });
  await sleep(1000);
  const idle = await steadyRss(server.pid);
  const sockets: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < count; i += 50) {
      const batch = [];
      for (let j = i; j < Math.min(count, i + 50); j++) {
        const d = b.fleet.devices[j % b.fleet.devices.length]!;
        batch.push(slowDownload(b, server.port, { "X-API-Key": d.apiKey, "X-Device-Id": d.id }));
      }
      sockets.push(...(await Promise.all(batch)));
      if (i % 250 === 0) b.say(`  slow downloads open: ${sockets.length}/${count}`);
    }
    // Let the server fill what it will (its stream buffers, TLS, kernel socket buffers), then sample.
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      await sleep(300);
      peak = Math.max(peak, rssKiB(server.pid));
    }
    return { opened: sockets.length, idle, peak, during: await whileOpen() };
  } finally {
    for (const s of sockets) s.destroy();
    await sleep(500);
  }
}

export async function measureSlowDownloads(b: BenchContext): Promise<SlowDownloadFigures & Partial<BaselineSlowDownloads>> {
  const count = b.opts.slowDownloads;
  await b.server.stop();
  b.server = await b.startServer();
  const ours = await slowDownloadMemory(b, b.server, () => idleConnectionCost(b, count));
  const per = (ours.peak - ours.idle) / count;
  const figures: SlowDownloadFigures = {
    downloads: count,
    opened: ours.opened,
    rss_idle_kib: ours.idle,
    rss_peak_kib: ours.peak,
    kib_per_download: round(per, 1),
    bare_node_kib_per_idle_connection: round(ours.during, 1),
    target_kib: 64,
    pass: per <= 64 && ours.opened === count,
  };
  if (!b.baseline) return figures;
  b.say("  the same slow downloads on the baseline");
  await b.baseline.server.stop();
  b.baseline.server = await b.baseline.start();
  const base = await slowDownloadMemory(b, b.baseline.server, () => Promise.resolve(undefined));
  const basePer = (base.peak - base.idle) / count;
  return {
    ...figures,
    baseline_opened: base.opened,
    baseline_rss_idle_kib: base.idle,
    baseline_rss_peak_kib: base.peak,
    baseline_kib_per_download: round(basePer, 1),
    kib_per_download_vs_baseline: round(per / basePer, 3),
  };
}
