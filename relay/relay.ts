// The relay's one http.Server: routes public requests and upgrades by Host, and accepts control sockets.
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { CloseCode, RefuseCode, type RefuseCodeValue } from '../protocol/errors.js';
import {
  DEFAULT_FLOW,
  WIRE_LIMITS,
  type FlowSettings,
  type HelloFrame,
  type TunnelRequest,
} from '../protocol/frames.js';
import { Session } from '../protocol/session.js';
import { AccessPolicy, visitorAddress, visitorAddressSource, type VisitorAddressSource } from './access.js';
import { AuthFailures, type AuthKind } from './auth-failures.js';
import { WebhookSender, type HookEvent } from './hooks.js';
import type { RelayEvent } from './log.js';
import { RelayMetrics } from './metrics.js';
import { sendErrorPage, writeRawErrorPage, type ErrorPage, type RelayStatus } from './pages.js';
import { CONNECT_PATH, RELAY_PATH_PREFIX, serveRelayEndpoint, type RelaySelf } from './endpoints.js';
import { forwardRequest, forwardUpgrade, type Meter, type PublicContext } from './public-request.js';
import { isValidName, Registry } from './registry.js';
import {
  acceptControlSocket,
  matchToken,
  parseTokens,
  tokenMatches,
  Tunnel,
  type HelloDecision,
  type TokenEntry,
} from './tunnel.js';

import { VERSION as RELAY_VERSION } from '../protocol/version.js';

export { RELAY_VERSION, type RelayEvent };

/** Everything the relay can be configured with; main.ts fills it from flags and environment. */
export interface RelayOptions {
  /** Tunnels are served at <name>.<domain>; without it the relay serves one tunnel at its own host. */
  domain?: string;
  /** Accepted client tokens; at least one. `label=token` gives a token a label people see instead of it. */
  tokens: string[];
  /** Trust X-Forwarded-Proto/Host/Port from a proxy in front (Heroku router, Fly proxy, Caddy). */
  trustProxy?: boolean;
  /**
   * The relay runs on Fly.io (main.ts: FLY_APP_NAME is set): with trustProxy, visitor addresses come from
   * Fly-Client-IP. Elsewhere that header is the visitor's to forge, and the right-most X-Forwarded-For counts.
   */
  onFly?: boolean;
  heartbeatMs?: number;
  deadAfterMs?: number;
  handshakeTimeoutMs?: number;
  /** How long a disconnected tunnel's name stays reserved for its owner. */
  nameGraceMs?: number;
  /** How long a public request waits for a tunnel whose client is reconnecting before the offline page. */
  waitForClientMs?: number;
  /**
   * After start, requests for names the relay does not know yet also wait (waitForClientMs) for their client:
   * after a restart (Heroku restarts dynos daily) clients are still reconnecting. Default 30 s.
   */
  startupGraceMs?: number;
  /** New streams (requests + channels) per second per tunnel, sustained; above it 429. Burst is twice that. */
  streamsPerSecond?: number;
  /** Live tunnels one token may hold at once. */
  maxTunnelsPerToken?: number;
  /** Largest public request head in bytes (431 beyond). */
  maxHeaderBytes?: number;
  /** A stream with no data either way for this long is reset (0 = never). */
  idleStreamMs?: number;
  /** Terminate TLS on the relay itself (a VPS without a proxy in front): PEM certificate chain and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Concurrent HTTP requests per tunnel; more get 503 with Retry-After. */
  maxRequestsPerTunnel?: number;
  /** Concurrent upgraded channels (WebSockets) per tunnel; more get 503 with Retry-After. */
  maxChannelsPerTunnel?: number;
  flow?: FlowSettings;
  /** Node server timeouts; defaults are chosen for tunnels behind platform routers. */
  keepAliveTimeoutMs?: number;
  headersTimeoutMs?: number;
  /** Receives one structured event per notable thing (connect, disconnect, refusal, protocol error). */
  log?: (event: RelayEvent) => void;
  /** Also log one `request` event per public request or upgrade (method, host, path without query, status…). */
  accessLog?: boolean;
  /** The only token /_ggrok/metrics and /_ggrok/status accept; without it, any client token does. */
  metricsToken?: string;
  /** Add per-tunnel-name request and byte series to the metrics. */
  metricsPerTunnel?: boolean;
  /** POST tunnel connect and disconnect events here (JSON, signed with `secret` when set). */
  webhook?: { url: string; secret?: string; timeoutMs?: number; maxPending?: number };
  /** How often changed traffic counters go to clients as Stats frames (0 = never). */
  statsIntervalMs?: number;
  /** The clock for time-based limits (failed-secret throttling); tests inject one. */
  now?: () => number;
}

/** The status logged and counted for a visitor who left before any response head (nginx's convention). */
const CLIENT_CLOSED_STATUS = 499;
/** Name under which the single tunnel of own-host mode is registered. */
const OWN_HOST_NAME = 'default';

/** A Host header taken apart: as received, lowercased name without port, and the port. */
interface HostParts {
  host: string;
  hostname: string;
  port: string;
}

type Route =
  | { kind: 'relay' }
  | { kind: 'tunnel'; tunnel: Tunnel }
  /** No live tunnel; `heldName` is set when its client is away and may come back. */
  | { kind: 'missing'; page: ErrorPage; heldName?: string };

/** Requests waiting for one reconnecting tunnel, at most; more get the offline page at once. */
const MAX_WAITERS_PER_TUNNEL = 1000;
/** Requests waiting for any tunnel, at most. */
const MAX_WAITERS_TOTAL = 10_000;

/** One public request or upgrade, followed from arrival to its end for metrics, Stats and the access log; also the
 * Meter that counts its bytes. */
class Exchange implements Meter {
  /** performance.now() at arrival. */
  readonly startedAt = performance.now();
  tunnel: Tunnel | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /** Status answered to an upgrade; 0 until known. */
  status = 0;

  constructor(
    readonly upgrade: boolean,
    /** The request's Host, parsed once when it was routed. */
    readonly at: HostParts,
  ) {}

  in(n: number): void {
    this.bytesIn += n;
    this.tunnel?.countIn(n);
  }

  out(n: number): void {
    this.bytesOut += n;
    this.tunnel?.countOut(n);
  }

  answered(code: number): void {
    this.status = code;
  }
}

/** Words for the control socket's close codes, for logs and webhooks. */
const CLOSE_REASONS: Record<number, string> = {
  [CloseCode.Normal]: 'closed by the client',
  [CloseCode.GoingAway]: 'going away',
  1005: 'closed',
  1006: 'connection lost',
  [CloseCode.ProtocolError]: 'protocol error',
  [CloseCode.HeartbeatTimeout]: 'heartbeat timeout',
  [CloseCode.Replaced]: 'replaced by a new connection',
  [CloseCode.Overloaded]: 'the client stopped reading its control socket',
};

/** The answer to a visitor whose address presented too many wrong secrets lately. */
function tooManyAttempts(waitMs: number): ErrorPage {
  return {
    status: 429,
    code: RefuseCode.TooManyAttempts,
    title: 'Too many attempts',
    detail: 'Too many wrong credentials came from your address. Wait a few seconds and try again.',
    retryAfterSeconds: Math.ceil(waitMs / 1000),
  };
}

/** The 503 answer when a tunnel is at its limit of concurrent requests or channels. */
function busyPage(what: 'requests' | 'channels', limit: number): ErrorPage {
  return {
    status: 503,
    code: 'tunnel_busy',
    title: 'Tunnel busy',
    detail: `This tunnel already has ${limit} ${what} open, its limit. Try again shortly.`,
    retryAfterSeconds: 1,
  };
}

/** One tunnel a hello may open: its name, rules, and whether it takes over from its owner's earlier one. */
interface TunnelPlan {
  name: string;
  access?: AccessPolicy;
  replaces?: Tunnel;
  /** The name was held for this owner, or this client's own stale tunnel is replaced. */
  reconnect: boolean;
}

/** A running relay. Create with createRelay(), then listen(). */
export class Relay {
  readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly registry: Registry<Tunnel>;
  /** Addresses that keep presenting wrong secrets wait before their next attempt is looked at. */
  private readonly authFailures: AuthFailures;
  private readonly opts: Required<Omit<RelayOptions, 'domain' | 'log' | 'tls' | 'metricsToken' | 'webhook'>> &
    Pick<RelayOptions, 'domain' | 'log' | 'tls' | 'metricsToken' | 'webhook'>;
  private readonly startedAt = Date.now();
  /** Where visitor addresses (for --allow-ip) are read from. */
  readonly visitorAddressSource: VisitorAddressSource;
  private readonly tokenEntries: TokenEntry[];
  /** Strings /_ggrok/metrics and /_ggrok/status accept as a bearer token. */
  private readonly observerTokens: string[];
  readonly metrics: RelayMetrics;
  private readonly hooks: WebhookSender | undefined;
  private readonly statsTimer: NodeJS.Timeout | undefined;
  private shuttingDown = false;
  /** Public requests waiting, over all names. */
  private waiting = 0;
  /** Public requests waiting for a reconnecting tunnel, by name. */
  private readonly waiters = new Map<string, Set<(t?: Tunnel) => void>>();

  constructor(options: RelayOptions) {
    if (options.tokens.length === 0) throw new Error('at least one token is required');
    this.opts = {
      trustProxy: false,
      onFly: false,
      heartbeatMs: 20_000,
      deadAfterMs: 40_000,
      handshakeTimeoutMs: 10_000,
      nameGraceMs: 10 * 60_000,
      waitForClientMs: 5000,
      startupGraceMs: 30_000,
      maxRequestsPerTunnel: 1000,
      maxChannelsPerTunnel: 10_000,
      streamsPerSecond: 500,
      maxTunnelsPerToken: 20,
      maxHeaderBytes: 16 * 1024,
      idleStreamMs: 15 * 60_000,
      flow: DEFAULT_FLOW,
      keepAliveTimeoutMs: 100_000,
      headersTimeoutMs: 30_000,
      accessLog: false,
      metricsPerTunnel: false,
      statsIntervalMs: 5000,
      now: Date.now,
      ...options,
      domain: options.domain?.toLowerCase().replace(/^\.+|\.+$/g, '') || undefined,
    };
    this.tokenEntries = parseTokens(this.opts.tokens);
    this.visitorAddressSource = visitorAddressSource(this.opts.trustProxy, this.opts.onFly);
    this.authFailures = new AuthFailures(this.opts.now);
    this.observerTokens = this.opts.metricsToken
      ? [this.opts.metricsToken]
      : this.tokenEntries.flatMap((t) => t.accepted);
    this.registry = new Registry(this.opts.nameGraceMs);
    if (this.opts.webhook) {
      const url = new URL(this.opts.webhook.url); // throws on a malformed URL
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        throw new Error('the webhook URL must be http:// or https://');
      this.hooks = new WebhookSender({ ...this.opts.webhook, log: (e) => this.log(e) });
    }
    const hooks = this.hooks;
    this.metrics = new RelayMetrics(
      {
        tunnels: () => this.registry.values(),
        controlSockets: () => this.wss.clients.size,
        nameKnown: (name) => this.registry.get(name) !== undefined || this.registry.isHeld(name),
        mode: this.mode,
        webhooks: hooks ? () => hooks : undefined,
      },
      this.opts.metricsPerTunnel,
    );
    if (this.opts.statsIntervalMs > 0) {
      this.statsTimer = setInterval(() => this.sendStats(), this.opts.statsIntervalMs);
      this.statsTimer.unref();
    }
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
    });
    const serverOptions: http.ServerOptions = {
      // Long uploads and long-lived responses are normal through a tunnel: no whole-request deadline.
      requestTimeout: 0,
      // Outlive the idle keep-alive of platform routers (Heroku keeps them 90 s).
      keepAliveTimeout: this.opts.keepAliveTimeoutMs,
      headersTimeout: this.opts.headersTimeoutMs,
      // Node enforces headersTimeout only when it sweeps connections (every 30 s by default).
      connectionsCheckingInterval: Math.min(
        30_000,
        Math.max(250, Math.floor(this.opts.headersTimeoutMs / 4)),
      ),
      maxHeaderSize: this.opts.maxHeaderBytes,
    };
    this.server = this.opts.tls
      ? https.createServer({ ...serverOptions, cert: this.opts.tls.cert, key: this.opts.tls.key })
      : http.createServer(serverOptions);
    this.server.on('request', (req, res) => this.onRequest(req, res));
    // With a listener here Node does not answer 100 itself: the local service decides.
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable || err.code === 'ECONNRESET') {
        socket.destroy();
        return;
      }
      const status =
        err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
      );
    });
  }

  get mode(): 'domain' | 'own-host' {
    return this.opts.domain ? 'domain' : 'own-host';
  }

  /** Number of connected tunnels. */
  get tunnelCount(): number {
    return this.registry.size;
  }

  /** Starts listening; resolves with the bound port. */
  listen(port: number, host?: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /**
   * Graceful stop: refuse new tunnels, tell clients to come back later, let in-flight requests finish
   * until the deadline, then close everything.
   */
  async close(deadlineMs = 25_000): Promise<void> {
    this.shuttingDown = true;
    clearInterval(this.statsTimer);
    this.server.close();
    for (const name of [...this.waiters.keys()]) this.releaseWaiters(name);
    for (const tunnel of this.registry.values())
      tunnel.session.goAway(RefuseCode.RelayShuttingDown, 'relay is shutting down', 1000);
    const until = Date.now() + deadlineMs;
    // Channels (WebSockets) are long-lived by nature: only plain requests are waited for.
    while (Date.now() < until && [...this.registry.values()].some((t) => t.activeRequests > 0)) {
      this.server.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const tunnel of this.registry.values())
      tunnel.session.close(CloseCode.GoingAway, 'relay shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections();
    if (this.hooks) {
      // Give the disconnect webhooks a moment to go out: sessions report their close a tick later.
      const until = Date.now() + Math.min(3000, deadlineMs);
      while (Date.now() < until && this.registry.size > 0) await new Promise((r) => setTimeout(r, 10));
      await this.hooks.drain(until - Date.now());
    }
    this.log({ event: 'shutdown' });
  }

  private log(event: RelayEvent): void {
    this.opts.log?.(event);
  }

  // ---- routing ----

  private hostOf(req: IncomingMessage): HostParts {
    const host = req.headers.host ?? '';
    const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
    const hostname = (m?.[1] ?? '').toLowerCase().replace(/\.$/, '');
    return { host, hostname, port: m?.[2] ?? '' };
  }

  private route(req: IncomingMessage, at: HostParts): Route {
    const path = (req.url ?? '/').split('?')[0]!;
    const { hostname, host } = at;
    const domain = this.opts.domain;
    if (!domain) {
      if (path.startsWith(RELAY_PATH_PREFIX)) return { kind: 'relay' };
      const tunnel = this.registry.get(OWN_HOST_NAME);
      if (tunnel) return { kind: 'tunnel', tunnel };
      return {
        kind: 'missing',
        heldName: this.registry.isHeld(OWN_HOST_NAME) || this.justStarted() ? OWN_HOST_NAME : undefined,
        page: {
          status: 503,
          code: 'tunnel_offline',
          title: 'No tunnel connected',
          detail: `No ggrok client is connected to this relay (${host}). Start one with: ggrok http <port> --server <this relay's URL>.`,
          retryAfterSeconds: 5,
        },
      };
    }
    const suffix = `.${domain}`;
    if (!hostname.endsWith(suffix)) return { kind: 'relay' };
    const name = hostname.slice(0, -suffix.length);
    const tunnel = name.includes('.') ? undefined : this.registry.get(name);
    if (tunnel) return { kind: 'tunnel', tunnel };
    if (!name.includes('.') && this.registry.isHeld(name))
      return {
        kind: 'missing',
        heldName: name,
        page: {
          status: 503,
          code: 'tunnel_offline',
          title: 'Tunnel offline',
          detail: `The tunnel ${host} is not connected right now. Its client may be reconnecting; try again shortly.`,
          retryAfterSeconds: 5,
        },
      };
    return {
      kind: 'missing',
      // Just after a restart the relay has not met its clients yet: give them time to reconnect.
      heldName: !name.includes('.') && this.justStarted() && isValidName(name) ? name : undefined,
      page: {
        status: 404,
        code: 'tunnel_not_found',
        title: 'Tunnel not found',
        detail: `There is no tunnel at ${host}.`,
      },
    };
  }

  /** True during startupGraceMs after start: clients of the previous process may still be reconnecting. */
  private justStarted(): boolean {
    return Date.now() - this.startedAt < this.opts.startupGraceMs;
  }

  private publicContext(req: IncomingMessage, tunnel: Tunnel, at: HostParts): PublicContext {
    const { host, port } = at;
    const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    return {
      proto,
      host,
      port: port || (proto === 'https' ? '443' : '80'),
      trustProxy: this.opts.trustProxy,
      // Basic credentials are the relay's to check; the local service never sees them.
      dropAuthorization: tunnel.access?.requiresAuth ?? false,
    };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    // While shutting down, answer what arrives but let keep-alive connections close after it.
    if (this.shuttingDown) res.shouldKeepAlive = false;
    const at = this.hostOf(req);
    const route = this.route(req, at);
    if (route.kind === 'relay') return serveRelayEndpoint(req, res, this.self);
    const x = new Exchange(false, at);
    res.once('close', () =>
      this.finishExchange(req, x, res.headersSent ? res.statusCode : CLIENT_CLOSED_STATUS),
    );
    if (route.kind === 'tunnel') return this.forward(route.tunnel, req, res, x);
    if (!route.heldName) return sendErrorPage(res, route.page);
    this.awaitTunnel(route.heldName, res, (tunnel) =>
      tunnel ? this.forward(tunnel, req, res, x) : sendErrorPage(res, route.page),
    );
  }

  // ---- observability ----

  /** Records a finished public request or upgrade: metrics, the tunnel's counters, the access log. */
  private finishExchange(req: IncomingMessage, x: Exchange, status: number): void {
    const seconds = (performance.now() - x.startedAt) / 1000;
    x.tunnel?.countRequest();
    this.metrics.requestDone(status, x.upgrade ? undefined : seconds, x.tunnel);
    if (!this.opts.accessLog) return;
    this.log({
      event: 'request',
      method: req.method,
      host: (req.headers.host ?? '').slice(0, 255),
      // The query string often carries secrets (tokens, signed URLs): never logged.
      path: (req.url ?? '/').split('?')[0]!,
      status,
      durationMs: Math.round(seconds * 1000),
      bytesIn: x.bytesIn,
      bytesOut: x.bytesOut,
      tunnel: x.tunnel?.name ?? null,
      ...(x.upgrade ? { upgrade: true } : {}),
    });
  }

  /** What /_ggrok/status shows; never a token, only its label. */
  statusReport(): RelayStatus {
    const now = Date.now();
    return {
      version: RELAY_VERSION,
      mode: this.mode,
      domain: this.opts.domain ?? null,
      uptimeSeconds: Math.round((now - this.startedAt) / 1000),
      shuttingDown: this.shuttingDown,
      tunnels: [...this.registry.values()].map((t) => ({
        name: t.name,
        url: t.url,
        owner: t.ownerLabel,
        agent: t.agent.slice(0, 200),
        connectedAt: new Date(t.connectedAt).toISOString(),
        uptimeSeconds: Math.round((now - t.connectedAt) / 1000),
        requests: t.requests,
        bytesIn: t.bytesIn,
        bytesOut: t.bytesOut,
        activeRequests: t.activeRequests,
        channels: t.activeChannels,
        lastActivityAt: t.lastActivityAt ? new Date(t.lastActivityAt).toISOString() : null,
        rttMs: t.session.rttMs,
      })),
    };
  }

  /** Sends each tunnel whose counters changed since the last time a Stats frame. */
  private sendStats(): void {
    for (const tunnel of this.registry.values()) {
      const stats = {
        requests: tunnel.requests,
        bytesIn: tunnel.bytesIn,
        bytesOut: tunnel.bytesOut,
        channels: tunnel.activeChannels,
        lastActivityMs: tunnel.lastActivityAt,
        tunnel: tunnel.index,
      };
      const key = `${stats.requests}/${stats.bytesIn}/${stats.bytesOut}/${stats.channels}/${stats.lastActivityMs}`;
      if (key === tunnel.statsSent) continue;
      tunnel.statsSent = key;
      tunnel.session.sendStats(stats);
    }
  }

  /** Ms an address must wait after too many wrong secrets (counted and logged once per wait), or 0. */
  private throttled(address: string): number {
    const waitMs = this.authFailures.blockedFor(address);
    if (waitMs > 0) {
      if (this.authFailures.firstRefusal(address))
        this.log({ event: 'refused', reason: RefuseCode.TooManyAttempts, peer: address, waitMs });
    }
    return waitMs;
  }

  /** A wrong secret: counted towards the address's throttle, in the metrics and in the log. */
  private authFailed(kind: AuthKind, address: string, name?: string): void {
    this.authFailures.failed(address);
    this.metrics.authFailed(kind);
    this.log({ event: 'auth_failed', kind, peer: address, ...(name === undefined ? {} : { name }) });
  }

  private refusal(reason: string, fields: Record<string, unknown>): void {
    this.metrics.refused(reason);
    this.log({ event: 'refused', reason, ...fields });
  }

  private hook(event: HookEvent['event'], tunnel: Tunnel, reason?: string): void {
    this.hooks?.send({
      event,
      name: tunnel.name,
      url: tunnel.url,
      at: new Date().toISOString(),
      ...(reason === undefined ? {} : { reason }),
      owner: tunnel.ownerLabel,
    });
  }

  /** The answer for a visitor who may not open a stream on this tunnel now, or undefined. */
  private admission(
    tunnel: Tunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
  ): ErrorPage | undefined {
    const refusal = this.admissionCheck(tunnel, req, open, limit, what);
    if (refusal) this.metrics.refused(refusal.code);
    return refusal;
  }

  private admissionCheck(
    tunnel: Tunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
  ): ErrorPage | undefined {
    const visitor = visitorAddress(req, this.visitorAddressSource);
    const presentsCredentials =
      tunnel.access?.requiresAuth === true && req.headers.authorization !== undefined;
    if (presentsCredentials) {
      const waitMs = this.throttled(visitor);
      if (waitMs > 0) return tooManyAttempts(waitMs);
    }
    const denied = tunnel.access?.check(req, visitor);
    if (denied?.code === 'auth_required' && presentsCredentials)
      this.authFailed('basic_auth', visitor, tunnel.name);
    if (denied) return denied;
    if (open >= limit) return busyPage(what, limit);
    if (!tunnel.allowNewStream())
      return {
        status: 429,
        code: 'rate_limited',
        title: 'Too Many Requests',
        detail: `This tunnel receives more than ${this.opts.streamsPerSecond} requests per second, its limit.`,
        retryAfterSeconds: 1,
      };
    return undefined;
  }

  private forward(tunnel: Tunnel, req: IncomingMessage, res: ServerResponse, x: Exchange): void {
    x.tunnel = tunnel;
    const refusal = this.admission(
      tunnel,
      req,
      tunnel.activeRequests,
      this.opts.maxRequestsPerTunnel,
      'requests',
    );
    if (refusal) return sendErrorPage(res, refusal);
    tunnel.activeRequests++;
    forwardRequest(tunnel, req, res, this.publicContext(req, tunnel, x.at), () => tunnel.activeRequests--, x);
  }

  /**
   * Holds a public request while its tunnel's client is reconnecting (its name is held), for up to
   * waitForClientMs. Calls back with the tunnel when it returns, or with undefined on timeout or shutdown;
   * never calls back if the public client left first.
   */
  private awaitTunnel(
    name: string,
    publicSide: { once(event: 'close', fn: () => void): unknown },
    callback: (t?: Tunnel) => void,
  ): void {
    const existing = this.waiters.get(name);
    if (
      this.shuttingDown ||
      this.opts.waitForClientMs <= 0 ||
      (existing?.size ?? 0) >= MAX_WAITERS_PER_TUNNEL ||
      this.waiting >= MAX_WAITERS_TOTAL
    )
      return callback();
    const set = existing ?? new Set<(t?: Tunnel) => void>();
    this.waiters.set(name, set);
    this.waiting++;
    const stop = (): void => {
      if (!set.delete(waiter)) return;
      clearTimeout(timer);
      this.waiting--;
      if (set.size === 0 && this.waiters.get(name) === set) this.waiters.delete(name);
    };
    const waiter = (tunnel?: Tunnel): void => {
      stop();
      callback(tunnel);
    };
    const timer = setTimeout(waiter, this.opts.waitForClientMs);
    set.add(waiter);
    publicSide.once('close', stop);
  }

  /** Releases requests waiting for `name` (with the tunnel when it is back, or none on shutdown). */
  private releaseWaiters(name: string, tunnel?: Tunnel): void {
    for (const waiter of [...(this.waiters.get(name) ?? [])]) waiter(tunnel);
  }

  /** The relay's own host, as the endpoints see it. */
  private readonly self: RelaySelf = {
    health: () => ({
      ok: true,
      version: RELAY_VERSION,
      mode: this.mode,
      domain: this.opts.domain ?? null,
      tunnels: this.registry.size,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      shuttingDown: this.shuttingDown,
    }),
    statusReport: () => this.statusReport(),
    renderMetrics: () => this.metrics.render(),
    certificateAllowed: (host) => this.certificateAllowed(host),
    observerAccess: (req, presented) => {
      const peer = visitorAddress(req, this.visitorAddressSource);
      const waitMs = this.throttled(peer);
      if (waitMs > 0) {
        this.metrics.refused(RefuseCode.TooManyAttempts);
        return { retryAfterSeconds: Math.ceil(waitMs / 1000) };
      }
      if (presented === undefined) return 'denied';
      if (tokenMatches(presented, this.observerTokens)) return 'allowed';
      this.authFailed('observer_token', peer);
      return 'denied';
    },
    landing: (req) => ({
      url: `${this.connectProto(req)}://${this.hostOf(req).host}`,
      serves: this.mode === 'domain' ? `tunnels at *.${this.opts.domain}` : 'one tunnel at this host',
    }),
  };

  private forwardUpgrade(
    tunnel: Tunnel,
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    x: Exchange,
  ): void {
    x.tunnel = tunnel;
    const refusal = this.admission(
      tunnel,
      req,
      tunnel.activeChannels,
      this.opts.maxChannelsPerTunnel,
      'channels',
    );
    if (refusal) return this.rawErrorPage(socket, refusal, x);
    tunnel.activeChannels++;
    forwardUpgrade(
      tunnel,
      req,
      socket,
      head,
      this.publicContext(req, tunnel, x.at),
      () => tunnel.activeChannels--,
      x,
    );
  }

  private rawErrorPage(socket: Duplex, page: ErrorPage, x: Exchange): void {
    x.status = page.status;
    writeRawErrorPage(socket, page);
  }

  /** Whether a TLS certificate may be issued for `host`: the relay's domain, or a live or held tunnel name. */
  certificateAllowed(host: string): boolean {
    const domain = this.opts.domain;
    const h = host.toLowerCase().replace(/\.$/, '');
    if (!domain || !h) return false;
    if (h === domain) return true;
    if (!h.endsWith(`.${domain}`)) return false;
    const name = h.slice(0, -domain.length - 1);
    return !name.includes('.') && (this.registry.get(name) !== undefined || this.registry.isHeld(name));
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const at = this.hostOf(req);
    const route = this.route(req, at);
    if (route.kind !== 'relay') {
      const x = new Exchange(true, at);
      socket.once('close', () => this.finishExchange(req, x, x.status || CLIENT_CLOSED_STATUS));
      if (route.kind === 'tunnel') return this.forwardUpgrade(route.tunnel, req, socket, head, x);
      if (!route.heldName) return this.rawErrorPage(socket, route.page, x);
      return this.awaitTunnel(route.heldName, socket, (tunnel) =>
        tunnel ? this.forwardUpgrade(tunnel, req, socket, head, x) : this.rawErrorPage(socket, route.page, x),
      );
    }
    const path = (req.url ?? '/').split('?')[0]!;
    if (path !== CONNECT_PATH || req.headers.upgrade?.toLowerCase() !== 'websocket')
      return writeRawErrorPage(socket, {
        status: 404,
        code: 'not_found',
        title: 'Not Found',
        detail: `Nothing to upgrade at ${path}.`,
      });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      acceptControlSocket(
        ws,
        this.opts.handshakeTimeoutMs,
        (hello) => this.onHello(hello, req, ws),
        (reason) => this.refusal(reason, { peer: req.socket.remoteAddress }),
      );
    });
  }

  // ---- tunnels ----

  private connectProto(req: IncomingMessage): string {
    const forwarded = this.opts.trustProxy ? req.headers['x-forwarded-proto'] : undefined;
    // The right-most value: a proxy that appends instead of replacing puts its own last, after the visitor's.
    const last = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded)?.split(',').pop()?.trim();
    if (last === 'https' || last === 'http') return last;
    return (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  }

  /** The public URL of a tunnel: scheme and port follow how the client reached the relay. */
  private tunnelUrl(req: IncomingMessage, name: string): string {
    const proto = this.connectProto(req);
    const { host, port } = this.hostOf(req);
    if (!this.opts.domain) return `${proto}://${host}`;
    return `${proto}://${name}.${this.opts.domain}${port ? `:${port}` : ''}`;
  }

  private onHello(hello: HelloFrame, req: IncomingMessage, ws: import('ws').WebSocket): HelloDecision {
    const peer = visitorAddress(req, this.visitorAddressSource);
    if (this.shuttingDown) {
      this.refusal(RefuseCode.RelayShuttingDown, { peer });
      return { refuse: RefuseCode.RelayShuttingDown, message: 'relay is shutting down' };
    }
    const waitMs = this.throttled(peer);
    if (waitMs > 0) {
      this.metrics.refused(RefuseCode.TooManyAttempts);
      return {
        refuse: RefuseCode.TooManyAttempts,
        message: `too many wrong tokens from ${peer}; try again in ${Math.ceil(waitMs / 1000)} s`,
      };
    }
    const token = matchToken(hello.token, this.tokenEntries);
    if (!token) {
      this.authFailed('client_token', peer);
      this.refusal(RefuseCode.BadToken, { peer });
      return { refuse: RefuseCode.BadToken, message: 'token rejected' };
    }
    const owner = token.owner;
    const wanted: TunnelRequest[] = [{ name: hello.name, access: hello.access }, ...(hello.more ?? [])];
    if (!this.opts.domain && wanted.length > 1) {
      this.refusal(RefuseCode.NameInUse, { peer, owner: token.label });
      return { refuse: RefuseCode.NameInUse, message: 'this relay serves one tunnel (own-host mode)' };
    }
    const plans: TunnelPlan[] = [];
    for (const tunnel of wanted) {
      const plan = this.planTunnel(tunnel, owner, hello.clientId, plans);
      if ('refuse' in plan) {
        this.refusal(plan.refuse, { name: tunnel.name.slice(0, 80), peer, owner: token.label });
        return plan;
      }
      plans.push(plan);
    }
    const replaced = new Set(plans.map((p) => p.replaces).filter((t) => t !== undefined));
    const held = [...this.registry.values()].filter((t) => t.owner === owner && !replaced.has(t)).length;
    if (held + plans.length > this.opts.maxTunnelsPerToken) {
      this.refusal(RefuseCode.TooManyTunnels, { peer, owner: token.label });
      return {
        refuse: RefuseCode.TooManyTunnels,
        message: `this token already has ${held} tunnels open and the relay allows ${this.opts.maxTunnelsPerToken}`,
      };
    }
    const urls = plans.map((p) => this.tunnelUrl(req, p.name));
    return {
      welcome: {
        name: plans[0]!.name,
        url: urls[0]!,
        flow: this.opts.flow,
        heartbeatMs: this.opts.heartbeatMs,
        maxStreams: this.opts.maxRequestsPerTunnel + this.opts.maxChannelsPerTunnel,
        more: plans.slice(1).map((p, i) => ({ name: p.name, url: urls[i + 1]! })),
      },
      start: () => {
        for (const old of replaced)
          old.session.close(CloseCode.Replaced, 'replaced by a new connection from the same client');
        const session = new Session(ws, {
          role: 'relay',
          localFlow: this.opts.flow,
          remoteFlow: hello.flow,
          heartbeatMs: this.opts.heartbeatMs,
          deadAfterMs: this.opts.deadAfterMs,
          idleStreamMs: this.opts.idleStreamMs,
          onProtocolError: (err, fatal) => {
            this.metrics.protocolError(err.code, fatal);
            this.log({
              event: 'protocol_error',
              name: plans[0]!.name,
              code: err.code,
              message: err.message,
              fatal,
            });
          },
          onFlowStall: (scope) => this.metrics.flowStall(scope),
          onClose: ({ code, reason }) => {
            const why = `${reason || CLOSE_REASONS[code] || 'closed'} (${code})`;
            for (const tunnel of tunnels) {
              this.registry.remove(tunnel.name, tunnel);
              this.log({
                event: 'disconnect',
                name: tunnel.name,
                code,
                reason,
                requests: tunnel.requests,
                bytesIn: tunnel.bytesIn,
                bytesOut: tunnel.bytesOut,
                uptimeSeconds: Math.round((Date.now() - tunnel.connectedAt) / 1000),
              });
              this.hook('disconnect', tunnel, why);
            }
          },
        });
        const rate = { perSecond: this.opts.streamsPerSecond, burst: this.opts.streamsPerSecond * 2 };
        const tunnels = plans.map(
          (p, index) =>
            new Tunnel(
              p.name,
              urls[index]!,
              owner,
              hello.clientId,
              hello.agent,
              session,
              p.access,
              rate,
              index,
            ),
        );
        for (const [index, tunnel] of tunnels.entries()) {
          tunnel.ownerLabel = token.label;
          this.metrics.attach(tunnel);
          const reconnect = plans[index]!.reconnect;
          if (reconnect) this.metrics.reconnected();
          this.registry.add(tunnel.name, tunnel);
          this.releaseWaiters(tunnel.name, tunnel);
          this.log({
            event: 'connect',
            name: tunnel.name,
            url: tunnel.url,
            peer,
            agent: hello.agent.slice(0, 100),
            owner: token.label,
            ...(reconnect ? { reconnect: true } : {}),
          });
          this.hook('connect', tunnel);
        }
      },
    };
  }

  /** Checks one requested tunnel: its access rules and its name. */
  private planTunnel(
    wanted: TunnelRequest,
    owner: string,
    clientId: string,
    planned: { name: string }[],
  ): TunnelPlan | { refuse: RefuseCodeValue; message: string } {
    let access: AccessPolicy | undefined;
    try {
      access = wanted.access ? new AccessPolicy(wanted.access) : undefined;
    } catch (err) {
      return { refuse: RefuseCode.AccessInvalid, message: (err as Error).message };
    }
    if (!this.opts.domain) {
      const current = this.registry.get(OWN_HOST_NAME);
      if (current && !(current.owner === owner && current.clientId === clientId))
        return {
          refuse: RefuseCode.NameInUse,
          message: 'this relay already serves a tunnel (own-host mode serves one at a time)',
        };
      const reconnect = current !== undefined || this.registry.heldFor(OWN_HOST_NAME) === owner;
      return { name: OWN_HOST_NAME, access, replaces: current, reconnect };
    }
    let name = wanted.name.toLowerCase();
    while (!name || planned.some((p) => p.name === name && !wanted.name)) name = this.registry.pickName();
    if (planned.some((p) => p.name === name))
      return { refuse: RefuseCode.NameInUse, message: `subdomain "${name}" is asked for twice` };
    const check = this.registry.check(name, owner, clientId);
    switch (check.problem) {
      case undefined: {
        const reconnect = check.replaces !== undefined || this.registry.heldFor(name) === owner;
        return { name, access, replaces: check.replaces, reconnect };
      }
      case 'invalid':
        return {
          refuse: RefuseCode.NameInvalid,
          message: `"${wanted.name.slice(0, 80)}" is not a valid subdomain`,
        };
      case 'reserved':
        return { refuse: RefuseCode.NameReserved, message: `"${name}" is reserved` };
      case 'in_use':
        return { refuse: RefuseCode.NameInUse, message: `subdomain "${name}" is in use by another client` };
      case 'held':
        return {
          refuse: RefuseCode.NameInUse,
          message: `subdomain "${name}" is held for its previous owner`,
        };
    }
  }
}

/** Creates a relay; call listen() on it. */
export function createRelay(options: RelayOptions): Relay {
  return new Relay(options);
}

/** A random token for relays started without one. */
export function generateToken(): string {
  return randomBytes(18).toString('base64url');
}
