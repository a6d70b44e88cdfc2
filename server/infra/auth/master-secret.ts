// The fleet master secret: 32 random bytes in the data directory (mode 0600). Every per-device key and the
// operator-token signing key are derived from it, so it never leaves the server.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const MASTER_SECRET_FILE = "master.key";

export interface MasterSecret {
  secret: Buffer;
  /** True when this call created it (first start). */
  created: boolean;
  file: string;
}

export function loadOrCreateMasterSecret(dataDir: string): MasterSecret {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, MASTER_SECRET_FILE);
  try {
    const hex = fs.readFileSync(file, "utf8").trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) {
      throw new Error(`${file} is damaged (expected 64 hex characters); restore it from a backup`);
    }
    return { secret: Buffer.from(hex, "hex"), created: false, file };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const secret = randomBytes(32);
  // "wx": never overwrite a secret another process created a moment ago.
  fs.writeFileSync(file, secret.toString("hex") + "\n", { mode: 0o600, flag: "wx" });
  return { secret, created: true, file };
}
