// A warning about something that can come in a flood (connections dropped at the cap, handshakes that time out):
// the first occurrence is logged at once with its details (`count: 1`), and the ones that follow within an
// interval are only counted and logged as one line with the same message when it ends (`count: n, seconds`), so a
// flood costs one line per interval, not one per connection.
import type { Logger } from "pino";

export class ThrottledWarning {
  private suppressed = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly fields: Record<string, unknown> = {},
    private readonly intervalMs = 10_000,
  ) {}

  /** One occurrence, with what is known about it (logged only when it is the first of an interval). */
  note(details: Record<string, unknown>): void {
    if (this.timer) {
      this.suppressed++;
      return;
    }
    this.log.warn({ ...this.fields, ...details, count: 1 }, this.msg);
    this.startInterval();
  }

  /** Stops the interval; occurrences not yet logged are logged now. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.logSuppressed();
  }

  private startInterval(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      // A flood that goes on keeps to one line per interval.
      if (this.logSuppressed()) this.startInterval();
    }, this.intervalMs);
    this.timer.unref();
  }

  private logSuppressed(): boolean {
    if (this.suppressed === 0) return false;
    this.log.warn({ ...this.fields, count: this.suppressed, seconds: this.intervalMs / 1000 }, this.msg);
    this.suppressed = 0;
    return true;
  }
}
