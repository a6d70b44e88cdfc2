// `npm start`: the OTA server on its embedded defaults (see docs/operations.md for every variable). With
// OTA_WORKERS > 1 this process is the primary (server/workers.ts) and each server process runs this file again.
import cluster from "node:cluster";
import { ConfigError, loadConfig } from "./infra/config/config";
import { asyncStdout, createLogger } from "./infra/logging/logger";
import { startServer, type RunningServer } from "./server";
import { runPrimary } from "./workers";

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`esp32-ota: ${e.message}\nFix the variable(s) above (see docs/operations.md) and start again.`);
      process.exit(1);
    }
    throw e;
  }
  const several = config.workers > 1;
  const out = asyncStdout({ shared: several });
  // Under OTA_WORKERS every line says which process wrote it: a worker by its id and pid, the primary by its pid.
  const fields: Record<string, number> | undefined = !several ? undefined : cluster.isWorker ? { worker: cluster.worker!.id, pid: process.pid } : { pid: process.pid };
  const log = createLogger(config.logLevel, out, fields);
  const exit = (code: number): never => {
    out.flushSync();
    return process.exit(code);
  };
  process.on("unhandledRejection", (err) => log.error({ err }, "unhandled promise rejection"));
  if (several && cluster.isPrimary) return runPrimary(config, log, exit);
  let running: RunningServer;
  try {
    running = await startServer(config, { log });
  } catch (err) {
    log.fatal({ err: err instanceof Error ? { message: err.message } : err }, "server could not start");
    console.error(`esp32-ota: ${err instanceof Error ? err.message : String(err)}`);
    exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    running.close().then(
      () => exit(0),
      (err) => {
        log.error({ err }, "shutdown failed");
        exit(1);
      },
    );
  };
  if (cluster.isWorker) {
    // The primary passes its signal on, and Ctrl-C in a terminal reaches every process of the group as well: a
    // second signal must not end a worker that is already finishing its requests.
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  } else {
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  }
}

void main();
