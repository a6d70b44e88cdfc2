// A smoke run of the bench harness (`npm run bench -- --quick`): tiny loads through every phase, against the
// real server, nginx and wrk. It checks the harness works end to end and that its figures are real
// measurements; the speed targets themselves are only judged by the full `npm run bench`.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { HAS_ESPHOME } from "../helpers/fixtures";
import { ROOT } from "../helpers/server";

const has = (cmd: string) => ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"].some((d) => fs.existsSync(path.join(d, cmd)));
const tools = has("nginx") && has("wrk");
const runnable = HAS_ESPHOME && (tools || process.env.CI === "true");
const why = !HAS_ESPHOME
  ? "../shared/fixtures/esp32-images/esp32_esphome-2021.12.0-dev_arduino.bin is absent"
  : "nginx and wrk are not installed (apt-get install nginx-light wrk; CI installs them)";
const maybe = runnable ? it : (name: string) => it.skip(`${name} [skipped: ${why}]`, () => undefined);

describe("bench harness (quick run)", () => {
  maybe(
    "prints the table and, last, one JSON line with every figure; no acknowledged report is lost to SIGKILL",
    () => {
      const harness = path.join(ROOT, "dist/bench/run.js");
      if (!fs.existsSync(harness)) throw new Error("dist/bench/run.js is missing: run `npm run build` (npm test builds first)");
      const r = spawnSync(process.execPath, [harness, "--quick"], { cwd: ROOT, encoding: "utf8", timeout: 240_000 });
      expect(r.stderr).not.toMatch(/failed:/);
      expect(r.status).toBe(0);
      const lines = r.stdout.trim().split("\n");
      const result = JSON.parse(lines.at(-1)!);
      expect(r.stdout).toContain("1 manifest polls, keep-alive (req/s)");

      for (const k of ["polls_keepalive", "polls_handshake"]) {
        expect(result[k].server_rps).toBeGreaterThan(0);
        expect(result[k].nginx_rps).toBeGreaterThan(0);
        expect(result[k].bare_node_rps).toBeGreaterThan(0);
        expect(result[k].ratio).toBeCloseTo(result[k].server_rps / result[k].nginx_rps, 2);
        expect(result[k].server_errors).toBe(0); // every poll was a verified 200, no nonce replays
      }
      expect(result.polls_handshake.fleet_at_5min).toBe(Math.floor(result.polls_handshake.server_rps * 300));
      expect(result.downloads.server_mib_s).toBeGreaterThan(0);
      expect(result.downloads.nginx_mib_s).toBeGreaterThan(0);
      expect(result.downloads.server_errors).toBe(0);
      expect(result.slow_downloads.opened).toBe(result.slow_downloads.downloads);
      expect(result.slow_downloads.rss_peak_kib).toBeGreaterThan(0);
      expect(result.reports.reports_per_s).toBeGreaterThan(0);
      expect(result.reports.stored_check.stored).toBeGreaterThanOrEqual(result.reports.stored_check.acknowledged);
      expect(result.reports_sigkill.acknowledged).toBeGreaterThan(0);
      expect(result.reports_sigkill.lost).toBe(0);
      expect(result.reports_sigkill.restarted).toBe(true);
      expect(result.device_pipeline).toMatchObject({ status: "measured", rounds: 1 });
      expect(result.device_pipeline.kib_s).toBeGreaterThan(0);
      expect(result.device_pipeline.native_kib_s).toBeGreaterThan(0);
      expect(result.device_pipeline.peak_heap_kib).toBeGreaterThan(0);
    },
    300_000,
  );
});
