// One control WebSocket after the handshake: reads and routes frames by stream id, keeps the receive windows and
// heartbeats, and owns the streams' lifecycle. Everything it sends goes through its Writer.
import type WebSocket from 'ws';
import { dataFromFragments, decodeFrame, encodeFrame, FrameError, splitBatch } from './codec.js';
import { CloseCode, GgrokError, ResetCode } from './errors.js';
import { RecvWindow, WINDOW_AUTOTUNE } from './flow.js';
import {
  BodyKind,
  FrameType,
  type FlowSettings,
  type Frame,
  type GoAwayFrame,
  type HeaderList,
  type InfoFrame,
  type MemberRef,
  type HealthFrame,
  type MembersFrame,
  type PoolFrame,
  type RequestFrame,
  type ResponseFrame,
  type StatsFrame,
} from './frames.js';
import { Phase, Stream, type PhaseValue, type StreamHandler, type StreamHost } from './stream.js';
import { Writer, type WriterHost } from './writer.js';

export { MAX_CONTROL_BACKLOG_BYTES } from './writer.js';

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
  /**
   * How far our receive windows may grow past what we announced when the path's round trip needs it (see
   * WINDOW_AUTOTUNE). Equal to the announced windows (or smaller): fixed windows.
   */
  windowMax?: { stream: number; conn: number };
  /** Client side: the peer opened a stream (a public request); returns the stream's owner. */
  onRequest?: (stream: Stream, head: RequestFrame) => StreamHandler;
  onGoAway?: (frame: GoAwayFrame) => void;
  /** Client side: the relay's traffic counters for one of this connection's tunnels. */
  onStats?: (frame: StatsFrame) => void;
  /** Client side: the cluster's live instances changed. */
  onMembers?: (frame: MembersFrame) => void;
  /** Client side: a pool tunnel's member id and pool size. */
  onPool?: (frame: PoolFrame) => void;
  /** Relay side: the client's own health check of a pool tunnel's local service. */
  onHealth?: (frame: HealthFrame) => void;
  /** Our writer ran out of credit with data still queued: a stream's window, or the whole connection's. */
  onFlowStall?: (scope: 'stream' | 'connection') => void;
  /** The peer broke the protocol; `fatal` when the whole session is closed for it. */
  onProtocolError?: (err: GgrokError, fatal: boolean) => void;
  onClose?: (info: { code: number; reason: string }) => void;
}

/** Where a session is: open, closing (close() was called: inbound frames are ignored), or closed. */
export const SessionState = {
  Open: 'open',
  Closing: 'closing',
  Closed: 'closed',
} as const;
export type SessionStateValue = (typeof SessionState)[keyof typeof SessionState];

/**
 * Multiplexes streams over one open, handshaken WebSocket. Owns the socket's only 'message' listener; its Writer
 * is the only code that sends on it.
 */
export class Session implements StreamHost, WriterHost {
  readonly streams = new Map<number, Stream>();
  /** Round-trip time of the last heartbeat, in ms; -1 before the first pong. */
  rttMs = -1;
  /** The smallest heartbeat round trip so far, in ms; -1 before the first pong. */
  minRttMs = -1;
  private state: SessionStateValue = SessionState.Open;
  /** Payload bytes of Data frames received, and streams opened (by either side). */
  private readonly counts = { dataBytesIn: 0, streamsOpened: 0 };

  private readonly writer: Writer;
  /** What the peer may still send on the whole connection. */
  private readonly window: RecvWindow;
  /** Received bytes not consumed yet, over all streams (see bufferedSoftLimit). */
  private inboundBuffered = 0;
  /** Highest stream id opened so far (by us on the relay, by the peer on the client). */
  private highestId = 0;
  private lastReceivedAt = Date.now();
  private lastPingAt = 0;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private readonly softLimit: number;
  /** Largest receive window a stream may grow to. */
  private readonly streamWindowMax: number;

  constructor(
    private readonly ws: WebSocket,
    private readonly opts: SessionOptions,
  ) {
    this.writer = new Writer(ws, this, opts.remoteFlow.maxData, opts.remoteFlow.connWindow);
    const max = opts.windowMax ?? {
      stream: WINDOW_AUTOTUNE.STREAM_MAX_BYTES,
      conn: WINDOW_AUTOTUNE.CONN_MAX_BYTES,
    };
    this.streamWindowMax = Math.max(opts.localFlow.streamWindow, max.stream);
    this.window = new RecvWindow(
      opts.localFlow.connWindow,
      Math.max(opts.localFlow.connWindow, max.conn),
      this,
    );
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

  /** Counters for observability: payload bytes of Data frames each way, streams opened, times the writer waited. */
  get stats(): {
    dataBytesIn: number;
    dataBytesOut: number;
    streamsOpened: number;
    streamStalls: number;
    connStalls: number;
  } {
    const w = this.writer.stats;
    return {
      ...this.counts,
      dataBytesOut: w.dataBytesOut,
      streamStalls: w.streamStalls,
      connStalls: w.connStalls,
    };
  }

  /** Bytes received and not consumed yet, over all streams: what this session holds for slow consumers. */
  get bufferedBytes(): number {
    return this.inboundBuffered;
  }

  /** The connection's receive window now (it grows and shrinks with the path; see WINDOW_AUTOTUNE). */
  get connWindowSize(): number {
    return this.window.size;
  }

  /** The session is closed: its socket is gone and every stream was reset. */
  get closed(): boolean {
    return this.state === SessionState.Closed;
  }

  /** close() was called or the session is closed: no new work. */
  get closing(): boolean {
    return this.state !== SessionState.Open;
  }

  /** Largest Data payload we may send. */
  get maxData(): number {
    return this.opts.remoteFlow.maxData;
  }

  /** Relay side: opens a stream for a public request, owned by `handler`. Its id is assigned here. */
  openStream(head: Omit<RequestFrame, 'type' | 'id'>, handler: StreamHandler): Stream {
    const id = ++this.highestId;
    // A request without a body has nothing to end: the Request frame itself implies End (saves a frame).
    const bodiless = !head.upgrade && head.body === BodyKind.None;
    const stream = this.createStream(id, bodiless ? Phase.Ended : Phase.Body, Phase.Head, handler);
    if (this.closing) {
      // Too late: fail the stream the way every other stream of a closed session fails.
      this.dispose(stream);
      queueMicrotask(() => stream.deliverReset(new GgrokError(ResetCode.TunnelClosed, 'tunnel closed')));
      return stream;
    }
    // Fields spelled out: an object spread here costs more than the rest of the encode (V8, per request).
    this.writer.encoded(
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
    return stream;
  }

  /** Sends a GoAway frame (graceful shutdown notice). */
  goAway(code: string, message: string, reconnectAfterMs: number): void {
    this.writer.frame({ type: FrameType.GoAway, code, message, reconnectAfterMs });
  }

  /** Relay side: sends a tunnel's traffic counters to the client. */
  sendStats(stats: Omit<StatsFrame, 'type'>): void {
    if (this.closing) return;
    this.writer.frame({ type: FrameType.Stats, ...stats });
  }

  /** Relay side: tells a cluster-aware client the cluster's live instances. */
  sendMembers(members: MemberRef[]): void {
    if (this.closing) return;
    this.writer.frame({ type: FrameType.Members, members });
  }

  /** Relay side: tells the client a pool tunnel's member id and the pool's size. */
  sendPool(pool: Omit<PoolFrame, 'type'>): void {
    if (this.closing) return;
    this.writer.frame({ type: FrameType.Pool, ...pool });
  }

  /** Client side: reports the result of a pool tunnel's health check. */
  sendHealth(health: Omit<HealthFrame, 'type'>): void {
    if (this.closing) return;
    this.writer.frame({ type: FrameType.Health, ...health });
  }

  /** Sends a ping now; the pong updates rttMs. */
  ping(): void {
    this.lastPingAt = Date.now();
    this.writer.frame({ type: FrameType.Ping, nonce: this.lastPingAt });
  }

  /** Closes the control socket after queued frames; every open stream is reset as tunnel_closed. */
  close(code: number = CloseCode.Normal, reason = ''): void {
    if (this.closing) return;
    this.writer.flushNow();
    this.state = SessionState.Closing;
    this.ws.close(code, reason.slice(0, 120));
    // A peer that never answers the close handshake must not hold us open.
    setTimeout(() => this.ws.terminate(), 5000).unref();
  }

  /** Drops the socket at once (dead peer). */
  terminate(): void {
    this.ws.terminate();
  }

  // ---- StreamHost: what streams ask of their session ----

  streamWrote(stream: Stream): void {
    this.writer.wrote(stream);
  }

  streamEnded(stream: Stream): void {
    this.writer.ended(stream);
  }

  streamReset(stream: Stream, code: string, message: string): void {
    this.resetStream(stream, code, message);
  }

  streamAcked(stream: Stream, bytes: number): void {
    const n = Math.min(bytes, stream.buffered);
    stream.buffered -= n;
    this.inboundBuffered -= n;
    const owed = Math.min(n, stream.connOwed);
    stream.connOwed -= owed;
    this.returnConnCredit(owed);
    if (stream.remote === Phase.Ended) return; // the peer sends nothing more: no credit to return
    const increment = stream.recvWindow.release(n, Date.now());
    if (increment > 0) this.writer.frame({ type: FrameType.Window, id: stream.id, increment });
  }

  streamHead(stream: Stream, head: ResponseFrame | InfoFrame): void {
    if (head.type === FrameType.Info || head.status === 101 || this.closed) return this.writer.frame(head);
    // Encoded when it leaves (see Writer.encodeHead), so that a small body and End written in the same turn ride along.
    stream.pendingHead = head;
    this.writer.head(stream);
  }

  // ---- WriterHost: what the writer tells its session ----

  localEnded(stream: Stream): void {
    if (stream.localEnded()) this.dispose(stream);
  }

  stalled(scope: 'stream' | 'connection'): void {
    this.opts.onFlowStall?.(scope);
  }

  overloaded(): void {
    this.terminate();
    this.finalize(CloseCode.Overloaded, 'the peer stopped reading its control socket');
  }

  // ---- reader ----

  private onFragments(data: Buffer[] | Buffer, isBinary: boolean): void {
    if (!Array.isArray(data)) return this.onMessage(data, isBinary); // text messages come whole
    if (data.length === 1) return this.onMessage(data[0]!, isBinary);
    const frame = isBinary && data.length === 2 ? dataFromFragments(data[0]!, data[1]!) : undefined;
    if (!frame) return this.onMessage(Buffer.concat(data), isBinary);
    this.lastReceivedAt = Date.now();
    if (!this.closing) this.handle(frame);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastReceivedAt = Date.now();
    if (this.closing) return;
    if (!isBinary) return this.fatal(new FrameError('text message on the control socket'));
    let frames: Buffer[] | undefined;
    try {
      frames = splitBatch(data);
    } catch (err) {
      return this.fatal(err as FrameError);
    }
    if (!frames) return this.onFrame(data);
    for (const frame of frames) {
      if (this.closing) return;
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
        this.writer.frame({
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
    this.resetStream(stream, ResetCode.Internal, 'internal error');
    try {
      stream.deliverReset(e);
    } catch {
      // The owner fails again while cleaning up: the stream is already gone from the session.
    }
  }

  private dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Ping:
        return this.writer.pong(frame.nonce);
      case FrameType.Pong:
        if (frame.nonce !== this.lastPingAt) return;
        this.rttMs = Date.now() - frame.nonce;
        if (this.minRttMs < 0 || this.rttMs < this.minRttMs) this.minRttMs = this.rttMs;
        return;
      case FrameType.GoAway:
        return this.opts.onGoAway?.(frame);
      case FrameType.Stats:
        if (this.opts.role !== 'client') return this.fatal(new FrameError('only the relay sends stats'));
        return this.opts.onStats?.(frame);
      case FrameType.Members:
        if (this.opts.role !== 'client') return this.fatal(new FrameError('only the relay sends members'));
        return this.opts.onMembers?.(frame);
      case FrameType.Pool:
        if (this.opts.role !== 'client')
          return this.fatal(new FrameError('only the relay sends pool frames'));
        return this.opts.onPool?.(frame);
      case FrameType.Health:
        if (this.opts.role !== 'relay') return this.fatal(new FrameError('only the client sends health'));
        return this.opts.onHealth?.(frame);
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
        return stream.deliverReset(GgrokError.fromWire(frame.code, frame.message));
      }
      case FrameType.Hello:
      case FrameType.Welcome:
      case FrameType.Refuse:
        return this.fatal(new FrameError('handshake frame after the handshake'));
    }
  }

  private onWindow(id: number, increment: number): void {
    if (id === 0) {
      if (!this.writer.connectionGranted(increment)) this.fatal(new FrameError('connection window overflow'));
      return;
    }
    const stream = this.streamFor(id);
    if (!stream) return;
    if (!stream.sendWindow.grant(increment))
      return this.streamProtocolError(stream, 'stream window overflow');
    this.writer.streamGranted(stream);
  }

  private onRequest(head: RequestFrame): void {
    if (this.opts.role !== 'client') return this.fatal(new FrameError('only the relay opens streams'));
    if (head.id <= this.highestId)
      return this.fatal(new FrameError(`stream id ${head.id} reused or out of order`));
    this.highestId = head.id;
    if (this.streams.size >= (this.opts.maxInboundStreams ?? Infinity)) {
      this.writer.frame({
        type: FrameType.Reset,
        id: head.id,
        code: ResetCode.RefusedStream,
        message: 'too many streams',
      });
      return;
    }
    // A request without a body is complete with its head: the Request frame implies End (see openStream).
    const bodiless = !head.upgrade && head.body === BodyKind.None;
    const stream = this.createStream(head.id, Phase.Head, bodiless ? Phase.Ended : Phase.Body);
    const handler = this.opts.onRequest?.(stream, head);
    if (handler && !stream.closed) stream.bind(handler);
  }

  private onHead(head: ResponseFrame | InfoFrame): void {
    if (this.opts.role !== 'relay') return this.fatal(new FrameError('only the client sends responses'));
    const stream = this.streamFor(head.id);
    if (!stream) return;
    if (stream.remote !== Phase.Head)
      return this.streamProtocolError(stream, 'response head after the response');
    if (head.type === FrameType.Info) return stream.deliverInfo(head);
    stream.responded(head);
    // A small response carries its body and End in the head frame: handled as the frames they stand for.
    if (head.body && head.body.length > 0) this.onData(head.id, head.body);
    if (head.end) this.onEnd(head.id, []);
  }

  private onEnd(id: number, trailers: HeaderList): void {
    const stream = this.streamFor(id);
    if (!stream) return;
    if (stream.remote === Phase.Ended) return this.streamProtocolError(stream, 'End after End');
    if (stream.remote === Phase.Head) return this.streamProtocolError(stream, 'End before response');
    if (stream.remoteEnded(trailers)) this.dispose(stream);
  }

  private onData(id: number, data: Buffer): void {
    const n = data.length;
    if (n > this.opts.localFlow.maxData)
      return this.fatal(new FrameError(`data frame of ${n} bytes over the limit`));
    if (!this.window.receive(n, this.lastReceivedAt))
      return this.fatal(new FrameError('connection window overrun'));
    this.counts.dataBytesIn += n;
    const stream = this.streamFor(id);
    if (!stream) return this.returnConnCredit(n);
    if (stream.remote === Phase.Ended) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'Data after End');
    }
    if (stream.remote === Phase.Head) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'Data before response');
    }
    if (!stream.recvWindow.receive(n, this.lastReceivedAt)) {
      this.returnConnCredit(n);
      return this.streamProtocolError(stream, 'stream window overrun');
    }
    stream.buffered += n;
    stream.lastActivityAt = this.lastReceivedAt;
    this.inboundBuffered += n;
    if (this.inboundBuffered <= this.softLimit) this.returnConnCredit(n);
    else stream.connOwed += n;
    if (n > 0) stream.deliverData(data);
  }

  /** The open stream with this id; undefined (frame ignored) for streams already closed; fatal for never-opened ids. */
  private streamFor(id: number): Stream | undefined {
    const stream = this.streams.get(id);
    if (stream) return stream;
    if (id > this.highestId) this.fatal(new FrameError(`frame for stream ${id}, which was never opened`));
    return undefined;
  }

  private returnConnCredit(n: number): void {
    if (n <= 0 || this.closed) return;
    const increment = this.window.release(n, Date.now());
    if (increment > 0) this.writer.frame({ type: FrameType.Window, id: 0, increment });
  }

  // ---- lifecycle ----

  private createStream(id: number, local: PhaseValue, remote: PhaseValue, handler?: StreamHandler): Stream {
    const stream = new Stream(
      id,
      this,
      {
        send: this.opts.remoteFlow.streamWindow,
        recv: this.opts.localFlow.streamWindow,
        recvMax: this.streamWindowMax,
      },
      { local, remote },
      handler,
    );
    this.streams.set(id, stream);
    this.counts.streamsOpened++;
    return stream;
  }

  /** Tells the peer the stream is reset and forgets it (the owner is told separately, if it did not reset it). */
  private resetStream(stream: Stream, code: string, message: string): void {
    this.writer.frame({ type: FrameType.Reset, id: stream.id, code, message: message.slice(0, 1000) });
    this.dispose(stream);
  }

  /** Forgets a stream and gives back whatever connection credit and buffer accounting it held. */
  private dispose(stream: Stream): void {
    if (stream.closed) return;
    stream.close();
    this.streams.delete(stream.id);
    this.inboundBuffered -= stream.buffered;
    stream.buffered = 0;
    this.returnConnCredit(stream.connOwed);
    stream.connOwed = 0;
  }

  private streamProtocolError(stream: Stream, message: string): void {
    const err = new GgrokError(ResetCode.ProtocolError, `stream ${stream.id}: ${message}`);
    this.opts.onProtocolError?.(err, false);
    this.resetStream(stream, ResetCode.ProtocolError, message);
    stream.deliverReset(err);
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
        this.resetStream(stream, ResetCode.IdleTimeout, message);
        stream.deliverReset(new GgrokError(ResetCode.IdleTimeout, message));
      }
    }
  }

  private finalize(code: number, reason: string): void {
    if (this.closed) return;
    this.state = SessionState.Closed;
    clearInterval(this.heartbeatTimer);
    const err = new GgrokError(
      ResetCode.TunnelClosed,
      `tunnel closed (${code}${reason ? ` ${reason}` : ''})`,
    );
    for (const stream of [...this.streams.values()]) {
      this.dispose(stream);
      // One owner failing to let go must not keep the others (or onClose) from running, nor crash the process.
      try {
        stream.deliverReset(err);
      } catch (e) {
        const detail = e instanceof Error ? e.message : String(e);
        this.opts.onProtocolError?.(
          new GgrokError(ResetCode.Internal, `stream ${stream.id}: ${detail}`),
          false,
        );
      }
    }
    this.opts.onClose?.({ code, reason });
  }
}
