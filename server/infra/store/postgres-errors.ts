// What a PostgreSQL failure means for the caller: the database being out of reach (a retry later may work) is
// told apart from a fault in the query, and a database URL is described without its password.

/** Node's errors for a connection that could not be made or was lost. */
const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE"]);

/**
 * SQLSTATEs of a server that cannot take the query now: class 08 (connection exception), 53300
 * (too_many_connections), 57P01-57P03 (shutting down, crashed, starting up).
 */
const UNAVAILABLE_STATES = /^(08...|53300|57P0[123])$/;

/** pg's own messages for a connection lost or never obtained (they carry no code). */
const POOL_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed|Connection ended)/;

interface ErrorLike {
  code?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/** Read by shape, not instanceof: Node's socket errors may come from another realm (a vm context, a test runner). */
const errorLike = (e: unknown): ErrorLike | null => (typeof e === "object" && e !== null ? e : null);

export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = errorLike(err), depth = 0; e && depth < 5; e = errorLike(e.cause), depth++) {
    if (typeof e.code === "string" && (NETWORK_CODES.has(e.code) || UNAVAILABLE_STATES.test(e.code))) return true;
    if (typeof e.message === "string" && POOL_MESSAGES.test(e.message)) return true;
    if (Array.isArray(e.errors) && e.errors.some((x) => isDatabaseUnavailable(x))) return true;
  }
  return false;
}

/** The message of an error from pg or Node, whatever realm it comes from. */
export function errorMessage(err: unknown): string {
  const m = errorLike(err)?.message;
  return typeof m === "string" ? m : String(err);
}

/** user@host:port/database of a postgres:// URL, for messages and logs: never its password. */
export function describeDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    const host = u.hostname || u.searchParams.get("host") || "localhost";
    const user = u.username ? `${decodeURIComponent(u.username)}@` : "";
    return `${user}${host}:${u.port || "5432"}/${decodeURIComponent(u.pathname.replace(/^\//, "")) || "(default database)"}`;
  } catch {
    return "(an unparseable URL)";
  }
}
