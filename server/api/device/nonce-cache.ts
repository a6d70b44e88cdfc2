// Remembers (device, nonce) pairs for a while so a replayed manifest request is refused. The device makes
// a fresh random nonce per request, so it needs no clock; the server needs only bounded memory.
export class NonceCache {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly ttlMs = 10 * 60_000,
    private readonly max = 200_000,
  ) {}

  /** Returns false if this device already used this nonce within the TTL. */
  use(deviceId: string, nonce: string, now = Date.now()): boolean {
    const key = `${deviceId}\u0000${nonce}`;
    const until = this.seen.get(key);
    if (until !== undefined && until > now) return false;
    this.seen.set(key, now + this.ttlMs);
    if (this.seen.size > this.max) this.evict(now);
    return true;
  }

  private evict(now: number): void {
    // Insertion order is expiry order: drop expired entries, then the oldest until under the cap.
    for (const [k, until] of this.seen) {
      if (until > now && this.seen.size <= this.max * 0.9) break;
      this.seen.delete(k);
    }
  }

  get size(): number {
    return this.seen.size;
  }
}
