// The client's control connection: connect, handshake, serve streams, reconnect with backoff.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { CloseCode, ErrorCode, GgrokError, ResetCode } from '../protocol/errors.js';
import { describeRefusal, isRetryableRefusal } from './advice.js';
import {
  DEFAULT_FLOW,
  FrameType,
  PROTOCOL_VERSION,
  WIRE_LIMITS,
  type AccessRules,
  type HeaderList,
  type RequestFrame,
  type WelcomeFrame,
} from '../protocol/frames.js';
import { Session } from '../protocol/session.js';
import type { StreamHandler } from '../protocol/stream.js';
import { VERSION } from '../protocol/version.js';
import { bothObservers, HostCheckWatch, type HostCheckHint } from './host-check.js';
import {
  LocalForwarder,
  type Exchange,
  type ExchangeObserver,
  type HeaderRules,
  type LocalTarget,
} from './local-request.js';

export interface ClientOptions {
  /** Relay URL, e.g. https://relay.example.com or http://localhost:8080. */
  server: string;
  token: string;
  /** Requested name; the relay picks one when absent. */
  subdomain?: string;
  target: LocalTarget;
  /** Accept a relay with a self-signed certificate. */
  insecure?: boolean;
  /** Visitor restrictions the relay enforces (Basic auth, allowed addresses). */
  access?: AccessRules;
  /** Header edits applied by this client (Host rewrite, add/remove). */
  headerRules?: HeaderRules;
  /** Further tunnels carried by the same control connection. */
  more?: TunnelSpec[];
  /** Lets an inspector watch every exchange (tunnel name, request head as the local service gets it). */
  observe?: (tunnel: string, head: RequestFrame, localHeaders: HeaderList) => ExchangeObserver | undefined;
  /** Keep retrying when the relay cannot be reached at first (the CLI does; the API rejects instead). */
  retryInitialConnect?: boolean;
  /** Give up and emit 'fatal' instead of reconnecting after a drop. */
  noReconnect?: boolean;
  /** Backoff bounds for reconnects. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** One tunnel of a client: a name to ask for, a local target, and its own rules. */
export interface TunnelSpec {
  subdomain?: string;
  target: LocalTarget;
  access?: AccessRules;
  headerRules?: HeaderRules;
}

/** What 'online' reports. */
export interface OnlineInfo {
  url: string;
  name: string;
  /** Every tunnel of the connection, the first one included, in order. */
  tunnels: { name: string; url: string; target: LocalTarget }[];
  /** True for every connection after the first. */
  reconnected: boolean;
}

/** What 'offline' reports: why, and when the next attempt is. */
export interface OfflineInfo {
  reason: string;
  retryInMs: number;
}

/** A tunnel's traffic as the relay counts it (sent every few seconds while something changes). */
export interface TunnelStats {
  name: string;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  channels: number;
  lastActivityMs: number;
}

export interface ClientEvents {
  online: [OnlineInfo];
  offline: [OfflineInfo];
  request: [Exchange];
  /** A dev server refused a visitor with its host check: which, why and how to fix it (once per tunnel). */
  hint: [HostCheckHint];
  /** Relay-side traffic counters of one tunnel. */
  stats: [TunnelStats];
  /** An error retrying cannot fix (bad token, name taken, …); the client has stopped. */
  fatal: [GgrokError];
  closed: [];
}

/** Turns the relay URL into the control socket URL. */
export function controlUrl(server: string): string {
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(server) ? server : `http://${server}`);
  } catch {
    throw new GgrokError(ErrorCode.BadServerUrl, `"${server}" is not a valid relay URL`);
  }
  if (
    url.protocol !== 'http:' &&
    url.protocol !== 'https:' &&
    url.protocol !== 'ws:' &&
    url.protocol !== 'wss:'
  )
    throw new GgrokError(
      ErrorCode.BadServerUrl,
      `"${server}": the relay URL must start with http:// or https://`,
    );
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  return `${secure ? 'wss' : 'ws'}://${url.host}${url.pathname.replace(/\/+$/, '')}/_ggrok/connect`;
}

const TLS_ERRORS = /^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_SSL)/;

/** The owner of a stream for a tunnel this connection does not carry: it was reset at once; nothing else happens. */
const IGNORED_STREAM: StreamHandler = { data() {}, end() {}, reset() {}, drain() {} };

/** A tunnel client. start() resolves on the first welcome; afterwards it keeps itself online until close(). */
export class TunnelClient extends EventEmitter<ClientEvents> {
  url = '';
  name = '';
  /** Latest heartbeat round trip to the relay, in ms (-1 before the first). */
  get rttMs(): number {
    return this.session?.rttMs ?? -1;
  }

  /** Latest relay-side counters per tunnel index. */
  readonly stats = new Map<number, TunnelStats>();

  /** Streams (requests and channels) open on the control connection right now. */
  get openStreams(): number {
    return this.session?.streams.size ?? 0;
  }

  /** Connections to the local services busy with an exchange right now (idle pooled ones not counted). */
  get busyLocalConnections(): number {
    return this.forwarders.reduce((n, f) => n + f.busyConnections, 0);
  }

  /**
   * Drops the control connection at once, without a close handshake, as a dead network or a sleeping laptop
   * would; the client then reconnects as it does after any drop. For tests and `ggrok` diagnostics.
   */
  dropConnection(): void {
    this.session?.terminate();
  }

  private readonly clientId = randomBytes(12).toString('base64url');
  private readonly specs: TunnelSpec[];
  private readonly forwarders: LocalForwarder[];
  /** Names the relay gave each tunnel, reclaimed on reconnect. */
  private names: string[] = [];
  /** Public URLs of the tunnels, as the relay announced them (for dev-server hints). */
  private urls: string[] = [];
  private readonly wsUrl: string;
  private session: Session | undefined;
  private ws: WebSocket | undefined;
  private closing = false;
  private attempt = 0;
  private everOnline = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private goAwayDelayMs: number | undefined;

  constructor(private readonly opts: ClientOptions) {
    super();
    this.wsUrl = controlUrl(opts.server);
    this.specs = [
      { subdomain: opts.subdomain, target: opts.target, access: opts.access, headerRules: opts.headerRules },
      ...(opts.more ?? []),
    ];
    this.forwarders = this.specs.map((spec, i) => {
      const hostCheck = new HostCheckWatch(
        () => ({
          tunnel: this.names[i] ?? '',
          url: this.urls[i] ?? '',
          target: spec.target,
          hostHeader: spec.headerRules?.hostHeader,
        }),
        (hint) => this.emit('hint', hint),
      );
      return new LocalForwarder(
        spec.target,
        (x) => {
          x.tunnel = this.names[i] ?? ''; // the summary is ours to fill in (no copy per request)
          this.emit('request', x);
        },
        spec.headerRules,
        (head, localHeaders) =>
          bothObservers(hostCheck.observe(head), opts.observe?.(this.names[i] ?? '', head, localHeaders)),
      );
    });
  }

  /** Connects; resolves with the public URL, rejects with a GgrokError that says what to do. */
  start(): Promise<OnlineInfo> {
    return new Promise((resolve, reject) => {
      const onOnline = (info: OnlineInfo): void => {
        this.off('fatal', onFatal);
        resolve(info);
      };
      const onFatal = (err: GgrokError): void => {
        this.off('online', onOnline);
        reject(err);
      };
      this.once('online', onOnline);
      this.once('fatal', onFatal);
      this.connect();
    });
  }

  /** Closes the tunnel; in-flight exchanges are reset. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    for (const f of this.forwarders) f.close();
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((r) => ws.once('close', () => r()));
      if (this.session) this.session.close(CloseCode.Normal, 'client closed');
      else ws.terminate();
      await closed;
    }
    this.emit('closed');
  }

  private connect(): void {
    if (this.closing) return;
    const ws = new WebSocket(this.wsUrl, {
      perMessageDeflate: false,
      maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
      // An all-zero mask makes ws skip masking and unmasking (two passes over every byte sent). Masking guards
      // browsers' sockets against cache poisoning by page scripts; this client runs no untrusted code.
      generateMask: (mask: Buffer) => void mask.fill(0),
      handshakeTimeout: 15_000,
      rejectUnauthorized: !this.opts.insecure,
      headers: { 'User-Agent': `ggrok/${VERSION}` },
    });
    this.ws = ws;
    let welcomed = false;
    /** Why this attempt failed, and whether trying again later could help. */
    let failure: { err: GgrokError; retryable: boolean } | undefined;

    ws.on('open', () => {
      ws.send(
        encodeFrame({
          type: FrameType.Hello,
          version: PROTOCOL_VERSION,
          token: this.opts.token,
          name: this.wantedName(0),
          agent: `ggrok/${VERSION} node/${process.versions.node}`,
          clientId: this.clientId,
          flow: DEFAULT_FLOW,
          ...(this.opts.access ? { access: this.opts.access } : {}),
          ...(this.specs.length > 1
            ? {
                more: this.specs.slice(1).map((spec, i) => ({
                  name: this.wantedName(i + 1),
                  ...(spec.access ? { access: spec.access } : {}),
                })),
              }
            : {}),
        }),
      );
    });
    ws.once('message', (data: Buffer, isBinary: boolean) => {
      let frame;
      try {
        frame = isBinary ? decodeFrame(data) : undefined;
      } catch {
        frame = undefined;
      }
      if (frame?.type === FrameType.Welcome) {
        welcomed = true;
        this.onWelcome(ws, frame);
      } else if (frame?.type === FrameType.Refuse) {
        const named = GgrokError.fromWire(frame.code, frame.message);
        failure = {
          err: new GgrokError(named.code, describeRefusal(named.code, named.message)),
          retryable: isRetryableRefusal(named.code),
        };
      } else {
        failure = {
          err: new GgrokError(
            ErrorCode.ProtocolError,
            'the relay sent something other than a welcome; is --server a ggrok relay?',
          ),
          retryable: false,
        };
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      failure =
        status >= 500
          ? {
              err: new GgrokError(
                ErrorCode.RelayUnavailable,
                `the relay answered ${status}; it may be starting or overloaded`,
              ),
              retryable: true,
            }
          : {
              err: new GgrokError(
                ErrorCode.NotARelay,
                `${this.opts.server} answered ${status} instead of accepting a tunnel; is --server the URL of a ggrok relay?`,
              ),
              retryable: false,
            };
      res.resume();
      ws.terminate();
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (failure) return;
      if (TLS_ERRORS.test(err.code ?? '')) {
        failure = {
          err: new GgrokError(
            ErrorCode.RelayTls,
            `cannot verify the relay's TLS certificate (${err.code}); fix the certificate or pass --insecure for a self-signed relay`,
          ),
          retryable: false,
        };
        return;
      }
      failure = {
        err: new GgrokError(
          ErrorCode.RelayUnreachable,
          `cannot reach the relay at ${this.opts.server} (${err.code ?? err.message})`,
          {
            cause: err,
          },
        ),
        retryable: true,
      };
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (this.ws !== ws) return;
      this.session = undefined;
      if (this.closing) return;
      if (!welcomed) {
        const { err, retryable } = failure ?? {
          err: new GgrokError(
            ErrorCode.RelayClosed,
            `the relay closed the connection during the handshake (${code} ${reason.toString()})`,
          ),
          retryable: true,
        };
        if (!retryable || (!this.everOnline && !this.opts.retryInitialConnect)) return this.fail(err);
        return this.scheduleReconnect(err.message);
      }
      if (this.opts.noReconnect)
        return this.fail(new GgrokError(ErrorCode.Disconnected, `disconnected from the relay (${code})`));
      const why =
        code === CloseCode.HeartbeatTimeout
          ? 'the relay stopped answering'
          : `connection lost (${code}${reason.length ? ` ${reason.toString()}` : ''})`;
      this.scheduleReconnect(why);
    });
  }

  private onWelcome(ws: WebSocket, welcome: WelcomeFrame): void {
    this.attempt = 0;
    this.goAwayDelayMs = undefined;
    this.session = new Session(ws, {
      role: 'client',
      localFlow: DEFAULT_FLOW,
      remoteFlow: welcome.flow,
      heartbeatMs: welcome.heartbeatMs,
      deadAfterMs: welcome.heartbeatMs * 2,
      maxInboundStreams: welcome.maxStreams,
      onRequest: (stream, head) => {
        const forwarder = this.forwarders[head.tunnel];
        if (forwarder) return forwarder.serve(stream, head);
        stream.reset(ResetCode.ProtocolError, `no tunnel ${head.tunnel} on this connection`);
        return IGNORED_STREAM;
      },
      onGoAway: (frame) => (this.goAwayDelayMs = frame.reconnectAfterMs),
      onStats: (frame) => {
        const { type: _type, tunnel, ...counters } = frame;
        const stats = { name: this.names[tunnel] ?? '', ...counters };
        this.stats.set(tunnel, stats);
        this.emit('stats', stats);
      },
    });
    this.session.ping();
    this.url = welcome.url;
    this.name = welcome.name;
    const more = welcome.more ?? [];
    this.names = [welcome.name, ...more.map((t) => t.name)];
    this.urls = [welcome.url, ...more.map((t) => t.url)];
    const tunnels = [{ name: welcome.name, url: welcome.url }, ...more].map((t, i) => ({
      ...t,
      target: this.specs[i]!.target,
    }));
    const reconnected = this.everOnline;
    this.everOnline = true;
    // Report online once the first heartbeat came back (so the header can show the latency), or after 1 s.
    const session = this.session;
    const since = Date.now();
    const announce = (): void => {
      if (this.session !== session || this.closing) return;
      if (session.rttMs < 0 && Date.now() - since < 1000) return void setTimeout(announce, 2);
      this.emit('online', { url: welcome.url, name: welcome.name, tunnels, reconnected });
    };
    announce();
  }

  /** The name to ask for: the one the relay gave last time (keeps URLs stable), else the configured one. */
  private wantedName(index: number): string {
    const got = this.names[index];
    if (got && got !== 'default') return got;
    return this.specs[index]?.subdomain ?? '';
  }

  /** Exponential backoff with jitter, from minBackoffMs (250 ms) to maxBackoffMs (30 s). */
  private scheduleReconnect(reason: string): void {
    const min = this.opts.minBackoffMs ?? 250;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const base = this.goAwayDelayMs ?? Math.min(max, min * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt++;
    this.goAwayDelayMs = undefined;
    this.emit('offline', { reason, retryInMs: delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private fail(err: GgrokError): void {
    this.closing = true;
    for (const f of this.forwarders) f.close();
    this.emit('fatal', err);
  }
}
