// Endpoint pools: one member's health (passive back-off, one-request probes, drain) and the least-outstanding pick.

/** Where a pool member is: taking requests, out for a back-off, carrying its one probe request, or leaving. */
export const MemberState = {
  Healthy: 'healthy',
  Out: 'out',
  Probing: 'probing',
  Draining: 'draining',
} as const;
export type MemberStateValue = (typeof MemberState)[keyof typeof MemberState];

/** The first back-off of a member that failed; it doubles while the member keeps failing. */
export const POOL_BACKOFF_MIN_MS = 1000;
/** The longest back-off. */
export const POOL_BACKOFF_MAX_MS = 30_000;
/** A probe that has not settled after this long (its visitor left, say) lets another request probe. */
const PROBE_TIMEOUT_MS = 10_000;

/**
 * One member's health as the relay sees it, from real traffic (local_unreachable answers) and from the client's own
 * checks (Health frames). A member out of the pool gets one request once its back-off is over: the probe.
 */
export class MemberHealth {
  private current: MemberStateValue = MemberState.Healthy;
  /** Failures in a row (the back-off doubles with each). */
  private failures = 0;
  /** While out: when the next probe may go. While probing: when the probe started. */
  private at = 0;
  /** The client's own check says the local service is down: no probe until it says it is up again. */
  private checkFailing = false;

  constructor(private readonly now: () => number = Date.now) {}

  get state(): MemberStateValue {
    return this.current;
  }

  /** Failures in a row since the member last served. */
  get failuresInARow(): number {
    return this.failures;
  }

  /** Whether a new request may go to this member now (healthy, or out with its back-off over: a probe). */
  available(): boolean {
    switch (this.current) {
      case MemberState.Healthy:
        return true;
      case MemberState.Out:
        return !this.checkFailing && this.now() >= this.at;
      case MemberState.Probing:
        return this.now() - this.at >= PROBE_TIMEOUT_MS;
      case MemberState.Draining:
        return false;
    }
  }

  /** A request was given to this member: when it is out, that request is its probe. */
  taken(): void {
    if (this.current === MemberState.Out || this.current === MemberState.Probing) {
      this.current = MemberState.Probing;
      this.at = this.now();
    }
  }

  /** The member answered (a response head came back): it is healthy again. */
  served(): void {
    this.failures = 0;
    if (this.current !== MemberState.Draining && !this.checkFailing) this.current = MemberState.Healthy;
  }

  /** The member could not serve (its local service was unreachable): out for a back-off that grows. */
  failed(): void {
    // Requests that were in flight when the service went away fail together: one outage, one step of back-off.
    if (this.current === MemberState.Draining || this.current === MemberState.Out) return;
    this.failures++;
    this.current = MemberState.Out;
    this.at = this.now() + Math.min(POOL_BACKOFF_MAX_MS, POOL_BACKOFF_MIN_MS * 2 ** (this.failures - 1));
  }

  /** The client's own check of its local service (Health frame). */
  reported(ok: boolean): void {
    if (this.current === MemberState.Draining) return;
    this.checkFailing = !ok;
    if (ok) this.served();
    else if (this.current !== MemberState.Out) this.failed();
  }

  /** The member is leaving (its client said GoAway): no new requests, those in flight finish. */
  drain(): void {
    this.current = MemberState.Draining;
  }
}

/** What the pick needs to know of a member. */
export interface Balanced {
  activeRequests: number;
  readonly health: MemberHealth;
}

/**
 * The member a new request goes to: the one with the fewest requests in flight among those available, ties broken
 * by position from `turn` (round-robin when the caller advances it). When none is available (all out or draining),
 * the least busy of the rest that is not draining, then of any: a pool never refuses while it has a member.
 * Members in `exclude` (those a request already failed on) are skipped.
 */
export function pickMember<T extends Balanced>(
  members: readonly T[],
  turn: number,
  exclude?: ReadonlySet<T>,
): T | undefined {
  const n = members.length;
  let best: T | undefined;
  let fallback: T | undefined;
  let last: T | undefined;
  for (let i = 0; i < n; i++) {
    const m = members[(turn + i) % n]!;
    if (exclude?.has(m)) continue;
    if (!last || m.activeRequests < last.activeRequests) last = m;
    if (m.health.state === MemberState.Draining) continue;
    if (!fallback || m.activeRequests < fallback.activeRequests) fallback = m;
    if (m.health.available() && (!best || m.activeRequests < best.activeRequests)) best = m;
  }
  const chosen = best ?? fallback ?? last;
  chosen?.health.taken();
  return chosen;
}
