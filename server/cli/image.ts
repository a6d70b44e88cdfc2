// `ota image set-version`: a copy of an app image under a new version string, offline (no server), to try an
// update without rebuilding the app. The format work is in server/esp (app-version.ts).
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { AppVersionError, APP_VERSION_RULE, ImageError, withAppVersion } from "../esp";
import { CliError, EXIT, UsageError } from "./errors";

/** No ESP32 app image comes near this; anything larger is not one. */
const MAX_IMAGE_FILE = 64 * 1024 * 1024;

export function addImageCommands(program: Command): void {
  const image = program.command("image").description("app image files, offline (no server needed)");
  image
    .command("set-version")
    .description("write a copy of an app image with another version in its app description, checksum and appended SHA-256 made right")
    .argument("<image>", "an ESP-IDF app image (build/<project>.bin)")
    .argument("<version>", `the new version (${APP_VERSION_RULE}), what devices will report`)
    .requiredOption("-o, --out <file>", "the copy to write (never overwritten)")
    .action((file: string, version: string, opts: { out: string }) => {
      let data: Buffer;
      try {
        if (fs.statSync(file).size > MAX_IMAGE_FILE) throw new UsageError(`${file} is too large to be an app image`);
        data = fs.readFileSync(file);
      } catch (e) {
        if (e instanceof CliError) throw e;
        throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      let r: ReturnType<typeof withAppVersion>;
      try {
        r = withAppVersion(data, version);
      } catch (e) {
        if (e instanceof AppVersionError) throw new UsageError(e.message);
        if (e instanceof ImageError) throw new CliError(`${file} is not a valid app image: ${e.message}`, EXIT.failure);
        throw e;
      }
      const target = path.resolve(opts.out);
      try {
        fs.writeFileSync(target, r.image, { flag: "wx", mode: 0o644 });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EEXIST") throw new UsageError(`${target} already exists; choose another --out`);
        throw new CliError(`cannot write ${target}: ${code ?? String(e)}`, EXIT.failure);
      }
      if (r.droppedBytes > 0) process.stderr.write(`ota: the ${r.droppedBytes} bytes after the image (a signature) were left out: sign the copy again (ota sign)\n`);
      process.stdout.write(`wrote ${target}: version ${version} (was ${r.previous}), ${r.image.length} bytes\n`);
    });
}
