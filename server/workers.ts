// OTA_WORKERS > 1: this process (the primary) does the one-time work of a start, then runs that many server
// processes (node:cluster) that share its listening port: the primary accepts connections and hands them to the
// workers in turn, and each worker runs the whole server (TLS, the app, its own database pool). The primary
// serves nothing itself. It starts a worker again when one dies (waiting longer after each quick death), and
// passes SIGTERM and SIGINT on to the workers, exiting once they have all stopped.
import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";
import type { Config } from "./infra/config/config";
import { prepareFirstStart } from "./server";

/** A worker that dies is started again after this, doubled for each quick death in a row, up to RESTART_MAX_MS. */
const RESTART_BASE_MS = 500;
const RESTART_MAX_MS = 30_000;
/** A worker that served this long before dying starts the count of quick deaths again. */
const HEALTHY_AFTER_MS = 60_000;
/** Workers still running this long after the stop signal are killed. */
const STOP_TIMEOUT_MS = 15_000;

interface Slot {
  worker: Worker | null;
  /** When its worker started listening; null until it does. */
  listeningAt: number | null;
  quickDeaths: number;
  restart: NodeJS.Timeout | null;
}

export async function runPrimary(config: Config, log: Logger, exit: (code: number) => never): Promise<void> {
  log.info({ workers: config.workers }, "starting server processes");
  try {
    await prepareFirstStart(config, log);
  } catch (err) {
    log.fatal({ err: err instanceof Error ? { message: err.message } : err }, "server could not start");
    console.error(`esp32-ota: ${err instanceof Error ? err.message : String(err)}`);
    exit(1);
  }

  const slots: Slot[] = Array.from({ length: config.workers }, () => ({ worker: null, listeningAt: null, quickDeaths: 0, restart: null }));
  const bySlot = new Map<Worker, Slot>();
  let serving = false;
  let stopping = false;
  let failed = false;
  /** The signal passed on to the workers: one that ends a worker before it handles it (still starting) is a clean stop too. */
  let stopSignal: NodeJS.Signals | null = null;

  const fork = (slot: Slot) => {
    slot.restart = null;
    slot.listeningAt = null;
    const worker = cluster.fork();
    slot.worker = worker;
    bySlot.set(worker, slot);
    log.info({ worker: worker.id, workerPid: worker.process.pid }, "server process started");
  };

  const live = () => slots.filter((s) => s.worker !== null);

  const finishIfStopped = () => {
    if (live().length > 0) return;
    log.info({ exitCode: failed ? 1 : 0 }, failed ? "stopped; not every server process stopped cleanly" : "stopped");
    exit(failed ? 1 : 0);
  };

  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    stopSignal = signal;
    for (const slot of slots) {
      if (slot.restart) clearTimeout(slot.restart);
      slot.restart = null;
      slot.worker?.process.kill(signal);
    }
    setTimeout(() => {
      const left = live();
      log.error({ workers: left.map((s) => s.worker!.id), timeoutMs: STOP_TIMEOUT_MS }, "server processes did not stop in time; killing them");
      failed = true;
      for (const s of left) s.worker!.process.kill("SIGKILL");
    }, STOP_TIMEOUT_MS).unref();
    finishIfStopped();
  };

  cluster.on("listening", (worker, address) => {
    const slot = bySlot.get(worker);
    if (!slot) return;
    slot.listeningAt = Date.now();
    if (!serving && slots.every((s) => s.listeningAt !== null)) {
      serving = true;
      log.info({ workers: config.workers, port: address.port }, "all server processes listening");
    }
  });

  cluster.on("exit", (worker, code, signal) => {
    const slot = bySlot.get(worker);
    if (!slot) return;
    bySlot.delete(worker);
    slot.worker = null;
    const fields = { worker: worker.id, workerPid: worker.process.pid, exitCode: code, signal };
    if (stopping) {
      if (code !== 0 && signal !== stopSignal) {
        failed = true;
        log.error(fields, "server process did not stop cleanly");
      } else {
        log.info(fields, "server process stopped");
      }
      return finishIfStopped();
    }
    if (!serving) {
      // The first start failed in a worker (its own log says why): starting it again would fail the same way.
      log.fatal(fields, "a server process stopped before all were listening; stopping the others");
      failed = true;
      return stopAll("SIGTERM");
    }
    const lived = slot.listeningAt === null ? 0 : Date.now() - slot.listeningAt;
    slot.quickDeaths = lived >= HEALTHY_AFTER_MS ? 1 : slot.quickDeaths + 1;
    const delay = Math.min(RESTART_BASE_MS * 2 ** (slot.quickDeaths - 1), RESTART_MAX_MS);
    log.error({ ...fields, restartInMs: delay }, "server process stopped unexpectedly; starting a new one");
    slot.restart = setTimeout(() => fork(slot), delay);
  });

  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    log.info({ signal }, "shutting down");
    stopAll(signal);
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));

  for (const slot of slots) fork(slot);
}
