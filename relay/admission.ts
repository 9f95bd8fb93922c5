// Admission of a public request or upgrade to its tunnel: access rules, the secret throttle, limits and rate.
import type { IncomingMessage } from 'node:http';
import { ErrorCode, RefuseCode } from '../protocol/errors.js';
import { addressGroup, plainAddress, visitorAddress, type VisitorAddressSource } from './access.js';
import type { PeerVia } from './cluster/peer.js';
import type { SecretThrottle } from './auth-failures.js';
import type { ResolvedRelayOptions } from './options.js';
import type { ErrorPage } from './pages.js';
import type { PublicContext } from './public-request.js';
import type { HostParts } from './routing.js';
import type { Tunnel } from './tunnel.js';

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
    code: ErrorCode.TunnelBusy,
    title: 'Tunnel busy',
    detail: `This tunnel already has ${limit} ${what} open, its limit. Try again shortly.`,
    retryAfterSeconds: 1,
  };
}

/**
 * Fair share: once a tunnel has this fraction of its concurrent limit open, one visitor already holding
 * FAIR_SHARE_MAX of the limit gets 503, so one slow or greedy address cannot take every slot from the others.
 */
export const FAIR_SHARE_FROM = 0.9;
export const FAIR_SHARE_MAX = 0.5;

/** The 503 answer to a visitor holding more than its share of a nearly full tunnel. */
function overSharePage(what: 'requests' | 'channels', held: number): ErrorPage {
  return {
    status: 503,
    code: ErrorCode.TunnelBusy,
    title: 'Tunnel busy',
    detail: `Your address already has ${held} ${what} open on this tunnel, its share while the tunnel is nearly full. Try again when some finish.`,
    retryAfterSeconds: 1,
  };
}

/** The 429 answer when a tunnel, or one visitor of it, opens requests faster than the relay allows. */
function rateLimitedPage(scope: 'visitor' | 'tunnel', perSecond: number): ErrorPage {
  return {
    status: 429,
    code: ErrorCode.RateLimited,
    title: 'Too Many Requests',
    detail:
      scope === 'visitor'
        ? `Your address sends this tunnel more than ${perSecond} requests per second, the limit per visitor.`
        : `This tunnel receives more than ${perSecond} requests per second, its limit.`,
    retryAfterSeconds: 1,
  };
}

/** Whether a visitor may in, and under which key its open requests are counted. */
export type AdmissionResult =
  { page: ErrorPage; visitor?: undefined } | { page?: undefined; visitor: string };

/** What admission reads of a tunnel: a live one, or the inbox's record of one whose client is away. */
export type AdmittedTunnel = Pick<
  Tunnel,
  'name' | 'access' | 'activeRequests' | 'activeChannels' | 'openBy' | 'rateExceeded' | 'refused'
>;

/** What admission needs from the relay. */
export interface AdmissionDeps {
  options: Pick<
    ResolvedRelayOptions,
    | 'maxRequestsPerTunnel'
    | 'maxChannelsPerTunnel'
    | 'streamsPerSecond'
    | 'visitorStreamsPerSecond'
    | 'trustProxy'
  >;
  visitorAddressSource: VisitorAddressSource;
  throttle: SecretThrottle;
  /** Counts a visitor turned away, by the page's code. */
  refused(code: string): void;
}

/** Decides whether public requests and upgrades may into their tunnel, and how they reached the relay. */
export class Admission {
  constructor(private readonly deps: AdmissionDeps) {}

  /**
   * Whether a visitor may open a request or channel on this tunnel now: the page to answer with (counted), or
   * the key its open requests count under (tunnel.opened / tunnel.closed).
   */
  check(
    tunnel: AdmittedTunnel,
    req: IncomingMessage,
    what: 'requests' | 'channels',
    /** The visitor's address when another instance forwarded the request (it vouches for it). */
    vouched?: string,
  ): AdmissionResult {
    const address = vouched ?? visitorAddress(req, this.deps.visitorAddressSource);
    const group = addressGroup(address);
    const page = this.refusal(tunnel, req, what, address, group);
    if (!page) return { visitor: group };
    this.deps.refused(page.code);
    if (page.code === ErrorCode.RateLimited || page.code === ErrorCode.TunnelBusy) tunnel.refused++;
    return { page };
  }

  private refusal(
    tunnel: AdmittedTunnel,
    req: IncomingMessage,
    what: 'requests' | 'channels',
    visitor: string,
    /** The visitor's address group (its /64 for IPv6): what fair shares and rates count by. */
    group: string,
  ): ErrorPage | undefined {
    const options = this.deps.options;
    const presentsCredentials =
      tunnel.access?.requiresAuth === true && req.headers.authorization !== undefined;
    if (presentsCredentials) {
      const waitMs = this.deps.throttle.waitMs(visitor);
      if (waitMs > 0) return tooManyAttempts(waitMs);
    }
    const denied = tunnel.access?.check(req, visitor);
    if (denied?.code === 'auth_required' && presentsCredentials)
      this.deps.throttle.failed('basic_auth', visitor, tunnel.name);
    if (denied) return denied;
    const [open, limit] =
      what === 'requests'
        ? [tunnel.activeRequests, options.maxRequestsPerTunnel]
        : [tunnel.activeChannels, options.maxChannelsPerTunnel];
    if (open >= limit) return busyPage(what, limit);
    if (open >= FAIR_SHARE_FROM * limit) {
      const held = tunnel.openBy(what, group);
      if (held >= FAIR_SHARE_MAX * limit) return overSharePage(what, held);
    }
    const exceeded = tunnel.rateExceeded(group);
    if (exceeded === 'visitor') return rateLimitedPage('visitor', options.visitorStreamsPerSecond);
    if (exceeded === 'tunnel') return rateLimitedPage('tunnel', options.streamsPerSecond);
    return undefined;
  }

  /** How the visitor reached the relay, as public-request.ts writes it into X-Forwarded-*. */
  context(req: IncomingMessage, tunnel: Pick<Tunnel, 'access'>, at: HostParts, via?: PeerVia): PublicContext {
    const { host, port } = at;
    const proto = via?.proto ?? ((req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http');
    return {
      proto,
      host,
      port: port || (proto === 'https' ? '443' : '80'),
      trustProxy: this.deps.options.trustProxy,
      // Basic credentials are the relay's to check; the local service never sees them.
      dropAuthorization: tunnel.access?.requiresAuth ?? false,
      // Forwarded by another instance: the visitor is the one it vouches for, not that instance.
      remoteAddress: via?.visitor ?? plainAddress(req.socket.remoteAddress ?? ''),
    };
  }
}
