#!/usr/bin/env node
// Poll-path cost of releases and rollouts, as a ratio against the same server in folder mode (no releases),
// both measured in this run on this machine: `npm run bench:rollouts` (builds first).
//
// 1. Over HTTPS: manifest polls per second from many distinct devices (fleet key + X-Device-Id + nonce), first
//    with no release (baseline), then with 30 releases on 3 channels, a tag-targeted release on the devices'
//    channel (so every offer also reads the device's tags) and a rollout running at 10 %.
// 2. In process: chooseImage() calls per second, baseline catalog.latest() vs the release decision.
//
// Target: the HTTPS ratio stays at or above 0.8 (the offer decision must not dominate a poll).
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { randomBytes } = require("node:crypto");
const { Agent, request } = require("undici");

const ROOT = path.resolve(__dirname, "..");
const dist = (p) => require(path.join(ROOT, "dist", "server", p));
const FIXTURES = process.env.OTA_FIXTURES_DIR ?? (fs.existsSync(path.join(ROOT, "../shared/fixtures/esp32-images")) ? path.join(ROOT, "../shared/fixtures") : path.join(ROOT, "tests/fixtures"));
const IMAGES = path.join(FIXTURES, "esp32-images");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const DEVICES = 3000;
const CONCURRENCY = 32;

const ids = Array.from({ length: DEVICES }, (_, i) => `be:00:00:${((i >> 16) & 255).toString(16).padStart(2, "0")}:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`);

/** A fresh connection pool per measurement: idle connections from the previous one may have been closed. */
async function pollRate(url, ca, key, label) {
  const agent = new Agent({ connect: { ca }, connections: CONCURRENCY });
  const until = Date.now() + SECONDS * 1000;
  let n = 0;
  let next = 0;
  const statuses = new Map();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < until) {
        const id = ids[next++ % ids.length];
        const r = await request(url + "/firmware/manifest", {
          dispatcher: agent,
          headers: { "X-API-Key": key, "X-Device-Id": id, "X-Nonce": randomBytes(12).toString("base64url"), "X-Device-Chip": "esp32", "X-Device-Version": "v1.4.1-2-g0296947-dirty" },
        });
        await r.body.dump();
        statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
        n++;
      }
    }),
  );
  await agent.close();
  const rate = n / SECONDS;
  process.stderr.write(`${label}: ${Math.round(rate)} polls/s (${[...statuses].map(([s, c]) => `${s}×${c}`).join(", ")})\n`);
  return rate;
}

function offerRate(chooseImage, ctx, label) {
  return (async () => {
    const until = Date.now() + SECONDS * 1000;
    let n = 0;
    while (Date.now() < until) {
      for (let i = 0; i < 200; i++) await chooseImage(ctx, { deviceId: ids[n++ % ids.length], chip: "esp32", version: "v1.4.1-2-g0296947-dirty" });
    }
    const rate = n / SECONDS;
    process.stderr.write(`${label}: ${Math.round(rate)} offers/s\n`);
    return rate;
  })();
}

async function startOne(root) {
  const { loadConfig } = dist("infra/config/config");
  const { createLogger } = dist("infra/logging/logger");
  const { startServer } = dist("server");
  const config = loadConfig(
    { PORT: "0", HOST: "127.0.0.1", OTA_DATA_DIR: "data", OTA_FIRMWARE_DIR: "firmware", OTA_CERT_DIR: "certs", OTA_PARTITIONS: path.join(ROOT, "partitions.csv"), OTA_INGEST_SETTLE_MS: "100", OTA_LOG_LEVEL: "silent", OTA_AUTH_FAILURE_LIMIT: "1000000" },
    root,
  );
  const server = await startServer(config, { log: createLogger("silent") });
  const ctx = server.ctx;
  for (const f of ["esp32_hello_world_idf5.2.2.bin", "esp32_hello-world_idf4.1-dev.bin"]) {
    await ctx.catalog.ingest(f, fs.readFileSync(path.join(IMAGES, f)), { size: fs.statSync(path.join(IMAGES, f)).size, mtimeMs: Date.now(), source: "upload" });
  }
  // Every device known to the registry (a realistic poll: the row exists), with a tag on half of them.
  for (const id of ids) ctx.devices.seen(id, { chip: "esp32" });
  await ctx.devices.flush();
  for (const id of ids.slice(0, DEVICES / 2)) await ctx.devices.changeTags(id, ["north"], []);
  const creds = JSON.parse(fs.readFileSync(path.join(root, "data", "dev-credentials.json"), "utf8"));
  return { server, ctx, key: creds.deviceApiKey, ca: fs.readFileSync(path.join(root, "certs", "ca.crt")), url: `https://localhost:${server.port}` };
}

async function addReleases(ctx) {
  const v1 = ctx.catalog.imageByName("esp32_hello_world_idf5.2.2.bin");
  const v2 = ctx.catalog.imageByName("esp32_hello-world_idf4.1-dev.bin");
  const sys = { actor: "bench", source: "cli" };
  const policy = (stages) => ({ stages, advance: "manual", success_threshold: 95, min_sample: 10, max_failure_rate: 10, max_rollback_rate: 10, failure_min_sample: 5 });
  for (let i = 0; i < 30; i++) {
    const channel = ["stable", "beta", "lab"][i % 3];
    const r = await ctx.releases.create({ name: `old-${i}`, channel, image: v1, notes: "", targets: { groups: [], tags: i === 27 ? ["south"] : [], devices: [] }, minVersion: null, via: null, allowDowngrade: false, createdBy: "bench" });
    await ctx.rollouts.start(r.name, policy([100]), sys);
    await ctx.rollouts.advance(r.name, sys);
  }
  await ctx.releases.create({ name: "new", channel: "stable", image: v2, notes: "", targets: { groups: [], tags: [], devices: [] }, minVersion: "1.0.0", via: null, allowDowngrade: false, createdBy: "bench" });
  await ctx.rollouts.start("new", policy([10, 50, 100]), sys);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const { chooseImage } = dist("domain/releases/offer");
  const roots = [0, 1].map(() => fs.mkdtempSync(path.join(os.tmpdir(), "ota-bench-")));
  const base = await startOne(roots[0]);
  const rel = await startOne(roots[1]);
  try {
    await addReleases(rel.ctx);
    await pollRate(base.url, base.ca, base.key, "warm-up folder mode");
    await pollRate(rel.url, rel.ca, rel.key, "warm-up releases");
    // Alternate the two so load from elsewhere on the machine hits both alike; compare medians.
    const https = { base: [], rel: [] };
    const offers = { base: [], rel: [] };
    for (let round = 1; round <= 3; round++) {
      https.base.push(await pollRate(base.url, base.ca, base.key, `round ${round} folder mode (baseline)`));
      https.rel.push(await pollRate(rel.url, rel.ca, rel.key, `round ${round} releases + rollout at 10 %`));
      offers.base.push(await offerRate(chooseImage, base.ctx, `round ${round} chooseImage, folder mode (baseline)`));
      offers.rel.push(await offerRate(chooseImage, rel.ctx, `round ${round} chooseImage, releases`));
    }
    const summary = await rel.ctx.rollouts.summary("new");
    const h = { baseline: median(https.base), releases: median(https.rel) };
    const o = { baseline: median(offers.base), releases: median(offers.rel) };
    const result = {
      bench: "rollout-poll",
      seconds_each: SECONDS,
      devices: DEVICES,
      https_polls_per_s: { baseline: Math.round(h.baseline), releases: Math.round(h.releases), ratio: +(h.releases / h.baseline).toFixed(3) },
      offers_per_s: { baseline: Math.round(o.baseline), releases: Math.round(o.releases), ratio: +(o.releases / o.baseline).toFixed(3) },
      rollout_members: summary.devices.total,
      target: { https_ratio_at_least: 0.8 },
    };
    process.stdout.write(JSON.stringify(result) + "\n");
    if (result.https_polls_per_s.ratio < 0.8) process.exitCode = 1;
  } finally {
    for (const x of [base, rel]) await x.server.close();
    for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
