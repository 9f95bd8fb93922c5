// One exchange (an HTTP request/response or an upgraded raw channel) multiplexed on a session: its state, its
// windows and its outbound queue. Its events go to the one handler its owner gave when the stream was opened.
import { GgrokError, ResetCode } from './errors.js';
import { RecvWindow, SendWindow, type PathRtt } from './flow.js';
import { FrameType, type HeaderList, type InfoFrame, type ResponseFrame } from './frames.js';

/**
 * Where one direction of a stream is, in wire order: waiting for its head (the Response on the way back; the Request
 * is the stream's opening, so requests start in Body), carrying its body, ended (End sent or received), or closed
 * (the stream was reset or finished and forgotten by its session).
 */
export const Phase = {
  Head: 'head',
  Body: 'body',
  Ended: 'ended',
  Closed: 'closed',
} as const;
export type PhaseValue = (typeof Phase)[keyof typeof Phase];

/** The owner of a stream: what it receives, in wire order. Given when the stream is opened; never replaced. */
export interface StreamHandler {
  /** Relay side: the final response head. */
  response?(head: ResponseFrame): void;
  /** Relay side: an informational (1xx) head before it. */
  info?(head: InfoFrame): void;
  /** Body bytes (or channel bytes); call `stream.ack(n)` once n of them were passed on, to let the peer send more. */
  data(chunk: Buffer): void;
  /** The peer sent everything, with these trailers. */
  end(trailers: HeaderList): void;
  /** The stream was abandoned: by the peer, the session closing, or a protocol error. Called at most once. */
  reset(err: GgrokError): void;
  /** write() returned false earlier and the queue has room again. */
  drain(): void;
}

/** What a stream needs from its session (Session implements it, so the two files stay decoupled). */
export interface StreamHost extends PathRtt {
  /** Largest Data payload the peer accepts. */
  readonly maxData: number;
  /** Bytes were queued on the stream. */
  streamWrote(stream: Stream): void;
  /** end() was called on the stream. */
  streamEnded(stream: Stream): void;
  /** The owner abandons the stream. */
  streamReset(stream: Stream, code: string, message: string): void;
  /** The owner passed on `bytes` received bytes. */
  streamAcked(stream: Stream, bytes: number): void;
  /** Client side: a response head to send. */
  streamHead(stream: Stream, head: ResponseFrame | InfoFrame): void;
}

/** A handler for streams nobody serves: drops data (acknowledging it so the connection keeps moving). */
const UNBOUND: StreamHandler = { data() {}, end() {}, reset() {}, drain() {} };

/** Outbound bytes of one stream waiting for credit, and the End queued behind them. Written by the session's writer. */
export class OutQueue {
  readonly chunks: Buffer[] = [];
  /** Bytes in `chunks`. */
  bytes = 0;
  /** Trailers of the End that follows the queued data; undefined until end() is called. */
  endTrailers: HeaderList | undefined;
  /** write() returned false: the owner waits for drain(). */
  full = false;
  /** The stream sits in the writer's ready queue. */
  scheduled = false;
}

/**
 * A bidirectional stream with credit-based flow control. Outbound: write()/end()/reset() (and, on the client,
 * respond()/inform()); write() returns false when the owner should wait for its handler's drain(). Inbound: the
 * handler receives frames and calls ack(n) once it passed n bytes on.
 */
export class Stream {
  /** Our direction and the peer's (see Phase). */
  private localPhase: PhaseValue;
  private remotePhase: PhaseValue;
  private handler: StreamHandler;
  private resetDelivered = false;
  readonly out = new OutQueue();
  /** Credit for what we send, and for what the peer sends. */
  readonly sendWindow: SendWindow;
  readonly recvWindow: RecvWindow;
  /** Received bytes handed to the handler and not acknowledged yet. */
  buffered = 0;
  /** Received bytes whose connection credit is returned only once consumed (the session's soft limit). */
  connOwed = 0;
  /** Client side: the Response head waiting in the writer, which a small body and End may still join. */
  pendingHead: ResponseFrame | undefined;
  /** Last time data moved either way (ms since epoch), for idle timeouts. */
  lastActivityAt = Date.now();

  constructor(
    readonly id: number,
    private readonly host: StreamHost,
    windows: { send: number; recv: number; recvMax?: number },
    phases: { local: PhaseValue; remote: PhaseValue },
    handler: StreamHandler = UNBOUND,
  ) {
    this.sendWindow = new SendWindow(windows.send);
    this.recvWindow = new RecvWindow(windows.recv, windows.recvMax, host);
    this.localPhase = phases.local;
    this.remotePhase = phases.remote;
    this.handler = handler;
  }

  /** Our direction's phase. */
  get local(): PhaseValue {
    return this.localPhase;
  }

  /** The peer's direction's phase. */
  get remote(): PhaseValue {
    return this.remotePhase;
  }

  /** end() was called (its End may still wait behind queued data), or the End already left. */
  get endRequested(): boolean {
    return this.out.endTrailers !== undefined || this.localPhase === Phase.Ended;
  }

  /** Reset, or finished and forgotten by the session. */
  get closed(): boolean {
    return this.localPhase === Phase.Closed;
  }

  /** Client side: gives a stream the peer opened its owner. Once. */
  bind(handler: StreamHandler): void {
    if (this.handler !== UNBOUND) throw new Error(`stream ${this.id} already has an owner`);
    this.handler = handler;
  }

  // ---- the owner's side ----

  /** Queues bytes for the peer. Returns false when the owner should wait for drain(). */
  write(chunk: Buffer): boolean {
    // A closed stream drops data but never asks the source to pause: a paused source would never resume.
    if (this.closed || this.out.endTrailers !== undefined || chunk.length === 0) return true;
    this.out.chunks.push(chunk);
    this.out.bytes += chunk.length;
    this.host.streamWrote(this);
    if (this.out.bytes >= this.host.maxData) this.out.full = true;
    return !this.out.full;
  }

  /** Ends our side after all queued data, with optional trailers. */
  end(trailers: HeaderList = []): void {
    if (this.closed || this.out.endTrailers !== undefined || this.localPhase === Phase.Ended) return;
    this.out.endTrailers = trailers;
    this.host.streamEnded(this);
  }

  /** Abandons the stream in both directions and tells the peer why. The handler is not called. */
  reset(code: string = ResetCode.Cancel, message = ''): void {
    if (this.closed) return;
    this.resetDelivered = true; // the owner knows: it is the one resetting
    this.host.streamReset(this, code, message);
  }

  /** Client side: sends the final response head. */
  respond(status: number, reason: string, headers: HeaderList): void {
    if (this.closed || this.localPhase !== Phase.Head) return;
    this.localPhase = Phase.Body;
    this.host.streamHead(this, { type: FrameType.Response, id: this.id, status, reason, headers });
  }

  /** Client side: sends an informational (1xx) head before the final one. */
  inform(status: number, reason: string, headers: HeaderList): void {
    if (this.closed || this.localPhase !== Phase.Head) return;
    this.host.streamHead(this, { type: FrameType.Info, id: this.id, status, reason, headers });
  }

  /** Reports that `bytes` received bytes were passed on, so the peer may send that much more. */
  ack(bytes: number): void {
    if (bytes > 0 && !this.closed) this.host.streamAcked(this, bytes);
  }

  // ---- the session's side: transitions and delivery ----

  /** Our End left (on its own or on the Response head). Returns true when both directions are now ended. */
  localEnded(): boolean {
    this.localPhase = Phase.Ended;
    return this.remotePhase === Phase.Ended;
  }

  /** The peer's Response head arrived (relay side). */
  responded(head: ResponseFrame): void {
    this.remotePhase = Phase.Body;
    this.handler.response?.(head);
  }

  /** The peer's End arrived. Returns true when both directions are now ended. */
  remoteEnded(trailers: HeaderList): boolean {
    this.remotePhase = Phase.Ended;
    this.handler.end(trailers);
    return this.localPhase === Phase.Ended;
  }

  /** Forgets everything queued; both directions are closed. */
  close(): void {
    this.localPhase = this.remotePhase = Phase.Closed;
    this.out.chunks.length = 0;
    this.out.bytes = 0;
  }

  /** Hands received body or channel bytes to the owner. */
  deliverData(chunk: Buffer): void {
    this.handler.data(chunk);
  }

  /** Hands an informational head to the owner. */
  deliverInfo(head: InfoFrame): void {
    this.handler.info?.(head);
  }

  /** Tells the owner the queue has room again. */
  deliverDrain(): void {
    this.out.full = false;
    this.handler.drain();
  }

  /** Tells the owner the stream is gone (at most once, and never after the owner reset it itself). */
  deliverReset(err: GgrokError): void {
    if (this.resetDelivered) return;
    this.resetDelivered = true;
    this.handler.reset(err);
  }
}
