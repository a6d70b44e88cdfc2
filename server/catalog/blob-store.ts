// Content-addressed storage: every accepted image is kept as blobs/<sha256>.bin, written once, read-only.
// What is served under a hash is therefore always exactly the bytes that hash names, whatever later
// happens to the file an operator dropped into firmware/.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export class BlobStore {
  readonly dir: string;

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, "blobs");
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  path(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256.slice(0, 80)}`);
    return path.join(this.dir, `${sha256}.bin`);
  }

  /** Stores bytes under their hash (durably: fsync, rename, fsync of the folder). */
  async put(sha256: string, data: Buffer): Promise<void> {
    const file = this.path(sha256);
    try {
      const st = await fs.promises.stat(file);
      if (st.size === data.length) return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const tmp = path.join(this.dir, `.tmp-${randomBytes(6).toString("hex")}`);
    const fh = await fs.promises.open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.chmod(tmp, 0o400);
    await fs.promises.rename(tmp, file);
    const dh = await fs.promises.open(this.dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  /** Reads a blob back and checks it still hashes to its name; null when missing or damaged. */
  async readVerified(sha256: string): Promise<Buffer | null> {
    let data: Buffer;
    try {
      data = await fs.promises.readFile(this.path(sha256));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    return createHash("sha256").update(data).digest("hex") === sha256 ? data : null;
  }

  /** Removes temp files left by a crash mid-write. */
  async sweep(): Promise<void> {
    for (const f of await fs.promises.readdir(this.dir)) {
      if (f.startsWith(".tmp-")) await fs.promises.rm(path.join(this.dir, f), { force: true });
    }
  }
}
