// Reads a file that someone else put in a folder we watch, trusting nothing about it: a symbolic link is not
// followed (it may point at the master key, at /etc/passwd or at /dev/zero), nothing but a regular file is opened
// (opening a FIFO blocks, opening a device can act on it), the type is checked again on the open descriptor
// (the name may have been swapped in between), and at most one byte more than the caller's limit is read,
// whatever size the file claims (procfs files claim 0 bytes and some never end).
import fs from "node:fs";

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = fs.constants;
const OPEN_FLAGS = O_RDONLY | (O_NOFOLLOW ?? 0) | (O_NONBLOCK ?? 0) | (O_NOCTTY ?? 0);

export type RegularFileRead =
  | { kind: "missing" }
  /** A symbolic link, whatever it points at (nothing about the target is looked at). */
  | { kind: "link"; mtimeMs: number }
  /** A directory, FIFO, socket or device. */
  | { kind: "not_a_file"; mtimeMs: number }
  /** Larger than the limit: not read at all. */
  | { kind: "too_large"; stat: fs.Stats }
  /**
   * The bytes read, from the same descriptor as `stat`: at most stat.size + 1 (≤ limit + 1). A length other than
   * stat.size means the file changed while it was read, or is not what it claims.
   */
  | { kind: "read"; stat: fs.Stats; data: Buffer };

export async function readRegularFile(file: string, limit: number): Promise<RegularFileRead> {
  let lst: fs.Stats;
  try {
    lst = await fs.promises.lstat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { kind: "missing" };
    throw e;
  }
  if (lst.isSymbolicLink()) return { kind: "link", mtimeMs: lst.mtimeMs };
  if (!lst.isFile()) return { kind: "not_a_file", mtimeMs: lst.mtimeMs };

  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, OPEN_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { kind: "missing" };
    // O_NOFOLLOW on a link: ELOOP (Linux, macOS), EMLINK (FreeBSD).
    if (code === "ELOOP" || code === "EMLINK") return { kind: "link", mtimeMs: lst.mtimeMs };
    throw e;
  }
  try {
    const stat = await fh.stat();
    if (!stat.isFile()) return { kind: "not_a_file", mtimeMs: stat.mtimeMs };
    if (stat.size > limit) return { kind: "too_large", stat };
    const buf = Buffer.alloc(stat.size + 1);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { kind: "read", stat, data: buf.subarray(0, got) };
  } finally {
    await fh.close();
  }
}
