// Failed secrets (client tokens, bearer tokens, Basic credentials) per visitor address: counted, and slowed down.
import { addressGroup } from './access.js';

/** Failures an address may make in a row before it has to wait. */
export const AUTH_FAILURE_BURST = 10;
/** One more attempt is allowed every this many ms: at most 10 guesses a minute, and an owner waits at most this. */
export const AUTH_FAILURE_REFILL_MS = 6000;
/** Addresses remembered at once; the oldest entry goes first, so a spray of addresses cannot exhaust memory. */
const MAX_TRACKED_ADDRESSES = 10_000;

/** What a failing secret was presented for: logs and metrics label failures with it. */
export type AuthKind = 'client_token' | 'observer_token' | 'basic_auth';

interface Bucket {
  tokens: number;
  at: number;
  /** A refusal was already logged since the last failure. */
  reported: boolean;
}

/**
 * A token bucket per address for failed attempts only: an address gets AUTH_FAILURE_BURST free failures, then one
 * per AUTH_FAILURE_REFILL_MS. While its bucket is empty every attempt from it is refused before the secret is even
 * checked (a right guess must look the same as a wrong one). Successes cost nothing. IPv6 addresses are grouped by
 * /64, what one host usually holds, so rotating addresses inside it does not buy more guesses.
 */
export class AuthFailures {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Milliseconds this address must wait before its next attempt is even looked at; 0 when it may try now. */
  blockedFor(address: string): number {
    const bucket = this.refill(addressGroup(address));
    if (!bucket || bucket.tokens >= 1) return 0;
    return Math.ceil((1 - bucket.tokens) * AUTH_FAILURE_REFILL_MS);
  }

  /** Records a failed attempt from this address. */
  failed(address: string): void {
    const key = addressGroup(address);
    const bucket = this.refill(key) ?? { tokens: AUTH_FAILURE_BURST, at: this.now(), reported: false };
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    bucket.reported = false;
    // Re-inserted so the Map's order is least recently failed first: that is the order eviction goes in.
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    if (this.buckets.size > MAX_TRACKED_ADDRESSES) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }

  /** True the first time it is asked after this address's latest failure: log one refusal per wait, not each. */
  firstRefusal(address: string): boolean {
    const bucket = this.buckets.get(addressGroup(address));
    if (!bucket || bucket.reported) return false;
    bucket.reported = true;
    return true;
  }

  /** Addresses with failures not yet forgiven (for tests and the status page). */
  get tracked(): number {
    return this.buckets.size;
  }

  /** The bucket after refilling it for the time that passed; a full one is forgotten. */
  private refill(key: string): Bucket | undefined {
    const bucket = this.buckets.get(key);
    if (!bucket) return undefined;
    const now = this.now();
    bucket.tokens = Math.min(AUTH_FAILURE_BURST, bucket.tokens + (now - bucket.at) / AUTH_FAILURE_REFILL_MS);
    bucket.at = now;
    if (bucket.tokens >= AUTH_FAILURE_BURST) {
      this.buckets.delete(key);
      return undefined;
    }
    return bucket;
  }
}

/** What the throttle tells the relay's log and metrics. */
export interface ThrottleReports {
  /** A wrong secret came from `address` (for tunnel `name`'s Basic auth, when set). */
  authFailed(kind: AuthKind, address: string, name?: string): void;
  /** `address` is turned away for the first time since its latest failure and must wait `waitMs`. */
  throttled(address: string, waitMs: number): void;
}

/** AuthFailures as the relay's secret checks use it: every failure reported, and one refusal per wait. */
export class SecretThrottle {
  constructor(
    private readonly failures: AuthFailures,
    private readonly reports: ThrottleReports,
  ) {}

  /** Ms `address` must wait before a secret it presents is even looked at, or 0. */
  waitMs(address: string): number {
    const waitMs = this.failures.blockedFor(address);
    if (waitMs > 0 && this.failures.firstRefusal(address)) this.reports.throttled(address, waitMs);
    return waitMs;
  }

  /** A wrong secret from `address`: counted towards its throttle, and reported. */
  failed(kind: AuthKind, address: string, name?: string): void {
    this.failures.failed(address);
    this.reports.authFailed(kind, address, name);
  }
}
