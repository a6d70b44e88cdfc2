// The server's Prometheus metrics (served at /metrics, docs/operations.md "Metrics"): one registry per server,
// and every metric object in it. Modules are handed the few metric objects they move, never the registry.
//
// Cardinality is bounded by design: no label names a device. Labels take values from fixed lists (outcomes,
// report statuses, reject codes, error codes) or from operator-made names (a release, one per rollout).
// Free-form values a device sends (a report's reason) are mapped onto a fixed list, anything else is "other".
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** What a poll (a manifest request, or a request to OTA_HTTPUPDATE_PATH) came to. */
export const POLL_OUTCOMES = ["offered", "not_modified", "no_firmware", "refused", "throttled", "invalid", "error", "aborted"] as const;
export type PollOutcome = (typeof POLL_OUTCOMES)[number];
const POLL_ENDPOINTS = ["manifest", "http_update"] as const;

/** Polls so far, by endpoint (GET /firmware/manifest; OTA_HTTPUPDATE_PATH) and outcome. */
export type PollCounts = Record<(typeof POLL_ENDPOINTS)[number], Record<PollOutcome, number>>;
const zeroOutcomes = () => Object.fromEntries(POLL_OUTCOMES.map((o) => [o, 0])) as Record<PollOutcome, number>;

/** Report reasons that are counted by name (the agent's and the documented codes); any other is "other". */
const REPORT_REASONS: ReadonlySet<string> = new Set([
  "no_firmware",
  "waiting_for_rollout_stage",
  "network",
  "block_hash_mismatch",
  "block_list_mismatch",
  "block_too_large",
  "image_hash_mismatch",
  "image_invalid",
  "image_too_large",
  "signature_invalid",
  "untrusted_signer",
  "signature_digest_mismatch",
  "malformed_signature_sector",
  "secure_version_too_low",
  "write_failed",
  "health_check_failed",
  "not_confirmed",
  "hmac_mismatch",
  "replayed_manifest",
  "invalid_manifest",
  "downgrade_refused",
  "chip_mismatch",
  "too_many_attempts",
]);

/** The label a report's reason is counted under: the reason when it is a known code, "none" or "other". */
export function reportReasonLabel(reason: string | null | undefined): string {
  if (!reason) return "none";
  return REPORT_REASONS.has(reason) ? reason : "other";
}

/** Seconds from a device being offered a release to its report that confirms it: 30 s to a week. */
const UPDATE_SECONDS_BUCKETS = [30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400];

export interface MetricsOptions {
  /** The server's version, for ota_build_info. */
  version: string;
  /** Process and Node.js metrics (CPU, memory, event-loop lag, GC): only in the serving process. */
  processMetrics: boolean;
}

export function createMetrics(opts: MetricsOptions) {
  const registry = new Registry();
  const registers = [registry];
  if (opts.processMetrics) {
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
    // Gauges named like counters, which `promtool check metrics` refuses; each is the sum of the same gauge by
    // type (nodejs_active_handles, nodejs_active_requests, nodejs_active_resources), which stay.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) registry.removeSingleMetric(name);
  }

  new Gauge({ name: "ota_build_info", help: "Always 1; the label is the server's version.", labelNames: ["version"], registers }).set(
    { version: opts.version },
    1,
  );

  // The poll path counts in plain numbers (an increment of a field); the counter reads them at each scrape.
  const polls: PollCounts = { manifest: zeroOutcomes(), http_update: zeroOutcomes() };
  new Counter({
    name: "ota_polls_total",
    help: "Device polls by endpoint (manifest, http_update) and outcome (offered, not_modified, no_firmware, refused, throttled, invalid, error, aborted).",
    labelNames: ["endpoint", "outcome"],
    registers,
    collect() {
      this.reset();
      for (const endpoint of POLL_ENDPOINTS) for (const outcome of POLL_OUTCOMES) this.inc({ endpoint, outcome }, polls[endpoint][outcome]);
    },
  });
  const downloads = new Counter({
    name: "ota_downloads_total",
    help: "Download answers with a body, by file (image, block_hashes) and range (full, partial).",
    labelNames: ["file", "range"],
    registers,
  });
  const downloadBytes = new Counter({
    name: "ota_download_bytes_total",
    help: "Bytes of firmware files written to connections, by file (image, block_hashes).",
    labelNames: ["file"],
    registers,
  });
  const reports = new Counter({
    name: "ota_reports_total",
    help: "Device reports stored (a retry is counted once), by status and reason.",
    labelNames: ["status", "reason"],
    registers,
  });
  const updates = new Counter({
    name: "ota_updates_total",
    help: "Devices that finished an update in a rollout, by release and outcome (succeeded, failed, rolled_back).",
    labelNames: ["release", "outcome"],
    registers,
  });
  const updateSeconds = new Histogram({
    name: "ota_update_duration_seconds",
    help: "Seconds from a rollout offering its release to a device to the report that confirms the device runs it.",
    buckets: UPDATE_SECONDS_BUCKETS,
    registers,
  });
  const imagesRejected = new Counter({
    name: "ota_images_rejected_total",
    help: "Firmware files refused, by reason (the reject code) and source (folder, upload).",
    labelNames: ["reason", "source"],
    registers,
  });
  const authFailures = new Counter({
    name: "ota_auth_failures_total",
    help: "Wrong, expired or revoked credentials (a request without any is not counted), by api (device, operator) and error code.",
    labelNames: ["api", "code"],
    registers,
  });
  const authThrottled = new Counter({
    name: "ota_auth_throttled_total",
    help: "Requests answered 429 too_many_auth_failures, by api (device, operator).",
    labelNames: ["api"],
    registers,
  });

  // Every labelled series a dashboard expects is there from the start, at 0, rather than from its first event.
  for (const file of ["image", "block_hashes"]) {
    downloadBytes.inc({ file }, 0);
    for (const range of ["full", "partial"]) downloads.inc({ file, range }, 0);
  }
  for (const api of ["device", "operator"]) authThrottled.inc({ api }, 0);

  return {
    registry,
    polls,
    downloads: { count: downloads, bytes: downloadBytes },
    reports,
    rollouts: { updates, updateSeconds },
    imagesRejected,
    auth: { failures: authFailures, throttled: authThrottled },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
export type DownloadMetrics = Metrics["downloads"];
export type RolloutMetrics = Metrics["rollouts"];
export type AuthMetrics = Metrics["auth"];

/** What the gauges read when Prometheus scrapes: the state of the fleet now, read from where it is kept. */
export interface FleetState {
  /** Devices seen within the online window (an indexed count). */
  devicesOnline(): Promise<number>;
  /** Every rollout: its release, state, stage, the stage's percent, and its members by status. */
  rollouts(): Promise<
    {
      release: string;
      state: string;
      stage: number;
      stagePercent: number;
      members: Record<string, number>;
    }[]
  >;
  /** Firmware files by status (valid, rejected, incomplete, removed). */
  firmwareFiles(): Record<string, number>;
}

const ROLLOUT_STATES = ["running", "paused", "completed", "aborted"] as const;
const FILE_STATUSES = ["valid", "rejected", "incomplete", "removed"] as const;

/**
 * Gauges computed at each scrape from `fleet`. The online count is reused for `onlineCacheMs`, so scrapes from
 * several Prometheus servers at once cost one count between them.
 */
export function addFleetGauges(metrics: Metrics, fleet: FleetState, onlineCacheMs = 5_000): void {
  const registers = [metrics.registry];
  let online: { at: number; n: Promise<number> } | null = null;
  new Gauge({
    name: "ota_devices_online",
    help: "Devices seen within the online window (3 poll intervals).",
    registers,
    async collect() {
      const now = Date.now();
      if (!online || now - online.at >= onlineCacheMs) {
        online = { at: now, n: fleet.devicesOnline() };
        // A failed count is asked again at the next scrape.
        online.n.catch(() => (online = null));
      }
      this.set(await online.n);
    },
  });
  new Gauge({
    name: "ota_firmware_files",
    help: "Firmware files known to the catalog, by status (valid, rejected, incomplete, removed).",
    labelNames: ["status"],
    registers,
    collect() {
      const byStatus = fleet.firmwareFiles();
      for (const status of FILE_STATUSES) this.set({ status }, byStatus[status] ?? 0);
    },
  });

  // The three rollout gauges are read from one pass over the rollouts per scrape.
  let pass: Promise<Awaited<ReturnType<FleetState["rollouts"]>>> | null = null;
  const rollouts = () => {
    pass ??= fleet.rollouts().finally(() => setImmediate(() => (pass = null)));
    return pass;
  };
  new Gauge({
    name: "ota_rollout_state",
    help: "1 for the rollout's current state (running, paused, completed, aborted), 0 for the others.",
    labelNames: ["release", "state"],
    registers,
    async collect() {
      this.reset();
      for (const r of await rollouts()) for (const state of ROLLOUT_STATES) this.set({ release: r.release, state }, r.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: "ota_rollout_stage",
    help: "The rollout's current stage (0 is the first).",
    labelNames: ["release"],
    registers,
    async collect() {
      this.reset();
      for (const r of await rollouts()) this.set({ release: r.release }, r.stage);
    },
  });
  new Gauge({
    name: "ota_rollout_stage_percent",
    help: "The percent of the targeted devices the rollout's current stage offers its release to.",
    labelNames: ["release"],
    registers,
    async collect() {
      this.reset();
      for (const r of await rollouts()) this.set({ release: r.release }, r.stagePercent);
    },
  });
  new Gauge({
    name: "ota_rollout_members",
    help: "Devices the rollout has offered its release to, by status (offered, installing, rebooted, succeeded, failed, rolled_back).",
    labelNames: ["release", "status"],
    registers,
    async collect() {
      this.reset();
      for (const r of await rollouts()) for (const [status, n] of Object.entries(r.members)) this.set({ release: r.release, status }, n);
    },
  });
}
