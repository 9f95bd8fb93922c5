// One tunnel stream <-> one request to the local service (plain HTTP, or an upgrade that becomes a raw channel).
import type { Socket } from 'node:net';
import { ResetCode } from '../protocol/errors.js';
import { BodyKind, WIRE_LIMITS, type HeaderList, type RequestFrame } from '../protocol/frames.js';
import {
  allowedTrailers,
  declaredLength,
  getHeader,
  headerLines,
  INBOX_ID_HEADER,
} from '../protocol/headers.js';
import { ChunkHolder, pump, resetSocket, StreamSink } from '../protocol/stream-io.js';
import type { Stream, StreamHandler } from '../protocol/stream.js';
import { HeaderEditor, NO_HEADER_RULES, type HeaderRules } from './header-rules.js';
import { ResponseParseError } from './http1-response.js';
import { requestHead } from './local-exchange.js';
import { HANG_UP_MESSAGE, LocalPool, type ConnectionUser, type LocalConnection } from './local-pool.js';
import { describeTarget, type LocalTarget } from './target.js';

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ETIMEDOUT',
]);

/** One line saying why the local service failed, naming the address, e.g. "ECONNREFUSED 127.0.0.1:3000". */
export function describeLocalError(err: unknown, target: LocalTarget): string {
  if (err instanceof ResponseParseError)
    return `invalid response from ${describeTarget(target)}: ${err.message}`;
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number; errors?: unknown[] };
  if (Array.isArray(e.errors) && e.errors.length > 0)
    return e.errors.map((inner) => describeLocalError(inner, target)).join(', ');
  if (e.message === HANG_UP_MESSAGE) return `${e.message} (${describeTarget(target)})`;
  if (e.code && e.address)
    return `${e.code} ${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port ?? target.port}`;
  if (e.code) return `${e.code} ${describeTarget(target)}`;
  return e.message || String(err);
}

function isConnectFailure(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException & { errors?: unknown[] };
  if (Array.isArray(e.errors)) return e.errors.every(isConnectFailure);
  return (
    CONNECT_FAILURES.has(e.code ?? '') ||
    /^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(e.code ?? '')
  );
}

/**
 * Watches one exchange for the inspector. Every method is optional and must be cheap: it runs on the
 * data path. Chunks are the same Buffers the tunnel carries; copy what you keep.
 */
export interface ExchangeObserver {
  requestData?(chunk: Buffer): void;
  /** The response head as sent back to the public client (also the 101 of an upgrade). */
  response?(status: number, reason: string, headers: HeaderList): void;
  responseData?(chunk: Buffer): void;
  /** Raw bytes of an upgraded channel: 'in' flows public -> local, 'out' local -> public. */
  channelData?(direction: 'in' | 'out', chunk: Buffer): void;
  /** The exchange is over (also for channels, when they close). */
  end?(summary: Exchange): void;
}

/** Called at the start of each exchange with its request head (as the local service receives it). */
export type Observe = (head: RequestFrame, localHeaders: HeaderList) => ExchangeObserver | undefined;

/** Summary of one finished exchange, for the terminal and the programmatic API. */
export interface Exchange {
  /** Name of the tunnel that carried it (filled in by the client). */
  tunnel?: string;
  /** This client's member id when the tunnel is one member of an endpoint pool (filled in by the client). */
  member?: string;
  method: string;
  target: string;
  status: number;
  durationMs: number;
  /** Response body bytes sent back. */
  bytes: number;
  upgrade: boolean;
  error?: string;
  /** The relay's id of a request its webhook inbox kept while the client was away (X-Ggrok-Inbox), being delivered. */
  inbox?: string;
}

/**
 * Checks that the head about to be written frames exactly the body the relay decided on (the Request frame's body
 * kind), never what some header happened to say: bodiless requests and upgrades carry no Content-Length but 0 and
 * no Transfer-Encoding; a Length body exactly one Content-Length; a chunked body only the Transfer-Encoding this
 * client adds. Returns the body length to hold the body to (undefined: none or chunked), or why the head is refused.
 */
export function requestFraming(
  head: RequestFrame,
  headers: HeaderList,
): { length: number | undefined } | string {
  const length = declaredLength(headers);
  let codings = 0;
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i]!.length === 17 && headers[i]!.toLowerCase() === 'transfer-encoding') codings++;
  if (Number.isNaN(length)) return 'malformed Content-Length';
  const body = head.upgrade ? BodyKind.None : head.body;
  switch (body) {
    case BodyKind.None:
      if (codings > 0 || (length !== undefined && length !== 0)) return 'a bodiless request declares a body';
      return { length: undefined };
    case BodyKind.Length:
      if (codings > 0 || length === undefined || length === 0)
        return 'a body of known length without its length';
      return { length };
    case BodyKind.Chunked:
      if (length !== undefined || codings !== 1) return 'a chunked body with another framing';
      return { length: undefined };
  }
}

/** The last chunk of a chunked body, with its trailers. */
function lastChunk(trailers: HeaderList): string {
  return `0\r\n${headerLines(trailers)}\r\n`;
}

/** Replays tunnel streams against the local target. One per tunnel; holds the keep-alive pool. */
export class LocalForwarder {
  private readonly pool: LocalPool;
  private readonly editor: HeaderEditor;

  constructor(
    readonly target: LocalTarget,
    private readonly onExchange: (x: Exchange) => void = () => {},
    rules: HeaderRules = NO_HEADER_RULES,
    private readonly observe?: Observe,
  ) {
    this.pool = new LocalPool(target);
    this.editor = new HeaderEditor(rules, target);
  }

  /** Frees pooled connections. */
  close(): void {
    this.pool.close();
  }

  /** Local connections in use right now (pooled idle ones not counted). */
  get busyConnections(): number {
    return this.pool.busy;
  }

  /** Serves one stream opened by the relay; returns the exchange that owns it. */
  serve(stream: Stream, head: RequestFrame): StreamHandler {
    const headers = this.editor.request(head);
    const framing = requestFraming(head, headers);
    if (typeof framing === 'string') {
      // Never written: a head whose framing disagrees with the body that follows desynchronises the local connection.
      stream.reset(ResetCode.ProtocolError, `request framing: ${framing}`);
      this.onExchange({
        method: head.method,
        target: head.target,
        status: 502,
        durationMs: 0,
        bytes: 0,
        upgrade: head.upgrade,
        error: `refused a request whose framing disagrees with its body: ${framing}`,
      });
      return IGNORED;
    }
    const observer = this.observe?.(head, headers);
    const exchange = head.upgrade
      ? new UpgradeExchange(this, stream, head, headers, observer)
      : new PlainExchange(this, stream, head, headers, observer, framing);
    exchange.start();
    return exchange;
  }

  /** The response headers as the public client should see them. */
  publicHeaders(rawHeaders: HeaderList, upgrade = false): HeaderList {
    return this.editor.response(rawHeaders, upgrade);
  }

  /** A pooled connection (one fit to carry a body, if the request has one), or a new one. */
  connection(hasBody: boolean): LocalConnection {
    return this.pool.take(hasBody) ?? this.pool.open(false);
  }

  /** A fresh connection of its own (upgrades; retries after a stale keep-alive socket). */
  freshConnection(upgrade: boolean): LocalConnection {
    return this.pool.open(upgrade);
  }

  /** Reports a finished exchange to the terminal/API and to its observer. */
  finished(summary: Exchange, observer: ExchangeObserver | undefined): void {
    observer?.end?.(summary);
    this.onExchange(summary);
  }
}

/** The owner of a stream whose request was refused before any exchange began: whatever still arrives is dropped. */
const IGNORED: StreamHandler = { data() {}, end() {}, reset() {}, drain() {} };

/** Informational (1xx) heads passed on per exchange; more are dropped. */
const MAX_INFORMATIONAL = 16;

/**
 * What both kinds of exchange share: the stream (whose handler the exchange is), the local connection (whose user it
 * is), reporting once, and failing before a response.
 */
abstract class BaseExchange implements ConnectionUser, StreamHandler {
  protected conn: LocalConnection | undefined;
  private informational = 0;
  protected status = 0;
  /** Response body bytes passed back. */
  protected bytes = 0;
  private readonly started = Date.now();
  private reported = false;

  constructor(
    protected readonly fwd: LocalForwarder,
    protected readonly stream: Stream,
    protected readonly head: RequestFrame,
    protected readonly headers: HeaderList,
    protected readonly observer: ExchangeObserver | undefined,
  ) {}

  abstract start(): void;
  // The stream's side (StreamHandler).
  abstract data(chunk: Buffer): void;
  abstract end(trailers: HeaderList): void;
  abstract reset(): void;
  abstract drain(): void;
  // The local connection's side (ConnectionUser).
  abstract onHead(status: number, reason: string, headers: HeaderList, info: boolean): void;
  abstract onBody(chunk: Buffer): void;
  abstract onDone(trailers: HeaderList): void;
  abstract onUpgrade(status: number, reason: string, headers: HeaderList, rest: Buffer): void;
  abstract onConnectionLost(err: Error): void;
  abstract onWritable(): void;

  /** Opens the exchange on `conn` by writing the request head. */
  protected send(conn: LocalConnection): void {
    this.conn = conn;
    conn.begin(this, this.head.method, this.head.upgrade);
    conn.socket.write(requestHead(this.head.method, this.head.target, this.headers), 'latin1');
  }

  /** Sends a final or informational head back to the public client. */
  protected passHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    // The wire carries reason phrases of up to 1 024 characters; a longer one is cut, not a reason for a 502.
    if (reason.length > WIRE_LIMITS.MAX_REASON_CHARS) reason = reason.slice(0, WIRE_LIMITS.MAX_REASON_CHARS);
    if (info) {
      // 1xx heads are not flow-controlled: a server sending them without end gets the first few through.
      if (++this.informational > MAX_INFORMATIONAL) return;
      return this.stream.inform(status, reason, headers);
    }
    this.status = status;
    const out = this.fwd.publicHeaders(headers, status === 101);
    this.stream.respond(status, reason, out);
    this.observer?.response?.(status, reason, out);
  }

  /** Passes a piece of the response body (or channel bytes) back; stops reading while the stream is full. */
  protected passBody(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.observer?.responseData?.(chunk);
    if (!this.stream.write(chunk)) this.conn?.pauseReading();
  }

  /** The local service could not be reached or failed before answering: reset the stream with why. */
  protected fail(err: unknown): void {
    const message = describeLocalError(err, this.fwd.target);
    this.stream.reset(isConnectFailure(err) ? ResetCode.LocalUnreachable : ResetCode.LocalError, message);
    this.report(502, message);
  }

  /** The public side went away (or the relay reset the stream): drop the connection, it is mid-exchange. */
  protected cancel(): void {
    const conn = this.conn;
    this.conn = undefined;
    conn?.discard();
    this.report(499, 'cancelled');
  }

  protected report(status: number, error?: string): void {
    if (this.reported) return;
    this.reported = true;
    const summary: Exchange = {
      method: this.head.method,
      target: this.head.target,
      status,
      durationMs: Date.now() - this.started,
      bytes: this.bytes,
      upgrade: this.head.upgrade,
      error,
    };
    const inbox = this.head.upgrade ? undefined : getHeader(this.head.headers, INBOX_ID_HEADER);
    if (inbox !== undefined) summary.inbox = inbox;
    this.fwd.finished(summary, this.observer);
  }
}

/** A plain HTTP request: head and body out, 1xx heads, final head, body and trailers back. */
class PlainExchange extends BaseExchange {
  /** Body bytes still to come for a Length body; the relay must send exactly the length the head declares. */
  private bodyLeft: number;
  private responded = false;
  private responseDone = false;
  private requestDone: boolean;
  private retried = false;
  /** Body bytes written to the socket (or held) but not yet acknowledged to the relay (waiting for 'drain'). */
  private unacked = 0;
  private waitingDrain = false;
  /** Body chunks that arrived while the socket was full (made when first needed). */
  private held: ChunkHolder | undefined;

  constructor(
    fwd: LocalForwarder,
    stream: Stream,
    head: RequestFrame,
    headers: HeaderList,
    observer: ExchangeObserver | undefined,
    framing: { length: number | undefined },
  ) {
    super(fwd, stream, head, headers, observer);
    this.bodyLeft = framing.length ?? Infinity;
    this.requestDone = head.body === BodyKind.None;
  }

  start(): void {
    this.send(this.fwd.connection(this.head.body !== BodyKind.None));
  }

  // ---- the stream: the request body, from the relay ----

  data(chunk: Buffer): void {
    if (this.requestDone) return this.stream.ack(chunk.length);
    this.observer?.requestData?.(chunk);
    if (chunk.length > this.bodyLeft)
      return this.misframed('the request body is longer than its Content-Length');
    this.bodyLeft -= chunk.length;
    const socket = this.conn?.socket;
    if (!socket || socket.destroyed) return this.stream.ack(chunk.length); // nowhere to go: keep the flow moving
    this.unacked += chunk.length;
    if (this.waitingDrain) return (this.held ??= new ChunkHolder()).add(chunk);
    if (this.writeFramed(socket, chunk)) this.ackWritten();
    else this.waitingDrain = true;
  }

  end(trailers: HeaderList): void {
    if (this.head.body === BodyKind.Length && this.bodyLeft !== 0)
      return this.misframed('the request body is shorter than its Content-Length');
    const socket = this.conn?.socket;
    if (socket && !socket.destroyed) {
      if (this.held) for (const chunk of this.held.take()) this.writeFramed(socket, chunk); // bounded by the window
      if (this.head.body === BodyKind.Chunked) socket.write(lastChunk(allowedTrailers(trailers)), 'latin1');
    }
    this.requestDone = true;
    this.maybeRelease();
  }

  reset(): void {
    this.cancel();
  }

  drain(): void {
    this.conn?.socket.resume();
  }

  /** Writes one piece of the body in the request's framing; false when the socket asks us to wait. */
  private writeFramed(socket: Socket, chunk: Buffer): boolean {
    if (this.head.body !== BodyKind.Chunked) return socket.write(chunk);
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const ok = socket.write('\r\n', 'latin1');
    socket.uncork();
    return ok;
  }

  private ackWritten(): void {
    const n = this.unacked;
    this.unacked = 0;
    this.stream.ack(n);
  }

  /**
   * The body does not match the length its head declared: the local server would read the difference as (or from) the
   * next request on this connection. The connection is dropped, never reused, and the stream fails.
   */
  private misframed(why: string): void {
    this.stream.reset(ResetCode.ProtocolError, why);
    const conn = this.conn;
    this.conn = undefined;
    conn?.discard();
    this.report(502, why);
  }

  // ---- the local connection: the response ----

  onWritable(): void {
    if (!this.waitingDrain) return;
    const socket = this.conn?.socket;
    let ok = true;
    if (socket && !socket.destroyed && this.held)
      for (const chunk of this.held.take()) ok = this.writeFramed(socket, chunk);
    if (!ok) return; // still full: wait for the next 'drain'
    this.waitingDrain = false;
    this.ackWritten();
  }

  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    if (!info) this.responded = true;
    this.passHead(status, reason, headers, info);
  }

  onBody(chunk: Buffer): void {
    this.passBody(chunk);
  }

  onDone(trailers: HeaderList): void {
    this.responseDone = true;
    this.stream.end(allowedTrailers(trailers));
    this.report(this.status);
    this.maybeRelease();
  }

  onUpgrade(): void {} // the parser only switches when an upgrade was asked for

  onConnectionLost(err: Error): void {
    const reused = this.conn?.reused ?? false;
    const started = this.conn?.parser.started ?? false;
    this.conn = undefined;
    if (this.responseDone) return; // the rest of the request body has nowhere to go; data() acks and drops it
    if (this.responded) {
      this.stream.reset(ResetCode.LocalError, 'the local service closed the connection mid-response');
      return this.report(this.status, 'the local service closed the connection mid-response');
    }
    // A keep-alive socket the local server had just closed: retry once on a fresh one (nothing was lost yet).
    if (reused && !started && !this.retried && this.head.body === BodyKind.None && !this.stream.closed) {
      this.retried = true;
      return this.send(this.fwd.freshConnection(false));
    }
    this.fail(err);
  }

  /** Both directions are complete: the connection goes back to the pool (or is closed). */
  private maybeRelease(): void {
    if (!this.responseDone || !this.requestDone || !this.conn) return;
    const conn = this.conn;
    this.conn = undefined;
    conn.release();
  }
}

/** Where an upgrade is: handshaking (the visitor's early bytes wait), refused by the local server, or a raw channel. */
const UpgradePhase = {
  Handshake: 'handshake',
  Refused: 'refused',
  Channel: 'channel',
} as const;
type UpgradePhaseValue = (typeof UpgradePhase)[keyof typeof UpgradePhase];

/** An upgrade: the handshake goes through as HTTP; after the local service's 101 the stream is a raw channel. */
class UpgradeExchange extends BaseExchange {
  private phase: UpgradePhaseValue = UpgradePhase.Handshake;
  /** Bytes the public client sent before the switch wait here (unacknowledged, so bounded by the window). */
  private readonly early: Buffer[] = [];
  /** The public client half-closed before the switch. */
  private earlyEnd = false;
  /** After the switch: the local socket, and the sink writing the visitor's bytes into it. */
  private upgraded: Socket | undefined;
  private sink: StreamSink | undefined;

  start(): void {
    this.send(this.fwd.freshConnection(true));
  }

  // ---- the stream: the visitor's bytes ----

  data(chunk: Buffer): void {
    switch (this.phase) {
      case UpgradePhase.Handshake:
        return void this.early.push(chunk);
      case UpgradePhase.Refused:
        return this.stream.ack(chunk.length); // nowhere to go: the local server refused the switch
      case UpgradePhase.Channel:
        this.observer?.channelData?.('in', chunk);
        return this.sink!.write(chunk);
    }
  }

  end(): void {
    switch (this.phase) {
      case UpgradePhase.Handshake:
        this.earlyEnd = true;
        return;
      case UpgradePhase.Refused:
        return;
      case UpgradePhase.Channel:
        this.sink!.flush(); // bytes the socket could not take yet go before the end
        this.upgraded!.end();
    }
  }

  reset(): void {
    if (this.upgraded) resetSocket(this.upgraded); // the channel was cut: the local server must not see a clean end
    this.cancel();
  }

  drain(): void {
    if (this.upgraded) this.upgraded.resume();
    else this.conn?.socket.resume();
  }

  // ---- the local connection: the answer to the handshake ----

  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    this.passHead(status, reason, headers, info);
    if (info) return;
    // The local server refused the upgrade: its answer goes back as it is; what the client sent is dropped.
    this.phase = UpgradePhase.Refused;
    for (const chunk of this.early.splice(0)) this.stream.ack(chunk.length);
  }

  onBody(chunk: Buffer): void {
    this.passBody(chunk);
  }

  onDone(trailers: HeaderList): void {
    this.stream.end(allowedTrailers(trailers));
    this.report(this.status);
    const conn = this.conn;
    this.conn = undefined;
    conn?.discard(); // an upgrade socket never goes back to the pool
  }

  onUpgrade(status: number, reason: string, headers: HeaderList, rest: Buffer): void {
    const { stream, observer } = this;
    const socket = this.conn!.detach();
    this.conn = undefined;
    this.upgraded = socket;
    this.passHead(status, reason || 'Switching Protocols', headers, false);
    this.phase = UpgradePhase.Channel;
    this.sink = new StreamSink(stream, socket);
    // Bytes the local server sent in the same packet as its 101 must not be lost.
    if (rest.length > 0) {
      observer?.channelData?.('out', rest);
      stream.write(rest);
    }
    pump(socket, stream, {
      abortCode: ResetCode.LocalError,
      abortMessage: () => 'the local service closed the channel',
      tap: observer?.channelData ? (chunk) => observer.channelData!('out', chunk) : undefined,
    });
    // What the visitor sent before the switch goes first, in order; then its half-close, if it came already.
    for (const chunk of this.early.splice(0)) this.data(chunk);
    if (this.earlyEnd) this.end();
    socket.on('close', () => this.report(101));
  }

  onConnectionLost(err: Error): void {
    this.conn = undefined;
    if (this.status !== 0) {
      this.stream.reset(ResetCode.LocalError, 'the local service closed the connection mid-response');
      return this.report(this.status, 'the local service closed the connection mid-response');
    }
    this.fail(err);
  }

  onWritable(): void {} // nothing is written before the switch but the head
}
