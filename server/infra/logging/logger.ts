// Structured JSON logs (pino). Credentials are redacted wherever they might appear, so a log shipped to
// a third party never carries a key or token.
import pino, { type Logger } from "pino";

const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers['x-api-key']",
  "req.headers.cookie",
  "headers.authorization",
  "headers['x-api-key']",
  "*.apiKey",
  "*.hmacKey",
  "*.mqttPassword",
  "*.token",
  "*.operatorToken",
  "*.deviceApiKey",
  "*.secret",
];

const FORMAT = {
  base: { service: "esp32-ota" },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label: string) => ({ level: label }) },
};

/** The fields each logger made here puts into every line (pino's bindings() leaves a `pid` out). */
const baseFields = new WeakMap<Logger, Record<string, string | number>>();

/** `fields` go into every line (a server process under OTA_WORKERS names itself by its worker id and pid). */
export function createLogger(level: string, destination?: pino.DestinationStream, fields?: Record<string, string | number>): Logger {
  const base = { ...FORMAT.base, ...fields };
  const log = pino({ ...FORMAT, base, level, redact: { paths: REDACT_PATHS, censor: "[redacted]" } }, destination);
  baseFields.set(log, base);
  return log;
}

/**
 * The same log (destination, level, format) without the redaction pass, which costs as much as the rest of
 * writing a line. Only for lines whose fields are fixed and validated and can never hold a credential: the
 * closing line of each request (id, method, path, status, time: server/api/http/request-log.ts).
 */
export function unredacted(log: Logger): Logger {
  const destination = (log as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym];
  return pino({ ...FORMAT, base: { ...log.bindings(), ...baseFields.get(log) }, level: log.level }, destination);
}

/**
 * stdout for the running server, written asynchronously: a request never waits for its log line. Lines leave
 * together, 4 KiB at a time or every quarter second, whichever comes first: one write per line would cost a
 * thread pool round trip per request at a few thousand requests a second. Call flushSync() before exiting.
 */
export function asyncStdout(opts: { shared?: boolean } = {}): pino.DestinationStream & { flushSync(): void } {
  // Shared: several processes write to the same stdout (OTA_WORKERS). Each write is then whole lines and at most
  // PIPE_BUF (4 KiB), which a pipe takes in one piece: one process's lines never land inside another's.
  if (opts.shared) return pino.destination({ dest: 1, sync: false, minLength: 2048, maxWrite: PIPE_BUF, periodicFlush: 250 });
  return pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 250 });
}

/** Bytes a write to a pipe is guaranteed to land in one piece (POSIX minimum 512; Linux 4096). */
const PIPE_BUF = 4096;
