// A stream joined to Node streams: a sink that acknowledges bytes as the writable takes them, and a pump from a
// readable that pauses it while the stream is full. The owner calls these from its own handler; nothing is patched.
import type { Duplex, Readable, Writable } from 'node:stream';
import { ResetCode } from './errors.js';
import type { HeaderList } from './frames.js';
import type { Stream } from './stream.js';

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
 * Writes what a stream receives into a writable, acknowledging bytes as the writable accepts them, so the peer never
 * has more in flight than the stream window. While the writable is full, arriving chunks wait in a ChunkHolder.
 * The owner feeds it from its handler's data() and calls flush() before ending the writable.
 */
export class StreamSink {
  /** Bytes handed to the sink (or held) and not acknowledged yet. */
  private pending = 0;
  private waiting = false;
  /** Made when first needed: most responses never wait. */
  private held: ChunkHolder | undefined;

  constructor(
    private readonly stream: Stream,
    private readonly sink: Writable,
  ) {}

  /** Passes one received chunk on (or holds it while the writable is full). */
  write(chunk: Buffer): void {
    this.pending += chunk.length;
    if (this.waiting) return (this.held ??= new ChunkHolder()).add(chunk);
    if (this.sink.write(chunk)) this.acknowledge();
    else {
      this.waiting = true;
      this.sink.once('drain', this.onDrain);
    }
  }

  /** Writes out whatever is held (bounded by the window), so that the owner's end of the writable comes after it. */
  flush(): void {
    if (this.held) for (const chunk of this.held.take()) this.sink.write(chunk);
  }

  private readonly onDrain = (): void => {
    this.waiting = false;
    let ok = true;
    if (this.held) for (const chunk of this.held.take()) ok = this.sink.write(chunk);
    if (!ok) {
      this.waiting = true;
      this.sink.once('drain', this.onDrain);
      return;
    }
    this.acknowledge();
  };

  private acknowledge(): void {
    this.stream.ack(this.pending);
    this.pending = 0;
  }
}

/**
 * Sends everything a readable produces into the stream, pausing the readable while the stream is full; the owner's
 * handler resumes it on drain(). `trailers` supplies trailers once the readable ended (e.g. rawTrailers). A readable
 * that closes without ending resets the stream with `abortCode`.
 */
export function pump(
  source: Readable,
  stream: Stream,
  options: {
    trailers?: () => HeaderList;
    abortCode?: string;
    abortMessage?: () => string;
    /** Sees each chunk the stream still takes (metering, the inspector). */
    tap?: (chunk: Buffer) => void;
  } = {},
): void {
  let ended = false;
  const tap = options.tap;
  source.on('data', (chunk: Buffer) => {
    if (tap && !stream.closed) tap(chunk);
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

/**
 * Destroys a socket with a TCP RST where Node can (a plain TCP socket), so the peer sees an error rather than
 * a clean end. A TLS socket cannot be reset (`resetAndDestroy` throws ERR_INVALID_HANDLE_TYPE on its handle):
 * it is destroyed without a close_notify, which TLS peers also report as a truncation.
 */
export function resetSocket(socket: Duplex): void {
  const tcp = socket as Duplex & { resetAndDestroy?: () => void };
  if (typeof tcp.resetAndDestroy === 'function') {
    try {
      tcp.resetAndDestroy();
      return;
    } catch {
      // not a TCP handle: fall through
    }
  }
  socket.destroy();
}
