// First start: a development fleet key and an admin operator token, written once to
// OTA_DATA_DIR/dev-credentials.json (mode 0600). Only the file name is logged, never the secrets. The admin
// token expires after OTA_FIRST_START_TOKEN_DAYS days: by then, make lasting tokens with `ota token create`
// and revoke what is not needed.
import path from "node:path";
import type { Logger } from "pino";
import { writeFileDurably } from "../store/durable-file";
import type { Credentials } from "./credentials";

const DEV_CREDENTIALS_FILE = "dev-credentials.json";

/** Writes the file and its directory entry to disk before returning: the secrets are stored once. */
export async function ensureFirstStartCredentials(
  dataDir: string,
  credentials: Credentials,
  log: Logger,
  tokenDays: number,
): Promise<string | null> {
  if (await credentials.hasAny()) return null;
  const fleet = await credentials.createFleetKey("development");
  const operator = await credentials.issueOperatorToken("admin", "admin", tokenDays);
  const file = path.join(dataDir, DEV_CREDENTIALS_FILE);
  await writeFileDurably(file, JSON.stringify({ deviceApiKey: fleet.key, operatorToken: operator.token, operatorTokenExpiresAt: operator.expiresAt }, null, 2) + "\n", { mode: 0o600 });
  log.info(
    { file, operator_token_expires_at: operator.expiresAt },
    "first start: created a development device API key and an admin operator token (it expires then: make lasting tokens with ota token create); they are in this file (keep it private)",
  );
  return file;
}
