// Admission of a public request or upgrade to its tunnel (access rules, limits, rate), then the hand-off to it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { RefuseCode } from '../protocol/errors.js';
import { visitorAddress, type VisitorAddressSource } from './access.js';
import type { SecretThrottle } from './auth-failures.js';
import type { Exchange } from './exchange.js';
import type { ResolvedRelayOptions } from './options.js';
import { sendErrorPage, writeRawErrorPage, type ErrorPage } from './pages.js';
import { forwardRequest, forwardUpgrade, type PublicContext } from './public-request.js';
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
    code: 'tunnel_busy',
    title: 'Tunnel busy',
    detail: `This tunnel already has ${limit} ${what} open, its limit. Try again shortly.`,
    retryAfterSeconds: 1,
  };
}

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

/** Lets public requests and upgrades into their tunnel, or answers them with the relay's page. */
export class Admission {
  constructor(private readonly deps: AdmissionDeps) {}

  /** A public HTTP request for `tunnel`: admitted and forwarded, or refused with a page. */
  request(tunnel: Tunnel, req: IncomingMessage, res: ServerResponse, x: Exchange): void {
    x.tunnel = tunnel;
    const limit = this.deps.options.maxRequestsPerTunnel;
    const refusal = this.check(tunnel, req, tunnel.activeRequests, limit, 'requests');
    if (refusal) return sendErrorPage(res, refusal);
    tunnel.activeRequests++;
    forwardRequest(tunnel, req, res, this.context(req, tunnel, x.at), () => tunnel.activeRequests--, x);
  }

  /** A public upgrade for `tunnel`: admitted and forwarded as a channel, or refused with a page. */
  upgrade(tunnel: Tunnel, req: IncomingMessage, socket: Duplex, head: Buffer, x: Exchange): void {
    x.tunnel = tunnel;
    const limit = this.deps.options.maxChannelsPerTunnel;
    const refusal = this.check(tunnel, req, tunnel.activeChannels, limit, 'channels');
    if (refusal) return rawErrorPage(socket, refusal, x);
    tunnel.activeChannels++;
    const ctx = this.context(req, tunnel, x.at);
    forwardUpgrade(tunnel, req, socket, head, ctx, () => tunnel.activeChannels--, x);
  }

  /** The answer for a visitor who may not open a stream on this tunnel now (counted), or undefined. */
  private check(
    tunnel: Tunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
  ): ErrorPage | undefined {
    const refusal = this.refusal(tunnel, req, open, limit, what);
    if (refusal) this.deps.refused(refusal.code);
    return refusal;
  }

  private refusal(
    tunnel: Tunnel,
    req: IncomingMessage,
    open: number,
    limit: number,
    what: 'requests' | 'channels',
  ): ErrorPage | undefined {
    const visitor = visitorAddress(req, this.deps.visitorAddressSource);
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
        code: 'rate_limited',
        title: 'Too Many Requests',
        detail: `This tunnel receives more than ${this.deps.options.streamsPerSecond} requests per second, its limit.`,
        retryAfterSeconds: 1,
      };
    return undefined;
  }

  /** How the visitor reached the relay, as public-request.ts writes it into X-Forwarded-*. */
  private context(req: IncomingMessage, tunnel: Tunnel, at: HostParts): PublicContext {
    const { host, port } = at;
    const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
    return {
      proto,
      host,
      port: port || (proto === 'https' ? '443' : '80'),
      trustProxy: this.deps.options.trustProxy,
      // Basic credentials are the relay's to check; the local service never sees them.
      dropAuthorization: tunnel.access?.requiresAuth ?? false,
    };
  }
}

/** Answers an upgrade with one of the relay's pages, noting its status for the access log. */
export function rawErrorPage(socket: Duplex, page: ErrorPage, x: Exchange): void {
  x.status = page.status;
  writeRawErrorPage(socket, page);
}
