// Delivering a tunnel's kept requests through its live connection: in arrival order, one at a time, 2xx-acknowledged.
import { ErrorCode, ResetCode, type GgrokError } from '../protocol/errors.js';
import { BodyKind, type HeaderList, type ResponseFrame } from '../protocol/frames.js';
import type { Stream, StreamHandler } from '../protocol/stream.js';
import type { Deliverer, Inbox, StoredRequest } from './inbox.js';
import { INBOX_ID_HEADER, INBOX_RECEIVED_HEADER } from '../protocol/headers.js';
import type { RelayEvent } from './log.js';
import type { Tunnel } from './tunnel.js';

/** A delivery the local service has not answered within this long counts as a failed attempt. */
export const INBOX_DELIVERY_TIMEOUT_MS = 30_000;
/** Body bytes queued on the stream per write: the stream's own queue and windows bound what waits. */
const WRITE_SLICE_BYTES = 64 * 1024;

/** What delivery is told and reads. */
export interface CourierOptions {
  retryMs: number;
  maxAttempts: number;
  log: (event: RelayEvent) => void;
}

/** Where a courier is: idle (nothing queued), sending one request, or pausing before the next attempt. */
type CourierState = 'idle' | 'sending' | 'pausing' | 'stopped';

/**
 * Delivers one name's inbox through one live tunnel. A request counts as delivered when the local service answers
 * 2xx; otherwise it is tried again after 1, 2, 4 … × retryMs, and after maxAttempts it is kept as failed. Later
 * requests wait for it: the order is the order of arrival. The tunnel's connection closing stops the courier without
 * counting an attempt (the next connection's courier starts over).
 */
export class Courier implements Deliverer {
  private state: CourierState = 'idle';
  private timer: NodeJS.Timeout | undefined;
  private current: Delivery | undefined;

  constructor(
    private readonly inbox: Inbox,
    readonly tunnel: Tunnel,
    private readonly options: CourierOptions,
  ) {}

  poke(): void {
    if (this.state !== 'idle') return;
    const next = this.inbox.next(this.tunnel.name, this.tunnel.owner);
    if (!next) return;
    this.state = 'sending';
    this.current = new Delivery(this.tunnel, next, (outcome) => this.settled(next, outcome));
  }

  stop(): void {
    this.state = 'stopped';
    clearTimeout(this.timer);
    this.current?.cancel();
    this.current = undefined;
  }

  private settled(r: StoredRequest, outcome: Outcome): void {
    this.current = undefined;
    if (this.state === 'stopped') return;
    const log = this.options.log;
    if (outcome.kind === 'delivered') {
      log({ event: 'inbox_delivered', name: r.name, id: r.id, status: outcome.status, attempts: r.attempts });
      this.inbox.remove(r);
      this.state = 'idle';
      return this.poke();
    }
    if (outcome.kind === 'gone') {
      // The connection went: not the local service's fault, and not an attempt.
      this.state = 'stopped';
      return;
    }
    r.attempts++;
    if (r.attempts >= this.options.maxAttempts) {
      log({ event: 'inbox_failed', name: r.name, id: r.id, why: outcome.why, attempts: r.attempts });
      this.inbox.failed(r, outcome.why);
      this.state = 'idle';
      return this.poke();
    }
    this.inbox.attempted(r, outcome.why);
    this.state = 'pausing';
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        if (this.state !== 'pausing') return;
        this.state = 'idle';
        this.poke();
      },
      this.options.retryMs * 2 ** (r.attempts - 1),
    );
  }
}

/** How one attempt ended. */
type Outcome = { kind: 'delivered'; status: number } | { kind: 'failed'; why: string } | { kind: 'gone' };

/** One attempt: the kept request as a stream on the tunnel, its answer read (and discarded) to the end. */
class Delivery implements StreamHandler {
  private readonly stream: Stream;
  private offset = 0;
  private done = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    tunnel: Tunnel,
    private readonly r: StoredRequest,
    private readonly settle: (outcome: Outcome) => void,
  ) {
    const headers: HeaderList = [
      ...r.headers,
      INBOX_ID_HEADER,
      r.id,
      INBOX_RECEIVED_HEADER,
      new Date(r.receivedAt).toISOString(),
    ];
    this.timer = setTimeout(() => {
      this.stream.reset(ResetCode.Cancel, 'inbox delivery timed out');
      this.finish({ kind: 'failed', why: `no answer within ${INBOX_DELIVERY_TIMEOUT_MS / 1000} s` });
    }, INBOX_DELIVERY_TIMEOUT_MS);
    this.timer.unref();
    this.stream = tunnel.session.openStream(
      {
        tunnel: tunnel.index,
        method: r.method,
        target: r.target,
        headers,
        body: r.body,
        upgrade: false,
      },
      this,
    );
    tunnel.countIn(r.data.length);
    if (r.body !== BodyKind.None) this.drain();
  }

  /** The connection went away under it, or the courier stopped: no outcome is reported. */
  cancel(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.stream.reset(ResetCode.Cancel, 'inbox delivery stopped');
  }

  response(head: ResponseFrame): void {
    // Counted on the head: the local service has the request. Its body is read only to free the stream.
    if (head.status >= 200 && head.status <= 299) this.finish({ kind: 'delivered', status: head.status });
    else this.finish({ kind: 'failed', why: `local service answered ${head.status}` });
  }

  data(chunk: Buffer): void {
    this.stream.ack(chunk.length);
  }

  end(): void {}

  reset(err: GgrokError): void {
    this.finish(
      err.code === ErrorCode.TunnelClosed
        ? { kind: 'gone' }
        : { kind: 'failed', why: `${err.code}${err.message ? `: ${err.message}` : ''}` },
    );
  }

  /** Writes the body in slices at the pace the stream takes them, then ends it. */
  drain(): void {
    const data = this.r.data;
    if (this.offset === Infinity) return;
    while (this.offset < data.length) {
      const slice = data.subarray(this.offset, this.offset + WRITE_SLICE_BYTES);
      this.offset += slice.length;
      if (!this.stream.write(slice)) return;
    }
    this.offset = Infinity; // ended once
    this.stream.end();
  }

  private finish(outcome: Outcome): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.settle(outcome);
  }
}
