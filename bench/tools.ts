// The outside programs the bench drives: nginx (the reference server) and wrk (the load generator), both
// from Debian. Installed with apt-get when absent, without letting the package start a system nginx.
import { spawnSync } from "node:child_process";
import fs from "node:fs";

export interface Tools {
  nginx: string;
  wrk: string;
  taskset: string | null;
}

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    const p = `${dir}/${cmd}`;
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* keep looking */
    }
  }
  return null;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", env });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${(r.stderr || r.stdout || "").trim().slice(-2000)}`);
  }
}

/** apt-get install, with a policy-rc.d that stops the nginx package from starting a system-wide nginx. */
function aptInstall(packages: string[], say: (msg: string) => void): void {
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : ["sudo", "-n"];
  if (!root && !which("sudo")) {
    throw new Error(`the bench needs ${packages.join(" and ")}: install them with apt-get install -y ${packages.join(" ")} (as root)`);
  }
  const policy = "/usr/sbin/policy-rc.d";
  const ours = root && !fs.existsSync(policy);
  if (ours) fs.writeFileSync(policy, "#!/bin/sh\n# written by esp32-ota's bench while installing packages\nexit 101\n", { mode: 0o755 });
  try {
    say(`installing ${packages.join(", ")} with apt-get (one time)`);
    const [cmd, ...pre] = [...sudo, "apt-get"];
    run(cmd, [...pre, "update"]);
    run(cmd, [...pre, "install", "-y", "--no-install-recommends", ...packages], { ...process.env, DEBIAN_FRONTEND: "noninteractive" });
  } finally {
    if (ours) fs.rmSync(policy, { force: true });
  }
}

export function ensureTools(say: (msg: string) => void): Tools {
  const missing: string[] = [];
  if (!which("nginx")) missing.push("nginx-light");
  if (!which("wrk")) missing.push("wrk");
  if (missing.length) aptInstall(missing, say);
  const nginx = which("nginx");
  const wrk = which("wrk");
  if (!nginx || !wrk) throw new Error("nginx or wrk is still missing after apt-get install: install nginx-light and wrk by hand");
  return { nginx, wrk, taskset: which("taskset") };
}
