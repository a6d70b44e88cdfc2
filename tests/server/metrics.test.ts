// GET /metrics on the real server: counters move by exactly what devices and operators did (polls, downloads,
// reports, finished updates, refused files, wrong credentials, 429s), the gauges read the fleet at scrape time,
// who may read it (operator tokens of any role, the metrics token) and who may not (device and fleet keys, no
// token, a wrong one), the output passes `promtool check metrics` (Debian's prometheus package), and every
// metric the documentation and the Grafana dashboard name is served.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { BOOTLOADER, HELLO_WORLD_IDF41, PARTITION_TABLE_OTA, read } from "../helpers/fixtures";
import { mac, Operator, poll, report } from "../helpers/fleet";
import { ConfigError, loadConfig } from "../../server/infra/config/config";
import { reportReasonLabel } from "../../server/infra/metrics/metrics";
import { eventually, ROOT, startTestServer, type Reply, type TestServer } from "../helpers/server";

jest.setTimeout(60_000);

const V2 = "v4.1-dev-1935-g647cb62-dirty"; // HELLO_WORLD_IDF41
const IMAGE_V2 = read(HELLO_WORLD_IDF41);
const SHA2 = createHash("sha256").update(IMAGE_V2).digest("hex");
const METRICS_TOKEN = randomBytes(24).toString("hex");

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition, and the metric names its HELP lines declare. */
function parse(text: string): { samples: Sample[]; names: Set<string> } {
  const samples: Sample[] = [];
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const help = /^# HELP (\S+) /.exec(line);
    if (help) names.add(help[1]!);
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, names };
}

/** A sample's value: the one series of `name` whose labels are exactly `labels` (0 when there is none). */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const want = JSON.stringify(Object.entries(labels).sort());
  const found = samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
  if (found.length > 1) throw new Error(`${name} ${want}: ${found.length} series`);
  return found[0]?.value ?? 0;
}

describe("OTA_METRICS_TOKEN", () => {
  it("is read when it is 32-256 token characters, else stops the start without repeating the value", () => {
    expect(loadConfig({ OTA_METRICS_TOKEN: METRICS_TOKEN }, "/tmp").metricsToken).toBe(METRICS_TOKEN);
    expect(loadConfig({}, "/tmp").metricsToken).toBeNull();
    const secret = "short-secret-value";
    for (const [value, why] of [
      [secret, /must be 32-256 characters/],
      [`${secret} with spaces ${secret}`, /must be 32-256 characters/],
      [`eyJ${"a".repeat(40)}`, /must not look like an operator token/],
      [`otafleet_${"a".repeat(40)}`, /must not look like a device or fleet key/],
    ] as const) {
      let err: unknown;
      try {
        loadConfig({ OTA_METRICS_TOKEN: value }, "/tmp");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toContain("OTA_METRICS_TOKEN");
      expect((err as Error).message).not.toContain(value.slice(0, 12));
    }
  });
});

describe("ota_reports_total's reason label", () => {
  it("is the reason itself for every code docs/protocol.md gives the agent's reports, 'none' without one, 'other' else", () => {
    const doc = fs.readFileSync(path.join(ROOT, "docs/protocol.md"), "utf8");
    const section = doc.slice(doc.indexOf("## Reports from the device agent"), doc.indexOf("## MQTT update notices"));
    // The table's last column: the reasons each status may carry, each in backquotes (what is in parentheses
    // explains a reason and may name fields).
    const rows = section.split("\n").filter((l) => /^\| `[a-z_]+` \|/.test(l));
    const reasons = rows.map((r) => r.split("|").at(-2)!.replace(/\([^)]*\)/g, ""));
    const codes = new Set(reasons.flatMap((r) => [...r.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!)));
    expect(codes.size).toBeGreaterThan(15);
    expect(codes).toContain("waiting_for_rollout_stage");
    expect([...codes].filter((c) => reportReasonLabel(c) !== c)).toEqual([]);
    expect(reportReasonLabel(null)).toBe("none");
    expect(reportReasonLabel("")).toBe("none");
    expect(reportReasonLabel("something_else")).toBe("other");
  });
});

describe("GET /metrics", () => {
  let s: TestServer;
  let op: Operator;
  let viewer: string;
  const scrapeWith = (authorization?: string, headers: Record<string, string> = {}) =>
    s.req("GET", "/metrics", { headers: { ...(authorization ? { Authorization: authorization } : {}), ...headers } });
  const scrape = async () => {
    const r = await scrapeWith(`Bearer ${METRICS_TOKEN}`);
    expect(r.status).toBe(200);
    return parse(r.text()).samples;
  };

  beforeAll(async () => {
    s = await startTestServer({ OTA_METRICS_TOKEN: METRICS_TOKEN });
    op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.image(SHA2));
    viewer = (await s.running.ctx.credentials.issueOperatorToken("prometheus", "viewer")).token;
    await op.ok("POST", "/releases", { name: "r2", image: SHA2 });
    // Every device of the fleet in the one stage; no threshold pauses it whatever the test reports.
    await op.ok("POST", "/releases/r2/rollout", { stages: [100], advance: "manual", max_failure_rate: 100, max_rollback_rate: 100 });
  });
  afterAll(async () => s?.close());

  it("counts polls, downloads, reports, finished updates and wrong credentials by exactly what happened", async () => {
    const before = await scrape();
    const [d1, d2, d3, d4] = [1, 2, 3, 4].map((i) => mac(i));

    // Polls: three offered, one not modified, one with nothing for its chip, one refused.
    let etag = "";
    for (const id of [d1, d2, d3]) {
      const r = await poll(s, id!, { chip: "esp32", version: "v1" });
      expect(r.status).toBe(200);
      etag = r.headers.etag as string;
    }
    const again = await s.req("GET", "/firmware/manifest", {
      headers: { "X-API-Key": s.creds.deviceApiKey, "X-Device-Id": d3!, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": "v1", "If-None-Match": etag },
    });
    expect(again.status).toBe(304);
    expect((await poll(s, d4!, { chip: "esp32c3" })).status).toBe(404);
    expect((await poll(s, mac(5), { key: "otafleet_wrongwrongwrong" })).status).toBe(401);

    // Downloads: the whole image, one range of it, and its block hashes.
    const key = { "X-API-Key": s.creds.deviceApiKey };
    const whole = await s.req("GET", `/firmware/sha256/${SHA2}.bin`, { headers: key });
    expect(whole.body.equals(IMAGE_V2)).toBe(true);
    expect((await s.req("GET", `/firmware/sha256/${SHA2}.bin`, { headers: { ...key, Range: "bytes=100-1123" } })).status).toBe(206);
    const blocks = await s.req("GET", `/firmware/sha256/${SHA2}/blocks`, { headers: key });
    expect(blocks.status).toBe(200);
    expect((await s.req("HEAD", `/firmware/sha256/${SHA2}.bin`, { headers: key })).status).toBe(200); // no body: no download

    // Reports: a success (sent twice: counted once), a failure, a rollback with a reason no one knows.
    await report(s, { device_id: d1, status: "downloading", sha256: SHA2, bytes: 8192, total: IMAGE_V2.length });
    await report(s, { device_id: d1, status: "confirmed", version: V2, report_id: "d1-confirmed" });
    await report(s, { device_id: d1, status: "confirmed", version: V2, report_id: "d1-confirmed" });
    await report(s, { device_id: d2, status: "failed", sha256: SHA2, reason: "write_failed" });
    await report(s, { device_id: d3, status: "rolled_back", target_version: V2, reason: "cosmic_ray_0042" });
    const wrongReport = await s.req("POST", "/firmware/report", {
      headers: { "X-API-Key": "otafleet_wrongwrongwrong", "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: d1, status: "idle" }),
    });
    expect(wrongReport.status).toBe(401);
    // A wrong operator token, and a request without any (a challenge: not a failure).
    expect((await s.req("GET", "/api/v1/whoami", { headers: { Authorization: "Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA" } })).status).toBe(401);
    expect((await s.req("GET", "/api/v1/whoami")).status).toBe(401);

    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => valueOf(after, name, labels) - valueOf(before, name, labels);

    expect({
      offered: delta("ota_polls_total", { endpoint: "manifest", outcome: "offered" }),
      not_modified: delta("ota_polls_total", { endpoint: "manifest", outcome: "not_modified" }),
      no_firmware: delta("ota_polls_total", { endpoint: "manifest", outcome: "no_firmware" }),
      refused: delta("ota_polls_total", { endpoint: "manifest", outcome: "refused" }),
      throttled: delta("ota_polls_total", { endpoint: "manifest", outcome: "throttled" }),
      http_update: delta("ota_polls_total", { endpoint: "http_update", outcome: "offered" }),
    }).toEqual({ offered: 3, not_modified: 1, no_firmware: 1, refused: 1, throttled: 0, http_update: 0 });

    expect({
      image_full: delta("ota_downloads_total", { file: "image", range: "full" }),
      image_partial: delta("ota_downloads_total", { file: "image", range: "partial" }),
      blocks_full: delta("ota_downloads_total", { file: "block_hashes", range: "full" }),
      image_bytes: delta("ota_download_bytes_total", { file: "image" }),
      block_bytes: delta("ota_download_bytes_total", { file: "block_hashes" }),
    }).toEqual({ image_full: 1, image_partial: 1, blocks_full: 1, image_bytes: IMAGE_V2.length + 1024, block_bytes: blocks.body.length });

    expect({
      downloading: delta("ota_reports_total", { status: "downloading", reason: "none" }),
      confirmed: delta("ota_reports_total", { status: "confirmed", reason: "none" }),
      failed: delta("ota_reports_total", { status: "failed", reason: "write_failed" }),
      rolled_back: delta("ota_reports_total", { status: "rolled_back", reason: "other" }),
      idle: delta("ota_reports_total", { status: "idle", reason: "none" }),
    }).toEqual({ downloading: 1, confirmed: 1, failed: 1, rolled_back: 1, idle: 0 });

    expect({
      succeeded: delta("ota_updates_total", { release: "r2", outcome: "succeeded" }),
      failed: delta("ota_updates_total", { release: "r2", outcome: "failed" }),
      rolled_back: delta("ota_updates_total", { release: "r2", outcome: "rolled_back" }),
      timed: delta("ota_update_duration_seconds_count"),
    }).toEqual({ succeeded: 1, failed: 1, rolled_back: 1, timed: 1 });
    // The one success took less than the test has run, so it is in the smallest bucket.
    expect(delta("ota_update_duration_seconds_bucket", { le: "30" })).toBe(1);
    expect(delta("ota_update_duration_seconds_sum")).toBeGreaterThanOrEqual(0);
    expect(delta("ota_update_duration_seconds_sum")).toBeLessThan(30);

    expect({
      device: delta("ota_auth_failures_total", { api: "device", code: "invalid_credential" }),
      operator: delta("ota_auth_failures_total", { api: "operator", code: "invalid_token" }),
      challenges: delta("ota_auth_failures_total", { api: "operator", code: "missing_credential" }),
    }).toEqual({ device: 2, operator: 1, challenges: 0 });

    // Gauges, read at the scrape: the rollout, its members, the devices seen (d1 to d4) within the online window.
    expect(valueOf(after, "ota_rollout_state", { release: "r2", state: "running" })).toBe(1);
    expect(valueOf(after, "ota_rollout_state", { release: "r2", state: "paused" })).toBe(0);
    expect(valueOf(after, "ota_rollout_stage", { release: "r2" })).toBe(0);
    expect(valueOf(after, "ota_rollout_stage_percent", { release: "r2" })).toBe(100);
    expect(["succeeded", "failed", "rolled_back", "offered"].map((status) => valueOf(after, "ota_rollout_members", { release: "r2", status }))).toEqual([
      1, 1, 1, 0,
    ]);
    // The count is reused for 5 s, so it may take that long to see them.
    await eventually(async () => valueOf(await scrape(), "ota_devices_online") === 4, 15_000, 250);
  });

  it("counts refused firmware files by reason and source, and files by status", async () => {
    const before = await scrape();
    fs.copyFileSync(BOOTLOADER, path.join(s.dirs.firmware, "bootloader.bin"));
    await eventually(() => s.running.ctx.catalog.file("bootloader.bin")?.status === "rejected");
    const boundary = "----ota" + randomBytes(8).toString("hex");
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="table.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
      read(PARTITION_TABLE_OTA),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const upload = await s.req("POST", "/api/v1/firmware", {
      headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": `multipart/form-data; boundary=${boundary}` },
      body,
    });
    expect(upload.status).toBe(422);
    const after = await scrape();
    const delta = (labels: Record<string, string>) => valueOf(after, "ota_images_rejected_total", labels) - valueOf(before, "ota_images_rejected_total", labels);
    expect(delta({ reason: "bootloader", source: "folder" })).toBe(1);
    expect(delta({ reason: "partition_table", source: "upload" })).toBe(1);
    expect(valueOf(after, "ota_firmware_files", { status: "rejected" })).toBe(1);
    expect(valueOf(after, "ota_firmware_files", { status: "valid" })).toBe(1);
  });

  describe("who may read it", () => {
    const errorOf = (r: Reply) => ({ status: r.status, code: r.json().error.code as string });

    it("an operator token of any role, or the metrics token: Prometheus text, never cached", async () => {
      for (const token of [viewer, s.creds.operatorToken, METRICS_TOKEN]) {
        const r = await scrapeWith(`Bearer ${token}`);
        expect(r.status).toBe(200);
        expect(r.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
        expect(r.headers["cache-control"]).toBe("no-store");
        expect(r.text()).toMatch(/^# HELP ota_polls_total /m);
      }
    });

    it("no token: 401 missing_credential with a Bearer challenge", async () => {
      const r = await scrapeWith();
      expect(errorOf(r)).toEqual({ status: 401, code: "missing_credential" });
      expect(r.headers["www-authenticate"]).toMatch(/^Bearer /);
    });

    it("device and fleet keys are refused, however they are sent", async () => {
      const bundle = await op.ok("POST", `/devices/${mac(9)}/provision`, {});
      const deviceKey = bundle.apiKey as string;
      expect(deviceKey.startsWith("otadev_")).toBe(true);
      for (const k of [s.creds.deviceApiKey, deviceKey]) {
        expect(errorOf(await scrapeWith(undefined, { "X-API-Key": k }))).toEqual({ status: 403, code: "wrong_credential_kind" });
        expect(errorOf(await scrapeWith(`Bearer ${k}`))).toEqual({ status: 403, code: "wrong_credential_kind" });
        const basic = Buffer.from(`${mac(9)}:${k}`).toString("base64");
        expect(errorOf(await scrapeWith(`Basic ${basic}`))).toEqual({ status: 401, code: "invalid_credential" });
      }
    });

    it("a wrong or revoked token is refused and counted; the metrics token opens nothing else", async () => {
      const before = await scrape();
      expect(errorOf(await scrapeWith(`Bearer ${randomBytes(24).toString("hex")}`))).toEqual({ status: 401, code: "invalid_token" });
      const revoked = await s.running.ctx.credentials.issueOperatorToken("gone", "viewer");
      await s.running.ctx.credentials.revokeOperatorToken(revoked.jti);
      expect(errorOf(await scrapeWith(`Bearer ${revoked.token}`))).toEqual({ status: 401, code: "token_revoked" });
      expect(errorOf(await s.req("GET", "/api/v1/whoami", { headers: { Authorization: `Bearer ${METRICS_TOKEN}` } }))).toEqual({
        status: 401,
        code: "invalid_token",
      });
      const after = await scrape();
      const delta = (code: string) => valueOf(after, "ota_auth_failures_total", { api: "operator", code }) - valueOf(before, "ota_auth_failures_total", { api: "operator", code });
      expect([delta("invalid_token"), delta("token_revoked")]).toEqual([2, 1]);
    });
  });

  it("passes promtool check metrics", async () => {
    const r = await scrapeWith(`Bearer ${viewer}`);
    const check = spawnSync("promtool", ["check", "metrics"], { input: r.text(), encoding: "utf8" });
    if (check.error) {
      throw new Error(`promtool could not be run (${check.error.message}): install Debian's prometheus package, as .ci/run does`);
    }
    expect({ status: check.status, out: check.stdout + check.stderr }).toEqual({ status: 0, out: "" });
  });

  it("serves every metric docs/operations.md documents and the Grafana dashboard queries, and documents every ota_ metric", async () => {
    const { names } = parse((await scrapeWith(`Bearer ${viewer}`)).text());
    // A histogram's series are its name with _bucket, _sum and _count.
    const served = (m: string) => names.has(m) || names.has(m.replace(/_(bucket|sum|count)$/, ""));

    const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, "docs/grafana/esp32-ota.json"), "utf8"));
    const exprs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          if ((k === "expr" || k === "query") && typeof x === "string") exprs.push(x);
          else walk(x);
        }
      }
    };
    walk(dashboard);
    expect(exprs.length).toBeGreaterThan(5);
    // Metric names in PromQL: identifiers of our own metrics and of Node's and the process's.
    const queried = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:ota|nodejs|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]!)));
    expect([...queried].filter((m) => !served(m))).toEqual([]);

    const ops = fs.readFileSync(path.join(ROOT, "docs/operations.md"), "utf8");
    const section = ops.slice(ops.indexOf("\n## Metrics\n"), ops.indexOf("\n## ", ops.indexOf("\n## Metrics\n") + 1));
    const documented = new Set([...section.matchAll(/`(ota_[a-z0-9_]+)/g)].map((m) => m[1]!));
    expect([...documented].filter((m) => !served(m))).toEqual([]);
    expect([...names].filter((m) => m.startsWith("ota_") && !documented.has(m))).toEqual([]);
  });

  it("the Prometheus scrape configuration in docs/operations.md passes promtool check config", () => {
    const ops = fs.readFileSync(path.join(ROOT, "docs/operations.md"), "utf8");
    const section = ops.slice(ops.indexOf("\n## Metrics\n"));
    const yaml = /```yaml\n(scrape_configs:[\s\S]*?)```/.exec(section)?.[1];
    expect(yaml).toBeDefined();
    // The files it names, made here: promtool checks that they exist.
    const dir = fs.mkdtempSync(path.join(s.dirs.root, "prometheus-"));
    fs.writeFileSync(path.join(dir, "esp32-ota.token"), METRICS_TOKEN + "\n");
    fs.copyFileSync(path.join(s.dirs.certs, "ca.crt"), path.join(dir, "esp32-ota-ca.crt"));
    fs.writeFileSync(path.join(dir, "prometheus.yml"), yaml!.replaceAll("/etc/prometheus/", dir + "/"));
    const check = spawnSync("promtool", ["check", "config", path.join(dir, "prometheus.yml")], { encoding: "utf8" });
    if (check.error) throw new Error(`promtool could not be run (${check.error.message}): install Debian's prometheus package, as .ci/run does`);
    expect({ status: check.status, out: check.stderr }).toEqual({ status: 0, out: "" });
    expect(check.stdout).toContain("SUCCESS");
  });

  it("answers 429s counted by API once an address is over its failure limit", async () => {
    const t = await startTestServer({ OTA_AUTH_FAILURE_LIMIT: "2", OTA_AUTH_FAILURE_WINDOW: "2", OTA_METRICS_TOKEN: METRICS_TOKEN });
    try {
      const statuses = [];
      for (let i = 0; i < 4; i++) statuses.push((await poll(t, mac(1), { key: "otafleet_wrongwrongwrong" })).status);
      expect(statuses).toEqual([401, 401, 429, 429]);
      // The address is refused everything until its window ends: then it may read the metrics.
      await new Promise((r) => setTimeout(r, 2100));
      const r = await t.req("GET", "/metrics", { headers: { Authorization: `Bearer ${METRICS_TOKEN}` } });
      expect(r.status).toBe(200);
      const { samples } = parse(r.text());
      expect(valueOf(samples, "ota_auth_throttled_total", { api: "device" })).toBe(2);
      expect(valueOf(samples, "ota_auth_throttled_total", { api: "operator" })).toBe(0);
      expect(valueOf(samples, "ota_polls_total", { endpoint: "manifest", outcome: "throttled" })).toBe(2);
      expect(valueOf(samples, "ota_polls_total", { endpoint: "manifest", outcome: "refused" })).toBe(2);
      // The keys found wrong; a request refused for its address before its key is read is only a 429.
      expect(valueOf(samples, "ota_auth_failures_total", { api: "device", code: "invalid_credential" })).toBe(2);
    } finally {
      await t.close();
    }
  });
});
