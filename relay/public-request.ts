// One visitor's request or upgrade, from arrival to its end: routing, admission, its stream, the answer, the report.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { headerListFits } from '../protocol/codec.js';
import {
  ErrorCode,
  ResetCode,
  statusForReset,
  type ErrorCodeValue,
  type GgrokError,
} from '../protocol/errors.js';
import { BodyKind, type HeaderList, type InfoFrame, type ResponseFrame } from '../protocol/frames.js';
import {
  addForwardedHeaders,
  allowedTrailers,
  declaredLength,
  headerLines,
  INBOX_ID_HEADER,
  INBOX_RECEIVED_HEADER,
  stripHopByHop,
  toPairs,
  withoutHeader,
} from '../protocol/headers.js';
import { pump, resetSocket, StreamSink } from '../protocol/stream-io.js';
import { Phase, type Stream, type StreamHandler } from '../protocol/stream.js';
import type { Admission, AdmittedTunnel } from './admission.js';
import type { MemberInfo } from './cluster/membership.js';
import {
  PEER_HEADER,
  forwardRequestToPeer,
  forwardUpgradeToPeer,
  replayRequestOnFly,
  replayUpgradeOnFly,
  type PeerVia,
} from './cluster/peer.js';
import type { IntakeHead } from './inbox-intake.js';
import { sendErrorPage, writeRawErrorPage, type ErrorPage } from './pages.js';
import type { HostParts, Route } from './routing.js';
import type { Tunnel } from './tunnel.js';

/** What the relay knows about how the public client reached it. */
export interface PublicContext {
  proto: string;
  /** Host header as received (with port if any). */
  host: string;
  port: string;
  trustProxy: boolean;
  /** Remove Authorization: the relay consumed Basic credentials for the tunnel's own protection. */
  dropAuthorization: boolean;
  /** The visitor's address, appended to X-Forwarded-For. */
  remoteAddress: string;
}

/** More headers (count or bytes) than one frame may carry. */
const HEADERS_TOO_LARGE: ErrorPage = {
  status: 431,
  code: ErrorCode.HeadersTooLarge,
  title: 'Request Header Fields Too Large',
  detail: 'The request has more headers than the tunnel carries.',
};

/** The status logged and counted for a visitor who left before any response head (nginx's convention). */
export const CLIENT_CLOSED_STATUS = 499;

/** A visitor's exchange as the relay reports it once it is over: metrics, the tunnel's counters, the access log. */
export interface FinishedExchange {
  readonly req: IncomingMessage;
  readonly upgrade: boolean;
  /** The status answered (CLIENT_CLOSED_STATUS when the visitor left before any). */
  readonly status: number;
  /** Seconds from arrival to the end. */
  readonly seconds: number;
  /** Body bytes from the visitor into the tunnel, and back. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** The tunnel it was for, once routed to one. */
  readonly tunnel: Tunnel | undefined;
}

/** How an exchange for a tunnel held by another instance reaches it. */
export type HandOff = { kind: 'fly'; machine: string } | { kind: 'peer'; url: string; signature: string };

/** What one visitor's exchange needs from the relay. */
export interface ExchangeDesk {
  readonly admission: Admission;
  /** The largest body a webhook inbox keeps (--inbox-max-body). */
  readonly inboxMaxBodyBytes: number;
  /**
   * How to hand an exchange for a tunnel other instances hold to one of them (fly-replay, or a forward to its
   * --peer-url), or undefined when it cannot be handed off (then it waits here for its client, like a held name).
   */
  handOff(req: IncomingMessage, members: MemberInfo[], via: PeerVia | undefined): HandOff | undefined;
  /**
   * Holds the exchange for `name`, whose client is away: calls back with the tunnel when it is back, or with
   * undefined (timeout, shutdown, no room). Returns a cancel for a visitor who leaves first.
   */
  wait(name: string, callback: (tunnel?: Tunnel) => void): () => void;
  /** The exchange is over. */
  finished(x: FinishedExchange): void;
  /** Another member of `failed`'s endpoint pool for a request that failed on it, or undefined. */
  failover(failed: Tunnel): Tunnel | undefined;
  /**
   * The absent tunnel whose webhook inbox keeps a request for held name `name` at `target`, or undefined (no inbox,
   * the path does not match, or the name is not held for the owner who turned the inbox on).
   */
  inboxFor(name: string, target: string): AdmittedTunnel | undefined;
  /** Keeps the request in `name`'s inbox and answers it (inbox-intake.ts). */
  keep(req: IncomingMessage, res: ServerResponse, head: IntakeHead): void;
}

/** Methods a request may be sent twice with (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Failures that say a pool member cannot serve now: it is taken out of the pool for a back-off. */
const MEMBER_FAILURES = new Set<string>([ErrorCode.LocalUnreachable, ErrorCode.LocalError]);
/** Failures after which a request may be tried on another member (the local service may have seen it: idempotent only). */
const RETRYABLE = new Set<string>([
  ErrorCode.LocalUnreachable,
  ErrorCode.LocalError,
  ErrorCode.TunnelClosed,
  ErrorCode.RefusedStream,
]);
/** Failures that prove the local service never saw the request: any method may be tried elsewhere. */
const NEVER_DELIVERED = new Set<string>([ErrorCode.LocalUnreachable, ErrorCode.RefusedStream]);

/** The page for a visitor whose exchange another instance was to serve but could not be reached. */
function peerUnreachable(why: string): ErrorPage {
  return {
    status: 502,
    code: ErrorCode.TunnelClosed,
    title: 'Tunnel unreachable',
    detail: `${why}. Try again shortly.`,
    retryAfterSeconds: 1,
  };
}

/** Where a visitor's exchange is: arrived, held for a reconnecting client, carried by a stream, or over. */
const ExchangeState = {
  Arrived: 'arrived',
  Waiting: 'waiting',
  Forwarding: 'forwarding',
  Done: 'done',
} as const;
type ExchangeStateValue = (typeof ExchangeState)[keyof typeof ExchangeState];

/**
 * What both kinds of visitor exchange share: routing (a live tunnel, a wait for one, or the relay's page), admission
 * and its bookkeeping, byte counts, and finishing once.
 */
abstract class PublicExchange implements StreamHandler, FinishedExchange {
  abstract readonly upgrade: boolean;
  protected state: ExchangeStateValue = ExchangeState.Arrived;
  protected stream: Stream | undefined;
  tunnel: Tunnel | undefined;
  bytesIn = 0;
  bytesOut = 0;
  private readonly startedAt = performance.now();
  /**
   * Admitted into the tunnel: the visitor key it counts under against the tunnel's concurrency limit and fair
   * share until the exchange is over.
   */
  private admitted: string | undefined;
  /** Tried on another pool member already (a request is retried once at most). */
  private retried = false;
  private cancelWait: (() => void) | undefined;

  constructor(
    protected readonly desk: ExchangeDesk,
    readonly req: IncomingMessage,
    protected readonly at: HostParts,
    /** Set when another instance of the cluster forwarded this exchange here (it is never forwarded again). */
    protected readonly via: PeerVia | undefined,
  ) {}

  abstract get status(): number;
  get seconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  /** Follows the route: forward to a live tunnel, wait for one whose client is away, or answer the relay's page. */
  route(route: Exclude<Route, { kind: 'relay' }>): void {
    if (route.kind === 'tunnel') return this.admit(route.tunnel);
    if (route.kind === 'elsewhere') {
      const handOff = this.desk.handOff(this.req, route.members, this.via);
      if (handOff) {
        this.state = ExchangeState.Forwarding;
        return this.handOff(handOff);
      }
    }
    const heldName = route.kind === 'elsewhere' ? route.name : route.heldName;
    if (!heldName) return this.answer(route.page);
    if (route.kind === 'missing' && this.keep(heldName)) return;
    this.state = ExchangeState.Waiting;
    this.cancelWait = this.desk.wait(heldName, (tunnel) => {
      this.cancelWait = undefined;
      if (this.state !== ExchangeState.Waiting) return;
      if (tunnel) this.admit(tunnel);
      else this.answer(route.page);
    });
  }

  private admit(tunnel: Tunnel): void {
    this.tunnel = tunnel;
    const what = this.upgrade ? 'channels' : 'requests';
    const admission = this.desk.admission.check(tunnel, this.req, what, this.via?.visitor);
    if (admission.page) return this.answer(admission.page);
    this.admitted = admission.visitor;
    tunnel.opened(what, admission.visitor);
    this.state = ExchangeState.Forwarding;
    this.forward(tunnel, this.desk.admission.context(this.req, tunnel, this.at, this.via));
  }

  /** Undoes admit(): the exchange no longer counts against its tunnel's limits. */
  private release(): void {
    if (this.admitted === undefined || !this.tunnel) return;
    this.tunnel.closed(this.upgrade ? 'channels' : 'requests', this.admitted);
    this.admitted = undefined;
  }

  /**
   * A pool member failed this exchange with `err` before anything of the answer (and, the caller checked, nothing of
   * a request body) moved: marks the member's health and, once, sends the exchange to another member. Returns
   * whether it did.
   */
  protected failover(err: GgrokError, idempotent: boolean): boolean {
    const failed = this.tunnel;
    if (!failed?.pool) return false;
    if (MEMBER_FAILURES.has(err.code)) failed.health.failed();
    if (this.retried || this.state !== ExchangeState.Forwarding || !RETRYABLE.has(err.code)) return false;
    if (!idempotent && !NEVER_DELIVERED.has(err.code)) return false;
    const next = this.desk.failover(failed);
    if (!next) return false;
    this.retried = true;
    this.release();
    this.stream = undefined;
    this.admit(next);
    return true;
  }

  /** Keeps the exchange in the webhook inbox of `name`, whose client is away; false when it is not for the inbox. */
  protected keep(_name: string): boolean {
    return false;
  }

  /** Passes the exchange to another instance of the cluster, which holds its tunnel. */
  protected abstract handOff(how: HandOff): void;

  /** Opens the exchange's stream on the tunnel and starts both directions. */
  protected abstract forward(tunnel: Tunnel, ctx: PublicContext): void;
  /** Answers with one of the relay's own pages. */
  protected abstract answer(page: ErrorPage): void;

  /** Body bytes from the visitor went into the tunnel. */
  protected countIn(n: number): void {
    this.bytesIn += n;
    this.tunnel?.countIn(n);
  }

  /** Body bytes from the tunnel went to the visitor. */
  protected countOut(n: number): void {
    this.bytesOut += n;
    this.tunnel?.countOut(n);
  }

  /** The visitor's side closed: the one place an exchange ends. */
  protected finish(): void {
    if (this.state === ExchangeState.Done) return;
    this.state = ExchangeState.Done;
    this.cancelWait?.();
    this.release();
    this.desk.finished(this);
  }

  abstract data(chunk: Buffer): void;
  abstract end(trailers: HeaderList): void;
  abstract reset(err: GgrokError): void;
  abstract drain(): void;
}

/** How Node's req.headers names them. */
const INBOX_ID_LOWER = INBOX_ID_HEADER.toLowerCase();
const INBOX_RECEIVED_LOWER = INBOX_RECEIVED_HEADER.toLowerCase();

function requestHeaders(req: IncomingMessage, ctx: PublicContext, upgrade: boolean): HeaderList {
  let headers = stripHopByHop(req.rawHeaders, upgrade);
  if (ctx.dropAuthorization) headers = withoutHeader(headers, 'authorization');
  // The signature of another instance that forwarded the request is the relay's business, not the app's.
  if (req.headers[PEER_HEADER] !== undefined) headers = withoutHeader(headers, PEER_HEADER);
  // Only the relay says a request was kept while the client was away: an app de-duplicates on these.
  if (req.headers[INBOX_ID_LOWER] !== undefined) headers = withoutHeader(headers, INBOX_ID_HEADER);
  if (req.headers[INBOX_RECEIVED_LOWER] !== undefined)
    headers = withoutHeader(headers, INBOX_RECEIVED_HEADER);
  addForwardedHeaders(headers, {
    remoteAddress: ctx.remoteAddress,
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
    code: ErrorCode.BadRequest,
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

/** Title and detail of the page for a stream that failed before its response head, by reset code. */
const RESET_PAGES: Partial<Record<ErrorCodeValue, (err: GgrokError) => Omit<ErrorPage, 'status' | 'code'>>> =
  {
    [ErrorCode.LocalUnreachable]: (err) => ({
      title: 'Local service unreachable',
      detail: `The ggrok client could not reach the local service: ${err.message}. Is your server running?`,
    }),
    [ErrorCode.RefusedStream]: () => ({
      title: 'Tunnel busy',
      detail: 'This tunnel has too many requests in progress. Try again shortly.',
      retryAfterSeconds: 1,
    }),
    [ErrorCode.TunnelClosed]: () => ({
      title: 'Tunnel disconnected',
      detail: 'The tunnel client disconnected during the request.',
    }),
  };

/** The page for a stream that failed before its response head. */
export function resetPage(err: GgrokError): ErrorPage {
  const page = RESET_PAGES[err.code]?.(err) ?? {
    title: 'Bad gateway',
    detail: err.message || `The tunnel failed (${err.code}).`,
  };
  return { status: statusForReset(err.code), code: err.code, ...page };
}

/**
 * One visitor's HTTP request: routed, admitted, carried by its own stream, its answer (1xx heads, final head, body,
 * trailers) written to the ServerResponse. Created when the request arrives; over when the response closes.
 */
export class PublicRequest extends PublicExchange {
  readonly upgrade = false;
  /** Writes the response body into the ServerResponse at the pace the visitor reads it. */
  private sink: StreamSink | undefined;
  /** 1xx heads passed on so far. */
  private informational = 0;
  /** Body bytes the response head promised and that have not come yet (Infinity: not framed by a length). */
  private bodyLeft = Infinity;
  /** The request has no body: it may be sent again to another pool member. */
  private bodiless = false;

  constructor(
    desk: ExchangeDesk,
    req: IncomingMessage,
    private readonly res: ServerResponse,
    at: HostParts,
    via?: PeerVia,
  ) {
    super(desk, req, at, via);
    res.once('close', () => {
      // The public client went away before the whole response was written: stop the local side too.
      if (!res.writableFinished) this.stream?.reset(ResetCode.Cancel, 'public client went away');
      this.finish();
    });
  }

  get status(): number {
    return this.res.headersSent ? this.res.statusCode : CLIENT_CLOSED_STATUS;
  }

  protected answer(page: ErrorPage): void {
    sendErrorPage(this.res, page);
  }

  protected override keep(name: string): boolean {
    const { req, res, desk } = this;
    const absent = desk.inboxFor(name, req.url ?? '/');
    if (!absent) return false;
    // A sender that waits for 100 Continue with a body over the cap is answered as without an inbox.
    const length = declaredLength(req.rawHeaders);
    if (req.headers.expect !== undefined && (Number.isNaN(length) || (length ?? 0) > desk.inboxMaxBodyBytes))
      return false;
    // The absent tunnel's own rules (Basic auth, allowed addresses, its rate) still decide who may leave a request.
    const admission = desk.admission.check(absent, req, 'requests', this.via?.visitor);
    if (admission.page) {
      this.answer(admission.page);
      return true;
    }
    const problem = requestProblem(req, false);
    if (problem) {
      res.shouldKeepAlive = false;
      this.answer(problem);
      return true;
    }
    // The delivery's own X-Ggrok-Inbox and X-Ggrok-Received-At are the relay's to set (requestHeaders drops a sender's).
    const headers = requestHeaders(req, desk.admission.context(req, absent, this.at, this.via), false);
    // Room for the two headers a delivery adds.
    const delivered = [...headers, INBOX_ID_HEADER, 'x'.repeat(40), INBOX_RECEIVED_HEADER, 'x'.repeat(30)];
    if (!headerListFits(delivered)) {
      this.answer(HEADERS_TOO_LARGE);
      return true;
    }
    desk.keep(req, res, {
      name,
      method: req.method ?? 'GET',
      target: req.url ?? '/',
      headers,
      body: bodyKind(req),
    });
    return true;
  }

  protected handOff(how: HandOff): void {
    if (how.kind === 'fly') return replayRequestOnFly(this.res, how.machine);
    forwardRequestToPeer(this.req, this.res, how.url, how.signature, (why) =>
      this.answer(peerUnreachable(why)),
    );
  }

  protected forward(tunnel: Tunnel, ctx: PublicContext): void {
    const { req, res } = this;
    const problem = requestProblem(req, false);
    if (problem) {
      res.shouldKeepAlive = false; // what follows on this connection cannot be trusted to be framed as we think
      return sendErrorPage(res, problem);
    }
    const headers = requestHeaders(req, ctx, false);
    if (!headerListFits(headers)) return sendErrorPage(res, HEADERS_TOO_LARGE);
    const body = bodyKind(req);
    this.bodiless = body === BodyKind.None;
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
    if (body !== BodyKind.None)
      pump(req, stream, {
        trailers: () => allowedTrailers(req.rawTrailers),
        tap: (chunk) => this.countIn(chunk.length),
      });
  }

  info(head: InfoFrame): void {
    if (this.informational < MAX_INFORMATIONAL && writeInformational(this.res, head)) this.informational++;
  }

  response(head: ResponseFrame): void {
    const { res, stream } = this;
    if (this.tunnel?.pool) this.tunnel.health.served();
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
    this.countOut(chunk.length);
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
    // Nothing of the answer and no request body went out: another pool member may serve it instead.
    if (
      !res.headersSent &&
      !res.writableEnded &&
      this.informational === 0 &&
      this.bodiless &&
      this.failover(err, IDEMPOTENT.has(req.method ?? ''))
    )
      return;
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
 * One visitor's upgrade (WebSocket or any other protocol): routed, admitted, carried by its own stream on the
 * visitor's raw socket. The local server's answer goes back as it is; after a 101 the stream carries raw bytes both
 * ways, with half-close. Over when the visitor's socket closes.
 */
export class PublicUpgrade extends PublicExchange {
  readonly upgrade = true;
  private sink: StreamSink | undefined;
  private responded = false;
  /** The status answered (the local server's, or the relay's page); 0 until known. */
  private answered = 0;

  constructor(
    desk: ExchangeDesk,
    req: IncomingMessage,
    private readonly socket: Duplex,
    /** Bytes the visitor sent right after its request head: the new protocol's first bytes. */
    private readonly early: Buffer,
    at: HostParts,
    via?: PeerVia,
  ) {
    super(desk, req, at, via);
    socket.on('error', () => {});
    socket.once('close', () => {
      const stream = this.stream;
      // After a clean end each way, queued bytes and End may still be on their way to the local side:
      // only an abrupt close cancels the channel.
      if (stream && (!stream.endRequested || stream.remote !== Phase.Ended))
        stream.reset(ResetCode.Cancel, 'public client went away');
      this.finish();
    });
  }

  get status(): number {
    return this.answered || CLIENT_CLOSED_STATUS;
  }

  protected answer(page: ErrorPage): void {
    this.answered = page.status;
    writeRawErrorPage(this.socket, page);
  }

  protected handOff(how: HandOff): void {
    if (how.kind === 'fly') {
      this.answered = 307;
      return replayUpgradeOnFly(this.socket, how.machine);
    }
    this.answered = 101;
    forwardUpgradeToPeer(this.req, this.socket, this.early, how.url, how.signature, (why) =>
      this.answer(peerUnreachable(why)),
    );
  }

  protected forward(tunnel: Tunnel, ctx: PublicContext): void {
    const { req, socket, early } = this;
    const problem = requestProblem(req, true);
    if (problem) return this.answer(problem);
    const headers = requestHeaders(req, ctx, true);
    if (!headerListFits(headers)) return this.answer(HEADERS_TOO_LARGE);
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
      this.countIn(early.length);
      stream.write(early);
    }
    pump(socket, stream, { tap: (chunk) => this.countIn(chunk.length) });
  }

  response(head: ResponseFrame): void {
    this.responded = true;
    if (this.tunnel?.pool) this.tunnel.health.served();
    this.answered = head.status;
    const upgraded = head.status === 101;
    const headers = stripHopByHop(head.headers, upgraded);
    if (!upgraded) headers.push('Connection', 'close');
    this.socket.write(rawHead(head, headers));
    this.sink = new StreamSink(this.stream!, this.socket);
  }

  data(chunk: Buffer): void {
    this.countOut(chunk.length);
    this.sink!.write(chunk);
  }

  /** Half-close: the local side finished sending; the public side may still talk. */
  end(): void {
    this.sink?.flush();
    this.socket.end();
  }

  reset(err: GgrokError): void {
    // An upgrade is not sent twice (its socket is already being read into the stream): the member's health counts.
    if (!this.responded && this.tunnel?.pool && MEMBER_FAILURES.has(err.code)) this.tunnel.health.failed();
    // A cut channel must not look like a clean end to the public client: reset the TCP connection.
    if (this.responded) resetSocket(this.socket);
    else this.answer(resetPage(err));
  }

  drain(): void {
    this.socket.resume();
  }
}
