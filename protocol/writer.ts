// The one writer of a control socket: control frames first, then Data round-robin within the windows, small frames
// batched per turn, large ones sent as two fragments without a copy, and every queue the peer can fill bounded.
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type WebSocket from 'ws';
import { encodeBatch, encodeDataHeader, encodeDataParts, encodeFrame } from './codec.js';
import { SendWindow } from './flow.js';
import { FrameType, type Frame, type ResponseFrame } from './frames.js';
import type { Stream } from './stream.js';

/** Bytes queued in the WebSocket (ours and the socket's) above which the writer waits for a flush. */
const WS_HIGH_WATER_BYTES = 256 * 1024;
/** Frames at least this large are sent at once, as their own message, instead of joining the turn's batch. */
export const BATCH_MAX_FRAME_BYTES = 16 * 1024;
/** A batch this large leaves at once instead of waiting for the end of the turn. */
const BATCH_MAX_BYTES = 64 * 1024;
/**
 * A batch also closes after this many frames. With one batch per turn, a busy turn moved every request through the
 * tunnel as one convoy: the peer sat idle while this side worked through the whole turn, then the reverse. Smaller
 * batches let the peer start on the first requests while this side is still reading the rest.
 */
const BATCH_MAX_FRAMES = 8;
/**
 * Encoded control frames (request heads, resets, window updates, …) that may wait unsent because the peer stopped
 * reading its socket. Past it the session is closed (CloseCode.Overloaded): a peer that keeps talking but never
 * reads must not make us queue replies without bound. Legitimate backlogs are far smaller: control frames leave
 * before any data, and what a peer can trigger is bounded by its streams and windows (Pongs are coalesced).
 */
export const MAX_CONTROL_BACKLOG_BYTES = 16 * 1024 * 1024;

/** What the writer tells its session. */
export interface WriterHost {
  /** The session is closed: nothing more is sent. */
  readonly closed: boolean;
  /** A stream's End left (on its own, or on its Response head). */
  localEnded(stream: Stream): void;
  /** The writer ran out of credit with data still queued: a stream's window, or the whole connection's. */
  stalled(scope: 'stream' | 'connection'): void;
  /** The peer let more than MAX_CONTROL_BACKLOG_BYTES of control frames pile up unread. */
  overloaded(): void;
}

/** A FIFO with O(1) push and shift, for the control and ready queues. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

/**
 * The TCP socket under a WebSocket, to cork around the two writes of a fragmented message, or undefined. ws keeps it
 * in a private field; over TLS it is left alone (ws internals there are not to be relied on), and without the field
 * (another ws version) nothing is corked: the two fragments then simply leave as two writes.
 */
function plainSocketOf(ws: WebSocket): Socket | undefined {
  const socket = (ws as unknown as { _socket?: unknown })._socket;
  return socket instanceof Socket && !(socket instanceof TLSSocket) ? socket : undefined;
}

/** Sends every frame of one session. */
export class Writer {
  /** Payload bytes of Data frames sent; times the writer waited for credit. */
  readonly stats = { dataBytesOut: 0, streamStalls: 0, connStalls: 0 };
  /** The connection's send window. */
  readonly window: SendWindow;
  /** Encoded control frames, and streams whose Response head is still to be encoded. */
  private readonly control = new Fifo<Buffer | Stream>();
  /** Bytes of the encoded frames waiting in `control`. */
  private controlBytes = 0;
  /** Nonce of the Pong owed to the peer, if any: however many Pings arrive meanwhile, one Pong (the latest) leaves. */
  private pongDue: number | undefined;
  private readonly ready = new Fifo<Stream>();
  private flushScheduled = false;
  /** Small frames of this turn, sent as one Batch message at its end or after 8 frames (see send()). */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private batchScheduled = false;
  private awaitingDrain = false;
  /** The connection window ran out with data queued, and no grant has arrived since (a stall counted once). */
  private connStalled = false;
  /** The plain TCP socket under the WebSocket, corked around the two fragments of a large Data frame. */
  private readonly socket: Socket | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly host: WriterHost,
    /** Largest Data payload the peer accepts. */
    private readonly maxData: number,
    connWindow: number,
  ) {
    this.window = new SendWindow(connWindow);
    this.socket = plainSocketOf(ws);
  }

  // ---- what the session queues ----

  /** Queues a control frame. */
  frame(frame: Frame): void {
    if (this.host.closed) return;
    this.encoded(encodeFrame(frame));
  }

  /** Queues an encoded control frame; a peer that lets too many pile up unread loses the session. */
  encoded(frame: Buffer): void {
    this.controlBytes += frame.length;
    this.control.push(frame);
    if (this.controlBytes > MAX_CONTROL_BACKLOG_BYTES) return this.host.overloaded();
    this.scheduleFlush();
  }

  /** Owes the peer a Pong for this Ping (replacing any Pong still owed). */
  pong(nonce: number): void {
    this.pongDue = nonce;
    this.scheduleFlush();
  }

  /** Queues a stream's Response head, encoded when it leaves so that a small body and End can ride along. */
  head(stream: Stream): void {
    this.control.push(stream);
    this.scheduleFlush();
  }

  /** Bytes were queued on a stream: it joins the ready queue if it has credit. */
  wrote(stream: Stream): void {
    const out = stream.out;
    if (!out.scheduled && stream.sendWindow.available > 0) this.enqueueReady(stream);
    // Data queued on an empty queue with no credit left: the writer must wait (counted once per stall).
    else if (stream.sendWindow.available <= 0 && out.chunks.length === 1) this.stalled('stream');
    if (this.window.available <= 0 && !this.connStalled) this.stalled('connection');
    this.scheduleFlush();
  }

  /** end() was called on a stream: its End leaves now if nothing is queued before it. */
  ended(stream: Stream): void {
    if (stream.out.bytes === 0) this.sendEnd(stream);
  }

  /** The peer granted the connection more credit; false on overflow. */
  connectionGranted(increment: number): boolean {
    this.connStalled = false;
    if (!this.window.grant(increment)) return false;
    this.scheduleFlush();
    return true;
  }

  /** The peer granted a stream more credit (already added to its window). */
  streamGranted(stream: Stream): void {
    if (stream.out.bytes > 0 && !stream.out.scheduled) this.enqueueReady(stream);
    this.scheduleFlush();
  }

  /** Sends everything that can leave now, including this turn's batch (before a close). */
  flushNow(): void {
    this.flush();
    this.sendBatch();
  }

  // ---- the loop ----

  private enqueueReady(stream: Stream): void {
    stream.out.scheduled = true;
    this.ready.push(stream);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.host.closed) return;
    this.flushScheduled = true;
    queueMicrotask(this.flush);
  }

  /** Sends the Pong owed and control frames first, then one Data frame per ready stream in turn, while there is room. */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    while (!this.host.closed && !this.awaitingDrain) {
      if (this.pongDue !== undefined) {
        const nonce = this.pongDue;
        this.pongDue = undefined;
        this.send(encodeFrame({ type: FrameType.Pong, nonce }));
        continue;
      }
      const control = this.control.shift();
      if (Buffer.isBuffer(control)) this.controlBytes -= control.length;
      const item = control ?? this.nextDataFrame();
      if (!item) return;
      if (Array.isArray(item)) this.sendFragments(item[0], item[1]);
      else this.send(Buffer.isBuffer(item) ? item : this.encodeHead(item));
    }
  };

  private nextDataFrame(): Buffer | [Buffer, Buffer] | undefined {
    while (this.window.available > 0) {
      const stream = this.ready.shift();
      if (!stream) return undefined;
      stream.out.scheduled = false;
      if (stream.closed || stream.out.bytes === 0 || stream.sendWindow.available <= 0) continue;
      return this.takeData(stream);
    }
    return undefined;
  }

  /**
   * Cuts one Data frame off the stream's queue within both windows. Several small queued chunks are joined into one
   * frame: a frame per tiny chunk would cost both ends far more than the bytes (flow control counts bytes only).
   */
  private takeData(stream: Stream): Buffer | [Buffer, Buffer] {
    const out = stream.out;
    const queue = out.chunks;
    const limit = this.sendLimit(stream);
    const head = queue[0]!;
    const parts: Buffer[] = [];
    let n: number;
    if (head.length >= limit || head.length >= BATCH_MAX_FRAME_BYTES || queue.length === 1) {
      // The common case: one chunk (bulk chunks always go alone, so they are copied once, in the encoder).
      n = Math.min(head.length, limit);
      parts.push(n === head.length ? head : head.subarray(0, n));
      if (n === head.length) queue.shift();
      else queue[0] = head.subarray(n);
    } else {
      n = 0;
      let whole = 0; // small chunks taken entirely
      while (whole < queue.length && n < limit && queue[whole]!.length < BATCH_MAX_FRAME_BYTES) {
        const next = queue[whole]!;
        const take = Math.min(next.length, limit - n);
        n += take;
        if (take < next.length) {
          parts.push(next.subarray(0, take));
          queue[whole] = next.subarray(take);
          break;
        }
        parts.push(next);
        whole++;
      }
      queue.splice(0, whole);
    }
    this.charge(stream, n);
    // A large payload of one piece is sent as it is, after its header (two fragments of one message): no copy.
    const frame: Buffer | [Buffer, Buffer] =
      parts.length === 1 && n >= BATCH_MAX_FRAME_BYTES
        ? [encodeDataHeader(stream.id, n), parts[0]!]
        : encodeDataParts(stream.id, parts, n);
    if (this.window.available <= 0 && !this.connStalled && (out.bytes > 0 || this.ready.length > 0))
      this.stalled('connection');
    if (out.bytes > 0) {
      if (stream.sendWindow.available > 0) this.enqueueReady(stream);
      else this.stalled('stream');
    } else if (out.endTrailers !== undefined) {
      this.sendEnd(stream);
    }
    if (out.full && out.bytes < this.maxData) stream.deliverDrain();
    return frame;
  }

  /**
   * Encodes a stream's Response head. A small body already queued behind it (within both windows) and an End
   * without trailers join the same frame: a small response is then one frame instead of three.
   */
  private encodeHead(stream: Stream): Buffer {
    const head = stream.pendingHead!;
    stream.pendingHead = undefined;
    const out = stream.out;
    const n = out.bytes;
    if (n > 0 && !stream.closed && n < BATCH_MAX_FRAME_BYTES && n <= this.sendLimit(stream)) {
      head.body = out.chunks.length === 1 ? out.chunks[0]! : Buffer.concat(out.chunks, n);
      out.chunks.length = 0;
      this.charge(stream, n);
      if (out.endTrailers !== undefined) this.sendEnd(stream, head);
      if (out.full) stream.deliverDrain();
    }
    return encodeFrame(head);
  }

  /** The most payload a stream may send now: within a Data frame and both windows. */
  private sendLimit(stream: Stream): number {
    return Math.min(this.maxData, stream.sendWindow.available, this.window.available);
  }

  /** Counts `n` payload bytes of `stream` as sent: off its queue's total and both windows. */
  private charge(stream: Stream, n: number): void {
    stream.out.bytes -= n;
    stream.sendWindow.spend(n);
    this.window.spend(n);
    this.stats.dataBytesOut += n;
    stream.lastActivityAt = Date.now();
  }

  private stalled(scope: 'stream' | 'connection'): void {
    if (scope === 'stream') this.stats.streamStalls++;
    else {
      this.connStalled = true;
      this.stats.connStalls++;
    }
    this.host.stalled(scope);
  }

  /** Ends our side of the stream: on its Response head if that has not left yet (no trailers), else as End. */
  private sendEnd(stream: Stream, head: ResponseFrame | undefined = stream.pendingHead): void {
    if (stream.local === 'ended' || stream.closed) return;
    const trailers = stream.out.endTrailers ?? [];
    if (head && trailers.length === 0) head.end = true;
    else this.frame({ type: FrameType.End, id: stream.id, trailers });
    this.host.localEnded(stream);
  }

  // ---- the socket ----

  /**
   * Small frames wait for the end of this turn of the event loop, or until 8 have gathered, and leave together as
   * one Batch message (one WebSocket frame, one system call): a request's Response, Data and End, and the frames
   * of every other stream that moved in the same turn. A large frame has nothing to gain from waiting and would stall
   * bulk transfers, so it goes at once, after the batch queued before it.
   */
  private send(frame: Buffer): void {
    if (frame.length >= BATCH_MAX_FRAME_BYTES) {
      this.sendBatch();
      return this.write(frame);
    }
    this.batch.push(frame);
    this.batchBytes += frame.length;
    if (
      this.batchBytes >= BATCH_MAX_BYTES ||
      this.batch.length >= BATCH_MAX_FRAMES ||
      this.ws.bufferedAmount + this.batchBytes >= WS_HIGH_WATER_BYTES
    )
      this.sendBatch();
    else if (!this.batchScheduled) {
      this.batchScheduled = true;
      setImmediate(this.endOfTurn);
    }
  }

  private readonly endOfTurn = (): void => {
    this.batchScheduled = false;
    if (!this.host.closed) this.sendBatch();
  };

  private sendBatch(): void {
    const n = this.batch.length;
    if (n === 0) return;
    const message = n === 1 ? this.batch[0]! : encodeBatch(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    this.write(message);
  }

  /** Sends a large Data frame as two fragments of one WebSocket message: its header, then its payload untouched. */
  private sendFragments(header: Buffer, payload: Buffer): void {
    this.sendBatch();
    // Both fragments in one write: on its own, the few bytes of the header cost a system call and a wake-up of the
    // peer per Data frame (corked: about a sixth less client CPU per downloaded byte, and downloads about 8 % faster).
    this.socket?.cork();
    try {
      this.ws.send(header, { binary: true, fin: false });
      this.write(payload); // the last fragment: ws sends it as the message's continuation
    } finally {
      this.socket?.uncork(); // never leave the control socket corked
    }
  }

  /** Sends one message; the one that fills the socket asks for a completion callback, which is our 'drain'. */
  private write(message: Buffer): void {
    if (this.ws.bufferedAmount + message.length >= WS_HIGH_WATER_BYTES) {
      this.awaitingDrain = true;
      this.ws.send(message, { binary: true }, this.onDrained);
    } else {
      this.ws.send(message, { binary: true });
    }
  }

  private readonly onDrained = (err?: Error): void => {
    this.awaitingDrain = false;
    if (!err) this.flush();
  };
}
