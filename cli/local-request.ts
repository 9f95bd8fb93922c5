// One tunnel stream <-> one request to the local service (plain HTTP, or an upgrade that becomes a raw channel).
import type { Socket } from 'node:net';
import { ResetCode } from '../protocol/errors.js';
import { BodyKind, WIRE_LIMITS, type HeaderList, type RequestFrame } from '../protocol/frames.js';
import {
  FIELD_VALUE,
  getHeader,
  headerLines,
  setHeader,
  stripHopByHop,
  TOKEN,
  withoutHeader,
} from '../protocol/headers.js';
import { ChunkHolder, pipeIntoStream, pipeStreamInto, type TunnelStream } from '../protocol/stream.js';
import { ResponseParseError } from './http1-response.js';
import { requestHead } from './local-exchange.js';
import {
  HANG_UP_MESSAGE,
  LocalPool,
  type ConnectionUser,
  type LocalConnection,
  type LocalTarget,
} from './local-pool.js';

export { lookupLocalhost, type LocalTarget } from './local-pool.js';

/** Parses `3000`, `host:port`, `[::1]:8080` or a full `http(s)://host:port` URL. Throws with a one-line reason. */
export function parseTarget(spec: string, insecure = false): LocalTarget {
  const s = spec.trim();
  if (/^\d+$/.test(s))
    return { protocol: 'http:', host: 'localhost', port: checkPort(Number(s), spec), insecure };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new Error(`"${spec}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`"${spec}": only http:// and https:// targets are supported`);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return {
      protocol: url.protocol,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: checkPort(port, spec),
      insecure,
    };
  }
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`"${spec}" is not a port, host:port or URL`);
  return {
    protocol: 'http:',
    host: m[1]!.replace(/^\[|\]$/g, ''),
    port: checkPort(Number(m[2]), spec),
    insecure,
  };
}

function checkPort(port: number, spec: string): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${spec}": port must be 1-65535`);
  return port;
}

/** Human form of a target, e.g. http://localhost:3000. */
export function describeTarget(t: LocalTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.protocol}//${host}:${t.port}`;
}

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

/** Header edits the client applies on the way to and from the local service. */
export interface HeaderRules {
  /** "rewrite": Host becomes the target's host:port (dev servers with host checks, e.g. Vite); another value replaces Host; absent keeps the public Host. */
  hostHeader?: string;
  requestAdd: HeaderList;
  requestRemove: string[];
  responseAdd: HeaderList;
  responseRemove: string[];
}

export const NO_HEADER_RULES: HeaderRules = {
  requestAdd: [],
  requestRemove: [],
  responseAdd: [],
  responseRemove: [],
};

/** Parses "Name: value" (for --request-header-add and friends). Throws with a one-line reason. */
export function parseHeaderArg(arg: string): [string, string] {
  const colon = arg.indexOf(':');
  const name = arg.slice(0, colon);
  const value = arg.slice(colon + 1).replace(/^\s+/, '');
  if (colon < 0 || !TOKEN.test(name) || !FIELD_VALUE.test(value))
    throw new Error(`"${arg}" is not a header; use "Name: value"`);
  return [name, value];
}

function edit(headers: HeaderList, remove: string[], add: HeaderList): HeaderList {
  let out = headers;
  for (const name of remove) out = withoutHeader(out, name);
  return add.length > 0 ? [...out, ...add] : out;
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

/** Wraps a stream's onData so the observer sees each chunk first. */
function tapData(stream: TunnelStream, see: ((chunk: Buffer) => void) | undefined): void {
  if (!see) return;
  const inner = stream.onData;
  stream.onData = (chunk) => {
    see(chunk);
    inner(chunk);
  };
}

/** Summary of one finished exchange, for the terminal and the programmatic API. */
export interface Exchange {
  /** Name of the tunnel that carried it (filled in by the client). */
  tunnel?: string;
  method: string;
  target: string;
  status: number;
  durationMs: number;
  /** Response body bytes sent back. */
  bytes: number;
  upgrade: boolean;
  error?: string;
}

/** The Content-Length and Transfer-Encoding lines of a header list, to tell whether header rules touched them. */
function framingOf(headers: HeaderList): string {
  let out = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (name === 'content-length' || name === 'transfer-encoding') out += `${name}: ${headers[i + 1]!}\n`;
  }
  return out;
}

/** The last chunk of a chunked body, with its trailers. */
function lastChunk(trailers: HeaderList): string {
  return `0\r\n${headerLines(trailers)}\r\n`;
}

/** Replays tunnel streams against the local target. One per tunnel; holds the keep-alive pool. */
export class LocalForwarder {
  private readonly pool: LocalPool;
  /** The header rules remove or add Content-Length or Transfer-Encoding (the only way they can touch framing). */
  private readonly rulesNameFraming: boolean;

  constructor(
    readonly target: LocalTarget,
    private readonly onExchange: (x: Exchange) => void = () => {},
    private readonly rules: HeaderRules = NO_HEADER_RULES,
    private readonly observe?: Observe,
  ) {
    this.pool = new LocalPool(target);
    const added = rules.requestAdd.filter((_, i) => i % 2 === 0);
    this.rulesNameFraming = [...rules.requestRemove, ...added].some((name) =>
      /^(content-length|transfer-encoding)$/i.test(name),
    );
  }

  /** Frees pooled connections. */
  close(): void {
    this.pool.close();
  }

  /** Serves one stream opened by the relay. */
  serve(stream: TunnelStream, head: RequestFrame): void {
    const headers = this.localHeaders(head);
    const observer = this.observe?.(head, headers);
    if (head.upgrade) new UpgradeExchange(this, stream, head, headers, observer).start();
    else new PlainExchange(this, stream, head, headers, observer).start();
  }

  /** The request headers as the local service should see them. */
  private localHeaders(head: RequestFrame): HeaderList {
    const rules = this.rules;
    let headers = edit(head.headers, rules.requestRemove, rules.requestAdd);
    if (this.rulesNameFraming && framingOf(headers) !== framingOf(head.headers)) {
      // The body's framing belongs to the tunnel, not to header rules: a removed or added Content-Length would
      // make the local server read the body as the next request on this keep-alive connection.
      headers = withoutHeader(withoutHeader(headers, 'content-length'), 'transfer-encoding');
      const length = getHeader(head.headers, 'content-length');
      if (head.body === BodyKind.Length && length !== undefined) headers.push('Content-Length', length);
    }
    const host = rules.hostHeader;
    if (host) {
      const value = host === 'rewrite' ? describeTarget(this.target).replace(/^https?:\/\//, '') : host;
      headers = [...headers];
      setHeader(headers, 'Host', value);
    }
    return head.body === BodyKind.Chunked ? [...headers, 'Transfer-Encoding', 'chunked'] : headers;
  }

  /** The response headers as the public client should see them. */
  publicHeaders(rawHeaders: HeaderList, upgrade = false): HeaderList {
    // The parser caps the local response head (64 KiB, 2000 headers), inside the wire limits.
    return edit(stripHopByHop(rawHeaders, upgrade), this.rules.responseRemove, this.rules.responseAdd);
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

/** Informational (1xx) heads passed on per exchange; more are dropped. */
const MAX_INFORMATIONAL = 16;

/** What both kinds of exchange share: the stream, the head, reporting once, failing before a response. */
abstract class BaseExchange implements ConnectionUser {
  protected conn: LocalConnection | undefined;
  private informational = 0;
  protected status = 0;
  /** Response body bytes passed back. */
  protected bytes = 0;
  private readonly started = Date.now();
  private reported = false;

  constructor(
    protected readonly fwd: LocalForwarder,
    protected readonly stream: TunnelStream,
    protected readonly head: RequestFrame,
    protected readonly headers: HeaderList,
    protected readonly observer: ExchangeObserver | undefined,
  ) {}

  abstract start(): void;
  abstract onHead(status: number, reason: string, headers: HeaderList, info: boolean): void;
  abstract onBody(chunk: Buffer): void;
  abstract onDone(trailers: HeaderList): void;
  abstract onUpgrade(rest: Buffer): void;
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
      return this.stream.sendInfo(status, reason, headers);
    }
    this.status = status;
    const out = this.fwd.publicHeaders(headers, status === 101);
    this.stream.sendResponse(status, reason, out);
    this.observer?.response?.(status, reason, out);
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
    this.fwd.finished(summary, this.observer);
  }
}

/** A plain HTTP request: head and body out, 1xx heads, final head, body and trailers back. */
class PlainExchange extends BaseExchange {
  private responded = false;
  private responseDone = false;
  private requestDone = false;
  private retried = false;
  /** Body bytes written to the socket (or held) but not yet acknowledged to the relay (waiting for 'drain'). */
  private unacked = 0;
  private waitingDrain = false;
  /** Body chunks that arrived while the socket was full (made when first needed). */
  private held: ChunkHolder | undefined;

  start(): void {
    const { stream, head } = this;
    stream.onReset = () => this.cancel();
    if (head.body === BodyKind.None) {
      this.requestDone = true;
      stream.onData = (chunk) => stream.ack(chunk.length);
    } else {
      const see = this.observer?.requestData?.bind(this.observer);
      stream.onData = (chunk) => {
        see?.(chunk);
        this.writeBody(chunk);
      };
      stream.onEnd = (trailers) => this.endBody(trailers);
    }
    stream.onDrain = () => this.conn?.socket.resume();
    this.send(this.fwd.connection(head.body !== BodyKind.None));
  }

  private writeBody(chunk: Buffer): void {
    const socket = this.conn?.socket;
    if (!socket || socket.destroyed) return this.stream.ack(chunk.length); // nowhere to go: keep the flow moving
    this.unacked += chunk.length;
    if (this.waitingDrain) return (this.held ??= new ChunkHolder()).add(chunk);
    if (this.writeFramed(socket, chunk)) this.ackWritten();
    else this.waitingDrain = true;
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

  private endBody(trailers: HeaderList): void {
    const socket = this.conn?.socket;
    if (socket && !socket.destroyed) {
      if (this.held) for (const chunk of this.held.take()) this.writeFramed(socket, chunk); // bounded by the window
      if (this.head.body === BodyKind.Chunked) socket.write(lastChunk(trailers), 'latin1');
    }
    this.requestDone = true;
    this.maybeRelease();
  }

  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    if (!info) this.responded = true;
    this.passHead(status, reason, headers, info);
  }

  onBody(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.observer?.responseData?.(chunk);
    if (!this.stream.write(chunk)) this.conn?.pauseReading();
  }

  onDone(trailers: HeaderList): void {
    this.responseDone = true;
    this.stream.end(trailers);
    this.report(this.status);
    this.maybeRelease();
  }

  onUpgrade(): void {} // the parser only switches when an upgrade was asked for

  onConnectionLost(err: Error): void {
    const reused = this.conn?.reused ?? false;
    const started = this.conn?.parser.started ?? false;
    this.conn = undefined;
    if (this.responseDone) return; // the rest of the request body has nowhere to go; writeBody acks and drops it
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

/** An upgrade: the handshake goes through as HTTP; after the local service's 101 the stream is a raw channel. */
class UpgradeExchange extends BaseExchange {
  /** Bytes the public client sent before the switch wait here (unacknowledged, so bounded by the window). */
  private readonly early: Buffer[] = [];
  private earlyEnd = false;
  private upgraded: Socket | undefined;
  private switchHead: { reason: string; headers: HeaderList } | undefined;

  start(): void {
    const { stream } = this;
    stream.onData = (chunk) => this.early.push(chunk);
    stream.onEnd = () => (this.earlyEnd = true);
    stream.onReset = () => {
      this.upgraded?.resetAndDestroy(); // the channel was cut: the local server must not see a clean end
      this.cancel();
    };
    stream.onDrain = () => this.conn?.socket.resume();
    this.send(this.fwd.freshConnection(true));
  }

  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    if (status === 101) {
      this.switchHead = { reason, headers };
      return;
    }
    this.passHead(status, reason, headers, info);
    if (info) return;
    // The local server refused the upgrade: its answer goes back as it is; what the client sent is dropped.
    const { stream } = this;
    stream.onData = (chunk) => stream.ack(chunk.length);
    for (const chunk of this.early.splice(0)) stream.ack(chunk.length);
  }

  onBody(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.observer?.responseData?.(chunk);
    if (!this.stream.write(chunk)) this.conn?.pauseReading();
  }

  onDone(trailers: HeaderList): void {
    this.stream.end(trailers);
    this.report(this.status);
    const conn = this.conn;
    this.conn = undefined;
    conn?.discard(); // an upgrade socket never goes back to the pool
  }

  onUpgrade(rest: Buffer): void {
    const { stream, observer } = this;
    const socket = this.conn!.detach();
    this.conn = undefined;
    this.upgraded = socket;
    const { reason, headers } = this.switchHead!;
    this.passHead(101, reason || 'Switching Protocols', headers, false);
    // Bytes the local server sent in the same packet as its 101 must not be lost.
    if (rest.length > 0) {
      observer?.channelData?.('out', rest);
      stream.write(rest);
    }
    if (observer?.channelData) socket.on('data', (chunk: Buffer) => observer.channelData!('out', chunk));
    pipeIntoStream(socket, stream, {
      abortCode: ResetCode.LocalError,
      abortMessage: () => 'the local service closed the channel',
    });
    pipeStreamInto(stream, socket);
    tapData(stream, observer?.channelData && ((chunk) => observer.channelData!('in', chunk)));
    for (const chunk of this.early.splice(0)) stream.onData(chunk);
    stream.onEnd = () => socket.end();
    if (this.earlyEnd) {
      stream.flushHeld?.(); // early bytes the socket could not take yet go before the end
      socket.end();
    }
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
