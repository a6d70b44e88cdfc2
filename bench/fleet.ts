// The bench's world: a work folder with an ECDSA P-256 certificate (shared by our server and nginx), a
// firmware folder with the real ESP32 images, and a registry of provisioned devices with their own keys.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../server/infra/config/config";
import { createLogger } from "../server/infra/logging/logger";
import { projectRoot } from "../server/paths";
import { openContextParts } from "../server/server";
import type { NewDevice } from "../server/infra/store/schema";

export interface BenchDevice {
  id: string;
  apiKey: string;
  hmacKey: Buffer;
}

export interface Fleet {
  dir: string;
  certDir: string;
  cert: string;
  key: string;
  ca: Buffer;
  dataDir: string;
  firmwareDir: string;
  devices: BenchDevice[];
  /** Lua table of [id, apiKey] for wrk's scripts. */
  luaDevices: string;
  /** The env our server runs with (besides PORT, pinning and logging). */
  serverEnv: Record<string, string>;
}

/** The ESPHome image is GPL test data, never in the repository; a quick run substitutes the largest copyable one. */
const LARGE = "esp32_esphome-2021.12.0-dev_arduino.bin";
export const LARGE_SUBSTITUTE = "esp32_hello-world_idf4.1-dev.bin";

/**
 * The real images the bench serves; the 1.5 MB one comes only from ../shared/fixtures or $OTA_FIXTURES_DIR. A
 * `quick` run (a smoke run, figures not judged) takes the 144 KB hello-world build in its place when it is absent.
 */
export function fixtureImages(quick = false): { small: string; large: string } {
  const root = projectRoot();
  const dirs = [
    process.env.OTA_FIXTURES_DIR && path.join(process.env.OTA_FIXTURES_DIR, "esp32-images"),
    path.resolve(root, "../shared/fixtures/esp32-images"),
    path.join(root, "tests/fixtures/esp32-images"),
  ].filter((d): d is string => Boolean(d));
  const find = (name: string) => dirs.map((d) => path.join(d, name)).find((f) => fs.existsSync(f));
  const small = find("esp32_hello_world_idf5.2.2.bin");
  const large = find(LARGE) ?? (quick ? find(LARGE_SUBSTITUTE) : undefined);
  if (!small || !large) {
    throw new Error(
      `the bench needs the real ESP32 images (esp32_hello_world_idf5.2.2.bin and ${LARGE}) ` +
        `in ../shared/fixtures/esp32-images or $OTA_FIXTURES_DIR/esp32-images; looked in ${dirs.join(", ")}` +
        ` (a --quick run takes ${LARGE_SUBSTITUTE} in place of the second)`,
    );
  }
  return { small, large };
}

/** A MAC-style id, as ESP32 devices use: 24:0a:c4 is an Espressif prefix. */
function deviceId(i: number): string {
  const hex = i.toString(16).padStart(6, "0");
  return `24:0a:c4:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

/**
 * A fresh work folder for a benchmarked server: an empty firmware folder, development certificates from
 * generate-certs.sh, and the server's environment over them (never throttled: the load comes from one address).
 */
export function benchFolders(dir: string, publicUrl: string): { dataDir: string; firmwareDir: string; certDir: string; env: Record<string, string> } {
  const root = projectRoot();
  fs.rmSync(dir, { recursive: true, force: true });
  const certDir = path.join(dir, "certs");
  const dataDir = path.join(dir, "data");
  const firmwareDir = path.join(dir, "firmware");
  fs.mkdirSync(firmwareDir, { recursive: true });
  const gen = spawnSync("bash", [path.join(root, "generate-certs.sh"), "--dir", certDir], { encoding: "utf8" });
  if (gen.status !== 0) throw new Error(`generate-certs.sh failed: ${(gen.stderr || gen.stdout).trim()}`);
  const env: Record<string, string> = {
    OTA_DATA_DIR: dataDir,
    OTA_FIRMWARE_DIR: firmwareDir,
    OTA_CERT_DIR: certDir,
    OTA_TLS_CERT: path.join(certDir, "server.crt"),
    OTA_TLS_KEY: path.join(certDir, "server.key"),
    OTA_TLS_CA: path.join(certDir, "ca.crt"),
    OTA_PARTITIONS: path.join(root, "partitions.csv"),
    OTA_PUBLIC_URL: publicUrl,
    // Only failures count, but a bench must never be throttled.
    OTA_AUTH_FAILURE_LIMIT: "1000000",
  };
  return { dataDir, firmwareDir, certDir, env };
}

/**
 * Provisions devices 1..count in the database the environment names (the data folder's SQLite, or PostgreSQL with
 * OTA_DATABASE_URL), with keys derived from that data folder's master secret (made when absent).
 */
export async function addDevices(env: Record<string, string>, dir: string, count: number): Promise<BenchDevice[]> {
  const config = loadConfig({ ...env, PORT: "0" }, dir);
  const parts = await openContextParts(config, createLogger("warn", process.stderr));
  const devices: BenchDevice[] = [];
  try {
    const at = new Date().toISOString();
    const rows: NewDevice[] = [];
    for (let i = 1; i <= count; i++) {
      const id = deviceId(i);
      rows.push({ id, chip: "esp32", provisioned_at: at, key_generation: 0, created_at: at });
      devices.push({ id, apiKey: parts.credentials.deviceApiKey(id, 0), hmacKey: parts.credentials.deviceMacKey(id, 0) });
    }
    await parts.store.db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += 500) await trx.insertInto("devices").values(rows.slice(i, i + 500)).execute();
    });
  } finally {
    await parts.devices.close();
    await parts.store.close();
  }
  return devices;
}

export async function prepareFleet(dir: string, deviceCount: number, quick = false): Promise<Fleet> {
  const images = fixtureImages(quick); // before anything is made: a missing image stops the run at once
  const { dataDir, firmwareDir, certDir, env: serverEnv } = benchFolders(dir, "https://ota.bench.example");
  // The large image first, so the small one is the newest and is what manifests offer.
  fs.copyFileSync(images.large, path.join(firmwareDir, path.basename(images.large)));
  fs.copyFileSync(images.small, path.join(firmwareDir, path.basename(images.small)));

  const devices = await addDevices(serverEnv, dir, deviceCount);
  const luaDevices = path.join(dir, "devices.lua");
  fs.writeFileSync(luaDevices, `return {\n${devices.map((d) => `{"${d.id}","${d.apiKey}"},`).join("\n")}\n}\n`);
  return {
    dir,
    certDir,
    cert: serverEnv.OTA_TLS_CERT!,
    key: serverEnv.OTA_TLS_KEY!,
    ca: fs.readFileSync(path.join(certDir, "ca.crt")),
    dataDir,
    firmwareDir,
    devices,
    luaDevices,
    serverEnv,
  };
}
