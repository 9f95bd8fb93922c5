// Credit-based flow control: one window type per direction, used alike for a stream and for a whole connection.
import { WIRE_LIMITS } from './frames.js';

/** What we may still send: the peer's grants minus what we sent. */
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
 * What the peer may still send us, and the consumed bytes we have not granted back yet. Grants are batched: credit
 * goes back once a quarter of the window was consumed, so a stream of small reads does not cost a frame each.
 */
export class RecvWindow {
  private credit: number;
  private owed = 0;

  constructor(readonly size: number) {
    this.credit = size;
  }

  /** Counts `n` received bytes; false when they overran the credit (the peer broke the protocol). */
  receive(n: number): boolean {
    this.credit -= n;
    return this.credit >= 0;
  }

  /** `n` received bytes were consumed: returns the increment to grant the peer now, or 0 to wait for more. */
  release(n: number): number {
    this.owed += n;
    if (this.owed < this.size / 4) return 0;
    const increment = this.owed;
    this.owed = 0;
    this.credit += increment;
    return increment;
  }
}
