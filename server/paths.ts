import fs from "node:fs";
import path from "node:path";

let root: string | null = null;

/** The project folder (where package.json, generate-certs.sh and partitions.csv live), from src or dist. */
export function projectRoot(): string {
  if (root) return root;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && fs.existsSync(path.join(dir, "generate-certs.sh"))) return (root = dir);
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the project folder above ${__dirname}`);
    dir = up;
  }
}

/** The version in package.json. */
export function packageVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(projectRoot(), "package.json"), "utf8")) as { version: string }).version;
}
