// Admission of a public request or upgrade to its tunnel: access rules, the secret throttle, limits and rate.
import type { IncomingMessage } from 'node:http';
import { ErrorCode, RefuseCode } from '../protocol/errors.js';
import { plainAddress, visitorAddress, type VisitorAddressSource } from './access.js';
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

/** What admission reads of a tunnel: a live one, or the inbox's record of one whose client is away. */
export type AdmittedTunnel = Pick<
  Tunnel,
  'name' | 'access' | 'activeRequests' | 'activeChannels' | 'allowNewStream'
>;

/** What admission needs from the relay. */
export interface AdmissionDeps {
  options: Pick<
    ResolvedRelayOptions,
    'maxRequestsPerTunnel' | 'maxChannelsPerTunnel' | 'streamsPerSecond' | 'trustProxy'
  >;
  visitorAddressSource: VisitorAddressSource;
  throttle: SecretThrottle;
  /** Counts a visitor turned away, by the page's code. */
  refused(code: string): void;
}

/** Decides whether public requests and upgrades may into their tunnel, and how they reached the relay. */
export class Admission {
  constructor(private readonly deps: AdmissionDeps) {}

  /** The answer for a visitor who may not open a request or channel on this tunnel now (counted), or undefined. */
  check(
    tunnel: AdmittedTunnel,
    req: IncomingMessage,
    what: 'requests' | 'channels',
    /** The visitor's address when another instance forwarded the request (it vouches for it). */
    vouched?: string,
  ): ErrorPage | undefined {
    const options = this.deps.options;
    const [open, limit] =
      what === 'requests'
        ? [tunnel.activeRequests, options.maxRequestsPerTunnel]
        : [tunnel.activeChannels, options.maxChannelsPerTunnel];
    const refusal = this.refusal(tunnel, req, open, limit, what, vouched);
    if (refusal) this.deps.refused(refusal.code);
    return refusal;
  }

  private refusal(
    tunnel: AdmittedTunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
    vouched: string | undefined,
  ): ErrorPage | undefined {
    const visitor = vouched ?? visitorAddress(req, this.deps.visitorAddressSource);
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
    if (open >= limit) return busyPage(what, limit);
    if (!tunnel.allowNewStream())
      return {
        status: 429,
        code: ErrorCode.RateLimited,
        title: 'Too Many Requests',
        detail: `This tunnel receives more than ${this.deps.options.streamsPerSecond} requests per second, its limit.`,
        retryAfterSeconds: 1,
      };
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
