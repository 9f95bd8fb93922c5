// Credit-based flow control: one window type per direction, used alike for a stream and for a whole connection.
// Receive windows tune themselves to the path (see RecvWindow); the wire only ever sees ordinary Window grants.
import { WIRE_LIMITS } from './frames.js';

const MiB = 1024 * 1024;

/**
 * How far receive windows may grow. A window starts at the size announced in the handshake and doubles, at most once
 * per round trip, while the peer sends at least half a window per round trip and our consumer keeps up; it halves, at
 * most once per round trip, while our consumer falls behind. It never goes below the announced size.
 */
export const WINDOW_AUTOTUNE = {
  /**
   * Largest window of one stream on any path (a stalled consumer pins at most what the window was when it stalled).
   * On a shorter path the cap is lower: see PATH_BYTES_PER_MS.
   */
  STREAM_MAX_BYTES: 16 * MiB,
  /** Largest window of a whole connection. */
  CONN_MAX_BYTES: 32 * MiB,
  /**
   * Below this round trip (the smallest seen: a busy machine stretches the others) windows never grow: the announced
   * 1 MiB already carries ≥ 256 MiB/s, more than a tunnel moves on one core, and a window grown on loopback only
   * raises what a visitor that stalls later pins.
   */
  MIN_RTT_MS: 4,
  /**
   * Windows grow only as far as a path this fast needs over the smallest round trip seen (its bandwidth-delay
   * product, rounded up to a doubling of the announced window): 8 MiB at 50 ms, 16 MiB from 100 ms on. More than one
   * tunnel moves on this class of machine, and it keeps what a visitor that stalls after a fast start pins on a
   * 50 ms path at 8 MiB (bench/RESULTS-delay.md).
   */
  PATH_BYTES_PER_MS: (128 * MiB) / 1000,
} as const;

/** The round trip as a session measures it (heartbeat pings), read by every receive window of the session. */
export interface PathRtt {
  /** The latest round trip, in ms (-1 before the first). */
  readonly rttMs: number;
  /** The smallest round trip seen, in ms (-1 before the first): the path itself, without queues or busy CPUs. */
  readonly minRttMs: number;
}

/** A path whose round trip is unknown: windows stay fixed. */
const NO_RTT: PathRtt = { rttMs: -1, minRttMs: -1 };

/** What we may send: the peer's grants minus what we sent. */
export class SendWindow {
  constructor(private credit: number) {}

  /** Bytes we may send now (≤ 0: wait for a grant). */
  get available(): number {
    return this.credit;
  }

  /** Counts `n` bytes as sent. */
  spend(n: number): void {
    this.credit -= n;
  }

  /** Adds the peer's grant; false when it pushes the credit past 2^31 − 1 (the peer broke the protocol). */
  grant(n: number): boolean {
    this.credit += n;
    return this.credit <= WIRE_LIMITS.MAX_WINDOW_BYTES;
  }
}

/**
 * What the peer may still send us (`credit`), and what we received and did not release yet (`pending`). The window
 * is `size` = credit + pending + consumed bytes not granted back yet. Grants are batched: credit goes back once a
 * quarter of the window is free, so a stream of small reads does not cost a frame each.
 *
 * Autotuning (when `max` > the initial size and a round trip is known), in epochs of one round trip:
 * - grow: the consumer released at least half the window per round trip (over the last one), arriving data never
 *   found over a quarter of it still unconsumed, and the consumer took half the window (at least the announced one)
 *   since the size last changed. The sender is then window-bound (like TCP receive autotuning): double the size, up
 *   to the path's cap (PATH_BYTES_PER_MS), and the extra goes out as credit at once. The extra credit takes a round
 *   trip to come back as data, so a window doubles about every second round trip.
 * - shrink: arriving data found more than half the window still unconsumed in the last round trip. Halve the size
 *   (not below the initial one); nothing is granted until credit + pending fit the new size. Credit already granted
 *   is never taken back, so a consumer that stalls pins at most the window it had when it stalled.
 */
export class RecvWindow {
  private credit: number;
  private pending = 0;
  private windowSize: number;
  /** Bytes released in the current epoch, the largest backlog arriving data found in it, and its start (-1: none). */
  private delivered = 0;
  private peakPending = 0;
  /** Bytes released since the window last changed size. */
  private deliveredAtSize = 0;
  private epochStart = -1;
  private grows = 0;
  private shrinks = 0;

  constructor(
    readonly initial: number,
    readonly max: number = initial,
    private readonly path: PathRtt = NO_RTT,
  ) {
    this.windowSize = initial;
    this.credit = initial;
  }

  /** The window now: what the peer may have in flight plus what we hold. */
  get size(): number {
    return this.windowSize;
  }

  /** Times the window grew and shrank (for tests and stats). */
  get changes(): { grows: number; shrinks: number } {
    return { grows: this.grows, shrinks: this.shrinks };
  }

  /** Counts `n` received bytes; false when they overran the credit (the peer broke the protocol). */
  receive(n: number, now = 0): boolean {
    // The backlog this data finds, not counting itself: a consumer that keeps up has taken everything before it,
    // whatever the size of frames relative to the window.
    if (this.pending > this.peakPending) this.peakPending = this.pending;
    this.credit -= n;
    this.pending += n;
    this.tune(now);
    return this.credit >= 0;
  }

  /**
   * `n` received bytes were consumed (`now`, in ms, and the path's round trip drive autotuning): returns the increment
   * to grant the peer now, or 0 to wait for more.
   */
  release(n: number, now = 0): number {
    this.pending -= n;
    this.delivered += n;
    this.deliveredAtSize += n;
    this.tune(now);
    const room = this.windowSize - this.credit - this.pending;
    if (room < this.windowSize / 4) return 0;
    this.credit += room;
    return room;
  }

  private tune(now: number): void {
    const rttMs = this.path.rttMs;
    if (this.max <= this.initial || rttMs < 0) return;
    if (this.epochStart < 0) return this.newEpoch(now);
    const elapsed = now - this.epochStart;
    if (elapsed < Math.max(rttMs, 1)) return;
    // What the peer delivered per round trip: the bandwidth-delay product the window is (or is not) holding back.
    const perRtt = (this.delivered * rttMs) / elapsed;
    // The peak, not the moment: a slow consumer acknowledges in bursts and looks empty right after each one.
    const size = this.windowSize;
    if (this.peakPending > size / 2 && size > this.initial) {
      this.windowSize = Math.max(this.initial, Math.floor(size / 2));
      this.deliveredAtSize = 0;
      this.shrinks++;
    } else if (
      this.path.minRttMs >= WINDOW_AUTOTUNE.MIN_RTT_MS &&
      size < this.cap() &&
      perRtt >= size / 2 &&
      this.deliveredAtSize >= Math.max(size / 2, this.initial) &&
      this.peakPending <= size / 4
    ) {
      this.windowSize = Math.min(this.cap(), size * 2);
      this.deliveredAtSize = 0;
      this.grows++;
    }
    this.newEpoch(now);
  }

  /** The largest this window grows on this path: max, or less when the round trip is short (see PATH_BYTES_PER_MS). */
  private cap(): number {
    const bdp = WINDOW_AUTOTUNE.PATH_BYTES_PER_MS * this.path.minRttMs;
    let cap = this.initial;
    while (cap < bdp && cap < this.max) cap *= 2;
    return Math.min(cap, this.max);
  }

  private newEpoch(now: number): void {
    this.epochStart = now;
    this.delivered = 0;
    this.peakPending = 0; // seen again by the next arrival, if the backlog is still there
  }
}
