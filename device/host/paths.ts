// Where things are, whether this runs from the TypeScript sources (tests) or from dist/ (npm scripts).
import fs from "node:fs";
import path from "node:path";

function findRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "device", "services", "otawriter.md")) && fs.existsSync(path.join(dir, "package.json"))) {
      return dir;
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find the project root above ${start}`);
  }
}

export const ROOT = findRoot(__dirname);
export const DEVICE_DIR = path.join(ROOT, "device");
export const AGENT_ENTRY = "src/main.ts";
const BUILD_DIR = path.join(DEVICE_DIR, ".devicescript");
export const AGENT_BYTECODE = path.join(BUILD_DIR, "bin", "bytecode.devs");
export const SERVICES_JSON = path.join(BUILD_DIR, "services.json");
export const CLI_PACKAGE = path.join(ROOT, "node_modules", "@devicescript", "cli");
export const CLI_BUNDLE = path.join(CLI_PACKAGE, "built", "devicescript-cli.cjs");
/** The CLI version the VM extraction was written against (package.json pins it). */
export const PINNED_CLI_VERSION = "2.16.4";
export const PARTITIONS_CSV = path.join(ROOT, "partitions.csv");
