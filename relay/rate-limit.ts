// Token buckets for new requests: one per tunnel, and one per visitor address of a tunnel (both optional).

/** Visitor addresses tracked per tunnel at most: the least recently seen goes first. */
const MAX_TRACKED_VISITORS = 10_000;

/** A token bucket: `perSecond` sustained, bursts of `burst`. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  /** Takes one token; false when there is none left. */
  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket is full again (nothing to remember about its owner). */
  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 1000) * this.perSecond >= this.burst;
  }
}

/** One bucket per key (a visitor address), kept for recently active keys only. */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {}

  /** Takes one token from `key`'s bucket; false when it has none left. */
  take(key: string, now: number): boolean {
    let bucket = this.buckets.get(key);
    if (bucket) this.buckets.delete(key);
    else bucket = new TokenBucket(this.perSecond, this.burst, now);
    this.buckets.set(key, bucket); // most recently used last: eviction starts with the least recent
    if (this.buckets.size > MAX_TRACKED_VISITORS) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    return bucket.take(now);
  }
}

/** A tunnel's rates for new streams: per tunnel and per visitor address (0: that rate is off). */
export class StreamRates {
  private readonly bucket: TokenBucket | undefined;
  private readonly visitorBuckets: KeyedBuckets | undefined;

  constructor(rate: { perTunnel: number; perVisitor: number }, now: number) {
    if (rate.perTunnel > 0) this.bucket = new TokenBucket(rate.perTunnel, 2 * rate.perTunnel, now);
    if (rate.perVisitor > 0) this.visitorBuckets = new KeyedBuckets(rate.perVisitor, 2 * rate.perVisitor);
  }

  /** Which rate a new stream from `visitor` would exceed now, if any; otherwise it takes its tokens. */
  exceeded(visitor: string, now: number): 'visitor' | 'tunnel' | undefined {
    if (this.visitorBuckets && !this.visitorBuckets.take(visitor, now)) return 'visitor';
    if (this.bucket && !this.bucket.take(now)) return 'tunnel';
    return undefined;
  }
}
