// `ota`: the operator's command line. The credential commands (`device provision|revoke`, `token
// create|list|revoke`, `apikey create|list|revoke`) work on the server's data folder directly (run them on the
// server machine, with the same OTA_* environment as the server; they are safe while it runs, and the running
// server honours a revocation from its next request on); all but `create` also go through the operator API with
// --remote. `keys`, `sign` and `verify` work offline on files, with no server (signing.ts). Everything else
// talks to a server's operator API over HTTPS after `ota login` (remote.ts). Exit codes: errors.ts.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import type { z } from "zod";
import { apiKeyView, deviceView, tokenView } from "../api/operator/views";
import { fleetKeyIdSchema, ROLES, tokenIdSchema } from "../infra/auth/credentials";
import { ConfigError, loadConfig } from "../infra/config/config";
import type { Context } from "../context";
import { deviceIdSchema, DEVICE_ID_RULE } from "../domain/devices/device-id";
import { MAX_SERVER_URL_LENGTH, provisionDevice, SERVER_URL_TOO_LONG } from "../domain/devices/provisioning";
import { mqttNameOf } from "../domain/notify/desired";
import { normalizeChip, CHIP_NAMES } from "../esp";
import { ExportError, exportStatic } from "../export/static-export";
import { createLogger } from "../infra/logging/logger";
import { openContext, openContextParts } from "../server";
import type { Role } from "../infra/store/schema";
import type { ApiKeyList, ApiKeyRevoked, DeviceRevoked, TokenList, TokenRevoked } from "./api-types";
import { CliError, EXIT, UsageError } from "./errors";
import { addAuditCommand, addRemoteCommands, addRemoteDeviceCommands, callRemote, provisionRemote, table } from "./remote";
import { addImageCommands } from "./image";
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

/** A commander argument parser from a zod schema (the one the API validates the same value with). */
function argument<S extends z.ZodType<unknown, string>>(schema: S) {
  return (value: string): z.output<S> => {
    const r = schema.safeParse(value);
    if (!r.success) throw new InvalidArgumentError(r.error.issues[0]?.message ?? "invalid value");
    return r.data;
  };
}

function reasonText(value: string): string {
  if (value.trim().length < 1 || value.length > 500) throw new InvalidArgumentError("must be 1-500 characters");
  return value;
}

const enc = encodeURIComponent;
const print = (text: string) => void process.stdout.write(text + "\n");
const revokeBody = (reason: string | undefined) => (reason ? { reason } : {});

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
  if (trackableByGit(target)) {
    process.stderr.write(`ota: warning: ${target} is in a git work tree and not ignored: add it to .gitignore, or write secrets under data/ (ignored)\n`);
  }
}

/** A secret a `git add` could pick up: git says the file is in a work tree (exit 1: not ignored). */
function trackableByGit(file: string): boolean {
  const r = spawnSync("git", ["check-ignore", "-q", "--", path.basename(file)], { cwd: path.dirname(file), stdio: "ignore", timeout: 5000 });
  return r.status === 1;
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

  token
    .command("list")
    .description("operator tokens, newest first: id, name, role, state, created, expires, revoked (never the tokens)")
    .option("--remote", "ask the operator API of the server you logged in to (role admin), not the local data folder")
    .option("--json", "JSON output (as the API answers)")
    .action(async (opts: { remote?: boolean; json?: boolean }) => {
      const r = opts.remote
        ? await callRemote<TokenList>("GET", "/tokens")
        : await withParts(async (parts) => ({ tokens: (await parts.credentials.listOperatorTokens()).map((t) => tokenView(t)) }));
      if (opts.json) return print(JSON.stringify(r, null, 2));
      print(
        table(
          r.tokens.map((t) => [t.id, t.name, t.role, t.state, t.created_at, t.expires_at ?? "never", t.revoked_at]),
          ["ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "REVOKED"],
        ),
      );
    });
  token
    .command("revoke")
    .description("revoke an operator token: the server refuses it (401 token_revoked) from its next request on")
    .argument("<id>", "the token's id (ota token list)", argument(tokenIdSchema))
    .option("--reason <text>", "why (recorded in the audit log)", reasonText)
    .option("--remote", "revoke through the operator API of the server you logged in to (role admin), not the local data folder")
    .action(async (id: string, opts: { reason?: string; remote?: boolean }) => {
      const r = opts.remote
        ? await callRemote<TokenRevoked>("POST", `/tokens/${enc(id)}/revoke`, revokeBody(opts.reason))
        : await withParts(async (parts): Promise<TokenRevoked> => {
            const done = await parts.credentials.revokeOperatorToken(id);
            if (!done) throw new CliError(`no operator token has id ${id}; ota token list shows them`, EXIT.notFound);
            const { subject, role } = done.info;
            await parts.audit.record({ ...localActor(), action: "token.revoke", target: id, details: { subject, role, already_revoked: done.alreadyRevoked, ...revokeBody(opts.reason) } });
            return { token: tokenView(done.info), already_revoked: done.alreadyRevoked };
          });
      const t = r.token;
      print(
        r.already_revoked
          ? `operator token ${t.id} (${t.name}, ${t.role}) was already revoked at ${t.revoked_at}`
          : `revoked operator token ${t.id} (${t.name}, ${t.role}): it is refused from its next request on`,
      );
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
  apikey
    .command("list")
    .description("fleet API keys, newest first: id, label, state, created, revoked (never the keys or their hashes)")
    .option("--remote", "ask the operator API of the server you logged in to (role admin), not the local data folder")
    .option("--json", "JSON output (as the API answers)")
    .action(async (opts: { remote?: boolean; json?: boolean }) => {
      const r = opts.remote
        ? await callRemote<ApiKeyList>("GET", "/apikeys")
        : await withParts(async (parts) => ({ apikeys: (await parts.credentials.listFleetKeys()).map(apiKeyView) }));
      if (opts.json) return print(JSON.stringify(r, null, 2));
      print(table(r.apikeys.map((k) => [k.id, k.label, k.state, k.created_at, k.revoked_at]), ["ID", "LABEL", "STATE", "CREATED", "REVOKED"]));
    });
  apikey
    .command("revoke")
    .description("revoke a fleet API key: the server refuses it (401 credential_revoked) from its next request on")
    .argument("<id>", "the key's id (ota apikey list; it is also the 8 characters after otafleet_ in the key)", argument(fleetKeyIdSchema))
    .option("--reason <text>", "why (recorded in the audit log)", reasonText)
    .option("--remote", "revoke through the operator API of the server you logged in to (role admin), not the local data folder")
    .action(async (id: string, opts: { reason?: string; remote?: boolean }) => {
      const r = opts.remote
        ? await callRemote<ApiKeyRevoked>("POST", `/apikeys/${enc(id)}/revoke`, revokeBody(opts.reason))
        : await withParts(async (parts): Promise<ApiKeyRevoked> => {
            const done = await parts.credentials.revokeFleetKey(id);
            if (!done) throw new CliError(`no fleet key has id ${id}; ota apikey list shows them`, EXIT.notFound);
            await parts.audit.record({ ...localActor(), action: "apikey.revoke", target: id, details: { label: done.info.label, already_revoked: done.alreadyRevoked, ...revokeBody(opts.reason) } });
            return { apikey: apiKeyView(done.info), already_revoked: done.alreadyRevoked };
          });
      const k = r.apikey;
      print(
        r.already_revoked
          ? `fleet key ${k.id} (${k.label}) was already revoked at ${k.revoked_at}`
          : `revoked fleet key ${k.id} (${k.label}): it is refused from its next request on`,
      );
    });

  device
    .command("revoke")
    .description("revoke a device: its key is refused, and no fleet key may speak for it, from its next request on (provision it again to give it a new key)")
    .argument("<device-id>", `the device id (${DEVICE_ID_RULE}); MAC addresses are normalised`, deviceId)
    .option("--reason <text>", "why (recorded in the audit log)", reasonText)
    .option("--remote", "revoke through the operator API of the server you logged in to (role admin), not the local data folder")
    .action(async (id: string, opts: { reason?: string; remote?: boolean }) => {
      const r = opts.remote
        ? await callRemote<DeviceRevoked>("POST", `/devices/${enc(id)}/revoke`, revokeBody(opts.reason))
        : await withParts(async (parts): Promise<DeviceRevoked> => {
            const done = await parts.devices.revoke(id);
            if (!done) throw new CliError(`no device ${id}: devices appear when they first poll or are provisioned`, EXIT.notFound);
            await parts.audit.record({ ...localActor(), action: "device.revoke", target: id, details: { key_generation: done.row.key_generation, already_revoked: done.alreadyRevoked, ...revokeBody(opts.reason) } });
            return { device: deviceView(parts.devices.view(done.row), await parts.devices.tags(id)), already_revoked: done.alreadyRevoked };
          });
      const d = r.device;
      print(
        r.already_revoked
          ? `device ${d.id} was already revoked at ${d.revoked_at}`
          : `revoked device ${d.id}: its key, and any fleet key speaking for it, are refused from its next request on; ota device provision ${d.id} gives it a new key`,
      );
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
    .command("mqtt-passwords")
    .description(
      "write the MQTT user name and password of every provisioned device that is not revoked, one user:password a line, for mosquitto_passwd -U (which hashes the file in place)",
    )
    .requiredOption("-o, --out <file>", "the file to write (mode 0600); hash it with mosquitto_passwd -U before the broker reads it")
    .action(async (opts: { out: string }) => {
      const lines = await withParts(async (parts) => {
        const rows = await parts.store.db
          .selectFrom("devices")
          .select(["id", "key_generation"])
          .where("provisioned_at", "is not", null)
          .where("revoked_at", "is", null)
          .orderBy("id")
          .execute();
        const out: string[] = [];
        for (const r of rows) {
          const user = mqttNameOf(r.id);
          // A Mosquitto password file ends the user name at the first colon.
          if (user.includes(":")) {
            process.stderr.write(`ota: skipped ${r.id}: an MQTT user name cannot contain ':'\n`);
            continue;
          }
          out.push(`${user}:${parts.credentials.deviceMqttPassword(r.id, r.key_generation)}`);
        }
        return out;
      });
      writeSecretFile(opts.out, lines.map((l) => l + "\n").join(""));
      process.stderr.write(`ota: ${lines.length} devices; now run: mosquitto_passwd -U ${opts.out}, then append the server's own user (mosquitto_passwd -b FILE USER PASSWORD)\n`);
    });

  program
    .command("export")
    .description(
      "write what the server offers every device as manifest.json, manifest-<chip>.json (channels/<channel>/... for channels other than stable) and <sha256>.bin files, for a bucket or CDN",
    )
    .argument("<dir>", "the folder to write (created if needed); of what is there, only files an earlier export wrote are removed, once they no longer belong")
    .option("--base-url <url>", "where <dir> will be served, e.g. https://bucket.example.com/ota (default: URLs relative to the manifest)", httpUrl)
    .action(async (dir: string, opts: { baseUrl?: string }) => {
      const target = path.resolve(dir);
      const r = await withContext((ctx) =>
        exportStatic(ctx, {
          dir: target,
          baseUrl: opts.baseUrl ?? null,
          onBinary: (file, image, written) =>
            process.stderr.write(`ota: ${written ? "wrote" : "kept"} ${file} (${image.project} ${image.version}, ${image.chip}, ${image.size} bytes)\n`),
        }),
      );
      for (const m of r.manifests) {
        const from = m.release === null ? "" : ` (release ${m.release} on ${m.channel})`;
        process.stdout.write(`${path.join(target, m.file)}: ${m.image.version} for ${m.chip ?? "any chip"}${from} -> ${m.url}\n`);
      }
      for (const f of r.removed) process.stderr.write(`ota: removed ${f} (written by an earlier export, no longer offered)\n`);
      if (!opts.baseUrl) process.stderr.write("ota: the manifests name their binaries relative to themselves; pass --base-url for clients that need absolute URLs\n");
    });

  addRemoteDeviceCommands(device);
  addRemoteCommands(program);
  addAuditCommand(program);
  addSigningCommands(program);
  addImageCommands(program);
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
