// `npm start`, the documented way to run the server in the foreground: SIGTERM or SIGINT to the npm process
// stops the server itself (npm runs it as a child), frees the port and leaves no process behind.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { eventually, ROOT, tempDirs, testEnv } from "../helpers/server";
import { alive } from "../helpers/server-process";

// npm start builds first (prestart): a few seconds of tsc on a busy machine.
jest.setTimeout(120_000);

/** Every process below pid, read from /proc while they run. */
function descendants(pid: number): number[] {
  let children: number[];
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return children.flatMap((c) => [c, ...descendants(c)]);
}

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const c = net.connect({ port, host: "127.0.0.1" });
    c.once("connect", () => {
      c.destroy();
      resolve(false);
    });
    c.once("error", () => resolve(true));
  });

describe.each(["SIGTERM", "SIGINT"] as const)("npm start, then %s to npm", (signal) => {
  it("stops the server: the port is freed and no process is left", async () => {
    const dirs = tempDirs("ota-npm-start-");
    try {
      const npm = spawn("npm", ["start"], { cwd: ROOT, env: { ...process.env, ...testEnv(dirs) }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      npm.stdout.on("data", (d: Buffer) => (out += d.toString()));
      npm.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<void>((resolve) => npm.once("exit", () => resolve()));
      const line = await eventually(() => out.split("\n").find((l) => l.includes('"OTA server listening"')), 100_000);
      const port = Number(new URL(String((JSON.parse(line) as { url: string }).url)).port);
      const pids = descendants(npm.pid!);
      expect(pids.length).toBeGreaterThan(0);
      expect(await portFree(port)).toBe(false);

      const sent = Date.now();
      npm.kill(signal);
      await exited;
      await eventually(async () => (await portFree(port)) && pids.every((p) => !alive(p)), 5_000);
      expect(Date.now() - sent).toBeLessThan(6_000);
      expect(out).toContain(`"signal":"${signal}","msg":"shutting down"`);
    } finally {
      fs.rmSync(dirs.root, { recursive: true, force: true });
    }
  });
});
