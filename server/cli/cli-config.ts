// The operator's login for the remote commands: server URL, token and the CA to trust, in a 0600 file
// ($OTA_CONFIG, else $XDG_CONFIG_HOME/esp32-ota/cli.json, else ~/.config/esp32-ota/cli.json).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { writeFileDurably } from "../infra/store/durable-file";
import { CliError, EXIT } from "./errors";

export const cliConfigSchema = z.object({
  server: z.url({ protocol: /^https$/ }),
  token: z.string().min(1),
  /** PEM of the CA that signed the server's certificate; null: the system's CAs. */
  ca: z.string().nullable(),
  subject: z.string(),
  role: z.string(),
});
export type CliConfig = z.infer<typeof cliConfigSchema>;

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OTA_CONFIG) return path.resolve(env.OTA_CONFIG);
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "esp32-ota", "cli.json");
}

export function loadCliConfig(file = configPath()): CliConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new CliError("not logged in: run `ota login --server https://HOST:8443 --ca ca.crt --token-file FILE` first", EXIT.auth);
    }
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  const parsed = cliConfigSchema.safeParse(json);
  if (!parsed.success) throw new CliError(`${file} is damaged: run \`ota login\` again`, EXIT.auth);
  return parsed.data;
}

export async function saveCliConfig(config: CliConfig, file = configPath()): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileDurably(file, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
}

export function removeCliConfig(file = configPath()): boolean {
  try {
    fs.unlinkSync(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}
