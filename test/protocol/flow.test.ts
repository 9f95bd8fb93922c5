// Receive windows on an injected clock: batching as before, growth only while the peer is window-bound and the
// consumer keeps up (and only on round trips worth it), shrinking for a slow consumer, memory bounded by the window.
import { describe, expect, it } from 'vitest';
import { RecvWindow, WINDOW_AUTOTUNE } from '../../protocol/flow.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const FRAME = 128 * KiB;
/** A path whose round trip is `ms`, as a session would have measured it. */
const rtt = (ms: number): { rttMs: number; minRttMs: number } => ({ rttMs: ms, minRttMs: ms });

/**
 * A peer that sends as fast as its credit allows (up to `linkPerMs` bytes a millisecond) to a receiver whose
 * consumer takes up to `consumePerMs` a millisecond; grants reach the peer `rttMs` after they are made. Checks on
 * every step that what the peer may send (grants on the way included) plus what the receiver holds never exceeds the
 * largest window so far.
 */
class Path {
  peerCredit: number;
  held = 0;
  now = 0;
  /** The most the receiver was exposed to (peer credit + grants in flight + held) since the last reset. */
  maxExposure = 0;
  private maxSize: number;
  private readonly grants: { at: number; n: number }[] = [];

  constructor(
    readonly w: RecvWindow,
    readonly rttMs: number,
  ) {
    this.peerCredit = w.size;
    this.maxSize = w.size;
  }

  get exposure(): number {
    return this.peerCredit + this.grants.reduce((a, g) => a + g.n, 0) + this.held;
  }

  run(ms: number, linkPerMs: number, consumePerMs: number): this {
    this.maxExposure = 0;
    for (const end = this.now + ms; this.now < end; this.now++) {
      while (this.grants.length > 0 && this.grants[0]!.at <= this.now)
        this.peerCredit += this.grants.shift()!.n;
      // Frame by frame, the consumer taking each as it comes while its budget for this millisecond lasts.
      let budget = Math.min(linkPerMs, this.peerCredit);
      let appetite = consumePerMs;
      do {
        const n = Math.min(FRAME, budget);
        if (n > 0) {
          expect(this.w.receive(n, this.now)).toBe(true);
          this.peerCredit -= n;
          budget -= n;
          this.held += n;
        }
        const take = Math.min(this.held, appetite);
        if (take > 0) {
          this.held -= take;
          appetite -= take;
          const increment = this.w.release(take, this.now);
          if (increment > 0) this.grants.push({ at: this.now + this.rttMs, n: increment });
        }
      } while (budget > 0);
      this.maxSize = Math.max(this.maxSize, this.w.size);
      this.maxExposure = Math.max(this.maxExposure, this.exposure);
      expect(this.exposure).toBeLessThanOrEqual(this.maxSize);
    }
    return this;
  }
}

describe('RecvWindow', () => {
  it('without a round trip (or a max) it is the fixed window of before: a grant per quarter consumed', () => {
    const w = new RecvWindow(MiB, 16 * MiB); // no round trip known: fixed
    expect(w.receive(MiB)).toBe(true);
    expect(w.receive(1)).toBe(false); // one byte beyond the credit: the peer broke the protocol
    const w2 = new RecvWindow(MiB);
    w2.receive(MiB);
    expect(w2.release(MiB / 4 - 1)).toBe(0);
    expect(w2.release(1)).toBe(MiB / 4);
    expect(w2.size).toBe(MiB);
  });

  it('grows by doubling, up to its max, while the peer is window-bound and the consumer keeps up', () => {
    const w = new RecvWindow(MiB, WINDOW_AUTOTUNE.STREAM_MAX_BYTES, rtt(200));
    // 200 ms round trip, a 1 GB/s link, a consumer as fast: only the window holds the sender back.
    const r = new Path(w, 200).run(6000, MiB, MiB);
    expect(w.size).toBe(WINDOW_AUTOTUNE.STREAM_MAX_BYTES);
    expect(w.changes).toEqual({ grows: Math.log2(WINDOW_AUTOTUNE.STREAM_MAX_BYTES / MiB), shrinks: 0 });
    expect(r.maxExposure).toBeLessThanOrEqual(WINDOW_AUTOTUNE.STREAM_MAX_BYTES);
  });

  it('grows only as far as the path needs: 8 MiB at 50 ms, the 16 MiB maximum from 100 ms on', () => {
    for (const [ms, cap] of [
      [10, 2 * MiB],
      [50, 8 * MiB],
      [100, 16 * MiB],
      [200, 16 * MiB],
    ] as const) {
      const w = new RecvWindow(MiB, WINDOW_AUTOTUNE.STREAM_MAX_BYTES, rtt(ms));
      new Path(w, ms).run(40 * ms, MiB, MiB);
      expect([ms, w.size]).toEqual([ms, cap]);
    }
  });

  it('does not grow on a short round trip, where the announced window already carries more than a tunnel moves', () => {
    const w = new RecvWindow(MiB, 16 * MiB, rtt(WINDOW_AUTOTUNE.MIN_RTT_MS - 1));
    new Path(w, WINDOW_AUTOTUNE.MIN_RTT_MS - 1).run(2000, MiB, MiB);
    expect(w.size).toBe(MiB);
  });

  it('does not grow on loopback whose round trips a busy machine stretches: the smallest one counts', () => {
    const w = new RecvWindow(MiB, 16 * MiB, { rttMs: 30, minRttMs: 1 });
    new Path(w, 30).run(2000, MiB, MiB);
    expect(w.size).toBe(MiB);
  });

  it('does not grow when the consumer, not the window, is what limits', () => {
    const w = new RecvWindow(MiB, 16 * MiB, rtt(50));
    // 10 MiB/s consumer on a 1 GB/s link: the window stays full of unconsumed bytes.
    new Path(w, 50).run(3000, MiB, 10 * KiB);
    expect(w.size).toBe(MiB);
    expect(w.changes.grows).toBe(0);
  });

  it('shrinks back to the announced size when the consumer slows down, and grants nothing beyond it', () => {
    const w = new RecvWindow(MiB, 16 * MiB, rtt(200));
    const path = new Path(w, 200).run(6000, MiB, MiB);
    expect(w.size).toBe(16 * MiB);
    // Now 1 MiB/s: the window halves once per round trip down to 1 MiB.
    const slow = path.run(30_000, MiB, KiB);
    expect(w.size).toBe(MiB);
    expect(w.changes.shrinks).toBe(4);
    // Credit granted before the slow-down is never taken back, so the peak is the grown window; after that, the
    // peer's credit plus what waits is back within the announced window.
    expect(slow.maxExposure).toBeLessThanOrEqual(16 * MiB);
    expect(slow.exposure).toBeLessThanOrEqual(MiB);
  });

  it('a consumer that stalls pins at most the window it had when it stalled', () => {
    const w = new RecvWindow(MiB, 16 * MiB, rtt(50));
    // Grow to 4 MiB, then stall.
    const path = new Path(w, 50);
    for (let i = 0; i < 5000 && w.size < 4 * MiB; i++) path.run(1, MiB, MiB);
    expect(w.size).toBe(4 * MiB);
    const sizeAtStall = w.size;
    const stalled = path.run(2000, MiB, 0);
    expect(stalled.held).toBeLessThanOrEqual(sizeAtStall);
    expect(stalled.maxExposure).toBeLessThanOrEqual(sizeAtStall);
  });
});
