// `ota upload`: streams an image to the server as multipart/form-data with a progress bar on stderr (a live
// bar on a terminal; a line at every quarter otherwise, so logs show progress too).
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import cliProgress from "cli-progress";
import type { ApiClient } from "./api-client";
import type { UploadAnswer } from "./api-types";
import { CliError, EXIT } from "./errors";

const CHUNK = 16 * 1024;

export async function uploadImage(api: ApiClient, file: string, name: string | undefined, out: NodeJS.WriteStream = process.stderr): Promise<UploadAnswer> {
  // The path is the operator's own choice, so a link they name is followed. Only a regular file is opened (a
  // device is never touched), the open descriptor is checked again, and exactly the size it had then is sent.
  let fd: fs.promises.FileHandle | null = null;
  let size: number;
  try {
    if (!(await fs.promises.stat(file)).isFile()) throw new CliError(`${file} is not a file`, EXIT.usage);
    fd = await fs.promises.open(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    const st = await fd.stat();
    if (!st.isFile()) throw new CliError(`${file} is not a file`, EXIT.usage);
    size = st.size;
  } catch (e) {
    await fd?.close();
    if (e instanceof CliError) throw e;
    throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, EXIT.usage);
  }
  const fh = fd;
  const boundary = `----ota${randomBytes(12).toString("hex")}`;
  const filename = path.basename(file).replace(/["\r\n]/g, "_");
  const head = Buffer.from(
    (name ? `--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n${name}\r\n` : "") +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);

  const tty = Boolean(out.isTTY);
  const bar = new cliProgress.SingleBar(
    {
      stream: out,
      format: `uploading ${filename} [{bar}] {percentage}% | {value}/{total} bytes | {speed} KiB/s`,
      noTTYOutput: true,
      notTTYSchedule: 60_000, // off a terminal: one line per quarter (below), not per timer tick
      hideCursor: tty,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let sent = 0;
  let quarter = 0;
  const tick = () => {
    const speed = Math.round(sent / 1024 / Math.max(0.001, (Date.now() - started) / 1000));
    bar.update(sent, { speed });
    if (!tty && sent * 4 >= (quarter + 1) * size && sent < size) {
      quarter = Math.floor((sent * 4) / size);
      bar.render();
    }
  };

  async function* body() {
    yield head;
    const buf = Buffer.alloc(CHUNK);
    while (sent < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - sent), sent);
      if (bytesRead === 0) break;
      sent += bytesRead;
      yield Buffer.from(buf.subarray(0, bytesRead));
      tick();
    }
    // Never more than the size it had when opened; one byte past it tells a file that grew.
    const grew = (await fh.read(buf, 0, 1, size)).bytesRead > 0;
    if (sent !== size || grew) throw new CliError(`${file} changed size while it was being uploaded`, EXIT.failure);
    yield tail;
  }

  bar.start(size, 0, { speed: 0 });
  try {
    const r = await api.stream<UploadAnswer>("/firmware", `multipart/form-data; boundary=${boundary}`, head.length + size + tail.length, Readable.from(body()));
    bar.update(size);
    return r;
  } finally {
    bar.stop();
    await fh.close();
  }
}
