// The fleet master secret: 32 random bytes in the data directory (mode 0600). Every per-device key and the
// operator-token signing key are derived from it, so it never leaves the server.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { writeFileDurably } from "../store/durable-file";

const MASTER_SECRET_FILE = "master.key";

export interface MasterSecret {
  secret: Buffer;
  /** True when this call created it (first start). */
  created: boolean;
  file: string;
}

function readSecret(file: string): MasterSecret | null {
  let hex: string;
  try {
    hex = fs.readFileSync(file, "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(`${file} is damaged (expected 64 hex characters); restore it from a backup`);
  }
  return { secret: Buffer.from(hex, "hex"), created: false, file };
}

export async function loadOrCreateMasterSecret(dataDir: string): Promise<MasterSecret> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, MASTER_SECRET_FILE);
  const existing = readSecret(file);
  if (existing) return existing;
  const secret = randomBytes(32);
  try {
    // Whole and on disk before anything is derived from it; exclusive: never replace a secret another process
    // created a moment ago (that one is used instead).
    await writeFileDurably(file, secret.toString("hex") + "\n", { mode: 0o600, exclusive: true });
  } catch (e) {
    const theirs = (e as NodeJS.ErrnoException).code === "EEXIST" ? readSecret(file) : null;
    if (theirs) return theirs;
    throw e;
  }
  return { secret, created: true, file };
}
