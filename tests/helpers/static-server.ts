// A plain static file server, as a bucket or CDN would be: Python's http.server on an ephemeral port.
import { spawn, type ChildProcess } from "node:child_process";

export interface StaticServer {
  url: string;
  close(): Promise<void>;
}

export function startStaticServer(dir: string): Promise<StaticServer> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn("python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`python3 -m http.server did not start within 10 s: ${out}`));
    }, 10_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run python3 for the static file server (.ci/run installs it): ${err.message}`));
    });
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const port = /Serving HTTP on \S+ port (\d+)/.exec(out)?.[1];
      if (!port) return;
      clearTimeout(timer);
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            if (child.exitCode !== null) return done();
            child.once("exit", () => done());
            child.kill();
          }),
      });
    });
    child.stderr!.on("data", (chunk: Buffer) => (out += chunk.toString())); // request log lines
  });
}
