// `npm run bench`: our server against nginx on this machine, in one run, side by side. Prints a table and,
// as the last line, one JSON object with every figure and ratio. See README.md ("Benchmarks").
//
//   npm run bench                  the full run (a few minutes)
//   npm run bench -- --quick       a smoke run: tiny loads, same code paths (used by the test suite)
//   npm run bench -- --seconds 10 --rounds 3 --devices 20000 --profile --keep
//   npm run bench -- --server-root ../other-build   measure another build of the server with this harness
//   npm run bench -- --compare ../baseline-build    also measure another build as "baseline", alternating
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { verifiedManifest } from "./client";
import { forgetUnknownMigrations } from "./compare";
import { fixtureImages, prepareFleet } from "./fleet";
import type { Baseline, BenchContext, BenchOptions } from "./phases/context";
import { measureDownloads, measureSlowDownloads } from "./phases/downloads";
import { measurePipeline } from "./phases/pipeline";
import { measurePolls, POLL_INTERVAL_S } from "./phases/polls";
import { measureDurableReports } from "./phases/durable-reports";
import { measurePgPolls } from "./phases/pg-polls";
import { postgresAvailable, startPostgresSide, type PostgresSide } from "./phases/postgres-side";
import { crashCheck, measureReports } from "./phases/reports";
import { cpuPlan, startBareHttps, startNginx, startServerProcess } from "./processes";
import { printTable } from "./table";
import { ensureTools } from "./tools";

const FULL: BenchOptions = {
  seconds: 8,
  rounds: 3,
  devices: 20_000,
  loadThreads: 2,
  keepAliveConnections: 64,
  handshakeConnections: 32,
  downloadConnections: 4,
  reportConnections: 64,
  slowDownloads: 1000,
  killAfterMs: 3000,
  profile: false,
};

const QUICK: BenchOptions = {
  ...FULL,
  seconds: 1,
  rounds: 1,
  devices: 200,
  keepAliveConnections: 8,
  handshakeConnections: 8,
  downloadConnections: 4,
  reportConnections: 8,
  slowDownloads: 50,
  killAfterMs: 800,
};

const PHASES = ["polls", "handshake", "downloads", "reports", "pipeline", "pg-polls", "durable-reports"] as const;
/** The figures that need PostgreSQL (OTA_BENCH_DATABASE_URL, or its server programs for a throwaway cluster). */
const POSTGRES_PHASES: readonly Phase[] = ["pg-polls", "durable-reports"];
type Phase = (typeof PHASES)[number];

interface Args {
  serverRoot: string | undefined;
  /** --compare: the baseline build's folder. */
  compare: string | undefined;
  only: Set<Phase>;
  opts: BenchOptions;
  quick: boolean;
  keep: boolean;
  dir: string;
  /** The second reference: bare Node.js HTTPS, or the same answers through an Express application. */
  bare: "node" | "express";
}

/** A mistake on the command line: reported as its message alone. */
class UsageError extends Error {}

/**
 * Checks that `dir` holds a build of this project: dist/server/main.js and (for --compare, whose server and
 * device bench run from that folder with its own packages) node_modules.
 */
function buildFolder(option: string, dir: string | undefined, needModules: boolean): string {
  if (!dir) throw new UsageError(`${option} needs a folder: a build of this project (npm ci && npm run build there)`);
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new UsageError(`${option} ${root}: no such folder`);
  const missing = ["dist/server/main.js", ...(needModules ? ["node_modules"] : [])].filter((f) => !fs.existsSync(path.join(root, f)));
  if (missing.length) {
    throw new UsageError(`${option} ${root}: ${missing.join(" and ")} missing; it must be a build of this project: run npm ci && npm run build in ${root}`);
  }
  return root;
}

function parseArgs(argv: string[]): Args {
  const quick = argv.includes("--quick");
  const opts = { ...(quick ? QUICK : FULL) };
  let keep = false;
  let only = new Set<Phase>(PHASES);
  let serverRoot: string | undefined;
  let compare: string | undefined;
  let bare: Args["bare"] = "node";
  let dir = process.env.BENCH_DIR ?? path.join(os.tmpdir(), `esp32-ota-bench-${process.pid}`);
  const num = (i: number, name: string) => {
    const v = Number(argv[i + 1]);
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`${name} needs a whole number, got ${argv[i + 1]}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--quick") continue;
    else if (a === "--keep") keep = true;
    else if (a === "--profile") opts.profile = true;
    else if (a === "--bare") {
      const v = argv[++i];
      if (v !== "node" && v !== "express") throw new UsageError(`--bare takes node or express, got ${v}`);
      bare = v;
    }
    else if (a === "--seconds") opts.seconds = num(i++, a);
    else if (a === "--rounds") opts.rounds = num(i++, a);
    else if (a === "--devices") opts.devices = num(i++, a);
    else if (a === "--slow-downloads") opts.slowDownloads = num(i++, a);
    else if (a === "--dir") dir = path.resolve(argv[++i] ?? "");
    else if (a === "--server-root") serverRoot = buildFolder(a, argv[++i], false);
    else if (a === "--compare") compare = buildFolder(a, argv[++i], true);
    else if (a === "--only") {
      const list = (argv[++i] ?? "").split(",");
      const bad = list.filter((p) => !(PHASES as readonly string[]).includes(p));
      if (bad.length) throw new UsageError(`--only takes a comma-separated list of ${PHASES.join(", ")}; got ${bad.join(", ")}`);
      only = new Set(list as Phase[]);
    }
    else throw new UsageError(`unknown option ${a}; options: --quick --only LIST --seconds N --rounds N --devices N --slow-downloads N --profile --keep --dir DIR --server-root DIR --compare DIR --bare node|express`);
  }
  return { serverRoot, compare, only, opts, quick, keep, dir, bare };
}

function say(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function nginxVersion(nginx: string): string {
  const r = spawnSync(nginx, ["-v"], { encoding: "utf8" });
  return (r.stderr || r.stdout || "nginx").trim().replace(/^nginx version: /, "");
}

function cpuModel(): string {
  return os.cpus()[0]?.model.trim() ?? "unknown";
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const { opts } = args;
  const pgWanted = POSTGRES_PHASES.filter((p) => args.only.has(p));
  if (pgWanted.length && !postgresAvailable()) {
    const why = "PostgreSQL is not installed and OTA_BENCH_DATABASE_URL is not set (an admin URL on which the bench may create a database)";
    if (process.argv.includes("--only")) throw new UsageError(`${pgWanted.join(" and ")} need PostgreSQL: ${why}`);
    say(`skipping ${pgWanted.join(" and ")}: ${why}`);
    for (const p of pgWanted) args.only.delete(p);
  }
  const started = Date.now();
  const tools = ensureTools(say);
  const cpu = cpuPlan(tools.taskset);
  say(`work folder ${args.dir}; ${cpu.description}`);

  say(`preparing ${opts.devices} provisioned devices, certificates and firmware`);
  const fleet = await prepareFleet(args.dir, opts.devices, args.quick);
  const images = fixtureImages(args.quick);
  const large = fs.readFileSync(images.large);
  const largeSha256 = createHash("sha256").update(large).digest("hex");
  const largePath = `/firmware/sha256/${largeSha256}.bin`;

  // Both servers: the same ECDSA certificate, TLS 1.2-1.3, Node's default ciphers, no session resumption
  // (devices poll with a full handshake; wrk would otherwise resume sessions).
  const serverEnv = { ...fleet.serverEnv, OTA_TLS_SESSION_RESUMPTION: "false" };
  const profileDir = path.join(args.dir, "profiles");
  const startServer = () =>
    startServerProcess({
      env: serverEnv,
      cpu: cpu.server,
      logFile: path.join(args.dir, "server.log"),
      serverRoot: args.serverRoot,
      nodeArgs: opts.profile ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
    });
  // The baseline (--compare) starts the same way from its own folder, with the same env but its own copy of the
  // data folder: a server owns its data folder (it ingests the firmware folder into it and sweeps its temp files
  // at start, migrates and writes its SQLite database, and the report checks count what is in it). The copy is
  // taken before either server has started, so both hold the same devices under the same master secret.
  const baselineDataDir = path.join(args.dir, "baseline", "data");
  if (args.compare) {
    fs.cpSync(fleet.dataDir, baselineDataDir, { recursive: true });
    forgetUnknownMigrations(path.join(baselineDataDir, "ota.sqlite"), args.compare);
  }
  const startBaseline = (root: string) => async () => {
    try {
      return await startServerProcess({
        env: { ...serverEnv, OTA_DATA_DIR: baselineDataDir },
        cpu: cpu.server,
        logFile: path.join(args.dir, "baseline", "server.log"),
        serverRoot: root,
        nodeArgs: opts.profile ? ["--cpu-prof", "--cpu-prof-dir", path.join(profileDir, "baseline")] : [],
      });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      const hint = msg.includes("corrupted migrations")
        ? "\nThe bench's database is made by this tree's code; this baseline does not know all of its migrations and they could not be forgotten. Compare builds with the same migrations."
        : "";
      throw new Error(`the baseline server (${root}) did not start: ${msg}${hint}`, { cause: err });
    }
  };
  // Whatever was started is stopped, and the work folder removed, however the run ends (a signal included).
  const stops: (() => Promise<void>)[] = [];
  let b: BenchContext | null = null;
  const cleanUp = async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined);
    if (!args.keep) fs.rmSync(args.dir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      say(`${signal}: stopping the servers`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
  try {
    say("starting our server (NODE_ENV=production, log level info, one process)");
    const server = await startServer();
    stops.push(() => (b ?? { server }).server.stop());
    let baseline: Baseline | null = null;
    if (args.compare) {
      say(`starting the baseline server from ${args.compare} the same way, on its own copy of the data`);
      const start = startBaseline(args.compare);
      const first = await start();
      const handle: Baseline = { root: args.compare, dataDir: baselineDataDir, server: first, start };
      stops.push(() => handle.server.stop());
      baseline = handle;
    }

    const www = path.join(args.dir, "www");
    fs.mkdirSync(path.join(www, "firmware", "sha256"), { recursive: true });
    fs.copyFileSync(images.large, path.join(www, "firmware", "sha256", `${largeSha256}.bin`));
    // nginx serves a real manifest, as our server answers it for one device: same bytes, same size.
    const manifest = await verifiedManifest(server.port, fleet.ca, fleet.devices[0]!);
    fs.writeFileSync(path.join(www, "manifest.json"), manifest);
    say("starting nginx (one worker) with the same certificate and TLS settings");
    const nginx = await startNginx({
      nginx: tools.nginx,
      dir: path.join(args.dir, "nginx"),
      cert: fleet.cert,
      key: fleet.key,
      cpu: cpu.server,
      ciphers: tls.DEFAULT_CIPHERS,
      sessionResumption: false,
      manifestFile: path.join(www, "manifest.json"),
      firmwareDir: path.join(www, "firmware"),
    });
    stops.push(() => nginx.stop());
    const startBare = () =>
      startBareHttps({
        cert: fleet.cert,
        key: fleet.key,
        manifestFile: path.join(www, "manifest.json"),
        firmwareDir: path.join(www, "firmware"),
        cpu: cpu.server,
        app: args.bare,
      });
    const bare = await startBare();
    stops.push(() => bare.stop());

    b = { tools, cpu, fleet, server, baseline, nginx, bare, opts, largePath, largeSize: large.length, largeSha256, startServer, startBare, say };
    const want = (p: Phase) => args.only.has(p);
    await verifiedManifest(b.server.port, fleet.ca, fleet.devices[1 % fleet.devices.length]!);
    if (baseline) await verifiedManifest(baseline.server.port, fleet.ca, fleet.devices[1 % fleet.devices.length]!);
    if (want("polls")) say(`1/7 manifest polls, keep-alive (${opts.rounds} x ${opts.seconds} s each side${baseline ? ", baseline included" : ""})`);
    const keepAlive = want("polls") ? await measurePolls(b, false) : null;
    if (want("handshake")) say(`2/7 manifest polls, full TLS handshake per request`);
    const handshake = want("handshake") ? await measurePolls(b, true) : null;
    if (want("downloads")) say(`3/7 downloads of the ${(large.length / 1e6).toFixed(2)} MB image, then ${opts.slowDownloads} slow downloads`);
    const downloads = want("downloads") ? await measureDownloads(b) : null;
    const slow = want("downloads") ? await measureSlowDownloads(b) : null;
    if (want("reports")) say("4/7 durable reports, then SIGKILL mid-run");
    const reports = want("reports") ? await measureReports(b) : null;
    const crash = want("reports") ? await crashCheck(b) : null;
    if (want("pipeline")) say("5/7 device pipeline in the DeviceScript VM");
    const pipeline = want("pipeline") ? await measurePipeline(b, opts.rounds) : null;

    let pgSide: PostgresSide | null = null;
    if (want("pg-polls") || want("durable-reports")) {
      pgSide = await startPostgresSide({ dir: args.dir, fleet, serverEnv, cpu, processes: 2, serverRoot: args.serverRoot, say });
      stops.push(() => pgSide!.stop());
    }
    if (want("pg-polls")) say(`6/7 manifest polls per CPU-second: two server processes on PostgreSQL against one on SQLite (${opts.rounds} x ${opts.seconds} s each side)`);
    const pgPolls = want("pg-polls") ? await measurePgPolls(b, pgSide!) : null;
    if (want("durable-reports")) say("7/7 durable reports on each backend beside the disk's fsyncs per second");
    const durable = want("durable-reports") ? await measureDurableReports(b, pgSide!, args.quick) : null;

    const result = {
      bench: "esp32-ota",
      mode: args.quick ? "quick" : "full",
      date: new Date().toISOString(),
      machine: { cores: os.availableParallelism(), cpu: cpuModel(), node: process.version, nginx: nginxVersion(tools.nginx) },
      pinning: cpu.description,
      server_build: args.serverRoot ?? "this tree",
      baseline_build: args.compare ?? null,
      /** What the bare_node_* figures measure: bare Node.js HTTPS, or an Express app with one route (--bare express). */
      bare_reference: args.bare,
      settings: opts,
      polls_keepalive: keepAlive,
      polls_handshake: handshake && { ...handshake, fleet_at_5min: Math.floor(handshake.server_rps * POLL_INTERVAL_S) },
      downloads: downloads && { ...downloads, image: path.basename(images.large), image_bytes: large.length },
      slow_downloads: slow,
      reports,
      reports_sigkill: crash,
      device_pipeline: pipeline,
      postgres: pgSide && { source: pgSide.source, version: pgSide.version, server_processes: pgSide.servers.length, ...pgSide.settings },
      pg_polls: pgPolls,
      durable_reports: durable,
      seconds: Math.round((Date.now() - started) / 1000),
    };
    printTable(result);
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    await cleanUp();
    if (args.keep) say(`kept ${args.dir} (logs, nginx.conf${opts.profile ? ", CPU profiles in profiles/" : ""})`);
  }
}

main().catch((err) => {
  say(`failed: ${err instanceof UsageError ? err.message : err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});

