// `npm start`: the OTA server on its embedded defaults (see docs/operations.md for every variable).
import { ConfigError, loadConfig } from "./infra/config/config";
import { asyncStdout, createLogger } from "./infra/logging/logger";
import { startServer, type RunningServer } from "./server";

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
  const out = asyncStdout();
  const log = createLogger(config.logLevel, out);
  const exit = (code: number): never => {
    out.flushSync();
    return process.exit(code);
  };
  process.on("unhandledRejection", (err) => log.error({ err }, "unhandled promise rejection"));
  let running: RunningServer;
  try {
    running = await startServer(config, { log });
  } catch (err) {
    log.fatal({ err: err instanceof Error ? { message: err.message } : err }, "server could not start");
    console.error(`esp32-ota: ${err instanceof Error ? err.message : String(err)}`);
    exit(1);
  }
  const stop = (signal: string) => {
    log.info({ signal }, "shutting down");
    running.close().then(
      () => exit(0),
      (err) => {
        log.error({ err }, "shutdown failed");
        exit(1);
      },
    );
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

void main();
