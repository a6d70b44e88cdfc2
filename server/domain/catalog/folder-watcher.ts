// Watches the firmware folder. A .bin is read only once it has stopped changing (chokidar's write-finish
// wait, then a second stat around the read); a file that still parses as truncated shortly after its last
// write is "incomplete", not refused, and is checked again. Symbolic links and anything but a regular file
// are refused without being followed or read, and a file is never read past the OTA slot size. Nothing here
// is fatal, at start or later: a bad file is logged and listed for operators, and the watcher carries on.
import fs from "node:fs";
import path from "node:path";
import chokidar, { type FSWatcher } from "chokidar";
import type { Logger } from "pino";
import { readRegularFile } from "../../infra/store/regular-file";
import { FIRMWARE_NAME_RE, FIRMWARE_NAME_RULE, tooLarge, type RejectCode } from "./analyze";
import type { Catalog } from "./catalog";

/** How long a file whose indexing failed (an I/O error, say) waits before it is tried again. */
const RETRY_MS = 5000;

export interface WatcherOptions {
  settleMs: number;
  incompleteGraceMs: number;
}

export class FolderWatcher {
  private watcher: FSWatcher | null = null;
  private readonly queue = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private draining: Promise<void> | null = null;
  private stopped = false;

  constructor(
    readonly dir: string,
    private readonly catalog: Catalog,
    private readonly opts: WatcherOptions,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.stopped = false;
    fs.mkdirSync(this.dir, { recursive: true });
    const present = (await fs.promises.readdir(this.dir)).filter((n) => this.isCandidate(n));
    this.log.info({ dir: this.dir, files: present.length }, "indexing firmware folder");
    let done = 0;
    for (const name of present) {
      await this.processOrRetry(name);
      done++;
      if (present.length >= 10 && done % 10 === 0) this.log.info({ done, total: present.length }, "indexing firmware folder");
    }
    const onDisk = new Set(present);
    for (const f of this.catalog.allFiles()) {
      if (f.status !== "removed" && !onDisk.has(f.name)) await this.catalog.markRemoved(f.name);
    }

    // The folder itself may be a link (to another disk, say): watch where it leads, since links inside it are not
    // followed.
    const watched = await fs.promises.realpath(this.dir);
    const watcher = chokidar.watch(watched, {
      ignoreInitial: true,
      depth: 0,
      ignored: (p: string) => p !== watched && path.basename(p).startsWith("."),
      // A link in the folder is reported as itself (and refused); chokidar must not watch or poll what it points at.
      followSymlinks: false,
      awaitWriteFinish: { stabilityThreshold: this.opts.settleMs, pollInterval: Math.max(20, Math.min(100, this.opts.settleMs / 4)) },
    });
    this.watcher = watcher;
    const onPath = (p: string) => {
      const name = path.basename(p);
      if (path.dirname(p) === watched && this.isCandidate(name)) this.schedule(name, 0);
    };
    watcher.on("add", onPath).on("change", onPath).on("unlink", onPath);
    watcher.on("error", (err) => this.log.error({ err }, "firmware folder watcher error"));
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
    // Stopped while starting (leadership lost at once): stop watching too.
    if (this.stopped) return watcher.close();
    // A file that arrived after the listing above but before the watcher was ready is in neither.
    for (const name of await fs.promises.readdir(this.dir)) if (this.isCandidate(name) && !onDisk.has(name)) this.schedule(name, 0);
    this.log.info({ dir: this.dir }, "watching firmware folder for new images");
  }

  private isCandidate(name: string): boolean {
    return !name.startsWith(".") && name.toLowerCase().endsWith(".bin");
  }

  schedule(name: string, delayMs: number): void {
    if (this.stopped) return;
    const t = this.timers.get(name);
    if (t) clearTimeout(t);
    this.timers.set(
      name,
      setTimeout(() => {
        this.timers.delete(name);
        this.queue.add(name);
        void this.drain();
      }, delayMs),
    );
  }

  private drain(): Promise<void> {
    if (this.draining) return this.draining;
    this.draining = (async () => {
      while (this.queue.size && !this.stopped) {
        const name = this.queue.values().next().value as string;
        this.queue.delete(name);
        await this.processOrRetry(name);
      }
    })().finally(() => {
      this.draining = null;
    });
    return this.draining;
  }

  /** Resolves when nothing is queued or being indexed (for tests and orderly shutdown). */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /** Indexes one file; a failure is logged and retried later, and never reaches the caller. */
  private async processOrRetry(name: string): Promise<void> {
    try {
      await this.process(name);
    } catch (err) {
      this.log.error({ err, file: name }, "could not index firmware file; will retry");
      this.schedule(name, RETRY_MS);
    }
  }

  private async process(name: string): Promise<void> {
    const file = path.join(this.dir, name);
    const max = this.catalog.maxImageSize;
    const r = await readRegularFile(file, max);
    if (r.kind === "missing") return this.catalog.markRemoved(name);
    // Links and special files: nothing about what they point at or hold is recorded (not even a size).
    const meta =
      r.kind === "link" || r.kind === "not_a_file"
        ? { size: 0, mtimeMs: r.mtimeMs, source: "folder" as const }
        : { size: r.stat.size, mtimeMs: r.stat.mtimeMs, source: "folder" as const };
    const reject = (code: RejectCode, reason: string) =>
      this.catalog.setFile({ name, status: "rejected", sha256: null, ...meta, reasonCode: code, reason, updatedAt: new Date().toISOString() });

    if (!FIRMWARE_NAME_RE.test(name)) {
      this.log.warn({ file: name }, "firmware file name not accepted; rename it");
      return reject("bad_name", `rename the file: names may use ${FIRMWARE_NAME_RULE}`);
    }
    if (r.kind === "link") {
      this.log.warn({ file: name }, "firmware file is a symbolic link; links are not followed");
      return reject("link", "a symbolic link: links in the firmware folder are not followed; copy the image itself into the folder");
    }
    if (r.kind === "not_a_file") {
      this.log.warn({ file: name }, "firmware file is not a regular file");
      return reject("not_a_file", "not a regular file (a folder, pipe, socket or device); copy the image itself into the folder");
    }
    if (r.kind === "too_large") {
      const t = tooLarge(r.stat.size, max);
      this.log.warn({ file: name, size: r.stat.size }, "firmware file too large for the OTA slots");
      return reject("too_large", t.ok ? "" : t.message);
    }
    const { stat: st, data } = r;
    const after = await fs.promises.lstat(file).catch(() => null);
    const unchanged = after?.isFile() && after.ino === st.ino && after.dev === st.dev && after.size === st.size && after.mtimeMs === st.mtimeMs;
    if (!unchanged) {
      // Still being written (or replaced): look again once it settles.
      return this.schedule(name, this.opts.settleMs);
    }
    if (data.length !== st.size) {
      // Same size and time before and after, yet not that many bytes: a file whose size means nothing (procfs and
      // the like). Never a copy of an image, and reading it again would give the same.
      this.log.warn({ file: name, size: st.size }, "firmware file does not hold the bytes its size says");
      return reject("not_a_file", "its size does not match its contents (not a file on an ordinary file system); copy the image itself into the folder");
    }
    const age = Date.now() - st.mtimeMs;
    const outcome = await this.catalog.ingest(name, data, { ...meta, mayBeIncomplete: age < this.opts.incompleteGraceMs });
    if (outcome.status === "incomplete") this.schedule(name, Math.max(50, this.opts.incompleteGraceMs - age + 50));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await this.watcher?.close();
    await this.idle();
  }
}
