// The client's control connection: connect, handshake, serve streams, reconnect with backoff.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { CloseCode, ErrorCode, GgrokError, ResetCode } from '../protocol/errors.js';
import type {
  FlowSettings,
  AccessRules,
  HeaderList,
  HelloFrame,
  MemberRef,
  PoolFrame,
  RequestFrame,
  StatsFrame,
  WelcomeFrame,
} from '../protocol/frames.js';
import type { Stream, StreamHandler } from '../protocol/stream.js';
import { HEALTH_INTERVAL_MS, HealthCheck, type HealthResult } from './health-check.js';
import { bothObservers, HostCheckWatch, type HostCheckHint } from './host-check.js';
import type { HeaderRules } from './header-rules.js';
import { LocalForwarder, type Exchange, type ExchangeObserver } from './local-request.js';
import type { LocalTarget } from './target.js';
import { RelayLink, type LinkFailure, type LinkHandler, type LinkTarget } from './relay-link.js';

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
  /**
   * Webhook inbox: path patterns ("/*" = all, "/webhooks/*") whose requests the relay keeps while this client is
   * away and delivers when it is back. Off when absent or empty.
   */
  inbox?: string[];
  /** Header edits applied by this client (Host rewrite, add/remove). */
  headerRules?: HeaderRules;
  /** Join (or start) the endpoint pool of the name: other clients of the same owner may serve it too. */
  pool?: boolean;
  /** With `pool`: GET this path on the local service every `healthIntervalMs` and tell the relay the result. */
  healthPath?: string;
  healthIntervalMs?: number;
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
  /** Receive limits announced to the relay (DEFAULT_FLOW when absent); windows grow from these on long paths. */
  flow?: FlowSettings;
}

/** One tunnel of a client: a name to ask for, a local target, and its own rules. */
export interface TunnelSpec {
  subdomain?: string;
  target: LocalTarget;
  access?: AccessRules;
  /** Webhook inbox path patterns, as ClientOptions.inbox. */
  inbox?: string[];
  headerRules?: HeaderRules;
  /** Join (or start) the endpoint pool of the name. */
  pool?: boolean;
  /** With `pool`: the local service's health check path, and how often it is checked. */
  healthPath?: string;
  healthIntervalMs?: number;
}

/** A pool tunnel's place in its pool, as the relay announced it. */
export interface PoolInfo {
  name: string;
  /** This client's member id in the pool. */
  member: string;
  /** Members serving the name now, this one included. */
  size: number;
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
  /** Requests the relay turned away for the tunnel's limits (429 rate, 503 busy or over a visitor's share). */
  refused: number;
}

/** What the relay's webhook inbox kept for one tunnel while the client was away (told on connecting). */
export interface InboxReport {
  name: string;
  /** Requests kept, delivered now in arrival order. */
  kept: number;
  /** Requests refused because the inbox was full. */
  refused: number;
  /** Requests kept whose delivery failed every attempt (see `ggrok inbox list`). */
  failed: number;
}

export interface ClientEvents {
  online: [OnlineInfo];
  /** The relay kept requests for a tunnel while the client was away; they are being delivered. */
  inbox: [InboxReport];
  offline: [OfflineInfo];
  request: [Exchange];
  /** A dev server refused a visitor with its host check: which, why and how to fix it (once per tunnel). */
  hint: [HostCheckHint];
  /** Relay-side traffic counters of one tunnel. */
  stats: [TunnelStats];
  /** A pool tunnel joined its pool, or the pool's size changed. */
  pool: [PoolInfo];
  /** A pool tunnel's health check (--health-path) passed or failed (first result, then changes). */
  health: [{ name: string } & HealthResult];
  /** An error retrying cannot fix (bad token, name taken, …); the client has stopped. */
  fatal: [GgrokError];
  closed: [];
}

/**
 * The relay's own URL for `path` (e.g. "/_ggrok/inbox"), from the --server value: a scheme is optional, ws and wss
 * mean http and https. Throws bad_server_url for anything else.
 */
export function relayUrl(server: string, path: string): URL {
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
  return new URL(`${secure ? 'https' : 'http'}://${url.host}${url.pathname.replace(/\/+$/, '')}${path}`);
}

/** Turns the relay URL into the control socket URL. */
export function controlUrl(server: string): string {
  const url = relayUrl(server, '/_ggrok/connect');
  return `${url.protocol === 'https:' ? 'wss' : 'ws'}://${url.host}${url.pathname}`;
}

/** The owner of a stream for a tunnel this connection does not carry: it was reset at once; nothing else happens. */
const IGNORED_STREAM: StreamHandler = { data() {}, end() {}, reset() {}, drain() {} };

/** How long close() waits at most for requests in flight: a leaving pool member by default, connect()'s Tunnel too. */
export const CLOSE_DRAIN_MS = 10_000;
/** ... and at least, for requests the relay sent before it read the member's GoAway. */
const DRAIN_SETTLE_MS = 300;

/** Control sockets one client keeps at most, one per relay instance of a cluster. */
export const MAX_RELAY_LINKS = 8;
/**
 * A dial that reached an instance the client is attached to already is retried this soon: behind a front that picks
 * at random, with k of n instances attached, each try lands on a new one with chance (n - k) / n.
 */
const WRONG_INSTANCE_RETRY_MS = 100;
/** Tries at that pace before slowing down: 20 tries miss the last of 3 instances with chance (2/3)^20, under 0.1 %. */
const WRONG_INSTANCE_FAST_TRIES = 20;
/** ... doubling while it keeps landing on instances it has, up to this. */
const WRONG_INSTANCE_MAX_RETRY_MS = 5000;

/** A relay instance this client should hold a control socket to, and how it is going with it. */
interface MemberState {
  ref: MemberRef;
  /** Dials since the last welcome from it (for the backoff). */
  attempt: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * A tunnel client. start() resolves on the first welcome; afterwards it keeps itself online until close(). Against a
 * relay cluster it keeps one control socket per live instance (up to MAX_RELAY_LINKS), so that a request reaching any
 * instance finds a socket there, and losing an instance costs only what was in flight on it.
 */
export class TunnelClient extends EventEmitter<ClientEvents> {
  url = '';
  name = '';
  /** Latest heartbeat round trip to the relay, in ms (-1 before the first); the best over the instances. */
  get rttMs(): number {
    const rtts = this.welcomed()
      .map((l) => l.session?.rttMs ?? -1)
      .filter((r) => r >= 0);
    return rtts.length > 0 ? Math.min(...rtts) : -1;
  }

  /** Latest relay-side counters per tunnel index (summed over the instances). */
  readonly stats = new Map<number, TunnelStats>();

  /** Streams (requests and channels) open on the control connections right now. */
  get openStreams(): number {
    return this.welcomed().reduce((n, l) => n + (l.session?.streams.size ?? 0), 0);
  }

  /** Connections to the local services busy with an exchange right now (idle pooled ones not counted). */
  get busyLocalConnections(): number {
    return this.forwarders.reduce((n, f) => n + f.busyConnections, 0);
  }

  /** Each pool tunnel's member id and pool size, by tunnel index (as the relay last announced them). */
  readonly pools = new Map<number, PoolInfo>();

  /** Ids of the relay instances this client holds a control socket to. */
  get instances(): string[] {
    return [...new Set(this.welcomed().map((l) => l.instance ?? ''))].filter(Boolean).sort();
  }

  /**
   * Drops the control connections at once, without a close handshake, as a dead network or a sleeping laptop
   * would; the client then reconnects as it does after any drop. For tests and `ggrok` diagnostics.
   */
  dropConnection(): void {
    for (const link of this.links.keys()) link.terminate();
  }

  private readonly clientId = randomBytes(12).toString('base64url');
  private readonly specs: TunnelSpec[];
  private readonly forwarders: LocalForwarder[];
  /** Names the relay gave each tunnel, reclaimed on reconnect. */
  private names: string[] = [];
  /** Public URLs of the tunnels, as the relay announced them (for dev-server hints). */
  private urls: string[] = [];
  private readonly wsUrl: string;
  /** Every control socket, dialing or welcomed, and the member it was dialed for (undefined: the seed URL). */
  private readonly links = new Map<RelayLink, string | undefined>();
  /** The cluster's instances, by id: every instance any welcomed socket's relay announced last. */
  private readonly members = new Map<string, MemberState>();
  /** What each welcomed socket's relay announced last: instances see each other a tick apart, so views differ. */
  private readonly views = new Map<RelayLink, MemberRef[]>();
  /** Counters per instance and tunnel index, summed into `stats`. */
  private readonly statsByInstance = new Map<string, Map<number, Omit<TunnelStats, 'name'>>>();
  private closing = false;
  /** Streams that became upgraded channels: close() does not wait for them. */
  private readonly channels = new WeakSet<Stream>();
  /** At least one socket is welcomed (since the last 'online'). */
  private online = false;
  private attempt = 0;
  private everOnline = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The delay a relay asked for in its GoAway, used for the next reconnect. */
  private goAwayDelayMs: number | undefined;
  /** Each tunnel's health check, for pool tunnels with a health path. */
  private readonly checks: (HealthCheck | undefined)[];
  /**
   * The pool tunnels each socket's relay confirmed with a Pool frame: only those relays are sent Health frames (a
   * relay that predates pools would take one as a protocol error).
   */
  private readonly pooled = new WeakMap<RelayLink, Set<number>>();

  constructor(private readonly opts: ClientOptions) {
    super();
    this.wsUrl = controlUrl(opts.server);
    this.specs = [
      {
        subdomain: opts.subdomain,
        target: opts.target,
        access: opts.access,
        headerRules: opts.headerRules,
        pool: opts.pool,
        healthPath: opts.healthPath,
        healthIntervalMs: opts.healthIntervalMs,
        inbox: opts.inbox,
      },
      ...(opts.more ?? []),
    ];
    this.checks = this.specs.map((spec, i) =>
      spec.pool && spec.healthPath
        ? new HealthCheck(spec.target, spec.healthPath, spec.healthIntervalMs ?? HEALTH_INTERVAL_MS, (r) =>
            this.onHealth(i, r),
          )
        : undefined,
    );
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
          const pool = this.pools.get(i);
          if (pool) x.member = pool.member;
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
      this.dial(undefined);
      for (const check of this.checks) check?.start();
    });
  }

  /**
   * Closes the tunnel. With `drainMs`, new requests are refused (the visitor gets 503, or in a pool another member)
   * while those in flight get up to that long to finish; then, or at once without it, what is still open is reset.
   * A pool member drains by default: it first tells the relay it is leaving, so the other members take the new
   * requests. WebSockets and other upgraded channels are long-lived by nature and not waited for.
   */
  async close(drainMs?: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.stopTimers();
    const pooled = this.specs.some((s) => s.pool);
    const wait = drainMs ?? (pooled ? CLOSE_DRAIN_MS : 0);
    if (wait > 0) await this.drain(wait, pooled);
    for (const f of this.forwarders) f.close();
    await Promise.all([...this.links.keys()].map((link) => link.close()));
    this.emit('closed');
  }

  /**
   * Waits until no plain request is in flight or `ms` passed. A pool member first says GoAway on every socket and
   * waits a moment at least: requests the relay routed here before it read the GoAway are still on their way.
   */
  private async drain(ms: number, leavingPool: boolean): Promise<void> {
    const until = Date.now() + ms;
    let settled = Date.now();
    if (leavingPool) {
      for (const link of this.welcomed())
        link.session!.goAway(ErrorCode.ClientLeaving, 'pool member leaving', 0);
      settled += Math.min(ms, DRAIN_SETTLE_MS);
    }
    while (Date.now() < until && (Date.now() < settled || this.requestsInFlight() > 0))
      await new Promise((r) => setTimeout(r, 20));
  }

  /** Plain requests (not channels) being served right now, for close()'s drain: the sessions' open streams. */
  requestsInFlight(): number {
    let n = 0;
    for (const link of this.welcomed())
      for (const stream of link.session!.streams.values()) if (!this.channels.has(stream)) n++;
    return n;
  }

  // ---- dialing ----

  /** Opens a control socket: to the configured URL (`member` undefined), or towards one instance of the cluster. */
  private dial(member: MemberRef | undefined): void {
    if (this.closing) return;
    const target: LinkTarget = member?.url
      ? { url: controlUrl(member.url) }
      : member?.fly
        ? { url: this.wsUrl, headers: { 'fly-force-instance-id': member.fly } }
        : { url: this.wsUrl };
    const link = new RelayLink(target, this.hello(), this.linkHandler, {
      insecure: this.opts.insecure,
      server: this.opts.server,
      flow: this.opts.flow,
    });
    this.links.set(link, member?.id);
  }

  /** The hello of every socket: the same names, this process's id, and the instances it holds sockets to. */
  private hello(): Omit<HelloFrame, 'type' | 'version' | 'agent' | 'flow'> {
    return {
      token: this.opts.token,
      name: this.wantedName(0),
      clientId: this.clientId,
      ...(this.opts.access ? { access: this.opts.access } : {}),
      ...(this.opts.inbox?.length ? { inbox: this.opts.inbox } : {}),
      ...(this.specs.length > 1
        ? {
            more: this.specs.slice(1).map((spec, i) => ({
              name: this.wantedName(i + 1),
              ...(spec.access ? { access: spec.access } : {}),
              ...(spec.pool ? { pool: true } : {}),
              ...(spec.inbox?.length ? { inbox: spec.inbox } : {}),
            })),
          }
        : {}),
      attach: { avoid: this.instances },
      ...(this.specs[0]!.pool ? { pool: true } : {}),
      // Pool members are told apart by their machine on the relay's status page.
      ...(this.specs.some((s) => s.pool) ? { host: hostname().slice(0, 255) } : {}),
    };
  }

  /** Welcomed sockets. */
  private welcomed(): RelayLink[] {
    return [...this.links.keys()].filter((l) => l.session !== undefined);
  }

  /**
   * Dials every announced instance the client has no socket to yet (one blind dial at a time when the only way
   * to reach instances is the configured URL behind a front that picks one at random).
   */
  private attachMissing(): void {
    if (this.closing || !this.online) return;
    const attached = new Set(this.instances);
    const dialing = new Set([...this.links.values()]);
    let blind = [...this.links.entries()].some(
      ([link, id]) =>
        id !== undefined && !link.session && !this.members.get(id)?.ref.url && !this.members.get(id)?.ref.fly,
    );
    for (const [id, state] of this.members) {
      if (attached.has(id) || dialing.has(id) || state.timer) continue;
      if (this.links.size >= MAX_RELAY_LINKS) return;
      const direct = state.ref.url !== undefined || state.ref.fly !== undefined;
      if (!direct) {
        if (blind) continue;
        blind = true;
      }
      this.dial(state.ref);
    }
  }

  /** Dials an instance again after a pause that grows while it keeps failing. */
  private redialLater(id: string, delayMs?: number): void {
    const state = this.members.get(id);
    if (!state || state.timer || this.closing) return;
    const min = this.opts.minBackoffMs ?? 250;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const base = delayMs ?? Math.min(max, min * 2 ** state.attempt);
    state.attempt++;
    state.timer = setTimeout(
      () => {
        state.timer = undefined;
        this.attachMissing();
      },
      Math.round(base * (0.8 + Math.random() * 0.4)),
    );
  }

  private readonly linkHandler: LinkHandler = {
    welcomed: (link, welcome) => this.onWelcome(link, welcome),
    failed: (link, failure) => this.onFailed(link, failure),
    closed: (link, code, reason) => this.onClosed(link, code, reason),
    goAway: (link, frame) => {
      if (frame.code === ErrorCode.Superseded)
        return this.fail(
          new GgrokError(
            ErrorCode.Superseded,
            `${frame.message}. Another ggrok process with the same token now serves this URL; this one stops.`,
          ),
        );
      this.goAwayDelayMs = frame.reconnectAfterMs;
      const id = link.instance;
      const state = id ? this.members.get(id) : undefined;
      if (state) state.attempt = 0;
    },
    members: (link, frame) => this.setView(link, frame.members),
    stats: (link, frame) => this.onStats(link, frame),
    pool: (link, frame) => this.onPool(link, frame),
    request: (stream, head) => {
      if (this.closing) {
        stream.reset(ResetCode.RefusedStream, 'the tunnel is closing');
        return IGNORED_STREAM;
      }
      const forwarder = this.forwarders[head.tunnel];
      if (head.upgrade) this.channels.add(stream);
      if (forwarder) return forwarder.serve(stream, head);
      stream.reset(ResetCode.ProtocolError, `no tunnel ${head.tunnel} on this connection`);
      return IGNORED_STREAM;
    },
  };

  private onWelcome(link: RelayLink, welcome: WelcomeFrame): void {
    if (this.closing) return void link.close();
    const id = welcome.instance;
    // Dialed for one instance, a blind dial through a front may have reached another: it is that one's link now.
    this.links.set(link, id);
    const state = id ? this.members.get(id) : undefined;
    if (state) state.attempt = 0;
    this.url = welcome.url;
    this.name = welcome.name;
    const more = welcome.more ?? [];
    this.names = [welcome.name, ...more.map((t) => t.name)];
    this.urls = [welcome.url, ...more.map((t) => t.url)];
    if (welcome.members) this.setView(link, welcome.members);
    for (const n of welcome.inbox ?? [])
      this.emit('inbox', {
        name: this.names[n.tunnel] ?? '',
        kept: n.kept,
        refused: n.refused,
        failed: n.failed,
      });
    if (!this.online) {
      this.online = true;
      this.attempt = 0;
      this.goAwayDelayMs = undefined;
      const tunnels = [{ name: welcome.name, url: welcome.url }, ...more].map((t, i) => ({
        ...t,
        target: this.specs[i]!.target,
      }));
      const reconnected = this.everOnline;
      this.everOnline = true;
      // Report online once the first heartbeat came back (so the header can show the latency), or after 1 s.
      const session = link.session!;
      const since = Date.now();
      const announce = (): void => {
        if (link.session !== session || this.closing) return;
        if (session.rttMs < 0 && Date.now() - since < 1000) return void setTimeout(announce, 2);
        this.emit('online', { url: welcome.url, name: welcome.name, tunnels, reconnected });
      };
      announce();
    }
    this.attachMissing();
  }

  private onFailed(link: RelayLink, failure: LinkFailure): void {
    const member = this.links.get(link);
    this.links.delete(link);
    if (this.closing) return;
    const { err, retryable } = failure;
    if (err.code === ErrorCode.WrongInstance && member !== undefined) {
      // Behind a front that picks an instance at random, another try soon lands elsewhere; without one, it never
      // will, so the tries slow down (the instance can still be reached by the front's other clients' requests).
      const attempt = this.members.get(member)?.attempt ?? 0;
      const slower = Math.max(0, attempt - WRONG_INSTANCE_FAST_TRIES);
      return this.redialLater(
        member,
        Math.min(WRONG_INSTANCE_MAX_RETRY_MS, WRONG_INSTANCE_RETRY_MS * 2 ** slower),
      );
    }
    if (!retryable) return this.fail(err);
    if (member !== undefined && this.online) return this.redialLater(member);
    if (this.online) return; // the seed URL failed while other sockets serve: members are dialed on their own
    if (!this.everOnline && !this.opts.retryInitialConnect) return this.fail(err);
    this.scheduleReconnect(err.message);
  }

  private onClosed(link: RelayLink, code: number, reason: string): void {
    this.links.delete(link);
    if (this.views.delete(link)) this.setMembers();
    if (link.instance) this.statsByInstance.delete(link.instance);
    if (this.closing) return;
    if (this.opts.noReconnect)
      return this.fail(new GgrokError(ErrorCode.Disconnected, `disconnected from the relay (${code})`));
    if (this.welcomed().length > 0) {
      // Other instances still carry the tunnel: only this one is dialed again (its restart, for instance).
      if (link.instance && code !== CloseCode.Replaced) this.redialLater(link.instance, this.goAwayDelayMs);
      return;
    }
    this.online = false;
    const why =
      code === CloseCode.HeartbeatTimeout
        ? 'the relay stopped answering'
        : `connection lost (${code}${reason.length ? ` ${reason}` : ''})`;
    this.scheduleReconnect(why);
  }

  /** One relay announced the cluster's live instances (its view). */
  private setView(link: RelayLink, refs: MemberRef[]): void {
    this.views.set(link, refs);
    this.setMembers();
  }

  /**
   * The instances to hold sockets to: the union of the welcomed sockets' views. An instance leaves it only when
   * no relay the client talks to lists it any more (an instance that stopped, or a view not refreshed yet).
   */
  private setMembers(): void {
    const refs = new Map<string, MemberRef>();
    for (const view of this.views.values()) for (const ref of view) refs.set(ref.id, ref);
    const ids = new Set(refs.keys());
    for (const [id, state] of this.members)
      if (!ids.has(id)) {
        clearTimeout(state.timer);
        this.members.delete(id);
      }
    for (const ref of refs.values()) {
      const state = this.members.get(ref.id);
      if (state) state.ref = ref;
      else this.members.set(ref.id, { ref, attempt: 0, timer: undefined });
    }
    this.attachMissing();
  }

  private onStats(link: RelayLink, frame: StatsFrame): void {
    const { type: _type, tunnel, ...counters } = frame;
    const instance = link.instance ?? '';
    let byTunnel = this.statsByInstance.get(instance);
    if (!byTunnel)
      this.statsByInstance.set(instance, (byTunnel = new Map<number, Omit<TunnelStats, 'name'>>()));
    byTunnel.set(tunnel, counters);
    // What the owner sees is the tunnel's traffic over every instance that carries it.
    const sum = {
      name: this.names[tunnel] ?? '',
      requests: 0,
      bytesIn: 0,
      bytesOut: 0,
      channels: 0,
      lastActivityMs: 0,
      refused: 0,
    };
    for (const perInstance of this.statsByInstance.values()) {
      const c = perInstance.get(tunnel);
      if (!c) continue;
      sum.requests += c.requests;
      sum.bytesIn += c.bytesIn;
      sum.bytesOut += c.bytesOut;
      sum.channels += c.channels;
      sum.lastActivityMs = Math.max(sum.lastActivityMs, c.lastActivityMs);
      sum.refused += c.refused;
    }
    this.stats.set(tunnel, sum);
    this.emit('stats', sum);
  }

  /** A health check's result changed: every relay instance carrying the tunnel is told. */
  private onHealth(index: number, result: HealthResult): void {
    for (const link of this.welcomed())
      if (this.pooled.get(link)?.has(index)) link.session!.sendHealth({ tunnel: index, ...result });
    this.emit('health', { name: this.names[index] ?? '', ...result });
  }

  private onPool(link: RelayLink, frame: PoolFrame): void {
    if (!this.specs[frame.tunnel]?.pool) return;
    // The first Pool on a socket: its relay knows pools (and Health frames), and counts the member healthy until
    // told otherwise.
    let pooled = this.pooled.get(link);
    if (!pooled) this.pooled.set(link, (pooled = new Set()));
    if (!pooled.has(frame.tunnel)) {
      pooled.add(frame.tunnel);
      const last = this.checks[frame.tunnel]?.last;
      if (last && !last.ok) link.session?.sendHealth({ tunnel: frame.tunnel, ...last });
    }
    const info = { name: this.names[frame.tunnel] ?? '', member: frame.member, size: frame.size };
    const last = this.pools.get(frame.tunnel);
    this.pools.set(frame.tunnel, info);
    if (last?.member !== info.member || last.size !== info.size) this.emit('pool', info);
  }

  /** The name to ask for: the one the relay gave last time (keeps URLs stable), else the configured one. */
  private wantedName(index: number): string {
    const got = this.names[index];
    if (got && got !== 'default') return got;
    return this.specs[index]?.subdomain ?? '';
  }

  /** Exponential backoff with jitter, from minBackoffMs (250 ms) to maxBackoffMs (30 s), for the configured URL. */
  private scheduleReconnect(reason: string): void {
    const min = this.opts.minBackoffMs ?? 250;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const base = this.goAwayDelayMs ?? Math.min(max, min * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt++;
    this.goAwayDelayMs = undefined;
    this.emit('offline', { reason, retryInMs: delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.dial(undefined), delay);
  }

  private stopTimers(): void {
    clearTimeout(this.retryTimer);
    for (const state of this.members.values()) clearTimeout(state.timer);
    for (const check of this.checks) check?.stop();
  }

  private fail(err: GgrokError): void {
    if (this.closing) return;
    this.closing = true;
    this.stopTimers();
    for (const f of this.forwarders) f.close();
    for (const link of this.links.keys()) void link.close();
    this.emit('fatal', err);
  }
}
