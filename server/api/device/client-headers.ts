// What an update client we do not control tells us about itself in request headers: Arduino HTTPUpdate's
// x-ESP32-* set (names and formats from arduino-esp32's HTTPUpdate.cpp), which esp_https_ota apps may send
// as well from their http_client_init_cb. Validated here; a malformed value is a 400 naming the header.
import type { Request } from "express";
import { z } from "zod";
import { badRequest } from "../http/errors";

const decimal = z
  .string()
  .regex(/^[0-9]{1,10}$/, "must be a whole number of bytes")
  .transform(Number)
  .refine((n) => n <= 0x7fffffff, "must be at most 2147483647");
const hex = (len: number) =>
  z
    .string()
    .regex(new RegExp(`^[0-9A-Fa-f]{${len}}$`), `must be ${len} hex digits`)
    .transform((s) => s.toLowerCase());
const printable = (max: number) => z.string().regex(new RegExp(`^[\\x20-\\x7e]{1,${max}}$`), `must be 1-${max} printable ASCII characters`);

/** Header name (as sent) -> schema. Node lower-cases names; we report them as the client spells them. */
const HEADERS = {
  "x-ESP32-free-space": decimal,
  "x-ESP32-sketch-size": decimal,
  "x-ESP32-chip-size": decimal,
  "x-ESP32-sketch-md5": hex(32),
  "x-ESP32-sketch-sha256": hex(64),
  "x-ESP32-sdk-version": printable(64),
  "x-ESP32-mode": z
    .string()
    .regex(/^[A-Za-z]{1,16}$/, "must be a word such as sketch or spiffs")
    .transform((s) => s.toLowerCase()),
  // A sketch's own version string (HTTPUpdate's currentVersion); not limited to esp_app_desc_t's 32 bytes.
  "x-ESP32-version": printable(64),
  "X-Device-Version": printable(32),
} as const;

type Parsed = { [K in keyof typeof HEADERS]?: z.output<(typeof HEADERS)[K]> };

export interface ClientHeaders {
  freeSpace?: number;
  sketchSize?: number;
  flashSize?: number;
  sketchMd5?: string;
  sketchSha256?: string;
  sdkVersion?: string;
  /** "sketch" (an app image) or a filesystem mode such as "spiffs". */
  mode?: string;
  /** The version the client says it runs (x-ESP32-version, else X-Device-Version). */
  version?: string;
  /** Which kind of client this is, from its User-Agent. */
  kind?: "arduino-httpupdate" | "esp-http-client";
}

function clientKind(req: Request): ClientHeaders["kind"] {
  const ua = req.get("user-agent") ?? "";
  if (ua === "ESP32-http-Update" || req.get("x-esp32-sta-mac") !== undefined) return "arduino-httpupdate";
  if (ua.startsWith("ESP32 HTTP Client")) return "esp-http-client";
  return undefined;
}

export function parseClientHeaders(req: Request): ClientHeaders {
  const out: Parsed = {};
  for (const [name, schema] of Object.entries(HEADERS)) {
    const raw = req.get(name);
    if (raw === undefined) continue;
    const r = (schema as z.ZodType).safeParse(raw.trim());
    if (!r.success) throw badRequest("invalid_header", `${name}: ${r.error.issues[0]?.message ?? "invalid value"}`);
    (out as Record<string, unknown>)[name] = r.data;
  }
  return {
    freeSpace: out["x-ESP32-free-space"],
    sketchSize: out["x-ESP32-sketch-size"],
    flashSize: out["x-ESP32-chip-size"],
    sketchMd5: out["x-ESP32-sketch-md5"],
    sketchSha256: out["x-ESP32-sketch-sha256"],
    sdkVersion: out["x-ESP32-sdk-version"],
    mode: out["x-ESP32-mode"],
    version: out["x-ESP32-version"] ?? out["X-Device-Version"],
    kind: clientKind(req),
  };
}
