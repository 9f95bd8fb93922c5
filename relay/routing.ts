// Host routing: which tunnel (or the relay itself) a request's Host names, and the waiting room for absent clients.
import { ErrorCode } from '../protocol/errors.js';
import type { IncomingMessage } from 'node:http';
import type { ResolvedRelayOptions } from './options.js';
import type { ErrorPage } from './pages.js';
import { RELAY_PATH_PREFIX } from './endpoints.js';
import { pickMember } from './pool.js';
import { isValidName, OWN_HOST_NAME, type Registry } from './registry.js';
import type { MemberInfo } from './cluster/membership.js';
import type { Tunnel } from './tunnel.js';

/** A Host header taken apart: as received, lowercased name without port, and the port. */
export interface HostParts {
  host: string;
  hostname: string;
  port: string;
}

/** Takes a request's Host header apart (an IPv6 literal keeps its brackets). */
export function parseHost(req: IncomingMessage): HostParts {
  const host = req.headers.host ?? '';
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
  const hostname = (m?.[1] ?? '').toLowerCase().replace(/\.$/, '');
  return { host, hostname, port: m?.[2] ?? '' };
}

/**
 * The scheme a request reached the relay with: behind a trusted proxy the right-most X-Forwarded-Proto (a proxy that
 * appends instead of replacing puts its own last, after the visitor's), otherwise whether the socket is TLS.
 */
export function requestScheme(req: IncomingMessage, trustProxy: boolean): 'http' | 'https' {
  const forwarded = trustProxy ? req.headers['x-forwarded-proto'] : undefined;
  const last = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded)?.split(',').pop()?.trim();
  if (last === 'https' || last === 'http') return last;
  return (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
}

/** Where a request goes. */
export type Route =
  | { kind: 'relay' }
  | { kind: 'tunnel'; tunnel: Tunnel }
  /** No live tunnel here, but other instances of the cluster serve it. */
  | { kind: 'elsewhere'; name: string; members: MemberInfo[]; page: ErrorPage }
  /** No live tunnel; `heldName` is set when its client is away and may come back. */
  | { kind: 'missing'; page: ErrorPage; heldName?: string };

/** What routing knows about the rest of a cluster (in memory, from the members' leases). */
export interface Directory {
  /** Other instances serving `name` now. */
  whereIs(name: string): MemberInfo[];
  /** Whether some instance served `name` within the hold. */
  recentlyServed(name: string): boolean;
}

/** Maps Host headers to tunnels, for public requests, public URLs and TLS certificates. */
export class Router {
  constructor(
    private readonly registry: Registry<Tunnel>,
    private readonly options: Pick<ResolvedRelayOptions, 'domain' | 'startupGraceMs' | 'trustProxy'>,
    /** Date.now() when the relay started: for startupGraceMs. */
    private readonly startedAt: number,
    /** The cluster's directory, when the relay is one of its instances. */
    private readonly directory?: Directory,
  ) {}

  /** The name is live, held here, or known to the cluster: its client may be on its way back. */
  private isHeld(name: string): boolean {
    return this.registry.isHeld(name) || (this.directory?.recentlyServed(name) ?? false);
  }

  /** Other instances serving `name`, or undefined. */
  private elsewhere(name: string, page: ErrorPage): Route | undefined {
    const members = this.directory?.whereIs(name) ?? [];
    return members.length > 0 ? { kind: 'elsewhere', name, members, page } : undefined;
  }

  /** Where a request for `at` goes: the relay's own host, a live tunnel, or a page (maybe after a wait). */
  route(req: IncomingMessage, at: HostParts): Route {
    const path = (req.url ?? '/').split('?')[0]!;
    const { hostname, host } = at;
    const domain = this.options.domain;
    if (!domain) {
      if (path.startsWith(RELAY_PATH_PREFIX)) return { kind: 'relay' };
      const tunnel = this.pick(OWN_HOST_NAME);
      if (tunnel) return { kind: 'tunnel', tunnel };
      const page: ErrorPage = {
        status: 503,
        code: ErrorCode.TunnelOffline,
        title: 'No tunnel connected',
        detail: `No ggrok client is connected to this relay (${host}). Start one with: ggrok http <port> --server <this relay's URL>.`,
        retryAfterSeconds: 5,
      };
      return (
        this.elsewhere(OWN_HOST_NAME, page) ?? {
          kind: 'missing',
          heldName: this.isHeld(OWN_HOST_NAME) || this.justStarted() ? OWN_HOST_NAME : undefined,
          page,
        }
      );
    }
    const suffix = `.${domain}`;
    if (!hostname.endsWith(suffix)) return { kind: 'relay' };
    const name = hostname.slice(0, -suffix.length);
    const tunnel = name.includes('.') ? undefined : this.pick(name);
    if (tunnel) return { kind: 'tunnel', tunnel };
    const offline: ErrorPage = {
      status: 503,
      code: ErrorCode.TunnelOffline,
      title: 'Tunnel offline',
      detail: `The tunnel ${host} is not connected right now. Its client may be reconnecting; try again shortly.`,
      retryAfterSeconds: 5,
    };
    const there = name.includes('.') ? undefined : this.elsewhere(name, offline);
    if (there) return there;
    if (!name.includes('.') && this.isHeld(name)) return { kind: 'missing', heldName: name, page: offline };
    return {
      kind: 'missing',
      // Just after a restart the relay has not met its clients yet: give them time to reconnect.
      heldName: !name.includes('.') && this.justStarted() && isValidName(name) ? name : undefined,
      page: {
        status: 404,
        code: ErrorCode.TunnelNotFound,
        title: 'Tunnel not found',
        detail: `There is no tunnel at ${host}.`,
      },
    };
  }

  /**
   * The live tunnel a new request for `name` goes to: its only one, or the pool member with the fewest requests in
   * flight among the healthy (round-robin between equals), never one in `exclude` (members it already failed on).
   */
  pick(name: string, exclude?: ReadonlySet<Tunnel>): Tunnel | undefined {
    const members = this.registry.members(name);
    if (members.length === 1) return exclude?.has(members[0]!) ? undefined : members[0];
    return members.length === 0 ? undefined : pickMember(members, this.registry.nextTurn(name), exclude);
  }

  /** The public URL of tunnel `name` for a client that reached the relay with `req`: same scheme and port. */
  tunnelUrl(req: IncomingMessage, name: string): string {
    const { host, port } = parseHost(req);
    const base = this.options.domain ? `${name}.${this.options.domain}${port ? `:${port}` : ''}` : host;
    return `${requestScheme(req, this.options.trustProxy)}://${base}`;
  }

  /** The relay's own address as `req` reached it. */
  relayUrl(req: IncomingMessage): string {
    return `${requestScheme(req, this.options.trustProxy)}://${parseHost(req).host}`;
  }

  /** The tunnel name a host names under the relay's domain, or undefined. */
  nameOf(host: string): string | undefined {
    const domain = this.options.domain;
    const h = host.toLowerCase().replace(/\.$/, '');
    if (!domain || !h.endsWith(`.${domain}`)) return undefined;
    const name = h.slice(0, -domain.length - 1);
    return isValidName(name) ? name : undefined;
  }

  /** Whether a TLS certificate may be issued for `host`: the relay's domain, or a live or held tunnel name. */
  certificateAllowed(host: string): boolean {
    const domain = this.options.domain;
    const h = host.toLowerCase().replace(/\.$/, '');
    if (!domain || !h) return false;
    if (h === domain) return true;
    if (!h.endsWith(`.${domain}`)) return false;
    const name = h.slice(0, -domain.length - 1);
    return (
      !name.includes('.') &&
      (this.registry.get(name) !== undefined ||
        this.isHeld(name) ||
        (this.directory?.whereIs(name).length ?? 0) > 0)
    );
  }

  /** True during startupGraceMs after start: clients of the previous process may still be reconnecting. */
  private justStarted(): boolean {
    return Date.now() - this.startedAt < this.options.startupGraceMs;
  }
}

/** Requests waiting for one reconnecting tunnel, at most; more get the offline page at once. */
const MAX_WAITERS_PER_TUNNEL = 1000;
/** Requests waiting for any tunnel, at most. */
const MAX_WAITERS_TOTAL = 10_000;

/** One request waiting: called with the tunnel when it is back, or with nothing on timeout or shutdown. */
type Waiter = (tunnel?: Tunnel) => void;

/** Public requests held while their tunnel's client reconnects, each for up to `waitMs`. */
export class WaitingRoom {
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** Public requests waiting, over all names. */
  private count = 0;
  private closed = false;

  constructor(private readonly waitMs: number) {}

  /** Public requests waiting now. */
  get waiting(): number {
    return this.count;
  }

  /**
   * Holds a public request for tunnel `name`. Calls back with the tunnel when it returns, or with undefined on
   * timeout, shutdown or when the room is full. Returns a cancel for a visitor who leaves first (no call back then).
   */
  wait(name: string, callback: (tunnel?: Tunnel) => void): () => void {
    const existing = this.waiters.get(name);
    if (
      this.closed ||
      this.waitMs <= 0 ||
      (existing?.size ?? 0) >= MAX_WAITERS_PER_TUNNEL ||
      this.count >= MAX_WAITERS_TOTAL
    ) {
      callback();
      return () => {};
    }
    const set = existing ?? new Set<Waiter>();
    this.waiters.set(name, set);
    this.count++;
    const stop = (): void => {
      if (!set.delete(waiter)) return;
      clearTimeout(timer);
      this.count--;
      if (set.size === 0 && this.waiters.get(name) === set) this.waiters.delete(name);
    };
    const waiter: Waiter = (tunnel) => {
      stop();
      callback(tunnel);
    };
    const timer = setTimeout(waiter, this.waitMs);
    set.add(waiter);
    return stop;
  }

  /** Lets the requests waiting for `tunnel`'s name through to it. */
  release(tunnel: Tunnel): void {
    for (const waiter of [...(this.waiters.get(tunnel.name) ?? [])]) waiter(tunnel);
  }

  /** Shutdown: every waiting request gets its page now, and none waits from here on. */
  close(): void {
    this.closed = true;
    for (const set of [...this.waiters.values()]) for (const waiter of [...set]) waiter();
  }
}
