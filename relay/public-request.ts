// A public request (or upgrade) <-> one tunnel stream: headers out, body both ways, response or raw channel back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { headerListFits } from '../protocol/codec.js';
import { ResetCode, statusForReset, type GgrokError } from '../protocol/errors.js';
import { BodyKind, type HeaderList, type InfoFrame, type ResponseFrame } from '../protocol/frames.js';
import {
  addForwardedHeaders,
  allowedTrailers,
  declaredLength,
  headerLines,
  stripHopByHop,
  toPairs,
  withoutHeader,
} from '../protocol/headers.js';
import type { Session } from '../protocol/session.js';
import { pump, StreamSink } from '../protocol/stream-io.js';
import { Phase, type Stream, type StreamHandler } from '../protocol/stream.js';
import { plainAddress } from './access.js';
import { sendErrorPage, writeRawErrorPage, type ErrorPage } from './pages.js';

/** What the relay knows about how the public client reached it. */
export interface PublicContext {
  proto: string;
  /** Host header as received (with port if any). */
  host: string;
  port: string;
  trustProxy: boolean;
  /** Remove Authorization: the relay consumed Basic credentials for the tunnel's own protection. */
  dropAuthorization: boolean;
}

/** More headers (count or bytes) than one frame may carry. */
const HEADERS_TOO_LARGE: ErrorPage = {
  status: 431,
  code: 'headers_too_large',
  title: 'Request Header Fields Too Large',
  detail: 'The request has more headers than the tunnel carries.',
};

/** Called when the exchange is over, whatever the outcome. */
type Done = () => void;

/** Counts what crosses one exchange, for metrics, Stats and the access log. */
export interface Meter {
  /** Body bytes from the visitor that went into the tunnel. */
  in(bytes: number): void;
  /** Body bytes from the tunnel that went to the visitor. */
  out(bytes: number): void;
  /** The status the relay answered an upgrade with (plain requests have res.statusCode). */
  answered(code: number): void;
}

const NO_METER: Meter = { in: () => {}, out: () => {}, answered: () => {} };

function requestHeaders(req: IncomingMessage, ctx: PublicContext, upgrade: boolean): HeaderList {
  let headers = stripHopByHop(req.rawHeaders, upgrade);
  if (ctx.dropAuthorization) headers = withoutHeader(headers, 'authorization');
  addForwardedHeaders(headers, {
    remoteAddress: plainAddress(req.socket.remoteAddress ?? ''),
    proto: ctx.proto,
    host: ctx.host,
    port: ctx.port,
    trustProxy: ctx.trustProxy,
  });
  return headers;
}

/**
 * Why the relay will not forward a request whose framing or routing is ambiguous, or undefined. Node's parser already
 * refuses Content-Length with Transfer-Encoding and repeated Content-Length; what it lets through is checked here.
 */
export function requestProblem(req: IncomingMessage, upgrade: boolean): ErrorPage | undefined {
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') hosts++;
  // The relay routes on one Host and the local service might read another (RFC 9112 §3.2: answer 400).
  if (hosts > 1) return badRequest(400, 'The request has more than one Host header.');
  const te = req.headers['transfer-encoding'];
  // A coding the tunnel does not apply would reach the local service mislabelled (RFC 9112 §6.1: answer 501).
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked')
    return badRequest(501, `Transfer-Encoding "${te.slice(0, 80)}" is not supported; only chunked is.`);
  // Node hands an upgrade's body bytes over as the new protocol's first bytes: there is no body to frame.
  if (upgrade && (te !== undefined || (declaredLength(raw) ?? 0) !== 0))
    return badRequest(400, 'An upgrade request cannot carry a body.');
  return undefined;
}

function badRequest(status: 400 | 501, detail: string): ErrorPage {
  return {
    status,
    code: 'bad_request',
    title: status === 400 ? 'Bad Request' : 'Not Implemented',
    detail,
  };
}

function bodyKind(req: IncomingMessage): (typeof BodyKind)[keyof typeof BodyKind] {
  if (req.headers['transfer-encoding'] !== undefined) return BodyKind.Chunked;
  if (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')
    return BodyKind.Length;
  return BodyKind.None;
}

/** The page for a stream that failed before its response head. */
export function resetPage(err: GgrokError): ErrorPage {
  const status = statusForReset(err.code);
  switch (err.code) {
    case ResetCode.LocalUnreachable:
      return {
        status,
        code: err.code,
        title: 'Local service unreachable',
        detail: `The ggrok client could not reach the local service: ${err.message}. Is your server running?`,
      };
    case ResetCode.RefusedStream:
      return {
        status,
        code: err.code,
        title: 'Tunnel busy',
        detail: 'This tunnel has too many requests in progress. Try again shortly.',
        retryAfterSeconds: 1,
      };
    case ResetCode.TunnelClosed:
      return {
        status,
        code: err.code,
        title: 'Tunnel disconnected',
        detail: 'The tunnel client disconnected during the request.',
      };
    default:
      return {
        status,
        code: err.code,
        title: 'Bad gateway',
        detail: err.message || `The tunnel failed (${err.code}).`,
      };
  }
}

/** Relays one public HTTP request through the session and streams the answer back. */
export function forwardRequest(
  tunnel: { session: Session; index: number },
  req: IncomingMessage,
  res: ServerResponse,
  ctx: PublicContext,
  done: Done,
  meter: Meter = NO_METER,
): void {
  new PublicRequest(req, res, meter, done).start(tunnel, ctx);
}

/**
 * One visitor's HTTP request through the tunnel: owns its stream, passes the request body in, writes the answer
 * (1xx heads, final head, body, trailers) to the ServerResponse, and ends once whatever the outcome.
 */
class PublicRequest implements StreamHandler {
  private stream: Stream | undefined;
  /** Writes the response body into the ServerResponse at the pace the visitor reads it. */
  private sink: StreamSink | undefined;
  /** 1xx heads passed on so far. */
  private informational = 0;
  /** Body bytes the response head promised and that have not come yet (Infinity: not framed by a length). */
  private bodyLeft = Infinity;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly meter: Meter,
    private readonly done: Done,
  ) {}

  start(tunnel: { session: Session; index: number }, ctx: PublicContext): void {
    const { req, res } = this;
    const problem = requestProblem(req, false);
    if (problem) {
      res.shouldKeepAlive = false; // what follows on this connection cannot be trusted to be framed as we think
      sendErrorPage(res, problem);
      return this.done();
    }
    const headers = requestHeaders(req, ctx, false);
    if (!headerListFits(headers)) {
      sendErrorPage(res, HEADERS_TOO_LARGE);
      return this.done();
    }
    const body = bodyKind(req);
    const stream = tunnel.session.openStream(
      {
        tunnel: tunnel.index,
        method: req.method ?? 'GET',
        target: req.url ?? '/',
        headers,
        body,
        upgrade: false,
      },
      this,
    );
    this.stream = stream;
    // A request without a body is complete with its head (the Request frame implies End): nothing to pump.
    if (body !== BodyKind.None) {
      const meter = this.meter;
      pump(req, stream, {
        trailers: () => allowedTrailers(req.rawTrailers),
        tap: meter === NO_METER ? undefined : (chunk) => meter.in(chunk.length),
      });
    }
    res.on('close', () => {
      // The public client went away before the whole response was written: stop the local side too.
      if (!res.writableFinished) stream.reset(ResetCode.Cancel, 'public client went away');
      this.done();
    });
  }

  info(head: InfoFrame): void {
    if (this.informational < MAX_INFORMATIONAL && writeInformational(this.res, head)) this.informational++;
  }

  response(head: ResponseFrame): void {
    const { res, stream } = this;
    const length = declaredLength(head.headers);
    try {
      if (Number.isNaN(length)) throw new Error('malformed Content-Length');
      res.writeHead(head.status, head.reason, stripHopByHop(head.headers));
    } catch (err) {
      stream!.reset(ResetCode.ProtocolError, 'response head rejected');
      sendErrorPage(res, {
        status: 502,
        code: ResetCode.ProtocolError,
        title: 'Bad gateway',
        detail: `Invalid response from the local service: ${(err as Error).message}`,
      });
      return;
    }
    const bodiless = this.req.method === 'HEAD' || head.status === 204 || head.status === 304;
    if (length !== undefined && !bodiless) this.bodyLeft = length;
    this.sink = new StreamSink(stream!, res);
  }

  data(chunk: Buffer): void {
    if (chunk.length > this.bodyLeft) return this.misframed('response body longer than its Content-Length');
    this.bodyLeft -= chunk.length;
    this.meter.out(chunk.length);
    this.sink!.write(chunk);
  }

  end(trailers: HeaderList): void {
    const { req, res } = this;
    if (this.bodyLeft !== Infinity && this.bodyLeft > 0)
      return this.misframed('response body shorter than its Content-Length');
    this.sink?.flush(); // what waited for a full socket goes before the end
    const allowed = allowedTrailers(trailers);
    if (allowed.length > 0) res.addTrailers(toPairs(allowed));
    res.end();
    // Answered before the whole request body arrived (e.g. 413 or 417): stop forwarding the rest and
    // discard it, as a server that answers early does.
    if (!req.complete) {
      this.stream!.reset(ResetCode.Cancel, 'response complete');
      req.resume();
    }
  }

  reset(err: GgrokError): void {
    const { req, res } = this;
    // Whatever is left of the request body is not wanted any more. Drain it (it may be paused by flow
    // control), or the keep-alive connection never reads its next request.
    req.resume();
    if (res.writableEnded) return;
    if (res.headersSent)
      res.destroy(); // cut, never end as if complete
    else sendErrorPage(res, resetPage(err));
  }

  drain(): void {
    this.req.resume();
  }

  /**
   * Anything but exactly the declared length would desynchronise the visitor's connection (and every visitor's,
   * behind a front that pools connections): cut it, never pass the difference on.
   */
  private misframed(why: string): void {
    this.stream!.reset(ResetCode.ProtocolError, why);
    this.res.destroy();
  }
}

/** Informational heads passed to one public request at most; more are dropped (1xx are not flow-controlled). */
const MAX_INFORMATIONAL = 16;
/** A 1xx is dropped while this much is already waiting in the public socket (a visitor that stopped reading). */
const MAX_INFORMATIONAL_BACKLOG_BYTES = 64 * 1024;

/**
 * Passes a 1xx head on; returns whether it counted against the request's limit. Informational responses are
 * advisory: one that cannot be passed (a stalled visitor, or hints Node refuses to write) is dropped rather than
 * buffered or allowed to throw.
 */
function writeInformational(res: ServerResponse, head: InfoFrame): boolean {
  if (res.headersSent || res.writableEnded) return false;
  if ((res.socket?.writableLength ?? 0) > MAX_INFORMATIONAL_BACKLOG_BYTES) return false;
  try {
    if (head.status === 100) res.writeContinue();
    else if (head.status === 102) res.writeProcessing();
    else if (head.status === 103) {
      // A null-prototype map: header names such as "constructor" or "__proto__" are plain keys here.
      const hints = Object.create(null) as Record<string, string[]>;
      for (let i = 0; i < head.headers.length; i += 2) {
        const name = head.headers[i]!.toLowerCase();
        const value = head.headers[i + 1]!;
        // Node takes one link per entry: split "<a>; rel=preload, <b>; rel=preload" into its links.
        (hints[name] ??= []).push(...(name === 'link' ? value.split(/\s*,\s*(?=<)/) : [value]));
      }
      if (hints.link) res.writeEarlyHints(hints);
    }
  } catch {
    // Node validates Early Hints more strictly than RFC 8288 (e.g. quoted commas): drop the hint, never throw.
  }
  return true;
}

/** Serialises a response head for a raw socket. */
function rawHead(head: ResponseFrame, headers: HeaderList): string {
  return `HTTP/1.1 ${head.status} ${head.reason}\r\n${headerLines(headers)}\r\n`;
}

/**
 * Relays a public upgrade (WebSocket or any other protocol) through the session. The local server's answer
 * comes back as it is; after a 101 the stream is a raw byte channel both ways, with half-close.
 */
export function forwardUpgrade(
  tunnel: { session: Session; index: number },
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  ctx: PublicContext,
  done: Done,
  meter: Meter = NO_METER,
): void {
  new PublicUpgrade(req, socket, meter, done).start(tunnel, ctx, head);
}

/**
 * One visitor's upgrade through the tunnel: owns its stream and the visitor's raw socket. The local server's answer
 * goes back as it is; after a 101 the stream carries raw bytes both ways, with half-close.
 */
class PublicUpgrade implements StreamHandler {
  private stream: Stream | undefined;
  private sink: StreamSink | undefined;
  private responded = false;
  private finished = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly meter: Meter,
    private readonly done: Done,
  ) {}

  start(tunnel: { session: Session; index: number }, ctx: PublicContext, early: Buffer): void {
    const { req, socket, meter } = this;
    const problem = requestProblem(req, true);
    if (problem) {
      meter.answered(problem.status);
      writeRawErrorPage(socket, problem);
      return this.done();
    }
    const headers = requestHeaders(req, ctx, true);
    if (!headerListFits(headers)) {
      meter.answered(HEADERS_TOO_LARGE.status);
      writeRawErrorPage(socket, HEADERS_TOO_LARGE);
      return this.done();
    }
    const stream = tunnel.session.openStream(
      {
        tunnel: tunnel.index,
        method: req.method ?? 'GET',
        target: req.url ?? '/',
        headers,
        body: BodyKind.None,
        upgrade: true,
      },
      this,
    );
    this.stream = stream;
    // Bytes the public client sent right after its request head belong to the new protocol: send them first.
    if (early.length > 0) {
      meter.in(early.length);
      stream.write(early);
    }
    pump(socket, stream, { tap: meter === NO_METER ? undefined : (chunk) => meter.in(chunk.length) });
    socket.on('error', () => {});
    socket.on('close', () => {
      // After a clean end each way, queued bytes and End may still be on their way to the local side:
      // only an abrupt close cancels the channel.
      if (!stream.endRequested || stream.remote !== Phase.Ended)
        stream.reset(ResetCode.Cancel, 'public client went away');
      this.finish();
    });
  }

  response(head: ResponseFrame): void {
    this.responded = true;
    this.meter.answered(head.status);
    const upgraded = head.status === 101;
    const headers = stripHopByHop(head.headers, upgraded);
    if (!upgraded) headers.push('Connection', 'close');
    this.socket.write(rawHead(head, headers));
    this.sink = new StreamSink(this.stream!, this.socket);
  }

  data(chunk: Buffer): void {
    this.meter.out(chunk.length);
    this.sink!.write(chunk);
  }

  /** Half-close: the local side finished sending; the public side may still talk. */
  end(): void {
    this.sink?.flush();
    this.socket.end();
  }

  reset(err: GgrokError): void {
    // A cut channel must not look like a clean end to the public client: reset the TCP connection.
    if (this.responded) resetSocket(this.socket);
    else {
      const page = resetPage(err);
      this.meter.answered(page.status);
      writeRawErrorPage(this.socket, page);
    }
    this.finish();
  }

  drain(): void {
    this.socket.resume();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.done();
  }
}

/** Destroys a socket with a TCP RST where possible, so the peer sees an error rather than a clean end. */
export function resetSocket(socket: Duplex): void {
  const tcp = socket as Duplex & { resetAndDestroy?: () => void };
  if (typeof tcp.resetAndDestroy === 'function') tcp.resetAndDestroy();
  else socket.destroy();
}
