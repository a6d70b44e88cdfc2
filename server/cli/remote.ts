// The `ota` commands that talk to a running server's operator API over HTTPS (after `ota login`): upload,
// releases, rollouts (with a live watch), devices and the audit log; and the --remote form of the local
// credential commands. Human output by default, --json for scripts; exit codes in errors.ts.
import fs from "node:fs";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { FIRMWARE_NAME_RE, FIRMWARE_NAME_RULE } from "../domain/catalog/analyze";
import { ApiClient } from "./api-client";
import type {
  AuditPage,
  DeviceAnswer,
  DeviceList,
  ReleaseAnswer,
  ReleaseList,
  RolloutAnswer,
  RolloutList,
  RolloutStatus,
  Whoami,
} from "./api-types";
import { configPath, loadCliConfig, removeCliConfig, saveCliConfig } from "./cli-config";
import { CliError, EXIT, UsageError } from "./errors";

type Print = (text: string) => void;
const out: Print = (t) => void process.stdout.write(t + "\n");
const note: Print = (t) => void process.stderr.write(t + "\n");

async function withApi<T>(fn: (api: ApiClient) => Promise<T>): Promise<T> {
  const c = loadCliConfig();
  const api = new ApiClient(c.server, c.token, c.ca);
  try {
    return await fn(api);
  } finally {
    await api.close();
  }
}

const list = (v: string, prev: string[] = []) => prev.concat(v.split(",").map((s) => s.trim()).filter(Boolean));
const number = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || v.trim() === "") throw new InvalidArgumentError("must be a number");
  return n;
};
const integer = (v: string) => {
  if (!/^[0-9]+$/.test(v)) throw new InvalidArgumentError("must be a whole number");
  return Number(v);
};
const enc = encodeURIComponent;

export function table(rows: (string | number | null | undefined)[][], header: string[]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? "-" : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : (c ?? "").padEnd(widths[i]!))).join("  ")).join("\n");
}

function readToken(opts: { tokenFile?: string; tokenStdin?: boolean }): string {
  let token: string | undefined;
  if (opts.tokenFile) {
    try {
      token = fs.readFileSync(opts.tokenFile, "utf8");
    } catch (e) {
      throw new UsageError(`cannot read --token-file ${opts.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  } else if (opts.tokenStdin) token = fs.readFileSync(0, "utf8");
  else token = process.env.OTA_TOKEN;
  token = token?.trim();
  if (!token) throw new UsageError("give the operator token with --token-file FILE, --token-stdin, or OTA_TOKEN (never as an argument: it would show in ps and shell history)");
  return token;
}

interface ReleaseCreateOptions {
  image: string;
  channel?: string;
  notes?: string;
  notesFile?: string;
  group?: string[];
  tag?: string[];
  device?: string[];
  minVersion?: string;
  via?: string;
  allowDowngrade?: boolean;
  json?: boolean;
}

interface RolloutStartOptions {
  stages?: string;
  auto?: boolean;
  successThreshold?: number;
  minSample?: number;
  maxFailureRate?: number;
  maxRollbackRate?: number;
  failureMinSample?: number;
  json?: boolean;
}

function rolloutLine(s: RolloutStatus): string {
  const r = s.rollout;
  const d = s.devices;
  const stage = `stage ${r.stage.index + 1}/${r.policy.stages.length} (${r.stage.percent}%)`;
  const counts = `devices ${d.total}: offered ${d.offered}, installing ${d.installing}, rebooted ${d.rebooted}, succeeded ${d.succeeded}, failed ${d.failed}, rolled back ${d.rolled_back}`;
  return `${r.release} ${r.id} ${r.state} ${stage} | ${counts}${r.reason ? ` | ${r.reason}` : ""}`;
}

/** A device's update state, with the reason when it is idle (what the 404 it last got said: no_firmware, waiting_for_rollout_stage). */
function stateText(state: string | null, detail: string | null): string | null {
  return state === "idle" && detail ? `idle (${detail})` : state;
}

export function addRemoteCommands(program: Command): void {
  program
    .command("login")
    .description("log in to a server's operator API: checks the token and saves server, token and CA to a 0600 file")
    .requiredOption("--server <url>", "the server, e.g. https://ota.example.com:8443")
    .option("--ca <file>", "the CA that signed the server's certificate (e.g. certs/ca.crt); default: the system's CAs")
    .option("--token-file <file>", "read the operator token from this file")
    .option("--token-stdin", "read the operator token from standard input")
    .action(async (opts: { server: string; ca?: string; tokenFile?: string; tokenStdin?: boolean }) => {
      let url: URL;
      try {
        url = new URL(opts.server);
      } catch {
        throw new UsageError("--server must be a URL such as https://ota.example.com:8443");
      }
      if (url.protocol !== "https:") throw new UsageError("--server must use https://");
      const server = url.origin;
      let ca: string | null = null;
      if (opts.ca) {
        try {
          ca = fs.readFileSync(opts.ca, "utf8");
        } catch (e) {
          throw new UsageError(`cannot read --ca ${opts.ca}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
        }
        if (!ca.includes("-----BEGIN CERTIFICATE-----")) throw new UsageError(`--ca ${opts.ca} is not a PEM certificate`);
      }
      const token = readToken(opts);
      const api = new ApiClient(server, token, ca);
      try {
        const who = await api.call<Whoami>("GET", "/whoami");
        const file = configPath();
        await saveCliConfig({ server, token, ca, subject: who.subject, role: who.role }, file);
        out(`logged in to ${server} as ${who.subject} (${who.role}); saved to ${file} (mode 0600)`);
      } finally {
        await api.close();
      }
    });

  program
    .command("logout")
    .description("forget the saved login")
    .action(() => out(removeCliConfig() ? `removed ${configPath()}` : "not logged in"));

  program
    .command("whoami")
    .description("the server and identity of the saved login")
    .action(() => withApi(async (api) => {
      const who = await api.call<Whoami>("GET", "/whoami");
      out(`${who.subject} (${who.role}) on ${api.server}`);
    }));

  program
    .command("upload")
    .description("upload a firmware image with a progress bar; the server verifies it like a dropped file")
    .argument("<file>", "an ESP-IDF app image (build/<project>.bin)")
    .option("--name <name>", "the name to store it under (default: the file's own name, or <project>-<version>.bin when that name is not a valid firmware name)")
    .option("--json", "print the server's answer as JSON")
    .action((file: string, opts: { name?: string; json?: boolean }) =>
      withApi(async (api) => {
        const { uploadImage } = await import("./upload");
        // The operator's own file name, so the name they typed is the one a release names it by.
        const own = path.basename(file);
        const name = opts.name ?? (FIRMWARE_NAME_RE.test(own) ? own : undefined);
        if (name === undefined) note(`ota: ${own} is not a valid firmware name (${FIRMWARE_NAME_RULE}): the server names it <project>-<version>.bin`);
        const r = await uploadImage(api, file, name);
        if (opts.json) return out(JSON.stringify(r, null, 2));
        const i = r.image;
        out(`${r.created ? "uploaded" : "already there"}: ${r.name}  version ${i.version}  chip ${i.chip}  ${i.size} bytes  sha256 ${i.sha256}`);
        note(`ota: the version is the image's own (its app description); release it under a name of your choice with: ota release create NAME --image ${r.name}`);
      }),
    );

  const firmware = program.command("firmware").description("images and files on the server: delete what is no longer needed");
  firmware
    .command("delete")
    .description("delete an image no release uses: its files in the firmware folder, its record and its stored copy")
    .argument("<sha256|file>", "the image's SHA-256, or the name of a file that holds it")
    .action((ref: string) =>
      withApi(async (api) => {
        let sha = /^[0-9a-fA-F]{64}$/.test(ref) ? ref.toLowerCase() : null;
        if (!sha) {
          const files = await api.call<{ files: { name: string; status: string; sha256: string | null }[] }>("GET", "/firmware/files");
          const f = files.files.find((x) => x.name === ref);
          if (!f?.sha256 || f.status !== "valid") throw new UsageError(`${ref} is not a file that holds an image on the server (see ota firmware files); give the image's SHA-256`);
          sha = f.sha256;
        }
        const r = await api.call<{ deleted: { sha256: string; files: string[] } }>("DELETE", `/firmware/${sha}`);
        out(`deleted image ${r.deleted.sha256}${r.deleted.files.length ? ` and its files ${r.deleted.files.join(", ")}` : ""}`);
      }),
    );
  firmware
    .command("files")
    .description("every file seen in the folder or uploaded, with its status and reason")
    .option("--json", "JSON output")
    .action((o: { json?: boolean }) =>
      withApi(async (api) => {
        const r = await api.call<{ files: { name: string; status: string; sha256: string | null; reason: string | null }[] }>("GET", "/firmware/files");
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(table(r.files.map((f) => [f.name, f.status, f.sha256 ? `${f.sha256.slice(0, 12)}…` : null, f.reason]), ["NAME", "STATUS", "SHA256", "REASON"]));
      }),
    );
  firmware
    .command("forget")
    .description("forget a rejected, incomplete or removed file, and delete it from the firmware folder if it is there")
    .argument("<file>", "the file's name")
    .action((name: string) =>
      withApi(async (api) => {
        await api.call("DELETE", `/firmware/files/${enc(name)}`);
        out(`forgot ${name}`);
      }),
    );
  firmware
    .command("gc")
    .description("delete stored copies of images that no image record names (admin)")
    .option("--older-than-minutes <n>", "only those last written longer ago (default 60)", integer)
    .action((o: { olderThanMinutes?: number }) =>
      withApi(async (api) => {
        const r = await api.call<{ removed: number; bytes: number }>("POST", "/firmware/gc", o.olderThanMinutes === undefined ? {} : { older_than_minutes: o.olderThanMinutes });
        out(`removed ${r.removed} stored ${r.removed === 1 ? "copy" : "copies"} (${r.bytes} bytes)`);
      }),
    );

  const release = program.command("release").description("releases: an image promoted to a channel, for a target");
  release
    .command("create")
    .description("create a release (offered to nobody until `ota rollout start`)")
    .argument("<name>", "the release name, e.g. 2.1.0")
    .requiredOption("--image <sha256|file>", "the image: its SHA-256, or its name on the server (what ota upload printed: the uploaded file's own name)")
    .option("--channel <channel>", "the channel (default stable)")
    .option("--notes <text>", "release notes")
    .option("--notes-file <file>", "read the release notes from a file")
    .option("--group <groups>", "target devices in these groups (repeat or comma-separate)", list)
    .option("--tag <tags>", "target devices with any of these tags", list)
    .option("--device <ids>", "target these devices", list)
    .option("--min-version <version>", "devices must run at least this version to get it directly")
    .option("--via <release>", "the release devices below --min-version get first")
    .option("--allow-downgrade", "it may replace a newer version")
    .option("--json", "print the server's answer as JSON")
    .action((name: string, o: ReleaseCreateOptions) =>
      withApi(async (api) => {
        let notes = o.notes;
        if (o.notesFile) notes = fs.readFileSync(o.notesFile, "utf8");
        const body: Record<string, unknown> = { name, image: o.image };
        if (o.channel) body.channel = o.channel;
        if (notes !== undefined) body.notes = notes;
        if (o.group || o.tag || o.device) body.targets = { groups: o.group ?? [], tags: o.tag ?? [], devices: o.device ?? [] };
        if (o.minVersion) body.min_version = o.minVersion;
        if (o.via) body.via = o.via;
        if (o.allowDowngrade) body.allow_downgrade = true;
        const r = await api.call<ReleaseAnswer>("POST", "/releases", body);
        if (o.json) return out(JSON.stringify(r, null, 2));
        const rel = r.release;
        out(
          `created release ${rel.name} on ${rel.channel}: image version ${rel.image.version} (what devices report) for ${rel.image.chip} (${rel.image.sha256.slice(0, 12)}…); start it with: ota rollout start ${rel.name}`,
        );
      }),
    );
  release
    .command("list")
    .description("releases, newest first")
    .option("--channel <channel>", "only this channel")
    .option("--json", "JSON output")
    .action((o: { channel?: string; json?: boolean }) =>
      withApi(async (api) => {
        const r = await api.call<ReleaseList>("GET", `/releases${o.channel ? `?channel=${enc(o.channel)}` : ""}`);
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(
          table(
            r.releases.map((x) => [x.name, x.channel, x.image.version, x.image.chip, x.rollout ? `${x.rollout.state} ${x.rollout.stage_percent}%` : "not rolled out", x.created_at]),
            ["NAME", "CHANNEL", "VERSION", "CHIP", "ROLLOUT", "CREATED"],
          ),
        );
      }),
    );
  release
    .command("delete")
    .argument("<name>")
    .description("delete a release with its finished rollout (refused while the rollout runs or is paused, or while devices are pinned to it)")
    .action((name: string) =>
      withApi(async (api) => {
        await api.call("DELETE", `/releases/${enc(name)}`);
        out(`deleted release ${name}`);
      }),
    );
  release
    .command("show")
    .argument("<name>")
    .description("one release")
    .action((name: string) => withApi(async (api) => out(JSON.stringify(await api.call<unknown>("GET", `/releases/${enc(name)}`), null, 2))));

  const rollout = program.command("rollout").description("staged rollouts of releases");
  rollout
    .command("start")
    .description("start the staged rollout of a release")
    .argument("<release>")
    .option("--stages <list>", "cumulative percentages, ending at 100 (default 10,50,100)")
    .option("--auto", "advance by itself when a stage meets --success-threshold over --min-sample devices")
    .option("--success-threshold <pct>", "percent of a stage's finished devices that must succeed (default 95)", number)
    .option("--min-sample <n>", "finished devices a stage needs before it can advance (default 10)", integer)
    .option("--max-failure-rate <pct>", "pause when more than this percent of finished devices failed (default 10)", number)
    .option("--max-rollback-rate <pct>", "pause when more than this percent rolled back (default 10)", number)
    .option("--failure-min-sample <n>", "finished devices needed before those rates are judged (default 5)", integer)
    .option("--json", "print the server's answer as JSON")
    .action((name: string, o: RolloutStartOptions) =>
      withApi(async (api) => {
        const body: Record<string, unknown> = {};
        if (o.stages) {
          const stages = String(o.stages).split(",").map((x) => Number(x.trim()));
          if (stages.some((n) => !Number.isFinite(n))) throw new UsageError("--stages must be numbers separated by commas, e.g. 10,50,100");
          body.stages = stages;
        }
        if (o.auto) body.advance = "auto";
        if (o.successThreshold !== undefined) body.success_threshold = o.successThreshold;
        if (o.minSample !== undefined) body.min_sample = o.minSample;
        if (o.maxFailureRate !== undefined) body.max_failure_rate = o.maxFailureRate;
        if (o.maxRollbackRate !== undefined) body.max_rollback_rate = o.maxRollbackRate;
        if (o.failureMinSample !== undefined) body.failure_min_sample = o.failureMinSample;
        const r = await api.call<RolloutAnswer>("POST", `/releases/${enc(name)}/rollout`, body);
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(`started rollout ${r.rollout.id} of ${name}: stages ${r.rollout.policy.stages.join("% → ")}%, ${r.rollout.policy.advance} advance; watch it with: ota rollout watch ${name}`);
      }),
    );
  for (const action of ["pause", "resume", "advance", "abort"] as const) {
    const c = rollout
      .command(action)
      .argument("<rollout>", "a rollout id or the name of its release")
      .description(
        {
          pause: "pause: devices already offered the release keep it, no other device gets it",
          resume: "resume a paused rollout (failure rates count afresh)",
          advance: "move to the next stage now (at the last stage: complete)",
          abort: "abort for good: devices that have not rebooted into it get their previous release again",
        }[action],
      );
    if (action === "pause" || action === "abort") c.option("--reason <text>", "why (recorded in the audit log)");
    c.action((ref: string, o: { reason?: string }) =>
      withApi(async (api) => {
        const r = await api.call<RolloutAnswer>("POST", `/rollouts/${enc(ref)}/${action}`, o.reason ? { reason: o.reason } : {});
        out(`rollout ${r.rollout.id} of ${r.rollout.release}: ${r.rollout.state}, stage ${r.rollout.stage.percent}%`);
      }),
    );
  }
  rollout
    .command("status")
    .argument("<rollout>", "a rollout id or the name of its release")
    .description("state, stage and device counts")
    .option("--json", "JSON output")
    .action((ref: string, o: { json?: boolean }) =>
      withApi(async (api) => {
        const s = await api.call<RolloutStatus>("GET", `/rollouts/${enc(ref)}`);
        out(o.json ? JSON.stringify(s, null, 2) : rolloutLine(s));
      }),
    );
  rollout
    .command("list")
    .description("rollouts, newest first")
    .action(() =>
      withApi(async (api) => {
        const r = await api.call<RolloutList>("GET", "/rollouts");
        out(table(r.rollouts.map((x) => [x.id, x.release, x.state, `${x.stage.percent}%`, x.reason, x.updated_at]), ["ID", "RELEASE", "STATE", "STAGE", "REASON", "UPDATED"]));
      }),
    );
  rollout
    .command("watch")
    .argument("<rollout>", "a rollout id or the name of its release")
    .description("follow a rollout live: a line whenever it changes; ends when it completes (0), pauses (6) or is aborted (7)")
    .option("--interval <seconds>", "seconds between checks (default 2)", number, 2)
    .option("--timeout <seconds>", "give up after this long with exit code 9 (default: watch until it ends)", number)
    .action((ref: string, o: { interval: number; timeout?: number }) =>
      withApi(async (api) => {
        if (!(o.interval >= 0.1 && o.interval <= 3600)) throw new UsageError("--interval must be between 0.1 and 3600 seconds");
        if (o.timeout !== undefined && !(o.timeout > 0 && o.timeout <= 30 * 86400)) throw new UsageError("--timeout must be more than 0 and at most 2592000 seconds (30 days)");
        // A rollout whose devices stop polling never ends by itself: a script needs a way out.
        const deadline = o.timeout === undefined ? Infinity : Date.now() + o.timeout * 1000;
        let last = "";
        for (;;) {
          const s = await api.call<RolloutStatus>("GET", `/rollouts/${enc(ref)}`);
          const line = rolloutLine(s);
          if (line !== last) out(`${new Date().toISOString().slice(11, 19)} ${line}`);
          last = line;
          const state = s.rollout.state;
          if (state === "completed") return;
          if (state === "paused") throw new CliError(`rollout paused: ${s.rollout.reason ?? "no reason given"}; resume it with: ota rollout resume ${ref}`, EXIT.paused);
          if (state === "aborted") throw new CliError(`rollout aborted: ${s.rollout.reason ?? "no reason given"}`, EXIT.aborted);
          if (Date.now() >= deadline) {
            throw new CliError(
              `rollout still ${state} after ${o.timeout} s (${rolloutLine(s)}); watch it again, or pause it with: ota rollout pause ${ref}`,
              EXIT.timeout,
            );
          }
          await new Promise((r) => setTimeout(r, Math.min(o.interval * 1000, Math.max(0, deadline - Date.now()))));
        }
      }),
    );
}

/** `ota device ...` subcommands that go through the API (the local `provision` stays in ota.ts). */
export function addRemoteDeviceCommands(device: Command): void {
  device
    .command("list")
    .description("devices: state, version, group, tags, last seen, online")
    .option("--tag <tag>", "only devices with this tag")
    .option("--group <group>", "only devices in this group")
    .option("--channel <channel>", "only devices on this channel")
    .option("--running <version>", "only devices running this version")
    .option("--state <state>", "only devices in this update state (the status of their latest report)")
    .option("--search <prefix>", "only devices whose id starts with this")
    .addOption(new Option("--online", "only devices seen within three poll intervals").conflicts("offline"))
    .option("--offline", "only devices not seen within three poll intervals")
    .option("--limit <n>", "at most this many (default 100, at most 1000)", integer)
    .option("--json", "JSON output")
    .action(
      (o: {
        tag?: string;
        group?: string;
        channel?: string;
        running?: string;
        state?: string;
        search?: string;
        online?: boolean;
        offline?: boolean;
        limit?: number;
        json?: boolean;
      }) =>
        withApi(async (api) => {
          const q = new URLSearchParams();
          if (o.tag) q.set("tag", o.tag);
          if (o.group) q.set("group", o.group);
          if (o.channel) q.set("channel", o.channel);
          if (o.running) q.set("version", o.running);
          if (o.state) q.set("state", o.state);
          if (o.search) q.set("search", o.search);
          if (o.online) q.set("online", "true");
          if (o.offline) q.set("online", "false");
          if (o.limit) q.set("limit", String(o.limit));
          const r = await api.call<DeviceList>("GET", `/devices${q.size ? `?${q.toString()}` : ""}`);
          if (o.json) return out(JSON.stringify(r, null, 2));
          out(
            table(
              r.devices.map((d) => [d.id, d.online ? "online" : "offline", d.chip, d.version, stateText(d.state, d.state_detail), d.channel, d.group, d.tags.join(",") || null, d.last_seen_at]),
              ["ID", "ONLINE", "CHIP", "VERSION", "STATE", "CHANNEL", "GROUP", "TAGS", "LAST SEEN"],
            ),
          );
          if (r.next) note(`more: --limit, or the API with after=${r.next}`);
        }),
    );
  device
    .command("show")
    .argument("<device-id>")
    .description("one device and its latest reports")
    .action((id: string) => withApi(async (api) => out(JSON.stringify(await api.call<unknown>("GET", `/devices/${enc(id)}`), null, 2))));
  device
    .command("tag")
    .argument("<device-id>")
    .description("add and remove tags")
    .option("--add <tags>", "tags to add (repeat or comma-separate)", list)
    .option("--remove <tags>", "tags to remove", list)
    .action((id: string, o: { add?: string[]; remove?: string[] }) =>
      withApi(async (api) => {
        if (!o.add && !o.remove) throw new UsageError("give --add and/or --remove");
        const r = await api.call<DeviceAnswer>("PATCH", `/devices/${enc(id)}`, { add_tags: o.add ?? [], remove_tags: o.remove ?? [] });
        out(`${r.device.id}: tags ${r.device.tags.join(", ") || "(none)"}`);
      }),
    );
  device
    .command("set")
    .argument("<device-id>")
    .description("set a device's group, channel, pinned release or chip")
    .option("--group <group>", "put it in this group")
    .option("--no-group", "take it out of its group")
    .option("--channel <channel>", "the channel it follows")
    .option("--pin <release>", "always offer it this release")
    .option("--unpin", "follow the channel again")
    .option("--chip <chip>", "its chip, for devices that do not send X-Device-Chip")
    .option("--chip-rev <rev>", "its full chip revision (major*100+minor)", integer)
    .action((id: string, o: { group?: string | false; channel?: string; pin?: string; unpin?: boolean; chip?: string; chipRev?: number }) =>
      withApi(async (api) => {
        const body: Record<string, unknown> = {};
        if (o.group !== undefined) body.group = o.group === false ? null : o.group;
        if (o.channel) body.channel = o.channel;
        if (o.pin && o.unpin) throw new UsageError("give --pin or --unpin, not both");
        if (o.pin) body.pinned_release = o.pin;
        if (o.unpin) body.pinned_release = null;
        if (o.chip) body.chip = o.chip;
        if (o.chipRev !== undefined) body.chip_rev = o.chipRev;
        if (Object.keys(body).length === 0) throw new UsageError("nothing to set: give --group, --no-group, --channel, --pin, --unpin, --chip or --chip-rev");
        const r = await api.call<DeviceAnswer>("PATCH", `/devices/${enc(id)}`, body);
        const d = r.device;
        out(`${d.id}: group ${d.group ?? "-"}, channel ${d.channel}, pinned ${d.pinned_release ?? "-"}, chip ${d.chip ?? "-"}`);
      }),
    );
}

/** One call to the API of the saved login, for the local commands' --remote form (credential lists, revocations). */
export function callRemote<T>(method: "GET" | "POST", p: string, body?: unknown): Promise<T> {
  return withApi((api) => api.call<T>(method, p, body));
}

/** Provisioning through the API, for `ota device provision --remote`. */
/** The device is told to use the server the operator logged in to, unless --server-url says otherwise. */
export async function provisionRemote(id: string, opts: { rotate?: boolean; serverUrl?: string }): Promise<unknown> {
  return withApi((api) =>
    api.call<unknown>("POST", `/devices/${enc(id)}/provision`, { ...(opts.rotate ? { rotate: true } : {}), server_url: opts.serverUrl ?? api.server }),
  );
}

export function addAuditCommand(program: Command): void {
  program
    .command("audit")
    .description("the audit log, newest first (role admin)")
    .option("--limit <n>", "entries (default 50)", integer, 50)
    .option("--action <action>", "only this action, e.g. rollout.pause")
    .option("--json", "JSON output")
    .action((o: { limit: number; action?: string; json?: boolean }) =>
      withApi(async (api) => {
        const r = await api.call<AuditPage>("GET", `/audit?limit=${o.limit}${o.action ? `&action=${enc(o.action)}` : ""}`);
        if (o.json) return out(JSON.stringify(r, null, 2));
        out(table(r.entries.map((e) => [e.at, e.actor, e.role, e.ip, e.action, e.target, e.outcome]), ["AT", "WHO", "ROLE", "FROM", "ACTION", "TARGET", "OUTCOME"]));
      }),
    );
}

