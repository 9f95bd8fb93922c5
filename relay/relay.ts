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
import { AccessPolicy, visitorAddress } from './access.js';
import { landingPage, sendErrorPage, sendJson, writeRawErrorPage, type ErrorPage } from './pages.js';
import { forwardRequest, forwardUpgrade, type PublicContext } from './public-request.js';
import { Registry } from './registry.js';
import { acceptControlSocket, tokenId, tokenMatches, Tunnel, type HelloDecision } from './tunnel.js';

import { VERSION as RELAY_VERSION } from '../protocol/version.js';

export { RELAY_VERSION };

/** Everything the relay can be configured with; main.ts fills it from flags and environment. */
export interface RelayOptions {
  /** Tunnels are served at <name>.<domain>; without it the relay serves one tunnel at its own host. */
  domain?: string;
  /** Accepted client tokens; at least one. */
  tokens: string[];
  /** Trust X-Forwarded-Proto/Host/Port from a proxy in front (Heroku router, Fly proxy, Caddy). */
  trustProxy?: boolean;
  heartbeatMs?: number;
  deadAfterMs?: number;
  handshakeTimeoutMs?: number;
  /** How long a disconnected tunnel's name stays reserved for its owner. */
  nameGraceMs?: number;
  /** How long a public request waits for a tunnel whose client is reconnecting before the offline page. */
  waitForClientMs?: number;
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
}

export interface RelayEvent {
  event: string;
  [key: string]: unknown;
}

/** Paths under this prefix on the relay's own host belong to the relay. */
const RELAY_PATH_PREFIX = '/_ggrok/';
const CONNECT_PATH = '/_ggrok/connect';
const HEALTH_PATH = '/_ggrok/health';
/** Caddy's on-demand TLS asks here whether to issue a certificate for ?domain=. */
const ASK_PATH = '/_ggrok/ask';
/** Name under which the single tunnel of own-host mode is registered. */
const OWN_HOST_NAME = 'default';

type Route =
  | { kind: 'relay' }
  | { kind: 'tunnel'; tunnel: Tunnel }
  /** No live tunnel; `heldName` is set when its client is away and may come back. */
  | { kind: 'missing'; page: ErrorPage; heldName?: string };

/** Requests waiting for one reconnecting tunnel, at most; more get the offline page at once. */
const MAX_WAITERS_PER_TUNNEL = 1000;

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

/** A running relay. Create with createRelay(), then listen(). */
export class Relay {
  readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly registry: Registry<Tunnel>;
  private readonly opts: Required<Omit<RelayOptions, 'domain' | 'log' | 'tls'>> &
    Pick<RelayOptions, 'domain' | 'log' | 'tls'>;
  private readonly startedAt = Date.now();
  private shuttingDown = false;
  /** Public requests waiting for a reconnecting tunnel, by name. */
  private readonly waiters = new Map<string, Set<(t?: Tunnel) => void>>();

  constructor(options: RelayOptions) {
    if (options.tokens.length === 0) throw new Error('at least one token is required');
    this.opts = {
      trustProxy: false,
      heartbeatMs: 20_000,
      deadAfterMs: 40_000,
      handshakeTimeoutMs: 10_000,
      nameGraceMs: 10 * 60_000,
      waitForClientMs: 5000,
      maxRequestsPerTunnel: 1000,
      maxChannelsPerTunnel: 10_000,
      streamsPerSecond: 500,
      maxTunnelsPerToken: 20,
      maxHeaderBytes: 16 * 1024,
      idleStreamMs: 15 * 60_000,
      flow: DEFAULT_FLOW,
      keepAliveTimeoutMs: 100_000,
      headersTimeoutMs: 30_000,
      ...options,
      domain: options.domain?.toLowerCase().replace(/^\.+|\.+$/g, '') || undefined,
    };
    this.registry = new Registry(this.opts.nameGraceMs);
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
    this.server.close();
    for (const name of [...this.waiters.keys()]) this.releaseWaiters(name);
    for (const tunnel of this.registry.values())
      tunnel.session.goAway(RefuseCode.RelayShuttingDown, 'relay is shutting down', 1000);
    const until = Date.now() + deadlineMs;
    // Channels (WebSockets) are long-lived by nature: only plain requests are waited for.
    while (Date.now() < until && [...this.registry.values()].some((t) => t.activeRequests > 0))
      await new Promise((r) => setTimeout(r, 50));
    for (const tunnel of this.registry.values())
      tunnel.session.close(CloseCode.GoingAway, 'relay shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections();
    this.log({ event: 'shutdown' });
  }

  private log(event: RelayEvent): void {
    this.opts.log?.(event);
  }

  // ---- routing ----

  private hostOf(req: IncomingMessage): { host: string; hostname: string; port: string } {
    const host = req.headers.host ?? '';
    const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
    const hostname = (m?.[1] ?? '').toLowerCase().replace(/\.$/, '');
    return { host, hostname, port: m?.[2] ?? '' };
  }

  private route(req: IncomingMessage): Route {
    const path = (req.url ?? '/').split('?')[0]!;
    const { hostname, host } = this.hostOf(req);
    const domain = this.opts.domain;
    if (!domain) {
      if (path.startsWith(RELAY_PATH_PREFIX)) return { kind: 'relay' };
      const tunnel = this.registry.get(OWN_HOST_NAME);
      if (tunnel) return { kind: 'tunnel', tunnel };
      return {
        kind: 'missing',
        heldName: this.registry.isHeld(OWN_HOST_NAME) ? OWN_HOST_NAME : undefined,
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
      page: {
        status: 404,
        code: 'tunnel_not_found',
        title: 'Tunnel not found',
        detail: `There is no tunnel at ${host}.`,
      },
    };
  }

  private publicContext(req: IncomingMessage, tunnel: Tunnel): PublicContext {
    const { host, port } = this.hostOf(req);
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
    const route = this.route(req);
    if (route.kind === 'relay') return this.onRelayRequest(req, res);
    if (route.kind === 'tunnel') return this.forward(route.tunnel, req, res);
    if (!route.heldName) return sendErrorPage(res, route.page);
    this.awaitTunnel(route.heldName, res, (tunnel) =>
      tunnel ? this.forward(tunnel, req, res) : sendErrorPage(res, route.page),
    );
  }

  /** The answer for a visitor who may not open a stream on this tunnel now, or undefined. */
  private admission(
    tunnel: Tunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
  ): ErrorPage | undefined {
    const denied = tunnel.access?.check(req, visitorAddress(req, this.opts.trustProxy));
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

  private forward(tunnel: Tunnel, req: IncomingMessage, res: ServerResponse): void {
    const refusal = this.admission(
      tunnel,
      req,
      tunnel.activeRequests,
      this.opts.maxRequestsPerTunnel,
      'requests',
    );
    if (refusal) return sendErrorPage(res, refusal);
    tunnel.activeRequests++;
    forwardRequest(tunnel, req, res, this.publicContext(req, tunnel), () => tunnel.activeRequests--);
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
    let waiting = this.waiters.get(name);
    if (!waiting) this.waiters.set(name, (waiting = new Set()));
    if (this.shuttingDown || this.opts.waitForClientMs <= 0 || waiting.size >= MAX_WAITERS_PER_TUNNEL)
      return callback();
    const set = waiting;
    const stop = (): void => {
      clearTimeout(timer);
      set.delete(waiter);
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

  private onRelayRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === HEALTH_PATH) {
      return sendJson(res, 200, {
        ok: true,
        version: RELAY_VERSION,
        mode: this.mode,
        domain: this.opts.domain ?? null,
        tunnels: this.registry.size,
        uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
        shuttingDown: this.shuttingDown,
      });
    }
    if (path === ASK_PATH) {
      const domain = new URL(req.url ?? '/', 'http://relay').searchParams.get('domain') ?? '';
      const allowed = this.certificateAllowed(domain);
      res.writeHead(allowed ? 200 : 404, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' });
      return void res.end(allowed ? 'ok\n' : 'no such tunnel\n');
    }
    if (path === CONNECT_PATH)
      return sendErrorPage(res, {
        status: 426,
        code: 'upgrade_required',
        title: 'Upgrade Required',
        detail: 'This endpoint takes a WebSocket from the ggrok client.',
      });
    if (path === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
      const { host } = this.hostOf(req);
      const body = landingPage(
        `${this.connectProto(req)}://${host}`,
        this.mode === 'domain' ? `tunnels at *.${this.opts.domain}` : 'one tunnel at this host',
      );
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      return void res.end(body);
    }
    sendErrorPage(res, {
      status: 404,
      code: 'not_found',
      title: 'Not found',
      detail: `Nothing at ${path} on this relay.`,
    });
  }

  private forwardUpgrade(tunnel: Tunnel, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const refusal = this.admission(
      tunnel,
      req,
      tunnel.activeChannels,
      this.opts.maxChannelsPerTunnel,
      'channels',
    );
    if (refusal) return writeRawErrorPage(socket, refusal);
    tunnel.activeChannels++;
    forwardUpgrade(tunnel, req, socket, head, this.publicContext(req, tunnel), () => tunnel.activeChannels--);
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
    const route = this.route(req);
    if (route.kind === 'missing') {
      if (!route.heldName) return writeRawErrorPage(socket, route.page);
      return this.awaitTunnel(route.heldName, socket, (tunnel) =>
        tunnel ? this.forwardUpgrade(tunnel, req, socket, head) : writeRawErrorPage(socket, route.page),
      );
    }
    if (route.kind === 'tunnel') return this.forwardUpgrade(route.tunnel, req, socket, head);
    const path = (req.url ?? '/').split('?')[0]!;
    if (path !== CONNECT_PATH || req.headers.upgrade?.toLowerCase() !== 'websocket')
      return writeRawErrorPage(socket, {
        status: 404,
        code: 'not_found',
        title: 'Not Found',
        detail: `Nothing to upgrade at ${path}.`,
      });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      acceptControlSocket(ws, this.opts.handshakeTimeoutMs, (hello) => this.onHello(hello, req, ws));
    });
  }

  // ---- tunnels ----

  private connectProto(req: IncomingMessage): string {
    const forwarded = this.opts.trustProxy ? req.headers['x-forwarded-proto'] : undefined;
    const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
    if (first === 'https' || first === 'http') return first;
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
    const peer = req.socket.remoteAddress;
    if (this.shuttingDown) return { refuse: RefuseCode.RelayShuttingDown, message: 'relay is shutting down' };
    if (!tokenMatches(hello.token, this.opts.tokens)) {
      this.log({ event: 'refused', reason: RefuseCode.BadToken, peer });
      return { refuse: RefuseCode.BadToken, message: 'token rejected' };
    }
    const owner = tokenId(hello.token);
    const wanted: TunnelRequest[] = [{ name: hello.name, access: hello.access }, ...(hello.more ?? [])];
    if (!this.opts.domain && wanted.length > 1)
      return { refuse: RefuseCode.NameInUse, message: 'this relay serves one tunnel (own-host mode)' };
    const plans: { name: string; access?: AccessPolicy; replaces?: Tunnel }[] = [];
    for (const tunnel of wanted) {
      const plan = this.planTunnel(tunnel, owner, hello.clientId, plans);
      if ('refuse' in plan) {
        this.log({ event: 'refused', reason: plan.refuse, name: tunnel.name.slice(0, 80), peer });
        return plan;
      }
      plans.push(plan);
    }
    const replaced = new Set(plans.map((p) => p.replaces).filter((t) => t !== undefined));
    const held = [...this.registry.values()].filter((t) => t.owner === owner && !replaced.has(t)).length;
    if (held + plans.length > this.opts.maxTunnelsPerToken) {
      this.log({ event: 'refused', reason: RefuseCode.TooManyTunnels, peer });
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
          onProtocolError: (err, fatal) =>
            this.log({
              event: 'protocol_error',
              name: plans[0]!.name,
              code: err.code,
              message: err.message,
              fatal,
            }),
          onClose: ({ code, reason }) => {
            for (const tunnel of tunnels) {
              this.registry.remove(tunnel.name, tunnel);
              this.log({ event: 'disconnect', name: tunnel.name, code, reason });
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
        for (const tunnel of tunnels) {
          this.registry.add(tunnel.name, tunnel);
          this.releaseWaiters(tunnel.name, tunnel);
          this.log({
            event: 'connect',
            name: tunnel.name,
            url: tunnel.url,
            peer,
            agent: hello.agent.slice(0, 100),
          });
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
  ):
    | { name: string; access?: AccessPolicy; replaces?: Tunnel }
    | { refuse: RefuseCodeValue; message: string } {
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
      return { name: OWN_HOST_NAME, access, replaces: current };
    }
    let name = wanted.name.toLowerCase();
    while (!name || planned.some((p) => p.name === name && !wanted.name)) name = this.registry.pickName();
    if (planned.some((p) => p.name === name))
      return { refuse: RefuseCode.NameInUse, message: `subdomain "${name}" is asked for twice` };
    const check = this.registry.check(name, owner, clientId);
    switch (check.problem) {
      case undefined:
        return { name, access, replaces: check.replaces };
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
