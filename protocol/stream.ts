// One exchange (an HTTP request/response or an upgraded raw channel) multiplexed on a session.
import type { Readable, Writable } from 'node:stream';
import { GgrokError, ResetCode } from './errors.js';
import { FrameType, type HeaderList, type InfoFrame, type ResponseFrame } from './frames.js';

/** What a stream needs from its session; implemented by Session so the two files stay decoupled. */
export interface StreamHost {
  readonly maxData: number;
  streamWrote(stream: TunnelStream): void;
  streamEnded(stream: TunnelStream, trailers: HeaderList): void;
  streamReset(stream: TunnelStream, code: string, message: string): void;
  streamAcked(stream: TunnelStream, bytes: number): void;
  sendHead(stream: TunnelStream, head: ResponseFrame | InfoFrame): void;
}

/**
 * A bidirectional stream with credit-based flow control.
 * Outbound: write()/end()/reset(); write() returns false when the caller should pause until onDrain.
 * Inbound: the owner sets the on* handlers and calls ack(n) once it has passed n received bytes on,
 * which is what lets the peer send more.
 */
export class TunnelStream {
  // Inbound handlers, set by whoever owns the stream.
  onResponse: (head: ResponseFrame) => void = () => {};
  onInfo: (head: InfoFrame) => void = () => {};
  onData: (chunk: Buffer) => void = () => {};
  onEnd: (trailers: HeaderList) => void = () => {};
  onReset: (err: GgrokError) => void = () => {};
  onDrain: () => void = () => {};

  /** Bytes of send credit left on this stream. */
  sendCredit: number;
  /** Bytes the peer may still send before we grant more. */
  recvCredit: number;
  /** Queued outbound chunks not yet framed; bounded by OUT_HIGH_WATER through write()'s return value. */
  readonly outQueue: Buffer[] = [];
  outBytes = 0;
  /** Set when write() returned false; onDrain fires when the queue drains below the mark. */
  needDrain = false;
  /** end() was called; End is sent once outQueue is empty. */
  endPending = false;
  endTrailers: HeaderList = [];
  localEnded = false;
  remoteEnded = false;
  closed = false;
  /** In the session's ready queue. */
  queued = false;
  /** Received bytes handed to onData and not acked yet. */
  recvBuffered = 0;
  /** Consumed bytes whose stream credit has not been returned yet (batched). */
  recvUnacked = 0;
  /** Received bytes whose connection credit is returned only when consumed (see Session). */
  connOwed = 0;
  /** Response head received (relay side) or sent (client side). */
  headDone = false;
  /** Client side: the Response head waiting in the session's queue; body and End may still join it. */
  pendingHead: ResponseFrame | undefined;
  /** Set by pipeStreamInto: writes out data it holds for a full sink, so the owner's end comes after it. */
  flushHeld: (() => void) | undefined;
  /** Last time data moved either way (ms since epoch), for idle timeouts. */
  lastActivityAt = Date.now();

  constructor(
    readonly id: number,
    private readonly host: StreamHost,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendCredit = sendWindow;
    this.recvCredit = recvWindow;
  }

  /** Queues bytes for the peer. Returns false when the caller should wait for onDrain. */
  write(chunk: Buffer): boolean {
    // A closed stream drops data but never asks the source to pause: a paused source would never resume.
    if (this.closed || this.endPending || chunk.length === 0) return true;
    this.outQueue.push(chunk);
    this.outBytes += chunk.length;
    this.host.streamWrote(this);
    if (this.outBytes >= this.host.maxData) this.needDrain = true;
    return !this.needDrain;
  }

  /** Ends our side after all queued data, with optional trailers. */
  end(trailers: HeaderList = []): void {
    if (this.closed || this.endPending) return;
    this.endPending = true;
    this.endTrailers = trailers;
    this.host.streamEnded(this, trailers);
  }

  /** Abandons the stream in both directions and tells the peer why. */
  reset(code: string = ResetCode.Cancel, message = ''): void {
    if (this.closed) return;
    this.host.streamReset(this, code, message);
  }

  /** Sends the final response head (client side). */
  sendResponse(status: number, reason: string, headers: HeaderList): void {
    if (this.closed || this.headDone) return;
    this.headDone = true;
    this.host.sendHead(this, { type: FrameType.Response, id: this.id, status, reason, headers });
  }

  /** Sends an informational 1xx head (client side). */
  sendInfo(status: number, reason: string, headers: HeaderList): void {
    if (this.closed || this.headDone) return;
    this.host.sendHead(this, { type: FrameType.Info, id: this.id, status, reason, headers });
  }

  /** Reports that `bytes` received bytes were passed on, so the peer may send that much more. */
  ack(bytes: number): void {
    if (bytes > 0 && !this.closed) this.host.streamAcked(this, bytes);
  }
}

/**
 * Sends everything a readable produces into the stream, pausing it while the stream is full.
 * `onEnd` supplies trailers once the readable ended (e.g. IncomingMessage.rawTrailers).
 * A readable that closes without ending resets the stream with `abortCode`.
 */
export function pipeIntoStream(
  source: Readable,
  stream: TunnelStream,
  options: { trailers?: () => HeaderList; abortCode?: string; abortMessage?: () => string } = {},
): void {
  let ended = false;
  stream.onDrain = () => source.resume();
  source.on('data', (chunk: Buffer) => {
    if (!stream.write(chunk)) source.pause();
  });
  source.on('end', () => {
    ended = true;
    stream.end(options.trailers?.() ?? []);
  });
  source.on('error', () => {}); // 'close' below decides; the error itself is reported by the owner.
  source.on('close', () => {
    if (!ended) stream.reset(options.abortCode ?? ResetCode.Cancel, options.abortMessage?.() ?? '');
  });
}

/** Held chunks smaller than this are copied together into shared buffers instead of kept one by one. */
const HOLD_COPY_MAX_BYTES = 16 * 1024;
const HOLD_BUFFER_BYTES = 64 * 1024;

/**
 * Chunks waiting for a full sink, merged into a few buffers: flow control counts bytes, so a peer sending
 * one-byte chunks must not turn a window of bytes into a million queued objects.
 */
export class ChunkHolder {
  private readonly held: Buffer[] = [];
  private acc: Buffer | undefined;
  private accUsed = 0;

  get empty(): boolean {
    return this.held.length === 0 && this.accUsed === 0;
  }

  add(chunk: Buffer): void {
    if (chunk.length >= HOLD_COPY_MAX_BYTES) {
      this.closeAcc();
      this.held.push(chunk);
      return;
    }
    if (!this.acc || this.accUsed + chunk.length > this.acc.length) {
      this.closeAcc();
      this.acc = Buffer.allocUnsafe(HOLD_BUFFER_BYTES);
    }
    chunk.copy(this.acc, this.accUsed);
    this.accUsed += chunk.length;
  }

  /** Everything held, in order, as few buffers; the holder is empty afterwards. */
  take(): Buffer[] {
    this.closeAcc();
    return this.held.splice(0);
  }

  private closeAcc(): void {
    if (this.acc && this.accUsed > 0) this.held.push(this.acc.subarray(0, this.accUsed));
    this.acc = undefined;
    this.accUsed = 0;
  }
}

/**
 * Writes everything the stream receives into a writable, acknowledging bytes as the writable
 * accepts them, so the peer never has more in flight than the stream window. While the writable is full,
 * arriving chunks wait in a ChunkHolder.
 * Ending and resets are left to the caller (they differ for responses, requests and sockets).
 */
export function pipeStreamInto(stream: TunnelStream, sink: Writable): void {
  let pending = 0; // bytes handed to the sink (or held) and not acknowledged yet
  let waiting = false;
  let held: ChunkHolder | undefined; // made when first needed: most responses never wait
  // Before the stream's end reaches the owner (who then ends the sink), everything held goes into the sink.
  stream.flushHeld = () => {
    if (held) for (const chunk of held.take()) sink.write(chunk);
  };
  const onDrain = (): void => {
    waiting = false;
    let ok = true;
    if (held) for (const chunk of held.take()) ok = sink.write(chunk);
    if (!ok) {
      waiting = true;
      sink.once('drain', onDrain);
      return;
    }
    stream.ack(pending);
    pending = 0;
  };
  stream.onData = (chunk) => {
    pending += chunk.length;
    if (waiting) return (held ??= new ChunkHolder()).add(chunk);
    if (sink.write(chunk)) {
      stream.ack(pending);
      pending = 0;
    } else {
      waiting = true;
      sink.once('drain', onDrain);
    }
  };
}
