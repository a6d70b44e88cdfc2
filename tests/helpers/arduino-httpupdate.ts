// Arduino-ESP32 HTTPUpdate as its source has it (libraries/HTTPUpdate/src/HTTPUpdate.cpp handleUpdate() and
// runUpdate(), HTTPClient.cpp sendHeader() and handleHeaderResponse(); ../shared/reference/httpupdate.md):
// the exact request it sends, and what it makes of the answer. The tests use it to check that our answers
// are ones the real client accepts, not merely ones we like.
import { createHash } from "node:crypto";
import { rawExchange, type RawResponse, type RawTarget } from "./raw-http";

export interface Sketch {
  staMac: string;
  apMac: string;
  /** ESP.getFreeSketchSpace(): the size of the next OTA slot. */
  freeSpace: number;
  sketchSize: number;
  /** ESP.getSketchMD5(): lower-case hex, empty when unknown (then the header is not sent). */
  sketchMd5?: string;
  /** getSketchSHA256(): UPPER-case hex, empty when unknown. */
  sketchSha256?: string;
  chipSize: number;
  sdkVersion: string;
}

export interface UpdateCall {
  uri: string;
  /** HTTPUpdate's currentVersion argument; sent only when non-empty. */
  currentVersion?: string;
  spiffs?: boolean;
  /** From the URL's user:pass@ or http.setAuthorization(): base64 of "user:pass". */
  basicAuth?: { user: string; pass: string };
  /** Headers a requestCB adds with http.addHeader(), after HTTPUpdate's own. */
  requestCB?: [string, string][];
  /** HTTPClient::_reuse: "keep-alive" with older HTTPClient, "close" with newer. */
  connection?: "close" | "keep-alive";
}

/** The request bytes, in HTTPClient::sendHeader() order. */
export function httpUpdateRequest(host: string, sketch: Sketch, call: UpdateCall): string {
  const lines = [
    `GET ${call.uri} HTTP/1.0`,
    `Host: ${host}`,
    "User-Agent: ESP32-http-Update",
    `Connection: ${call.connection ?? "close"}`,
  ];
  if (call.basicAuth) lines.push(`Authorization: Basic ${Buffer.from(`${call.basicAuth.user}:${call.basicAuth.pass}`).toString("base64")}`);
  lines.push(
    "Cache-Control: no-cache",
    `x-ESP32-STA-MAC: ${sketch.staMac}`,
    `x-ESP32-AP-MAC: ${sketch.apMac}`,
    `x-ESP32-free-space: ${sketch.freeSpace}`,
    `x-ESP32-sketch-size: ${sketch.sketchSize}`,
  );
  if (sketch.sketchMd5) lines.push(`x-ESP32-sketch-md5: ${sketch.sketchMd5}`);
  if (sketch.sketchSha256) lines.push(`x-ESP32-sketch-sha256: ${sketch.sketchSha256}`);
  lines.push(`x-ESP32-chip-size: ${sketch.chipSize}`, `x-ESP32-sdk-version: ${sketch.sdkVersion}`, `x-ESP32-mode: ${call.spiffs ? "spiffs" : "sketch"}`);
  if (call.currentVersion) lines.push(`x-ESP32-version: ${call.currentVersion}`);
  for (const [k, v] of call.requestCB ?? []) lines.push(`${k}: ${v}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

// HTTPUpdate.h error values.
export const HTTP_UE = {
  TOO_LESS_SPACE: -100,
  SERVER_NOT_REPORT_SIZE: -101,
  SERVER_FILE_NOT_FOUND: -102,
  SERVER_FORBIDDEN: -103,
  SERVER_WRONG_HTTP_CODE: -104,
  SERVER_FAULTY_MD5: -105,
  BIN_VERIFY_HEADER_FAILED: -106,
} as const;
const HTTPC_ERROR_ENCODING = -9; // HTTPClient.h
const UPDATE_ERROR_MD5 = 7; // Update.h
const UPDATE_ERROR_STREAM = 6;

export type UpdateOutcome =
  | { result: "HTTP_UPDATE_OK"; image: Buffer }
  | { result: "HTTP_UPDATE_NO_UPDATES" }
  | { result: "HTTP_UPDATE_FAILED"; lastError: number; why: string };

/** What handleUpdate() returns for this response, for a sketch with this much free OTA space. */
function httpUpdateOutcome(r: RawResponse, freeSpace: number): UpdateOutcome {
  const fail = (lastError: number, why: string): UpdateOutcome => ({ result: "HTTP_UPDATE_FAILED", lastError, why });
  // handleHeaderResponse(): the code is the number after "HTTP/1.x "; Content-Length via toInt(), else -1.
  if (!r.statusLine.startsWith("HTTP/1.")) return fail(-7, "no HTTP server");
  const code = parseInt(r.statusLine.substring(9), 10);
  const cl = r.header("content-length");
  const len = cl === undefined ? -1 : parseInt(cl, 10);
  const te = r.header("transfer-encoding");
  if (te !== undefined && te.toLowerCase() !== "chunked") return fail(HTTPC_ERROR_ENCODING, "Transfer-Encoding not supported");
  switch (code) {
    case 200: {
      if (!(len > 0)) return fail(HTTP_UE.SERVER_NOT_REPORT_SIZE, "Content-Length was 0 or wasn't set by Server");
      if (len > freeSpace) return fail(HTTP_UE.TOO_LESS_SPACE, "Not Enough space");
      // It streams the raw socket into flash: chunk framing would be written as if it were the image.
      if (te !== undefined) return fail(HTTP_UE.BIN_VERIFY_HEADER_FAILED, "chunked body: framing would be flashed");
      if (r.body[0] !== 0xe9) return fail(HTTP_UE.BIN_VERIFY_HEADER_FAILED, "Magic header does not start with 0xE9");
      const md5 = r.header("x-md5");
      if (md5 !== undefined && md5.length !== 32) return fail(HTTP_UE.SERVER_FAULTY_MD5, "Update.setMD5 failed");
      if (r.body.length !== len) return fail(UPDATE_ERROR_STREAM, "Update.writeStream wrote fewer bytes than Content-Length");
      if (md5 !== undefined && createHash("md5").update(r.body).digest("hex") !== md5.toLowerCase()) return fail(UPDATE_ERROR_MD5, "MD5 Check Failed");
      return { result: "HTTP_UPDATE_OK", image: r.body };
    }
    case 304:
      return { result: "HTTP_UPDATE_NO_UPDATES" };
    case 404:
      return fail(HTTP_UE.SERVER_FILE_NOT_FOUND, "File Not Found (404)");
    case 403:
      return fail(HTTP_UE.SERVER_FORBIDDEN, "Forbidden (403)");
    default:
      return fail(HTTP_UE.SERVER_WRONG_HTTP_CODE, `Wrong HTTP Code (${code})`);
  }
}

/** httpUpdate.update(client, url, currentVersion): one exchange and its outcome. */
export async function httpUpdate(target: RawTarget, sketch: Sketch, call: UpdateCall) {
  const response = await rawExchange(target, httpUpdateRequest(`localhost:${target.port}`, sketch, call), "GET");
  return { response, outcome: httpUpdateOutcome(response, sketch.freeSpace) };
}
