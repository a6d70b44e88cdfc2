// `ota`: the operator's command line. `device provision`, `token create` and `apikey create` work on the
// server's data folder directly (run them on the server machine, with the same OTA_* environment as the
// server; they are safe while it runs). `keys`, `sign` and `verify` work offline on files, with no server
// (signing.ts). Everything else talks to a server's operator API over HTTPS after `ota login` (remote.ts).
// Exit codes: errors.ts.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { ROLES } from "../infra/auth/credentials";
import { ConfigError, loadConfig } from "../infra/config/config";
import type { Context } from "../context";
import { deviceIdSchema, DEVICE_ID_RULE } from "../domain/devices/device-id";
import { MAX_SERVER_URL_LENGTH, provisionDevice, SERVER_URL_TOO_LONG } from "../domain/devices/provisioning";
import { normalizeChip, CHIP_NAMES } from "../esp";
import { ExportError, exportStatic } from "../export/static-export";
import { createLogger } from "../infra/logging/logger";
import { openContext, openContextParts } from "../server";
import type { Role } from "../infra/store/schema";
import { CliError, EXIT, UsageError } from "./errors";
import { addAuditCommand, addRemoteCommands, addRemoteDeviceCommands, provisionRemote } from "./remote";
import { addSigningCommands } from "./signing";

/** Who ran a local command, for the audit log. */
function localActor() {
  let user = "unknown";
  try {
    user = os.userInfo().username;
  } catch {
    /* no passwd entry: keep "unknown" */
  }
  return { actor: `local:${user}`, source: "cli" as const };
}

function deviceId(value: string): string {
  const r = deviceIdSchema.safeParse(value);
  if (!r.success) throw new InvalidArgumentError(`device id must be ${DEVICE_ID_RULE}`);
  return r.data;
}

function positiveInt(value: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError("must be a whole number of days, 1 or more");
  return Number(value);
}

async function withParts<T>(fn: (parts: Awaited<ReturnType<typeof openContextParts>>, config: ReturnType<typeof loadConfig>) => Promise<T>) {
  const config = loadConfig();
  const parts = await openContextParts(config, createLogger("warn", process.stderr));
  try {
    return await fn(parts, config);
  } finally {
    await parts.devices.close();
    await parts.store.close();
  }
}

/** The server's view of its data (catalog, releases, rollouts) without serving: for commands that need what it offers. */
async function withContext<T>(fn: (ctx: Context) => Promise<T>): Promise<T> {
  const { ctx, close } = await openContext(loadConfig(), createLogger("warn", process.stderr), { serving: false });
  try {
    return await fn(ctx);
  } finally {
    await close();
  }
}

function httpUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new InvalidArgumentError("must be an absolute http(s) URL such as https://bucket.example.com/ota");
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw new InvalidArgumentError("must be an http(s) URL");
  if (u.username || u.password || u.search || u.hash) throw new InvalidArgumentError("must not carry credentials, a query or a fragment");
  return value.replace(/\/+$/, "");
}

function writeSecretFile(file: string, text: string): void {
  const target = path.resolve(file);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, text, { mode: 0o600 });
  fs.chmodSync(target, 0o600);
  process.stderr.write(`ota: wrote ${target} (mode 0600)\n`);
}

export function buildProgram(): Command {
  const program = new Command("ota")
    .description(
      "Operate the ESP32 OTA server: credentials, provisioning and static export on the server machine; firmware, releases, rollouts and devices through the operator API",
    )
    .showHelpAfterError("(run ota --help for usage)")
    .exitOverride();

  const device = program.command("device").description("device commands");
  device
    .command("provision")
    .description("register a device and print the JSON it needs: its id, its own keys, the server URL and the CA")
    .argument("<device-id>", `the device id (${DEVICE_ID_RULE}); MAC addresses are normalised`, deviceId)
    .option("-o, --out <file>", "write the JSON to this file (mode 0600) instead of printing it")
    .option("--server-url <url>", "the URL the device should use (default: OTA_PUBLIC_URL or https://localhost:PORT)")
    .option("--chip <chip>", `record the device's chip (${CHIP_NAMES.join(", ")})`)
    .option("--rotate", "issue a new key generation: the device's previous key stops working")
    .option("--remote", "provision through the operator API of the server you logged in to (ota login), not the local data folder")
    .action(async (id: string, opts: { out?: string; serverUrl?: string; chip?: string; rotate?: boolean; remote?: boolean }) => {
      if (opts.serverUrl && !/^https?:\/\/[^\s/]+/.test(opts.serverUrl)) throw new UsageError("--server-url must be an http(s) URL");
      if (opts.serverUrl && Buffer.byteLength(opts.serverUrl.replace(/\/+$/, "")) > MAX_SERVER_URL_LENGTH) throw new UsageError(`--server-url ${SERVER_URL_TOO_LONG}`);
      const chip = opts.chip === undefined ? undefined : normalizeChip(opts.chip);
      if (opts.chip !== undefined && !chip) throw new UsageError(`--chip must be one of ${CHIP_NAMES.join(", ")}`);
      if (opts.remote && chip) throw new UsageError("--chip is for local provisioning; with --remote, set it afterwards: ota device set ID --chip CHIP");
      const bundle = opts.remote
        ? await provisionRemote(id, { rotate: opts.rotate, serverUrl: opts.serverUrl })
        : await withParts(async (parts, config) => {
            const b = await provisionDevice({ config, ...parts }, id, { rotate: opts.rotate, serverUrl: opts.serverUrl, chip });
            await parts.audit.record({ ...localActor(), action: "device.provision", target: id, details: { rotate: Boolean(opts.rotate), key_generation: b.keyGeneration } });
            return b;
          });
      const text = JSON.stringify(bundle, null, 2) + "\n";
      if (opts.out) writeSecretFile(opts.out, text);
      else process.stdout.write(text);
    });

  const token = program.command("token").description("operator token commands");
  token
    .command("create")
    .description("create an operator token (a JWT) for the operator API")
    .addOption(new Option("--role <role>", "what the token may do").choices(ROLES as string[]).makeOptionMandatory())
    .option("--name <subject>", "who the token is for", "operator")
    .option("--expires-days <days>", "expire after this many days (default: never; revoke to end it)", positiveInt)
    .option("-o, --out <file>", "write the token to this file (mode 0600) instead of printing it")
    .action(async (opts: { role: Role; name: string; expiresDays?: number; out?: string }) => {
      const t = await withParts(async (parts) => {
        const issued = await parts.credentials.issueOperatorToken(opts.name, opts.role, opts.expiresDays);
        await parts.audit.record({ ...localActor(), action: "token.create", target: opts.name, details: { role: opts.role, token_id: issued.jti, expires_days: opts.expiresDays ?? null } });
        return issued;
      });
      if (opts.out) writeSecretFile(opts.out, t.token + "\n");
      else process.stdout.write(t.token + "\n");
    });

  const apikey = program.command("apikey").description("fleet API key commands");
  apikey
    .command("create")
    .description("create a fleet API key (X-API-Key) for devices without their own key, or for scripts")
    .option("--label <label>", "what the key is for", "fleet")
    .option("-o, --out <file>", "write the key to this file (mode 0600) instead of printing it")
    .action(async (opts: { label: string; out?: string }) => {
      const k = await withParts(async (parts) => {
        const created = await parts.credentials.createFleetKey(opts.label);
        await parts.audit.record({ ...localActor(), action: "apikey.create", target: opts.label, details: { key_id: created.id } });
        return created;
      });
      if (opts.out) writeSecretFile(opts.out, k.key + "\n");
      else process.stdout.write(k.key + "\n");
    });
  program
    .command("manifest-hmac-key")
    .description("print the fleet-wide manifest HMAC key (hex) for clients that verify X-Manifest-Fleet-HMAC")
    .option("-o, --out <file>", "write the key to this file (mode 0600) instead of printing it")
    .action(async (opts: { out?: string }) => {
      const config = loadConfig();
      const key = await withParts((parts) => Promise.resolve(parts.credentials.fleetManifestMacKey(config.fleetManifestKeyGeneration)));
      if (!config.fleetManifestHmac) {
        process.stderr.write("ota: note: OTA_FLEET_MANIFEST_HMAC is off, so the server does not send X-Manifest-Fleet-HMAC yet\n");
      }
      const text = key.toString("hex") + "\n";
      if (opts.out) writeSecretFile(opts.out, text);
      else process.stdout.write(text);
    });

  program
    .command("export")
    .description("write what the server offers as manifest.json (+ manifest-<chip>.json) and <sha256>.bin files, for a bucket or CDN")
    .argument("<dir>", "the folder to write (created if needed; files already there are kept)")
    .option("--base-url <url>", "where <dir> will be served, e.g. https://bucket.example.com/ota (default: URLs relative to the manifest)", httpUrl)
    .action(async (dir: string, opts: { baseUrl?: string }) => {
      const target = path.resolve(dir);
      const manifests = await withContext((ctx) =>
        exportStatic(ctx, {
          dir: target,
          baseUrl: opts.baseUrl ?? null,
          onBinary: (file, image, written) =>
            process.stderr.write(`ota: ${written ? "wrote" : "kept"} ${file} (${image.project} ${image.version}, ${image.chip}, ${image.size} bytes)\n`),
        }),
      );
      for (const m of manifests) {
        process.stdout.write(`${path.join(target, m.file)}: ${m.image.version} for ${m.chip ?? "any chip"} -> ${m.url}\n`);
      }
      if (!opts.baseUrl) process.stderr.write("ota: the manifests name their binaries relative to themselves; pass --base-url for clients that need absolute URLs\n");
    });

  addRemoteDeviceCommands(device);
  addRemoteCommands(program);
  addAuditCommand(program);
  addSigningCommands(program);
  return program;
}

export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    const err = e as { code?: string; exitCode?: number; message?: string };
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") return 0;
    if (err.code?.startsWith("commander.")) return EXIT.usage; // commander already printed the problem
    if (e instanceof CliError) {
      process.stderr.write(`ota: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof ExportError) {
      process.stderr.write(`ota: ${e.message}\n`);
      return EXIT.failure;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`ota: ${e.message}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`ota: ${err.message ?? String(e)}\n`);
    return EXIT.failure;
  }
}

if (require.main === module) {
  void run(process.argv.slice(2)).then((code) => process.exit(code));
}
