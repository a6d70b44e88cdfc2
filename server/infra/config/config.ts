// Server configuration from documented environment variables (docs/operations.md), validated at start:
// a bad value stops the server with a message naming the variable.
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { SignatureKeyError, trustedKeyFromPem, type TrustedKey } from "../../esp";
import { MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG } from "./server-url";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ["1", "0", "true", "false", "yes", "no", "on", "off"].includes(v), "must be true or false")
  .transform((v) => ["1", "true", "yes", "on"].includes(v));

const int = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^[0-9]+$/, "must be a whole number")
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be between ${min} and ${max}`);

const nonEmpty = z.string().trim().min(1, "must not be empty");

/** A URL path the server answers on besides its own; it must not shadow /firmware, /api/v1 or /healthz. */
const extraPath = z
  .string()
  .trim()
  .regex(/^(\/[A-Za-z0-9._~-]+)+$/, "must be a path such as /api/ota/download (letters, digits, . _ ~ -)")
  .refine((p) => !p.split("/").some((seg) => seg === "." || seg === ".."), "must not contain . or .. segments")
  .refine(
    (p) => !/^\/(firmware|healthz)(\/|$)/.test(p) && !/^\/api\/v1(\/|$)/.test(p),
    "must not be under /firmware, /api/v1 or /healthz",
  );

/** A PEM public key is well under this; anything larger is not one. */
const MAX_KEY_FILE = 64 * 1024;

/**
 * OTA_SIGNING_KEYS: comma-separated paths (relative to the working folder) of the PEM public keys images must be
 * signed by. Each file is read and checked here, so a missing, unreadable or unusable key stops the start naming
 * it; a private key is refused (the server never needs one).
 */
const signingKeys = (cwd: string) =>
  z
    .string()
    .transform((raw, c) => {
      const files = [...new Set(raw.split(",").map((p) => p.trim()).filter(Boolean))].map((p) => path.resolve(cwd, p));
      if (files.length === 0) c.addIssue({ code: "custom", message: "names no key file; give comma-separated paths of PEM public keys" });
      const keys: TrustedKey[] = [];
      for (const file of files) {
        let pem: string;
        try {
          const st = fs.statSync(file);
          if (!st.isFile() || st.size > MAX_KEY_FILE) {
            c.addIssue({ code: "custom", message: `${file} is not a PEM key file (${st.isFile() ? `${st.size} bytes` : "not a regular file"})` });
            continue;
          }
          pem = fs.readFileSync(file, "utf8");
        } catch (e) {
          c.addIssue({ code: "custom", message: `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})` });
          continue;
        }
        if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
          c.addIssue({ code: "custom", message: `${file} is a private key: give its public key (ota keys generate writes it beside the key); the server never needs the private key, keep it offline` });
          continue;
        }
        try {
          const key = trustedKeyFromPem(pem, path.basename(file));
          if (!keys.some((k) => k.digest.equals(key.digest))) keys.push(key);
        } catch (e) {
          if (!(e instanceof SignatureKeyError)) throw e;
          c.addIssue({ code: "custom", message: `${file}: ${e.message}` });
        }
      }
      return keys;
    });

const envSchema = z.object({
  PORT: int(0, 65535).default(8443),
  HOST: nonEmpty.default("0.0.0.0"),
  OTA_DATA_DIR: nonEmpty.default("data"),
  OTA_FIRMWARE_DIR: nonEmpty.default("firmware"),
  OTA_CERT_DIR: nonEmpty.default("certs"),
  OTA_TLS_CERT: nonEmpty.optional(),
  OTA_TLS_KEY: nonEmpty.optional(),
  OTA_TLS_CA: nonEmpty.optional(),
  OTA_PARTITIONS: nonEmpty.default("partitions.csv"),
  OTA_LOG_LEVEL: z.enum(LOG_LEVELS, { message: `must be one of ${LOG_LEVELS.join(", ")}` }).default("info"),
  OTA_PUBLIC_URL: z
    .url({ protocol: /^https?$/, message: "must be an absolute http(s) URL such as https://ota.example.com:8443" })
    .transform((u) => u.replace(/\/+$/, ""))
    .refine((u) => Buffer.byteLength(u) <= MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG)
    .optional(),
  OTA_BLOCK_SIZE: int(1024, 16384)
    .refine((n) => (n & (n - 1)) === 0, "must be a power of two")
    .default(8192),
  OTA_POLL_INTERVAL: int(10, 86400).default(300),
  OTA_AUTH_FAILURE_LIMIT: int(1, 1_000_000).default(20),
  OTA_AUTH_FAILURE_WINDOW: int(1, 86400).default(300),
  OTA_INGEST_SETTLE_MS: int(50, 60000).default(500),
  OTA_INCOMPLETE_GRACE: int(1, 3600).default(30),
  OTA_TRUST_PROXY: bool.default(false),
  OTA_HTTPUPDATE_PATH: extraPath.default("/api/ota/download"),
  OTA_OFFER_REDIRECT: z.enum(["off", "hash"], { message: "must be off or hash" }).default("off"),
  OTA_FLEET_MANIFEST_HMAC: bool.default(false),
  OTA_FLEET_MANIFEST_KEY_GENERATION: int(0, 1_000_000).default(0),
  OTA_TLS_SESSION_RESUMPTION: bool.default(true),
  OTA_HANDSHAKE_TIMEOUT_MS: int(100, 120_000).default(10_000),
  OTA_MAX_CONNECTIONS: int(1, 1_000_000).default(20_000),
  OTA_FIRST_START_TOKEN_DAYS: int(1, 3650).default(7),
  /** Read by signingKeys() once the working folder is known. */
  OTA_SIGNING_KEYS: z.string().optional(),
  OTA_DATABASE_URL: z
    .string()
    .trim()
    .refine((u) => URL.canParse(u) && /^postgres(ql)?:$/.test(new URL(u).protocol) && new URL(u).hostname !== "", {
      message: "must be a PostgreSQL URL such as postgres://ota:PASSWORD@db.example.com:5432/ota",
    })
    .optional(),
  OTA_DATABASE_POOL: int(1, 1000).default(10),
  OTA_MQTT_URL: z
    .string()
    .trim()
    .refine((u) => URL.canParse(u) && /^mqtts?:$/.test(new URL(u).protocol) && new URL(u).hostname !== "", {
      message: "must be an MQTT broker URL such as mqtts://ota-server:PASSWORD@broker.example.com:8883 or mqtt://127.0.0.1:1883",
    })
    .optional(),
  OTA_MQTT_USERNAME: nonEmpty.optional(),
  OTA_MQTT_PASSWORD: nonEmpty.optional(),
  OTA_MQTT_CA: nonEmpty.optional(),
  OTA_MQTT_CLIENT_ID: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, '.', '_' or '-'")
    .optional(),
  OTA_MQTT_TOPIC: z
    .string()
    .trim()
    .refine((t) => t.includes("{device}"), "must contain {device}, e.g. ota/{device}/desired")
    .refine((t) => !/[+#\0]/.test(t), "must not contain the MQTT wildcards + or #")
    .refine((t) => Buffer.byteLength(t) <= 256, "must be at most 256 bytes")
    .default("ota/{device}/desired"),
  OTA_MQTT_COMPAT: bool.default(false),
  OTA_MQTT_RATE: int(1, 100_000).default(200),
  OTA_SYNC_INTERVAL_MS: int(100, 600_000).default(5000),
});

/** Variables whose value is a secret (or holds one): never repeated in an error. */
const SECRET_VARIABLES = new Set(["OTA_DATABASE_URL", "OTA_MQTT_URL", "OTA_MQTT_PASSWORD"]);

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  firmwareDir: string;
  certDir: string;
  tls: { cert: string; key: string; ca: string | null; generated: boolean };
  partitionsFile: string;
  logLevel: (typeof LOG_LEVELS)[number];
  publicUrl: string | null;
  blockSize: number;
  pollInterval: number;
  authFailureLimit: number;
  authFailureWindowMs: number;
  ingestSettleMs: number;
  incompleteGraceMs: number;
  trustProxy: boolean;
  /** Where Arduino HTTPUpdate and esp_https_ota clients fetch the image offered to them. */
  httpUpdatePath: string;
  /** off: serve the offered image's bytes; hash: answer 302 to its content-addressed URL on this server. */
  offerRedirect: "off" | "hash";
  /** Sign manifests with one fleet-wide key as well (weaker than per-device keys; off by default). */
  fleetManifestHmac: boolean;
  fleetManifestKeyGeneration: number;
  /** TLS session tickets (resumption without a full handshake) for clients that keep them. */
  tlsSessionResumption: boolean;
  /** A connection that has not finished its TLS handshake by then is closed. */
  handshakeTimeoutMs: number;
  /** Open connections (in handshake or not) beyond which new ones are closed at once. */
  maxConnections: number;
  /** Days the admin token made at first start (dev-credentials.json) stays valid. */
  firstStartTokenDays: number;
  /** OTA_SIGNING_KEYS: the keys an image must be signed by to be accepted; null: images are not signature-checked. */
  signingKeys: readonly TrustedKey[] | null;
  /** OTA_DATABASE_URL and OTA_DATABASE_POOL: PostgreSQL; null: SQLite in the data folder. */
  database: { url: string; poolSize: number } | null;
  /** OTA_MQTT_*: pushed update notices over MQTT; null: off (devices learn of updates by polling only). */
  mqtt: MqttConfig | null;
  /**
   * OTA_SYNC_INTERVAL_MS: with several processes on PostgreSQL, how often each checks for changes whose notification
   * it missed, and tries to take over the leader's work when no process holds it.
   */
  syncIntervalMs: number;
}

export interface MqttConfig {
  /** The broker URL without credentials (mqtt:// or mqtts://). */
  url: string;
  username: string | null;
  password: string | null;
  /** For mqtts: the CA file the broker's certificate is checked against (null: the system's CAs). */
  ca: string | null;
  clientId: string;
  /** Topic template; {device} is the device's MQTT name (docs/protocol.md). */
  topic: string;
  /** Also publish the /firmware_update/<MAC-ID> JSON that existing clients read. */
  compat: boolean;
  /** Messages per second, at most. */
  rate: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** Reads the configuration from an environment; throws ConfigError naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const present = Object.fromEntries(
    Object.keys(envSchema.shape)
      .filter((k) => env[k] !== undefined && env[k] !== "")
      .map((k) => [k, env[k]]),
  );
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const name = String(i.path[0] ?? "environment");
        return SECRET_VARIABLES.has(name) ? `${name}: ${i.message}` : `${name}: ${i.message} (got ${JSON.stringify(present[name])})`;
      }),
    );
  }
  const e = parsed.data;
  if (Boolean(e.OTA_TLS_CERT) !== Boolean(e.OTA_TLS_KEY)) {
    throw new ConfigError([
      `${e.OTA_TLS_CERT ? "OTA_TLS_KEY" : "OTA_TLS_CERT"}: must be set together with ${e.OTA_TLS_CERT ? "OTA_TLS_CERT" : "OTA_TLS_KEY"}`,
    ]);
  }
  const keys = e.OTA_SIGNING_KEYS === undefined ? null : signingKeys(cwd).safeParse(e.OTA_SIGNING_KEYS);
  if (keys && !keys.success) {
    throw new ConfigError(keys.error.issues.map((i) => `OTA_SIGNING_KEYS: ${i.message} (got ${JSON.stringify(e.OTA_SIGNING_KEYS)})`));
  }
  const abs = (p: string) => path.resolve(cwd, p);
  const certDir = abs(e.OTA_CERT_DIR);
  const generated = !e.OTA_TLS_CERT;
  return {
    port: e.PORT,
    host: e.HOST,
    dataDir: abs(e.OTA_DATA_DIR),
    firmwareDir: abs(e.OTA_FIRMWARE_DIR),
    certDir,
    tls: {
      cert: generated ? path.join(certDir, "server.crt") : abs(e.OTA_TLS_CERT!),
      key: generated ? path.join(certDir, "server.key") : abs(e.OTA_TLS_KEY!),
      ca: e.OTA_TLS_CA ? abs(e.OTA_TLS_CA) : generated ? path.join(certDir, "ca.crt") : null,
      generated,
    },
    partitionsFile: abs(e.OTA_PARTITIONS),
    logLevel: e.OTA_LOG_LEVEL,
    publicUrl: e.OTA_PUBLIC_URL ?? null,
    blockSize: e.OTA_BLOCK_SIZE,
    pollInterval: e.OTA_POLL_INTERVAL,
    authFailureLimit: e.OTA_AUTH_FAILURE_LIMIT,
    authFailureWindowMs: e.OTA_AUTH_FAILURE_WINDOW * 1000,
    ingestSettleMs: e.OTA_INGEST_SETTLE_MS,
    incompleteGraceMs: e.OTA_INCOMPLETE_GRACE * 1000,
    trustProxy: e.OTA_TRUST_PROXY,
    httpUpdatePath: e.OTA_HTTPUPDATE_PATH,
    offerRedirect: e.OTA_OFFER_REDIRECT,
    fleetManifestHmac: e.OTA_FLEET_MANIFEST_HMAC,
    fleetManifestKeyGeneration: e.OTA_FLEET_MANIFEST_KEY_GENERATION,
    tlsSessionResumption: e.OTA_TLS_SESSION_RESUMPTION,
    handshakeTimeoutMs: e.OTA_HANDSHAKE_TIMEOUT_MS,
    maxConnections: e.OTA_MAX_CONNECTIONS,
    firstStartTokenDays: e.OTA_FIRST_START_TOKEN_DAYS,
    signingKeys: keys ? keys.data : null,
    database: e.OTA_DATABASE_URL ? { url: e.OTA_DATABASE_URL, poolSize: e.OTA_DATABASE_POOL } : null,
    mqtt: e.OTA_MQTT_URL ? mqttConfig(e, abs, generated ? path.join(certDir, "ca.crt") : e.OTA_TLS_CA ? abs(e.OTA_TLS_CA) : null) : null,
    syncIntervalMs: e.OTA_SYNC_INTERVAL_MS,
  };
}

/** OTA_MQTT_URL and the variables beside it; credentials in the URL are taken out of it (separate variables win). */
function mqttConfig(e: z.infer<typeof envSchema>, abs: (p: string) => string, serverCa: string | null): MqttConfig {
  const u = new URL(e.OTA_MQTT_URL!);
  const fromUrl = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = "";
  u.password = "";
  const secure = u.protocol === "mqtts:";
  return {
    url: u.toString().replace(/\/$/, ""),
    username: e.OTA_MQTT_USERNAME ?? (fromUrl.username || null),
    password: e.OTA_MQTT_PASSWORD ?? (fromUrl.password || null),
    ca: !secure ? null : e.OTA_MQTT_CA ? abs(e.OTA_MQTT_CA) : serverCa,
    clientId: e.OTA_MQTT_CLIENT_ID ?? "esp32-ota-server",
    topic: e.OTA_MQTT_TOPIC,
    compat: e.OTA_MQTT_COMPAT,
    rate: e.OTA_MQTT_RATE,
  };
}
