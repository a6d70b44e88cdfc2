// Simulated devices for fleet tests: plain HTTPS clients that poll and report the way an agent does, and an
// independent implementation of the documented rollout bucket (docs/operations.md) to check stages against.
import { createHmac, hkdfSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Dirs, Reply, ServerClient } from "./server";

/** A fixed master secret, so which devices land in a stage is the same on every run. */
export function writeMasterKey(dirs: Dirs, hex = "5eed".repeat(16)): void {
  fs.mkdirSync(dirs.data, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dirs.data, "master.key"), hex + "\n", { mode: 0o600 });
}

/** bucket = first 4 bytes (big-endian) of HMAC-SHA256(HKDF(master, "esp32-ota/v1", "rollout-bucket"), rolloutId "\n" deviceId) mod 10000. */
export function bucketOracle(dataDir: string): (rolloutId: string, deviceId: string) => number {
  const master = Buffer.from(fs.readFileSync(path.join(dataDir, "master.key"), "utf8").trim(), "hex");
  const key = Buffer.from(hkdfSync("sha256", master, Buffer.from("esp32-ota/v1"), Buffer.from("rollout-bucket"), 32));
  return (rolloutId, deviceId) => createHmac("sha256", key).update(`${rolloutId}\n${deviceId}`).digest().readUInt32BE(0) % 10_000;
}

/**
 * The id the server gives the rollout of a release: keyed by the same secret as the buckets, so with the
 * master key fixed a test can choose its fleet before the rollout starts (checked when it starts).
 */
export function rolloutIdOracle(dataDir: string): (release: string) => string {
  const master = Buffer.from(fs.readFileSync(path.join(dataDir, "master.key"), "utf8").trim(), "hex");
  const key = Buffer.from(hkdfSync("sha256", master, Buffer.from("esp32-ota/v1"), Buffer.from("rollout-bucket"), 32));
  return (release) => `ro_${createHmac("sha256", key).update(`rollout-id\n${release}`).digest("hex").slice(0, 12)}`;
}

export const mac = (i: number, prefix = "aa:00:00") =>
  `${prefix}:${((i >> 16) & 255).toString(16).padStart(2, "0")}:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;

export interface PollOpts {
  chip?: string;
  chipRev?: number;
  version?: string;
  key?: string;
}

export function poll(s: ServerClient, id: string | null, o: PollOpts = {}): Promise<Reply> {
  const headers: Record<string, string> = { "X-API-Key": o.key ?? s.creds.deviceApiKey };
  if (id) {
    headers["X-Device-Id"] = id;
    headers["X-Nonce"] = randomBytes(12).toString("base64url");
  }
  if (o.chip) headers["X-Device-Chip"] = o.chip;
  if (o.chipRev !== undefined) headers["X-Device-Chip-Rev"] = String(o.chipRev);
  if (o.version) headers["X-Device-Version"] = o.version;
  return s.req("GET", "/firmware/manifest", { headers });
}

/** The sha256 a device is offered, or null for 404 (anything else fails the test). */
export async function offered(s: ServerClient, id: string | null, o: PollOpts = {}): Promise<string | null> {
  const r = await poll(s, id, o);
  if (r.status === 404) return null;
  if (r.status !== 200) throw new Error(`poll ${id}: ${r.status} ${r.text()}`);
  return r.json().sha256 as string;
}

export async function report(s: ServerClient, body: Record<string, unknown>, key?: string): Promise<void> {
  const r = await s.req("POST", "/firmware/report", {
    headers: { "X-API-Key": key ?? s.creds.deviceApiKey, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`report: ${r.status} ${r.text()}`);
}

/** Runs fn over items with at most `width` in flight, in the given order. */
export async function inParallel<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** A deterministic shuffle (so a failing order can be replayed). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const a = [...items];
  let x = seed >>> 0 || 1;
  for (let i = a.length - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export class Operator {
  constructor(
    private readonly s: ServerClient,
    private readonly token = s.creds.operatorToken,
  ) {}

  async call(method: string, p: string, body?: unknown): Promise<Reply> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return this.s.req(method, "/api/v1" + p, { headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  async ok<T = any>(method: string, p: string, body?: unknown): Promise<T> {
    const r = await this.call(method, p, body);
    if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${r.text()}`);
    return r.json<T>();
  }
}
