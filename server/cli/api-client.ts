// The operator API over HTTPS, trusting the CA from the login, with errors turned into messages and exit codes.
import type { Readable } from "node:stream";
import { Agent, request } from "undici";
import type { ErrorBody } from "./api-types";
import { CliError, EXIT, exitCodeForStatus } from "./errors";

const TLS_TRUST = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
]);

function networkError(server: string, e: unknown): CliError {
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = err.code ?? err.cause?.code ?? "";
  if (TLS_TRUST.has(code)) {
    return new CliError(`the certificate of ${server} is not trusted (${code}): log in again with --ca <the server's CA file, e.g. certs/ca.crt>`, EXIT.failure);
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return new CliError(`the certificate of ${server} is not valid for that host name: use the name the certificate was made for, or add it (generate-certs.sh NAME)`, EXIT.failure);
  }
  if (code === "CERT_HAS_EXPIRED") return new CliError(`the certificate of ${server} has expired: renew it on the server`, EXIT.failure);
  if (code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EHOSTUNREACH" || code === "ETIMEDOUT" || code === "UND_ERR_CONNECT_TIMEOUT") {
    return new CliError(`cannot reach ${server} (${code}): is the server running, and is the URL right? (ota login --server ...)`, EXIT.failure);
  }
  return new CliError(`request to ${server} failed: ${err.message}`, EXIT.failure);
}

export class ApiClient {
  private readonly agent: Agent;

  constructor(
    readonly server: string,
    private readonly token: string,
    ca: string | null,
  ) {
    this.agent = new Agent({ connect: ca ? { ca } : {} });
  }

  /** T is what the caller expects the server to answer; the JSON is not checked against it. */
  async call<T>(method: "GET" | "POST" | "PATCH" | "DELETE", p: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return this.send<T>(method, p, headers, body === undefined ? undefined : JSON.stringify(body));
  }

  /** Sends a body of known length from a stream (uploads). */
  async stream<T>(p: string, contentType: string, length: number, body: Readable): Promise<T> {
    return this.send<T>("POST", p, { Authorization: `Bearer ${this.token}`, "Content-Type": contentType, "Content-Length": String(length) }, body);
  }

  private async send<T>(method: string, p: string, headers: Record<string, string>, body?: string | Readable): Promise<T> {
    let res;
    try {
      res = await request(this.server + "/api/v1" + p, { method: method as "GET", headers, body, dispatcher: this.agent });
    } catch (e) {
      throw networkError(this.server, e);
    }
    const text = await res.body.text();
    let json: unknown = null;
    try {
      json = text ? (JSON.parse(text) as unknown) : null;
    } catch {
      /* not JSON: reported below */
    }
    if (res.statusCode >= 400) {
      const e = (json as ErrorBody | null)?.error;
      const message = e?.message ? `${e.message} (${e.code}${e.reason ? `: ${e.reason}` : ""})` : `HTTP ${res.statusCode}`;
      throw new CliError(`${message}`, exitCodeForStatus(res.statusCode));
    }
    if (json === null) throw new CliError(`unexpected answer from ${this.server} (HTTP ${res.statusCode}, not JSON): is that the OTA server?`, EXIT.failure);
    return json as T;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
