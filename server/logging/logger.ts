// Structured JSON logs (pino). Credentials are redacted wherever they might appear, so a log shipped to
// a third party never carries a key or token.
import pino, { type Logger } from "pino";

export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers['x-api-key']",
  "req.headers.cookie",
  "headers.authorization",
  "headers['x-api-key']",
  "*.apiKey",
  "*.hmacKey",
  "*.token",
  "*.operatorToken",
  "*.deviceApiKey",
  "*.secret",
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "esp32-ota" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/**
 * stdout for the running server, written asynchronously: a request never waits for its log line, and lines
 * logged while a write is in flight leave together in the next one. Call flushSync() before exiting.
 */
export function asyncStdout(): pino.DestinationStream & { flushSync(): void } {
  return pino.destination({ dest: 1, sync: false });
}
