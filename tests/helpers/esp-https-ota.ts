// ESP-IDF esp_https_ota over esp_http_client, as their sources have it (components/esp_https_ota/src/
// esp_https_ota.c: esp_https_ota_begin/perform, _http_connect, _http_handle_response_code; components/
// esp_http_client/esp_http_client.c: default headers, redirects, Basic after a 401 challenge;
// ../shared/reference/esp_https_ota.md). Every request goes out on its own TLS connection, as between the
// ranges of a partial download without a persistent connection. The tests use it to check that our answers
// are ones the real client accepts.
import { rawExchange, type RawResponse, type RawTarget } from "./raw-http";

export interface OtaConfig {
  path: string;
  /** Headers the app sets in http_client_init_cb (esp_http_client_set_header), in order. */
  initHeaders?: [string, string][];
  /** Credentials from the URL's user:pass@ or the config; sent only after a 401 unless preemptive. */
  basic?: { user: string; pass: string; preemptive?: boolean };
  partialHttpDownload?: boolean;
  /** max_http_request_size; 0 means DEFAULT_REQUEST_SIZE (64 KiB). */
  maxHttpRequestSize?: number;
  /** ota_resumption with ota_image_bytes_written: these bytes are already in flash. */
  resumeFrom?: Buffer;
  /** The chip the client runs on (esp_image_header_t.chip_id): the image must match. */
  chipId: number;
}

export interface Exchange {
  method: string;
  path: string;
  range: string | undefined;
  status: number;
  contentLength: string | undefined;
  contentRange: string | undefined;
}

export type OtaResult =
  | { ok: true; image: Buffer; exchanges: Exchange[] }
  | { ok: false; error: string; exchanges: Exchange[] };

const DEFAULT_REQUEST_SIZE = 64 * 1024;
const IMAGE_HEADER_SIZE = 1024;
const MAX_REDIRECT = 10;
const MAX_AUTH_RETRIES = 10;

class OtaError extends Error {}

export async function espHttpsOta(target: RawTarget, cfg: OtaConfig): Promise<OtaResult> {
  const exchanges: Exchange[] = [];
  let path = cfg.path;
  let basicActive = Boolean(cfg.basic?.preemptive); // connection_info.auth_type == HTTP_AUTH_TYPE_BASIC
  // The request header list: esp_http_client_init sets User-Agent and Host first, the app's come next.
  const headers = new Map<string, string>([
    ["User-Agent", "ESP32 HTTP Client/1.0"],
    ["Host", `localhost:${target.port}`],
  ]);
  for (const [k, v] of cfg.initHeaders ?? []) headers.set(k, v);

  async function send(method: string): Promise<RawResponse> {
    if (basicActive && cfg.basic) {
      headers.set("Authorization", `Basic ${Buffer.from(`${cfg.basic.user}:${cfg.basic.pass}`).toString("base64")}`);
    }
    const text = `${method} ${path} HTTP/1.1\r\n` + [...headers].map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
    const r = await rawExchange(target, text, method);
    exchanges.push({
      method,
      path,
      range: headers.get("Range"),
      status: r.status,
      contentLength: r.header("content-length"),
      contentRange: r.header("content-range"),
    });
    if (r.header("transfer-encoding") === undefined && method !== "HEAD" && r.status !== 304 && r.header("content-length") === undefined) {
      throw new OtaError("no Content-Length and not chunked: the client cannot tell where the body ends");
    }
    return r;
  }

  /** Follows 3xx (esp_http_client_set_redirection) and answers a Basic challenge, as both loops do. */
  async function exchange(method: string): Promise<RawResponse> {
    let redirects = 0;
    let authRetries = MAX_AUTH_RETRIES;
    for (;;) {
      const r = await send(method);
      if ([301, 302, 303, 307, 308].includes(r.status)) {
        if (++redirects > MAX_REDIRECT) throw new OtaError("ESP_ERR_HTTP_MAX_REDIRECT");
        const location = r.header("location");
        if (!location) throw new OtaError("redirect without Location");
        const u = new URL(location, `https://localhost:${target.port}`);
        if (u.port !== String(target.port)) throw new OtaError(`redirect to another server: ${location}`);
        path = u.pathname + u.search;
        continue;
      }
      if (r.status === 401 && cfg.basic && authRetries-- > 0 && /^Basic/i.test(r.header("www-authenticate") ?? "")) {
        basicActive = true;
        continue;
      }
      return r;
    }
  }

  /** _http_connect + _http_handle_response_code for a GET. */
  async function connect(): Promise<RawResponse> {
    const r = await exchange("GET");
    if (r.status === 304) throw new OtaError("ESP_ERR_HTTP_NOT_MODIFIED");
    if (r.status === 416) throw new OtaError("ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE");
    if (r.status === 403 || r.status === 404) throw new OtaError(`File not found(${r.status})`);
    if (r.status >= 400 && r.status < 500) throw new OtaError(`Client error (${r.status})`);
    if (r.status >= 500) throw new OtaError(`Server error (${r.status})`);
    return r;
  }

  const partial = Boolean(cfg.partialHttpDownload);
  const max = cfg.maxHttpRequestSize || DEFAULT_REQUEST_SIZE;
  let written: Buffer = cfg.resumeFrom && cfg.resumeFrom.length >= IMAGE_HEADER_SIZE ? cfg.resumeFrom : Buffer.alloc(0);
  try {
    // esp_https_ota_begin()
    if (written.length > 0 && !partial) headers.set("Range", `bytes=${written.length}-`);
    let imageLength = -1;
    if (partial) {
      const head = await exchange("HEAD");
      if (head.status === 200) {
        imageLength = Number(head.header("content-length") ?? -1);
      } else {
        // A server without HEAD: the length from a one-byte range.
        headers.set("Range", "bytes=0-0");
        const probe = await exchange("GET");
        if (probe.status !== 200 && probe.status !== 206) throw new OtaError(`Received incorrect http status ${probe.status}`);
        headers.delete("Range");
        if (probe.status === 200) imageLength = Number(probe.header("content-length") ?? -1);
        else {
          const total = /\/(\d+)$/.exec(probe.header("content-range") ?? "")?.[1];
          if (total === undefined) throw new OtaError("Content-Range header has unknown total size");
          imageLength = Number(total);
        }
      }
      if (imageLength === -1) throw new OtaError("Failed to get image length from http response");
      const start = written.length;
      const end = imageLength > max + start ? start + max - 1 : imageLength; // sic: not imageLength - 1
      if (end - start < imageLength) headers.set("Range", `bytes=${start}-${end}`);
    }
    let r = await connect();
    if (!partial) imageLength = written.length + Number(r.header("content-length") ?? -1);

    // esp_https_ota_perform(): the first 1024 bytes are checked before anything is written.
    for (;;) {
      if (written.length === 0) {
        if (r.body.length < IMAGE_HEADER_SIZE && r.body.length < imageLength) throw new OtaError("Complete headers were not received");
        if (r.body[0] !== 0xe9) throw new OtaError(`OTA image has invalid magic byte (expected 0xE9, saw 0x${r.body[0]?.toString(16)})`);
        if (r.body.readUInt16LE(12) !== cfg.chipId) throw new OtaError("ESP_ERR_INVALID_VERSION: image is for another chip");
      }
      written = Buffer.concat([written, r.body]);
      if (!partial || written.length >= imageLength) break;
      const remaining = imageLength - written.length;
      headers.set("Range", remaining > max ? `bytes=${written.length}-${written.length + max - 1}` : `bytes=${written.length}-`);
      r = await connect();
    }
    if (written.length !== imageLength) throw new OtaError(`image is ${written.length} bytes, expected ${imageLength}`);
    return { ok: true, image: written, exchanges };
  } catch (e) {
    if (e instanceof OtaError) return { ok: false, error: e.message, exchanges };
    throw e;
  }
}
