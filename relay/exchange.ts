// One public request or upgrade as the relay follows it from arrival to its end: its tunnel, bytes and status.
import type { Meter } from './public-request.js';
import type { HostParts } from './routing.js';
import type { Tunnel } from './tunnel.js';

/** The status logged and counted for a visitor who left before any response head (nginx's convention). */
export const CLIENT_CLOSED_STATUS = 499;

/** One public request or upgrade, followed for metrics, Stats and the access log; also the Meter of its bytes. */
export class Exchange implements Meter {
  /** performance.now() at arrival. */
  readonly startedAt = performance.now();
  tunnel: Tunnel | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /** Status answered to an upgrade; 0 until known. */
  status = 0;

  constructor(
    readonly upgrade: boolean,
    /** The request's Host, parsed once when it was routed. */
    readonly at: HostParts,
  ) {}

  in(n: number): void {
    this.bytesIn += n;
    this.tunnel?.countIn(n);
  }

  out(n: number): void {
    this.bytesOut += n;
    this.tunnel?.countOut(n);
  }

  answered(code: number): void {
    this.status = code;
  }
}
