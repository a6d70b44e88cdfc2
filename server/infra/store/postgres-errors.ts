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

export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && (NETWORK_CODES.has(code) || UNAVAILABLE_STATES.test(code))) return true;
    if (POOL_MESSAGES.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some((x) => isDatabaseUnavailable(x))) return true;
  }
  return false;
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
