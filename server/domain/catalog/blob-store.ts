// Content-addressed storage: every accepted image is kept as blobs/<sha256>.bin, written once, read-only.
// What is served under a hash is therefore always exactly the bytes that hash names, whatever later
// happens to the file an operator dropped into firmware/.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { TEMP_PREFIX, writeFileDurably } from "../../infra/store/durable-file";

/** Images kept in memory for downloads (most recently stored or read first). */
const DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024;

export class BlobStore {
  readonly dir: string;
  /**
   * Verified bytes by hash, so downloads never touch the disk: every blob passes through put() or
   * readVerified() with bytes whose hash was just checked, and a hash always names the same bytes.
   */
  private readonly memory = new Map<string, Buffer>();
  private memoryBytes = 0;

  constructor(
    dataDir: string,
    private readonly memoryLimit = DEFAULT_MEMORY_LIMIT,
  ) {
    this.dir = path.join(dataDir, "blobs");
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** The blob's bytes if held in memory (a download then needs no disk read). */
  cached(sha256: string): Buffer | undefined {
    return this.memory.get(sha256);
  }

  private remember(sha256: string, data: Buffer): void {
    if (this.memory.has(sha256) || data.length > this.memoryLimit) return;
    this.memory.set(sha256, data);
    this.memoryBytes += data.length;
    for (const [k, v] of this.memory) {
      if (this.memoryBytes <= this.memoryLimit) break;
      this.memory.delete(k); // the oldest first: Map keeps insertion order
      this.memoryBytes -= v.length;
    }
  }

  path(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256.slice(0, 80)}`);
    return path.join(this.dir, `${sha256}.bin`);
  }

  /** Stores bytes under their hash (durably: fsync, rename, fsync of the folder). */
  async put(sha256: string, data: Buffer): Promise<void> {
    const file = this.path(sha256);
    this.remember(sha256, data);
    try {
      const st = await fs.promises.stat(file);
      if (st.size === data.length) return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    await writeFileDurably(file, data, { mode: 0o400 });
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
    if (createHash("sha256").update(data).digest("hex") !== sha256) return null;
    this.remember(sha256, data);
    return data;
  }

  /**
   * Removes temp files left by a crash mid-write: all of them, or (when other processes share the folder and may
   * be writing one now) those last written longer ago than `olderThanMs`.
   */
  async sweep(olderThanMs = 0): Promise<void> {
    const before = Date.now() - olderThanMs;
    for (const f of await fs.promises.readdir(this.dir)) {
      if (!f.startsWith(TEMP_PREFIX)) continue;
      const file = path.join(this.dir, f);
      if (olderThanMs > 0) {
        const st = await fs.promises.lstat(file).catch(() => null);
        if (!st || st.mtimeMs > before) continue;
      }
      await fs.promises.rm(file, { force: true });
    }
  }
}
