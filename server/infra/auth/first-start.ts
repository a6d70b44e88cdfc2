// First start: a development fleet key and an admin operator token, written once to
// OTA_DATA_DIR/dev-credentials.json (mode 0600). Only the file name is logged, never the secrets.
import path from "node:path";
import type { Logger } from "pino";
import { writeFileDurably } from "../store/durable-file";
import type { Credentials } from "./credentials";

const DEV_CREDENTIALS_FILE = "dev-credentials.json";

export async function ensureFirstStartCredentials(
  dataDir: string,
  credentials: Credentials,
  log: Logger,
): Promise<string | null> {
  if (await credentials.hasAny()) return null;
  const fleet = await credentials.createFleetKey("development");
  const operator = await credentials.issueOperatorToken("admin", "admin");
  const file = path.join(dataDir, DEV_CREDENTIALS_FILE);
  await writeFileDurably(file, JSON.stringify({ deviceApiKey: fleet.key, operatorToken: operator.token }, null, 2) + "\n", { mode: 0o600 });
  log.info(
    { file },
    "first start: created a development device API key and an admin operator token; they are in this file (keep it private)",
  );
  return file;
}
