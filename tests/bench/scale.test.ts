// A smoke run of the scale bench (`npm run bench:scale -- --devices 2000`): the harness builds its data folder,
// starts the built server on it and measures every operator request beside a poller. The speed targets are
// only judged at a million devices; here the figures must be real and the fleet's counts right. The same again
// with `--backend postgres`, on a throwaway cluster of the bench's own.
import fs from "node:fs";
import path from "node:path";
import { serverBinaries } from "../../bench/postgres";
import { runNode } from "../helpers/node-process";
import { ROOT } from "../helpers/server";

const bench = path.join(ROOT, "dist/bench/scale.js");

/** Runs the scale bench on 2,000 devices and checks its figures and what each filter found. */
async function scaleRun(args: string[], backend: string) {
  if (!fs.existsSync(bench)) throw new Error("dist/bench/scale.js is missing: run `npm run build` (npm test builds first)");
  const r = await runNode(bench, ["--devices", "2000", ...args], { cwd: ROOT, timeoutMs: 150_000 });
  expect(r.stderr).not.toMatch(/failed:/);
  expect(r.status).toBe(0);
  const lines = r.stdout.trim().split("\n");
  const result = JSON.parse(lines.at(-1)!);
  expect(r.stdout).toContain("time to listen");
  expect(result).toMatchObject({ bench: "scale", backend, devices: 2000, rollout_members: 2000 });
  expect(result.listen_s).toBeGreaterThan(0);
  expect(result.rss_mib).toBeGreaterThan(0);
  const rows = Object.fromEntries((result.requests as { name: string; ms: number; rows: number | null }[]).map((x) => [x.name, x]));
  for (const x of Object.values(rows)) expect(x.ms).toBeGreaterThan(0);
  // What each filter found in the bench's fleet (every 20th device has a tag, every 100th a group, ...).
  expect(rows["devices: common tag"]!.rows).toBe(100);
  expect(rows["devices: rare tag"]!.rows).toBe(1);
  expect(rows["devices: absent tag"]!.rows).toBe(0);
  expect(rows["devices: group"]!.rows).toBe(20);
  expect(rows["devices: rare channel"]!.rows).toBe(20);
  expect(rows["devices: rare state"]!.rows).toBe(2);
  expect(rows["devices: online (few)"]!.rows).toBeGreaterThan(0);
  expect(rows["devices: offline (most)"]!.rows).toBe(100);
  expect(rows["audit by target (rollout)"]!.rows).toBe(1); // its start (the abort comes after)
  expect(rows["rollout abort"]).toBeDefined();
  expect(result.polls).toBeGreaterThan(0);
  expect(result.poll_statuses["200"]).toBeGreaterThan(0);
  expect(result.worst_poll_ms).toBeGreaterThan(0);
}

const withPostgres = serverBinaries() !== null || Boolean(process.env.OTA_BENCH_DATABASE_URL) || process.env.CI === "true";

describe("scale bench (2,000 devices)", () => {
  it("prints the table and, last, one JSON line; the rollout counts every device it was given", () => scaleRun([], "sqlite"), 180_000);

  (withPostgres ? it : (name: string, fn: () => Promise<void>, timeout?: number) => it.skip(`${name} [skipped: PostgreSQL's server programs are not installed]`, fn, timeout))("--backend postgres: the same figures and counts from a PostgreSQL database", () => scaleRun(["--backend", "postgres"], "postgres"), 180_000);
});
