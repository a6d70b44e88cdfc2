// Publishing a file so that what was acknowledged survives a crash or a power cut: the bytes go to a temporary
// file beside the target, which is fsynced, then renamed over the target (readers see the old file or the whole
// new one, never a part), then the folder is fsynced, because the rename itself is only an entry in the folder
// and is lost with it otherwise. write-file-atomic does the first three steps but never fsyncs the folder, so
// the rename (and with it the file) can still vanish after it resolved; hence this small helper, used for every
// file the server publishes.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/** Temporary files start with this: the folder watcher ignores dot-files and BlobStore.sweep removes them. */
export const TEMP_PREFIX = ".tmp-";

export interface DurableWriteOptions {
  /** Permission bits of a new file (the process umask still applies), as for fs.writeFile. */
  mode?: number;
  /**
   * Never replace an existing file: the publish fails with EEXIST instead (by a hard link, so the folder must
   * support links; the data folder does).
   */
  exclusive?: boolean;
}

/** fsync of a folder, so the entries just created or renamed in it are on disk. */
async function fsyncDir(dir: string): Promise<void> {
  const dh = await fs.promises.open(dir, fs.constants.O_RDONLY | (fs.constants.O_DIRECTORY ?? 0));
  try {
    await dh.sync();
  } catch (e) {
    // Some file systems cannot fsync a folder at all (EINVAL); there is nothing more to do there.
    if (!["EINVAL", "ENOTSUP", "EISDIR"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
  } finally {
    await dh.close();
  }
}

/** Writes `data` to `file` durably and atomically; resolves only once the file and its folder entry are on disk. */
export async function writeFileDurably(file: string, data: string | Uint8Array, opts: DurableWriteOptions = {}): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
  // "wx": a fresh file of our own, never an existing file or a link someone left at that name.
  const fh = await fs.promises.open(tmp, "wx", opts.mode ?? 0o666);
  let published = false;
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (opts.exclusive) {
      await fs.promises.link(tmp, file);
    } else {
      await fs.promises.rename(tmp, file);
      published = true;
    }
  } finally {
    if (!published) await fs.promises.rm(tmp, { force: true });
  }
  await fsyncDir(dir);
}
