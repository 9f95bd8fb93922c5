// One control WebSocket after the handshake: the single writer, flow control, heartbeats and routing by stream id.
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type WebSocket from 'ws';
import {
  dataFromFragments,
  decodeFrame,
  encodeBatch,
  encodeDataHeader,
  encodeDataParts,
  encodeFrame,
  FrameError,
  splitBatch,
} from './codec.js';
import { CloseCode, GgrokError, ResetCode } from './errors.js';
import {
  BodyKind,
  FrameType,
  WIRE_LIMITS,
  type FlowSettings,
  type Frame,
  type GoAwayFrame,
  type HeaderList,
  type InfoFrame,
  type RequestFrame,
  type ResponseFrame,
  type StatsFrame,
} from './frames.js';
import { TunnelStream, type StreamHost } from './stream.js';

/** Bytes queued in the WebSocket (ours and the socket's) above which the writer waits for a flush. */
const WS_HIGH_WATER_BYTES = 256 * 1024;
/** Frames at least this large are sent at once, as their own message, instead of joining the turn's batch. */
const BATCH_MAX_FRAME_BYTES = 16 * 1024;
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
/** Default: received-but-unconsumed bytes above which connection credit is returned only on consumption. */
const DEFAULT_BUFFERED_SOFT_LIMIT_BYTES = 8 * 1024 * 1024;

export interface SessionOptions {
  role: 'relay' | 'client';
  /** Limits we announced: what the peer may send us. */
  localFlow: FlowSettings;
  /** Limits the peer announced: what we may send. */
  remoteFlow: FlowSettings;
  /** How often to ping. */
  heartbeatMs: number;
  /** Close the session when nothing at all arrived for this long. */
  deadAfterMs: number;
  /** Reset a stream that moved no data either way for this long (0 or absent = never). */
  idleStreamMs?: number;
  /** Most concurrent streams the peer may open towards us (client side). */
  maxInboundStreams?: number;
  /**
   * Received bytes that may wait unconsumed (summed over streams) while connection credit is still
   * returned on receipt. Above it, a stalled stream holds its share of the connection window, which bounds
   * memory at this limit plus the connection window.
   */
  bufferedSoftLimit?: number;
  /** A new stream opened by the peer (client side: a public request). */
  onRequest?: (stream: TunnelStream, head: RequestFrame) => void;
  onGoAway?: (frame: GoAwayFrame) => void;
  /** Client side: the relay's traffic counters for one of this connection's tunnels. */
  onStats?: (frame: StatsFrame) => void;
  /** Our writer ran out of credit with data still queued: a stream's window, or the whole connection's. */
  onFlowStall?: (scope: 'stream' | 'connection') => void;
  /** The peer broke the protocol; `fatal` when the whole session is closed for it. */
  onProtocolError?: (err: GgrokError, fatal: boolean) => void;
  onClose?: (info: { code: number; reason: string }) => void;
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

/**
 * Multiplexes streams over one open, handshaken WebSocket. Owns the socket's only 'message' listener
 * and is the only code that sends on it.
 */
export class Session implements StreamHost {
  readonly streams = new Map<number, TunnelStream>();
  /** Round-trip time of the last heartbeat, in ms; -1 before the first pong. */
  rttMs = -1;
  closed = false;
  /** close() was called; inbound frames are ignored from now on. */
  closing = false;
  /** Counters for observability: payload bytes of Data frames each way; times our writer waited for credit. */
  readonly stats = { dataBytesIn: 0, dataBytesOut: 0, streamsOpened: 0, streamStalls: 0, connStalls: 0 };

  /** Encoded control frames, and streams whose Response head is still to be encoded. */
  private readonly control = new Fifo<Buffer | TunnelStream>();
  /** Bytes of the encoded frames waiting in `control`. */
  private controlBytes = 0;
  /** Nonce of the Pong owed to the peer, if any: however many Pings arrive meanwhile, one Pong (the latest) leaves. */
  private pongDue: number | undefined;
  private readonly ready = new Fifo<TunnelStream>();
  private sendCredit: number;
  private recvCredit: number;
  private connUnacked = 0;
  private inboundBuffered = 0;
  /** Highest stream id opened so far (by us on the relay, by the peer on the client). */
  private highestId = 0;
  private flushScheduled = false;
  /** Small frames of this turn, sent as one Batch message at its end or after 8 frames (see send()). */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private batchScheduled = false;
  private awaitingDrain = false;
  private lastReceivedAt = Date.now();
  private lastPingAt = 0;
  /** The connection window ran out with data queued, and no Window(0) has arrived since (a stall counted once). */
  private connStalled = false;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private readonly softLimit: number;
  /** The plain TCP socket under the WebSocket, corked around the two fragments of a large Data frame. */
  private readonly socket: Socket | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly opts: SessionOptions,
  ) {
    this.sendCredit = opts.remoteFlow.connWindow;
    this.recvCredit = opts.localFlow.connWindow;
    this.socket = plainSocketOf(ws);
    this.softLimit = opts.bufferedSoftLimit ?? DEFAULT_BUFFERED_SOFT_LIMIT_BYTES;
    // Messages arrive as their fragments, so a Data frame sent as header + payload is read without joining them.
    ws.binaryType = 'fragments';
    ws.on('message', (data: Buffer[] | Buffer, isBinary: boolean) => this.onFragments(data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => this.finalize(code, reason.toString()));
    ws.on('error', () => {}); // 'close' always follows; the close code tells the story.
    const tick = Math.max(50, Math.floor(opts.heartbeatMs / 4));
    this.heartbeatTimer = setInterval(() => this.heartbeat(), tick);
    this.heartbeatTimer.unref();
  }

  /** Largest Data payload we may send. */
  get maxData(): number {
    return this.opts.remoteFlow.maxData;
  }

  /** Relay side: opens a stream for a public request. Returns the stream; its id is assigned here. */
  openStream(head: Omit<RequestFrame, 'type' | 'id'>): TunnelStream {
    const id = ++this.highestId;
    const stream = this.createStream(id);
    // A request without a body has nothing to end: the Request frame itself implies End (saves a frame).
    if (!head.upgrade && head.body === BodyKind.None) stream.endPending = stream.localEnded = true;
    if (this.closed || this.closing) {
      // Too late: fail the stream the way every other stream of a closed session fails.
      this.dispose(stream);
      queueMicrotask(() => stream.onReset(new GgrokError(ResetCode.TunnelClosed, 'tunnel closed')));
      return stream;
    }
    // Fields spelled out: an object spread here costs more than the rest of the encode (V8, per request).
    this.pushControl(
      encodeFrame({
        type: FrameType.Request,
        id,
        method: head.method,
        target: head.target,
        headers: head.headers,
        body: head.body,
        upgrade: head.upgrade,
        tunnel: head.tunnel,
      }),
    );
    this.scheduleFlush();
    return stream;
  }

  /** Sends a GoAway frame (graceful shutdown notice). */
  goAway(code: string, message: string, reconnectAfterMs: number): void {
    this.sendControl({ type: FrameType.GoAway, code, message, reconnectAfterMs });
  }

  /** Relay side: sends a tunnel's traffic counters to the client. */
  sendStats(stats: Omit<StatsFrame, 'type'>): void {
    if (this.closing) return;
    this.sendControl({ type: FrameType.Stats, ...stats });
  }

  /** Sends a ping now; the pong updates rttMs. */
  ping(): void {
    this.lastPingAt = Date.now();
    this.sendControl({ type: FrameType.Ping, nonce: this.lastPingAt });
  }

  /** Closes the control socket after queued frames; every open stream is reset as tunnel_closed. */
  close(code: number = CloseCode.Normal, reason = ''): void {
    if (this.closed || this.closing) return;
    this.flush();
    this.sendBatch();
    this.closing = true;
    this.ws.close(code, reason.slice(0, 120));
    // A peer that never answers the close handshake must not hold us open.
    setTimeout(() => this.ws.terminate(), 5000).unref();
  }

  /** Drops the socket at once (dead peer). */
  terminate(): void {
    this.ws.terminate();
  }

  // ---- StreamHost: called by TunnelStream ----

  streamWrote(stream: TunnelStream): void {
    if (!stream.queued && stream.sendCredit > 0) this.enqueueReady(stream);
    // Data queued on an empty queue with no credit left: the writer must wait (counted once per stall).
    else if (stream.sendCredit <= 0 && stream.outQueue.length === 1) this.stalled('stream');
    if (this.sendCredit <= 0 && !this.connStalled) this.stalled('connection');
    this.scheduleFlush();
  }

  streamEnded(stream: TunnelStream, _trailers: HeaderList): void {
    if (stream.outBytes === 0) this.sendEnd(stream);
  }

  streamReset(stream: TunnelStream, code: string, message: string): void {
    this.sendControl({ type: FrameType.Reset, id: stream.id, code, message: message.slice(0, 1000) });
    this.dispose(stream);
  }

  streamAcked(stream: TunnelStream, bytes: number): void {
    const n = Math.min(bytes, stream.recvBuffered);
    stream.recvBuffered -= n;
    this.inboundBuffered -= n;
    const owed = Math.min(n, stream.connOwed);
    stream.connOwed -= owed;
    this.returnConnCredit(owed);
    if (stream.remoteEnded) return;
    stream.recvUnacked += n;
    if (stream.recvUnacked >= this.opts.localFlow.streamWindow / 4) {
      stream.recvCredit += stream.recvUnacked;
      this.sendControl({ type: FrameType.Window, id: stream.id, increment: stream.recvUnacked });
      stream.recvUnacked = 0;
    }
  }

  sendHead(stream: TunnelStream, head: ResponseFrame | InfoFrame): void {
    if (head.type === FrameType.Info || head.status === 101 || this.closed) return this.sendControl(head);
    // Encoded when it leaves (see encodeHead), so that a small body and End written in the same turn ride along.
    stream.pendingHead = head;
    this.control.push(stream);
    this.scheduleFlush();
  }

  // ---- writer ----

  private sendControl(frame: Frame): void {
    if (this.closed) return;
    this.pushControl(encodeFrame(frame));
  }

  /** Queues an encoded control frame; a peer that lets too many pile up unread loses the session. */
  private pushControl(frame: Buffer): void {
    this.controlBytes += frame.length;
    this.control.push(frame);
    if (this.controlBytes > MAX_CONTROL_BACKLOG_BYTES) {
      this.terminate();
      this.finalize(CloseCode.Overloaded, 'the peer stopped reading its control socket');
      return;
    }
    this.scheduleFlush();
  }

  private enqueueReady(stream: TunnelStream): void {
    stream.queued = true;
    this.ready.push(stream);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    queueMicrotask(this.flush);
  }

  /** Sends control frames first, then one Data frame per ready stream in turn, while the socket has room. */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    while (!this.closed && !this.awaitingDrain) {
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
    while (this.sendCredit > 0) {
      const stream = this.ready.shift();
      if (!stream) return undefined;
      stream.queued = false;
      if (stream.closed || stream.outBytes === 0 || stream.sendCredit <= 0) continue;
      return this.takeData(stream);
    }
    return undefined;
  }

  /**
   * Cuts one Data frame off the stream's queue within both windows. Several small queued chunks are joined into one
   * frame: a frame per tiny chunk would cost both ends far more than the bytes (flow control counts bytes only).
   */
  private takeData(stream: TunnelStream): Buffer | [Buffer, Buffer] {
    const queue = stream.outQueue;
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
    if (this.sendCredit <= 0 && !this.connStalled && (stream.outBytes > 0 || this.ready.length > 0))
      this.stalled('connection');
    if (stream.outBytes > 0) {
      if (stream.sendCredit > 0) this.enqueueReady(stream);
      else this.stalled('stream');
    } else if (stream.endPending) {
      this.sendEnd(stream);
    }
    if (stream.needDrain && stream.outBytes < this.opts.remoteFlow.maxData) {
      stream.needDrain = false;
      stream.onDrain();
    }
    return frame;
  }

  /**
   * Encodes a stream's Response head. A small body already queued behind it (within both windows) and an End
   * without trailers join the same frame: a small response is then one frame instead of three.
   */
  private encodeHead(stream: TunnelStream): Buffer {
    const head = stream.pendingHead!;
    stream.pendingHead = undefined;
    const n = stream.outBytes;
    if (n > 0 && !stream.closed && n < BATCH_MAX_FRAME_BYTES && n <= this.sendLimit(stream)) {
      head.body = stream.outQueue.length === 1 ? stream.outQueue[0]! : Buffer.concat(stream.outQueue, n);
      stream.outQueue.length = 0;
      this.charge(stream, n);
      if (stream.endPending) this.sendEnd(stream, head);
      if (stream.needDrain) {
        stream.needDrain = false;
        stream.onDrain();
      }
    }
    return encodeFrame(head);
  }

  /** The most payload a stream may send now: within a Data frame and both windows. */
  private sendLimit(stream: TunnelStream): number {
    return Math.min(this.opts.remoteFlow.maxData, stream.sendCredit, this.sendCredit);
  }

  /** Counts `n` payload bytes of `stream` as sent: off its queue's total and both windows. */
  private charge(stream: TunnelStream, n: number): void {
    stream.outBytes -= n;
    stream.sendCredit -= n;
    this.sendCredit -= n;
    this.stats.dataBytesOut += n;
    stream.lastActivityAt = Date.now();
  }

  private stalled(scope: 'stream' | 'connection'): void {
    if (scope === 'stream') this.stats.streamStalls++;
    else {
      this.connStalled = true;
      this.stats.connStalls++;
    }
    this.opts.onFlowStall?.(scope);
  }

  /**
   * Small frames wait for the end of this turn of the event loop, or until 8 have gathered, and leave together as
   * one Batch message (one WebSocket frame, one system call) — a request's Response, Data and End, and the frames
   * of every other stream that moved in the same turn. A large frame has nothing to gain from waiting and would stall bulk transfers,
   * so it goes at once, after the batch queued before it.
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
    if (!this.closed) this.sendBatch();
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

  /** Ends our side of the stream: on its Response head if that has not left yet (no trailers), else as End. */
  private sendEnd(stream: TunnelStream, head = stream.pendingHead): void {
    if (stream.localEnded) return;
    stream.localEnded = true;
    if (head && stream.endTrailers.length === 0) head.end = true;
    else this.sendControl({ type: FrameType.End, id: stream.id, trailers: stream.endTrailers });
    this.maybeFinish(stream);
  }

  // ---- reader ----

  private onFragments(data: Buffer[] | Buffer, isBinary: boolean): void {
    if (!Array.isArray(data)) return this.onMessage(data, isBinary); // text messages come whole
    if (data.length === 1) return this.onMessage(data[0]!, isBinary);
    const frame = isBinary && data.length === 2 ? dataFromFragments(data[0]!, data[1]!) : undefined;
    if (!frame) return this.onMessage(Buffer.concat(data), isBinary);
    this.lastReceivedAt = Date.now();
    if (!this.closed && !this.closing) this.handle(frame);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastReceivedAt = Date.now();
    if (this.closed || this.closing) return;
    if (!isBinary) return this.fatal(new FrameError('text message on the control socket'));
    let frames: Buffer[] | undefined;
    try {
      frames = splitBatch(data);
    } catch (err) {
      return this.fatal(err as FrameError);
    }
    if (!frames) return this.onFrame(data);
    for (const frame of frames) {
      if (this.closed || this.closing) return;
      this.onFrame(frame);
    }
  }

  /** Decodes, validates and dispatches one frame; a bad one costs its stream or, if unattributable, the session. */
  private onFrame(data: Buffer): void {
    let frame: Frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      const e = err instanceof FrameError ? err : new FrameError(String(err));
      const stream = e.streamId ? this.streams.get(e.streamId) : undefined;
      if (stream) return this.streamProtocolError(stream, e.message);
      // A bad frame for a stream that already finished: drop it, as streamFor() drops valid ones.
      if (e.streamId && e.streamId <= this.highestId) return;
      // A request we cannot accept (e.g. too many headers): refuse that stream, not the whole session.
      if (e.streamId && this.opts.role === 'client' && data[1] === FrameType.Request) {
        this.highestId = e.streamId;
        this.opts.onProtocolError?.(e, false);
        this.sendControl({
          type: FrameType.Reset,
          id: e.streamId,
          code: ResetCode.ProtocolError,
          message: e.message,
        });
        return;
      }
      return this.fatal(e);
    }
    this.handle(frame);
  }

  /** Dispatches a valid frame; a throw from a stream's owner is contained (see handlerFailed). */
  private handle(frame: Frame): void {
    try {
      this.dispatch(frame);
    } catch (err) {
      this.handlerFailed(frame, err);
    }
  }

  /**
   * A stream's owner threw while handling a frame (a bug, or input a library refused): that costs the stream, never
   * the process or the other streams. Reported like a protocol error, so it is logged and counted.
   */
  private handlerFailed(frame: Frame, err: unknown): void {
    const e = new GgrokError(ResetCode.Internal, `internal error: ${(err as Error)?.message ?? String(err)}`);
    this.opts.onProtocolError?.(e, false);
    const id = (frame as { id?: number }).id;
    const stream = id ? this.streams.get(id) : undefined;
    if (!stream) return;
    this.streamReset(stream, ResetCode.Internal, 'internal error');
    try {
      stream.onReset(e);
    } catch {
      // The owner fails again while cleaning up: the stream is already gone from the session.
    }
  }

  private dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Ping:
        this.pongDue = frame.nonce;
        return this.scheduleFlush();
      case FrameType.Pong:
        if (frame.nonce === this.lastPingAt) this.rttMs = Date.now() - frame.nonce;
        return;
      case FrameType.GoAway:
        return this.opts.onGoAway?.(frame);
      case FrameType.Stats:
        if (this.opts.role !== 'client') return this.fatal(new FrameError('only the relay sends stats'));
        return this.opts.onStats?.(frame);
      case FrameType.Window:
        return this.onWindow(frame.id, frame.increment);
      case FrameType.Request:
        return this.onRequest(frame);
      case FrameType.Response:
      case FrameType.Info:
        return this.onHead(frame);
      case FrameType.Data:
        return this.onData(frame.id, frame.data);
      case FrameType.End:
        return this.onEnd(frame.id, frame.trailers);
      case FrameType.Reset: {
        const stream = this.streamFor(frame.id);
        if (!stream) return;
        this.dispose(stream);
        return stream.onReset(new GgrokError(frame.code, frame.message));
      }
      case FrameType.Hello:
      case FrameType.Welcome:
      case FrameType.Refuse:
        return this.fatal(new FrameError('handshake frame after the handshake'));
    }
  }

  private onWindow(id: number, increment: number): void {
    if (id === 0) {
      this.connStalled = false;
      this.sendCredit += increment;
      if (this.sendCredit > WIRE_LIMITS.MAX_WINDOW_BYTES)
        return this.fatal(new FrameError('connection window overflow'));
      return this.scheduleFlush();
    }
    const stream = this.streamFor(id);
    if (!stream) return;
    stream.sendCredit += increment;
    if (stream.sendCredit > WIRE_LIMITS.MAX_WINDOW_BYTES)
      return this.streamProtocolError(stream, 'stream window overflow');
    if (stream.outBytes > 0 && !stream.queued) this.enqueueReady(stream);
    this.scheduleFlush();
  }

  private onRequest(head: RequestFrame): void {
    if (this.opts.role !== 'client') return this.fatal(new FrameError('only the relay opens streams'));
    if (head.id <= this.highestId)
      return this.fatal(new FrameError(`stream id ${head.id} reused or out of order`));
    this.highestId = head.id;
    if (this.streams.size >= (this.opts.maxInboundStreams ?? Infinity)) {
      this.sendControl({
        type: FrameType.Reset,
        id: head.id,
        code: ResetCode.RefusedStream,
        message: 'too many streams',
      });
      return;
    }
    const stream = this.createStream(head.id);
    if (!head.upgrade && head.body === BodyKind.None) stream.remoteEnded = true; // implied End, see openStream
    this.opts.onRequest?.(stream, head);
  }

  private onHead(head: ResponseFrame | InfoFrame): void {
    if (this.opts.role !== 'relay') return this.fatal(new FrameError('only the client sends responses'));
    const stream = this.streamFor(head.id);
    if (!stream) return;
    if (stream.headDone) return this.streamProtocolError(stream, 'response head after the response');
    if (head.type === FrameType.Info) return stream.onInfo(head);
    stream.headDone = true;
    stream.onResponse(head);
    // A small response carries its body and End in the head frame: handled as the frames they stand for.
    if (head.type !== FrameType.Response) return;
    if (head.body && head.body.length > 0) this.onData(head.id, head.body);
    if (head.end) this.onEnd(head.id, []);
  }

  private onEnd(id: number, trailers: HeaderList): void {
    const stream = this.streamFor(id);
    if (!stream) return;
    if (stream.remoteEnded) return this.streamProtocolError(stream, 'End after End');
    if (this.opts.role === 'relay' && !stream.headDone)
      return this.streamProtocolError(stream, 'End before response');
    stream.remoteEnded = true;
    stream.flushHeld?.();
    stream.onEnd(trailers);
    this.maybeFinish(stream);
  }

  private onData(id: number, data: Buffer): void {
    const n = data.length;
    if (n > this.opts.localFlow.maxData)
      return this.fatal(new FrameError(`data frame of ${n} bytes over the limit`));
    this.recvCredit -= n;
    if (this.recvCredit < 0) return this.fatal(new FrameError('connection window overrun'));
    this.stats.dataBytesIn += n;
    const stream = this.streamFor(id);
    if (!stream) return this.returnConnCredit(n);
    if (stream.remoteEnded) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'Data after End');
    }
    if (this.opts.role === 'relay' && !stream.headDone) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'Data before response');
    }
    stream.recvCredit -= n;
    if (stream.recvCredit < 0) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'stream window overrun');
    }
    stream.recvBuffered += n;
    stream.lastActivityAt = this.lastReceivedAt;
    this.inboundBuffered += n;
    if (this.inboundBuffered <= this.softLimit) this.returnConnCredit(n);
    else stream.connOwed += n;
    if (n > 0) stream.onData(data);
  }

  /** The open stream with this id; undefined (frame ignored) for streams already closed; fatal for never-opened ids. */
  private streamFor(id: number): TunnelStream | undefined {
    const stream = this.streams.get(id);
    if (stream) return stream;
    if (id > this.highestId) this.fatal(new FrameError(`frame for stream ${id}, which was never opened`));
    return undefined;
  }

  private returnConnCredit(n: number): void {
    if (n <= 0 || this.closed) return;
    this.connUnacked += n;
    if (this.connUnacked >= this.opts.localFlow.connWindow / 4) {
      this.recvCredit += this.connUnacked;
      this.sendControl({ type: FrameType.Window, id: 0, increment: this.connUnacked });
      this.connUnacked = 0;
    }
  }

  // ---- lifecycle ----

  private createStream(id: number): TunnelStream {
    const stream = new TunnelStream(
      id,
      this,
      this.opts.remoteFlow.streamWindow,
      this.opts.localFlow.streamWindow,
    );
    this.streams.set(id, stream);
    this.stats.streamsOpened++;
    return stream;
  }

  private maybeFinish(stream: TunnelStream): void {
    if (stream.localEnded && stream.remoteEnded) this.dispose(stream);
  }

  /** Forgets a stream and gives back whatever connection credit and buffer accounting it held. */
  private dispose(stream: TunnelStream): void {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    stream.outQueue.length = 0;
    stream.outBytes = 0;
    this.inboundBuffered -= stream.recvBuffered;
    stream.recvBuffered = 0;
    this.returnConnCredit(stream.connOwed);
    stream.connOwed = 0;
  }

  private streamProtocolError(stream: TunnelStream, message: string): void {
    const err = new GgrokError(ResetCode.ProtocolError, `stream ${stream.id}: ${message}`);
    this.opts.onProtocolError?.(err, false);
    this.streamReset(stream, ResetCode.ProtocolError, message);
    stream.onReset(err);
  }

  private fatal(err: GgrokError): void {
    if (this.closed) return;
    this.opts.onProtocolError?.(err, true);
    this.close(CloseCode.ProtocolError, `protocol error: ${err.message}`);
  }

  private heartbeat(): void {
    const now = Date.now();
    if (now - this.lastReceivedAt > this.opts.deadAfterMs) {
      this.terminate();
      this.finalize(CloseCode.HeartbeatTimeout, 'heartbeat timeout');
      return;
    }
    if (now - this.lastPingAt >= this.opts.heartbeatMs) this.ping();
    const idleMs = this.opts.idleStreamMs ?? 0;
    if (idleMs > 0) {
      for (const stream of [...this.streams.values()]) {
        if (now - stream.lastActivityAt < idleMs) continue;
        const message = `no data for ${Math.round(idleMs / 1000)} s`;
        this.streamReset(stream, ResetCode.IdleTimeout, message);
        stream.onReset(new GgrokError(ResetCode.IdleTimeout, message));
      }
    }
  }

  private finalize(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    const err = new GgrokError(
      ResetCode.TunnelClosed,
      `tunnel closed (${code}${reason ? ` ${reason}` : ''})`,
    );
    for (const stream of [...this.streams.values()]) {
      this.dispose(stream);
      stream.onReset(err);
    }
    this.opts.onClose?.({ code, reason });
  }
}
