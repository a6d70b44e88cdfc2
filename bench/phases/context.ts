// What every phase of the bench gets: tools, core plan, fleet, the servers and the run's settings.
import type { Fleet } from "../fleet";
import type { BareProcess, CpuPlan, NginxProcess, ServerProcess } from "../processes";
import type { Tools } from "../tools";

export interface BenchOptions {
  /** seconds per measured run */
  seconds: number;
  /** alternated server/nginx rounds per comparison */
  rounds: number;
  devices: number;
  loadThreads: number;
  keepAliveConnections: number;
  handshakeConnections: number;
  downloadConnections: number;
  reportConnections: number;
  slowDownloads: number;
  /** how long reports are sent before the server is killed with SIGKILL */
  killAfterMs: number;
  /** server started with --cpu-prof (profiles written to the work folder) */
  profile: boolean;
}

/** With --compare: another build of this project, started the same way as ours, on its own copy of the data. */
export interface Baseline {
  /** The build's folder (with its own dist/ and node_modules/). */
  root: string;
  /** Its copy of the fleet's data folder (OTA_DATA_DIR); everything else (certificates, firmware) is shared. */
  dataDir: string;
  server: ServerProcess;
  /** Starts it again on the same data. */
  start(): Promise<ServerProcess>;
}

export interface BenchContext {
  tools: Tools;
  cpu: CpuPlan;
  fleet: Fleet;
  server: ServerProcess;
  /** The baseline build's server (--compare), or null. */
  baseline: Baseline | null;
  nginx: NginxProcess;
  bare: BareProcess;
  opts: BenchOptions;
  /** The large image's content-addressed path, served by both. */
  largePath: string;
  largeSize: number;
  largeSha256: string;
  /** Starts our server again on the same data (after a kill). */
  startServer(): Promise<ServerProcess>;
  /** Starts another bare Node.js reference (the caller stops it). */
  startBare(): Promise<BareProcess>;
  say(msg: string): void;
}
