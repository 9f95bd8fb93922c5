// The relay's one http.Server: wires routing, admission, the handshake and telemetry together; listen and close.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { CloseCode, ErrorCode, RefuseCode } from '../protocol/errors.js';
import { WIRE_LIMITS } from '../protocol/frames.js';
import type { Session } from '../protocol/session.js';
import { VERSION as RELAY_VERSION } from '../protocol/version.js';
import { visitorAddress, visitorAddressSource, type VisitorAddressSource } from './access.js';
import { Admission } from './admission.js';
import { AuthFailures, SecretThrottle } from './auth-failures.js';
import { bearerToken, CONNECT_PATH, serveRelayEndpoint, type RelaySelf } from './endpoints.js';
import { Cluster } from './cluster/cluster.js';
import type { MemberInfo } from './cluster/membership.js';
import { flyCanReplay, PeerAuth, peerSecret, type PeerVia } from './cluster/peer.js';
import { HelloDecider, memberRefs } from './hello.js';
import { Inbox } from './inbox.js';
import { Courier } from './inbox-delivery.js';
import { serveInboxApi } from './inbox-api.js';
import { InboxFiles } from './inbox-files.js';
import { takeIn } from './inbox-intake.js';
import type { RelayEvent } from './log.js';
import type { RelayMetrics } from './metrics.js';
import {
  RELAY_DEFAULTS,
  resolveRelayOptions,
  type RelayOptions,
  type ResolvedRelayOptions,
} from './options.js';
import {
  sendErrorPage,
  sendJson,
  writeRawErrorPage,
  type ErrorPage,
  type RelayStatus,
  type TunnelStatus,
} from './pages.js';
import { PublicRequest, PublicUpgrade, type ExchangeDesk, type HandOff } from './public-request.js';
import { Registry } from './registry.js';
import { parseHost, requestScheme, Router, WaitingRoom } from './routing.js';
import { Telemetry, tunnelStatus } from './telemetry.js';
import { Credentials } from './tokens.js';
import type { Tunnel } from './tunnel.js';

/** One open stream of a tunnel's control connection, as Relay.tunnel() shows it. */
export interface StreamView {
  id: number;
  /** Bytes received from the client and not yet taken by the visitor (at most the stream window). */
  bufferedBytes: number;
  /** The stream's receive window now: it grows past the announced one on long paths and shrinks for slow visitors. */
  recvWindowBytes: number;
}

/** A live tunnel as operators and tests see it: its status, and the streams of the connection carrying it. */
export interface TunnelView extends TunnelStatus {
  /** Open streams of the control connection (shared by every tunnel that connection carries). */
  streams: StreamView[];
}

/** What the relay holds right now: what a leak or a stuck request would show up in. */
export interface RelayCounts {
  tunnels: number;
  /** Control WebSockets open, including those still in the handshake. */
  controlSockets: number;
  /** Public requests held for a reconnecting client. */
  waitingRequests: number;
  activeRequests: number;
  activeChannels: number;
  /** Streams open over every control connection. */
  openStreams: number;
}

/** A running relay. Create with createRelay(), then listen(). */
export class Relay {
  readonly server: http.Server;
  readonly metrics: RelayMetrics;
  /** Where visitor addresses (for --allow-ip and the secret throttle) are read from. */
  readonly visitorAddressSource: VisitorAddressSource;
  private readonly options: ResolvedRelayOptions;
  private readonly startedAt = Date.now();
  private readonly wss: WebSocketServer;
  private readonly registry: Registry<Tunnel>;
  private readonly credentials: Credentials;
  private readonly throttle: SecretThrottle;
  private readonly telemetry: Telemetry;
  private readonly router: Router;
  private readonly waitingRoom: WaitingRoom;
  private readonly admission: Admission;
  /** Requests kept for tunnels whose clients are away (webhook inboxes). */
  readonly inbox: Inbox;
  /** Where the inboxes survive restarts (--inbox-dir), if anywhere. */
  private readonly inboxFiles: InboxFiles | undefined;
  /** What visitors' exchanges need from the relay. */
  private readonly desk: ExchangeDesk;
  private readonly hellos: HelloDecider;
  /** This relay's place in a cluster (with --redis), or undefined when it runs alone. */
  private readonly cluster: Cluster | undefined;
  /** Signs requests forwarded to other instances and checks those they forward here. */
  private readonly peers: PeerAuth;
  /** Sessions of cluster-aware clients: told when the members change. */
  private readonly clusterSessions = new Set<Session>();
  private shuttingDown = false;

  constructor(options: RelayOptions) {
    const o = (this.options = resolveRelayOptions(options));
    this.visitorAddressSource = visitorAddressSource(o.trustProxy, o.onFly);
    this.registry = new Registry(o.nameGraceMs);
    this.credentials = new Credentials(o.tokens, o.metricsToken);
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
    });
    this.telemetry = new Telemetry(o, {
      tunnels: () => this.registry.values(),
      controlSockets: () => this.wss.clients.size,
      nameKnown: (name) => this.registry.get(name) !== undefined || this.registry.isHeld(name),
      mode: this.mode,
      instance: o.instanceId,
      // Read when scraped, after the inbox exists.
      inbox: () => ({ requests: this.inbox.count, bytes: this.inbox.bytes }),
    });
    this.metrics = this.telemetry.metrics;
    this.throttle = new SecretThrottle(new AuthFailures(o.now), this.telemetry);
    this.peers = new PeerAuth(peerSecret(this.credentials.owners), o.instanceId);
    this.cluster = o.cluster && this.joinCluster(o);
    this.router = new Router(this.registry, o, this.startedAt, this.cluster);
    this.waitingRoom = new WaitingRoom(o.waitForClientMs);
    this.admission = new Admission({
      options: o,
      visitorAddressSource: this.visitorAddressSource,
      throttle: this.throttle,
      refused: (code) => this.metrics.refused(code),
    });
    const log = (e: RelayEvent): void => this.telemetry.log(e);
    this.inboxFiles = o.inboxDir
      ? new InboxFiles(
          o.inboxDir,
          { maxBodyBytes: o.inboxMaxBodyBytes, maxTotalBytes: o.inboxMaxTotalBytes },
          log,
        )
      : undefined;
    this.inbox = new Inbox({
      options: o,
      store: this.inboxFiles,
      heldFor: (name) => this.registry.heldFor(name),
      hold: (name, owner, until) => this.registry.hold(name, owner, until),
      deliverer: (inbox, _name, tunnel) =>
        new Courier(inbox, tunnel, {
          retryMs: o.inboxRetryMs,
          maxAttempts: o.inboxMaxAttempts,
          log: (e) => this.telemetry.log(e),
        }),
      log,
    });
    // What an earlier run kept: delivered when each owner's client is back (what no longer fits or expired goes).
    const saved = this.inboxFiles?.load();
    for (const r of saved?.requests ?? []) if (!this.inbox.restore(r)) this.inboxFiles!.removed(r);
    // Holds too: while those clients stay away, their requests are kept again (and their names stay theirs).
    for (const h of saved?.holds ?? []) if (!this.inbox.restoreHold(h)) this.inboxFiles!.released(h.name);
    this.desk = {
      admission: this.admission,
      inboxMaxBodyBytes: o.inboxMaxBodyBytes,
      handOff: (req, members, via) => this.handOff(req, members, via),
      wait: (name, callback) => this.waitingRoom.wait(name, callback),
      finished: (x) => this.telemetry.exchangeDone(x),
      failover: (failed) => {
        const next = this.router.pick(failed.name, new Set([failed]));
        if (next) this.metrics.poolRetried();
        return next;
      },
      inboxFor: (name, target) => (this.shuttingDown ? undefined : this.inbox.keeps(name, target)),
      keep: (req, res, head) =>
        takeIn(this.inbox, req, res, head, {
          status: o.inboxStatus,
          maxBodyBytes: o.inboxMaxBodyBytes,
          page: (p) => sendErrorPage(res, p),
        }),
    };
    this.hellos = new HelloDecider({
      options: o,
      registry: this.registry,
      credentials: this.credentials,
      throttle: this.throttle,
      visitorAddressSource: this.visitorAddressSource,
      router: this.router,
      waitingRoom: this.waitingRoom,
      inbox: this.inbox,
      telemetry: this.telemetry,
      cluster: this.cluster,
      closing: () => this.shuttingDown,
      clusterSession: (session, open) => {
        if (open) this.clusterSessions.add(session);
        else this.clusterSessions.delete(session);
      },
    });
    this.cluster?.start();
    this.server = createServer(o);
    this.server.on('request', (req, res) => this.onRequest(req, res));
    // With a listener here Node does not answer 100 itself: the local service decides.
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on('clientError', answerClientError);
  }

  /** This relay's instance id (unique in its cluster). */
  get instanceId(): string {
    return this.options.instanceId;
  }

  get mode(): 'domain' | 'own-host' {
    return this.options.domain ? 'domain' : 'own-host';
  }

  /** Number of connected tunnels. */
  get tunnelCount(): number {
    return this.registry.size;
  }

  /**
   * Starts listening; resolves with the bound port. An instance of a cluster first reads the cluster once (who
   * serves what), for at most a few seconds: it must not tell a visitor "no such tunnel" about a name its peers serve.
   */
  async listen(port: number, host?: string): Promise<number> {
    await this.cluster?.synced(CLUSTER_SYNC_BEFORE_LISTEN_MS);
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
  async close(deadlineMs: number = RELAY_DEFAULTS.closeDeadlineMs): Promise<void> {
    this.shuttingDown = true;
    this.telemetry.stopStats();
    this.server.close();
    // Leave the cluster first: the others stop counting on this instance while it drains.
    await this.cluster?.leave();
    this.waitingRoom.close();
    for (const tunnel of this.registry.values())
      tunnel.session.goAway(RefuseCode.RelayShuttingDown, 'relay is shutting down', 1000);
    const until = Date.now() + deadlineMs;
    // A connection accepted just before the listener closed may not have sent its request yet: Node counts it as
    // idle, so idle connections are closed only after a moment (responses meanwhile carry Connection: close).
    const settled = Date.now() + Math.min(DRAIN_SETTLE_MS, deadlineMs);
    // Channels (WebSockets) are long-lived by nature: only plain requests are waited for.
    while (Date.now() < until) {
      const busy = [...this.registry.values()].some((t) => t.activeRequests > 0);
      if (!busy && Date.now() >= settled) break;
      if (Date.now() >= settled) this.server.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    this.inbox.close(this.registry.values());
    for (const tunnel of this.registry.values())
      tunnel.session.close(CloseCode.GoingAway, 'relay shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections();
    await this.telemetry.flushHooks(deadlineMs, () => this.registry.size > 0);
    await this.cluster?.close();
    await this.inboxFiles?.flush();
    this.telemetry.log({ event: 'shutdown' });
  }

  /** How long `peer` must wait after too many wrong tokens (0: not at all); a refusal is counted. */
  private throttledFor(peer: string): number {
    const waitMs = this.throttle.waitMs(peer);
    if (waitMs > 0) this.metrics.refused(RefuseCode.TooManyAttempts);
    return waitMs;
  }

  /** What /_ggrok/status shows; never a token, only its label. */
  statusReport(): RelayStatus {
    const now = Date.now();
    return {
      version: RELAY_VERSION,
      mode: this.mode,
      domain: this.options.domain ?? null,
      instance: this.options.instanceId,
      uptimeSeconds: Math.round((now - this.startedAt) / 1000),
      shuttingDown: this.shuttingDown,
      tunnels: [...this.registry.values()].map((t) => tunnelStatus(t, now)),
      ...(this.cluster
        ? {
            cluster: {
              redis: this.cluster.redisUp ? 'up' : 'down',
              members: this.cluster.members
                .map((m) => ({
                  id: m.id,
                  self: m.id === this.options.instanceId,
                  tunnels: m.names.length,
                  instanceUrl: m.instanceUrl ?? null,
                  flyMachine: m.flyMachine ?? null,
                }))
                .sort((a, b) => a.id.localeCompare(b.id)),
            },
          }
        : {}),
    };
  }

  /** Whether a TLS certificate may be issued for `host`: the relay's domain, or a live or held tunnel name. */
  certificateAllowed(host: string): boolean | Promise<boolean> {
    if (this.router.certificateAllowed(host)) return true;
    // In a cluster, a name held for its owner in Redis qualifies too (its client may not be back anywhere yet).
    const name = this.router.nameOf(host);
    return this.cluster && name ? this.cluster.isHeld(name) : false;
  }

  /** The live tunnel named `name` (`default` in own-host mode) as a snapshot, or undefined. */
  tunnel(name: string): TunnelView | undefined {
    const tunnel = this.registry.get(name);
    if (!tunnel) return undefined;
    const streams = [...tunnel.session.streams.values()].map((s) => ({
      id: s.id,
      bufferedBytes: s.buffered,
      recvWindowBytes: s.recvWindow.size,
    }));
    return { ...tunnelStatus(tunnel), streams };
  }

  /**
   * Cuts the control connection of tunnel `name` without a close handshake, as a dead network would (with it go
   * the other tunnels that connection carries). Returns whether the tunnel was live.
   */
  dropTunnel(name: string): boolean {
    const tunnel = this.registry.get(name);
    tunnel?.session.terminate();
    return tunnel !== undefined;
  }

  /** What the relay holds right now (for health checks, leak tests and operators' scripts). */
  counts(): RelayCounts {
    const tunnels = [...this.registry.values()];
    // One session may carry several tunnels: count its streams once.
    const sessions = new Set<Session>(tunnels.map((t) => t.session));
    return {
      tunnels: tunnels.length,
      controlSockets: this.wss.clients.size,
      waitingRequests: this.waitingRoom.waiting,
      activeRequests: tunnels.reduce((n, t) => n + t.activeRequests, 0),
      activeChannels: tunnels.reduce((n, t) => n + t.activeChannels, 0),
      openStreams: [...sessions].reduce((n, s) => n + s.streams.size, 0),
    };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    // While shutting down, answer what arrives but let keep-alive connections close after it.
    if (this.shuttingDown) res.shouldKeepAlive = false;
    const via = this.peers.verify(req);
    if (via === 'invalid') return sendErrorPage(res, FORGED_PEER);
    // An instance that may have missed a takeover (it stalled, or lost Redis) checks its names before serving.
    if (this.cluster?.stale()) return this.cluster.afterVerification(() => this.routeRequest(req, res, via));
    this.routeRequest(req, res, via);
  }

  private routeRequest(req: IncomingMessage, res: ServerResponse, via: PeerVia | undefined): void {
    const at = parseHost(req);
    const route = this.router.route(req, at);
    if (route.kind === 'relay') return serveRelayEndpoint(req, res, this.self);
    new PublicRequest(this.desk, req, res, at, via).route(route);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const via = this.peers.verify(req);
    if (via === 'invalid') return writeRawErrorPage(socket, FORGED_PEER);
    if (this.cluster?.stale())
      return this.cluster.afterVerification(() => this.routeUpgrade(req, socket, head, via));
    this.routeUpgrade(req, socket, head, via);
  }

  private routeUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, via: PeerVia | undefined): void {
    const at = parseHost(req);
    const route = this.router.route(req, at);
    if (route.kind !== 'relay') return new PublicUpgrade(this.desk, req, socket, head, at, via).route(route);
    const path = (req.url ?? '/').split('?')[0]!;
    if (path !== CONNECT_PATH || req.headers.upgrade?.toLowerCase() !== 'websocket')
      return writeRawErrorPage(socket, {
        status: 404,
        code: ErrorCode.NotFound,
        title: 'Not Found',
        detail: `Nothing to upgrade at ${path}.`,
      });
    this.wss.handleUpgrade(req, socket, head, (ws) => this.hellos.accept(ws, req));
  }

  /** Joins the cluster: claims, leases and takeovers in Redis; clients told when the members change. */
  private joinCluster(o: ResolvedRelayOptions): Cluster {
    const c = o.cluster!;
    const cluster = new Cluster(
      {
        redis: { url: c.redisUrl, tlsInsecure: c.redisTlsInsecure },
        instanceId: o.instanceId,
        peerUrl: c.peerUrl,
        instanceUrl: c.instanceUrl,
        flyMachine: c.flyMachine,
        holdMs: o.nameGraceMs,
      },
      {
        served: () =>
          [...this.registry.values()].map((t) => ({
            name: t.name,
            owner: t.owner,
            client: t.clientId,
            fence: t.fence,
            pool: t.pool,
          })),
      },
    );
    cluster.on('superseded', (name, fence) => {
      // Every member of a pool goes when the name is taken over (pool members share the fence).
      for (const tunnel of [...this.registry.members(name)]) {
        if (tunnel.fence >= fence) continue;
        this.telemetry.log({ event: 'superseded', name, fence: tunnel.fence });
        tunnel.session.goAway(
          ErrorCode.Superseded,
          `another ggrok process of the same owner took over ${name}`,
          0,
        );
        tunnel.session.close(CloseCode.Replaced, 'superseded by a newer client of the same owner');
      }
    });
    cluster.on('members', () => {
      const members = memberRefs(cluster.members);
      for (const session of this.clusterSessions) session.sendMembers(members);
    });
    cluster.on('redis', (up) => this.telemetry.log({ event: up ? 'redis_up' : 'redis_down' }));
    return cluster;
  }

  /** How an exchange for a tunnel other instances hold reaches one of them, if it can. */
  private handOff(
    req: IncomingMessage,
    members: MemberInfo[],
    via: PeerVia | undefined,
  ): HandOff | undefined {
    // Forwarded here already: one hop only. No loop, however the instances' views of each other disagree.
    if (via || this.shuttingDown) return undefined;
    const target = members[Math.floor(Math.random() * members.length)]!;
    if (this.options.onFly && target.flyMachine && flyCanReplay(req))
      return { kind: 'fly', machine: target.flyMachine };
    const peer = members.find((m) => m.peerUrl);
    if (!peer?.peerUrl) return undefined;
    const visitor = visitorAddress(req, this.visitorAddressSource);
    return {
      kind: 'peer',
      url: peer.peerUrl,
      signature: this.peers.sign(req, visitor, requestScheme(req, this.options.trustProxy)),
    };
  }

  /** The relay's own host, as the endpoints see it. */
  private readonly self: RelaySelf = {
    health: () => ({
      ok: true,
      version: RELAY_VERSION,
      mode: this.mode,
      domain: this.options.domain ?? null,
      instance: this.options.instanceId,
      ...(this.cluster
        ? {
            cluster: {
              redis: this.cluster.redisUp ? 'up' : 'down',
              members: this.cluster.members.map((m) => m.id).sort(),
            },
          }
        : {}),
      tunnels: this.registry.size,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      shuttingDown: this.shuttingDown,
    }),
    statusReport: () => this.statusReport(),
    renderMetrics: () => this.metrics.render(),
    certificateAllowed: (host) => this.certificateAllowed(host),
    observerAccess: (req, presented) => {
      const peer = visitorAddress(req, this.visitorAddressSource);
      const waitMs = this.throttledFor(peer);
      if (waitMs > 0) return { retryAfterSeconds: Math.ceil(waitMs / 1000) };
      if (presented === undefined) return 'denied';
      if (this.credentials.observer(presented)) return 'allowed';
      this.throttle.failed('observer_token', peer);
      return 'denied';
    },
    inbox: (req, res, path) => {
      const peer = visitorAddress(req, this.visitorAddressSource);
      const waitMs = this.throttledFor(peer);
      if (waitMs > 0) {
        res.setHeader('Retry-After', Math.ceil(waitMs / 1000));
        return sendJson(res, 429, { error: RefuseCode.TooManyAttempts });
      }
      const presented = bearerToken(req);
      const token = presented === undefined ? undefined : this.credentials.client(presented);
      if (!token) {
        if (presented !== undefined) this.throttle.failed('client_token', peer);
        res.setHeader('WWW-Authenticate', 'Bearer realm="ggrok"');
        return sendJson(res, 401, {
          error: ErrorCode.Unauthorized,
          message: 'send Authorization: Bearer <token>',
        });
      }
      serveInboxApi(req, res, path, token.owner, this.inbox);
    },
    landing: (req) => ({
      url: this.router.relayUrl(req),
      serves: this.mode === 'domain' ? `tunnels at *.${this.options.domain}` : 'one tunnel at this host',
    }),
  };
}

/** How long a stopping relay keeps idle connections open for requests already on their way (see close()). */
const DRAIN_SETTLE_MS = 1000;
/** How long an instance waits to read the cluster before it listens anyway (Redis may be down). */
const CLUSTER_SYNC_BEFORE_LISTEN_MS = 3000;

/** The answer to a request claiming to come from another instance whose signature does not check out. */
const FORGED_PEER: ErrorPage = {
  status: 403,
  code: ErrorCode.Unauthorized,
  title: 'Forbidden',
  detail: 'The request claims to come from another relay instance, but its signature is wrong or stale.',
};

/** The http(s).Server with timeouts for tunnels behind platform routers. */
function createServer(o: ResolvedRelayOptions): http.Server {
  const serverOptions: http.ServerOptions = {
    // Long uploads and long-lived responses are normal through a tunnel: no whole-request deadline.
    requestTimeout: 0,
    keepAliveTimeout: o.keepAliveTimeoutMs,
    headersTimeout: o.headersTimeoutMs,
    // Node enforces headersTimeout only when it sweeps connections (every 30 s by default).
    connectionsCheckingInterval: Math.min(30_000, Math.max(250, Math.floor(o.headersTimeoutMs / 4))),
    maxHeaderSize: o.maxHeaderBytes,
  };
  return o.tls
    ? https.createServer({ ...serverOptions, cert: o.tls.cert, key: o.tls.key })
    : http.createServer(serverOptions);
}

/** Answers a request Node could not parse (431 for an oversized head, 408 for a slow one, else 400). */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const status =
    err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
  );
}

/** Creates a relay (options checked, defaults from RELAY_DEFAULTS); call listen() on it. */
export function createRelay(options: RelayOptions): Relay {
  return new Relay(options);
}
