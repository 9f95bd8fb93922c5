// Visitor checks a tunnel's client asked for (allowed addresses, Basic credentials), applied before anything is forwarded.
import { ErrorCode } from '../protocol/errors.js';
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { AccessRules } from '../protocol/frames.js';
import type { ErrorPage } from './pages.js';
import { findSecret, hashSecret } from './secrets.js';

/** Strips the IPv4-mapped prefix Node reports for IPv4 peers on dual-stack sockets. */
export function plainAddress(address: string): string {
  return address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}

/**
 * Where the relay reads a visitor's address from: the TCP peer; behind a trusted proxy, the right-most
 * X-Forwarded-For entry (the one that proxy appended itself); on Fly.io only, Fly-Client-IP, which Fly's proxy sets
 * and overwrites. Anywhere else Fly-Client-IP is just a header a visitor can send.
 */
export type VisitorAddressSource = 'peer' | 'x-forwarded-for' | 'fly-client-ip';

/** The source to use: no proxy trusted means the TCP peer, whatever headers arrive. */
export function visitorAddressSource(trustProxy: boolean, onFly: boolean): VisitorAddressSource {
  if (!trustProxy) return 'peer';
  return onFly ? 'fly-client-ip' : 'x-forwarded-for';
}

/** Words for the start-up line: which header (if any) the relay believes. */
export function describeVisitorAddressSource(source: VisitorAddressSource): string {
  switch (source) {
    case 'peer':
      return 'the TCP peer (no proxy trusted)';
    case 'x-forwarded-for':
      return 'the right-most X-Forwarded-For entry (trusted proxy)';
    case 'fly-client-ip':
      return "Fly-Client-IP (Fly.io's proxy)";
  }
}

/** The visitor's address, read from `source`; the socket peer when the header is missing or not an address. */
export function visitorAddress(req: IncomingMessage, source: VisitorAddressSource): string {
  if (source === 'fly-client-ip') {
    const fly = req.headers['fly-client-ip'];
    if (typeof fly === 'string' && isIP(fly.trim())) return plainAddress(fly.trim());
  }
  if (source !== 'peer') {
    const xff = req.headers['x-forwarded-for'];
    const last = (Array.isArray(xff) ? xff.join(',') : (xff ?? '')).split(',').pop()?.trim() ?? '';
    if (isIP(last)) return plainAddress(last);
  }
  return plainAddress(req.socket.remoteAddress ?? '');
}

/** Compiled access rules of one tunnel. */
export class AccessPolicy {
  private readonly allowList: BlockList | undefined;
  private readonly credentials: Buffer[];
  readonly requiresAuth: boolean;

  /** Throws an Error naming the bad rule. */
  constructor(
    /** As the client sent them (kept with an inbox's hold in --inbox-dir). */ readonly rules: AccessRules,
  ) {
    this.credentials = rules.basicAuth.map((pair) => {
      if (!/^[^:]+:.+$/.test(pair))
        throw new Error(`basic auth "${pair.split(':')[0]}:…" must be user:password`);
      return hashSecret(pair);
    });
    this.requiresAuth = this.credentials.length > 0;
    if (rules.allowIp.length > 0) {
      this.allowList = new BlockList();
      for (const rule of rules.allowIp) addRule(this.allowList, rule);
    }
  }

  /** The page to answer with when the visitor may not pass, or undefined when it may. */
  check(req: IncomingMessage, visitor: string): ErrorPage | undefined {
    if (this.allowList) {
      const type = isIP(visitor) === 6 ? 'ipv6' : 'ipv4';
      if (!isIP(visitor) || !this.allowList.check(visitor, type))
        return {
          status: 403,
          code: ErrorCode.IpNotAllowed,
          title: 'Forbidden',
          detail: `Your address (${visitor}) may not use this tunnel.`,
        };
    }
    if (!this.requiresAuth || (this.rules.optionsWithoutAuth && req.method === 'OPTIONS')) return undefined;
    if (this.credentialsMatch(req.headers.authorization)) return undefined;
    return {
      status: 401,
      code: ErrorCode.AuthRequired,
      title: 'Authentication required',
      detail: 'This tunnel is protected; sign in with the username and password its owner gave you.',
      headers: { 'WWW-Authenticate': 'Basic realm="ggrok", charset="UTF-8"' },
    };
  }

  private credentialsMatch(header: string | undefined): boolean {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
    if (!m) return false;
    return findSecret(Buffer.from(m[1]!, 'base64').toString('utf8'), this.credentials) >= 0;
  }
}

function addRule(list: BlockList, rule: string): void {
  const [address = '', prefix, extra] = rule.trim().split('/');
  const version = isIP(address);
  if (!version || extra !== undefined) throw new Error(`"${rule}" is not an IP address or CIDR range`);
  const type = version === 6 ? 'ipv6' : 'ipv4';
  if (prefix === undefined) return list.addAddress(address, type);
  const bits = Number(prefix);
  if (!/^\d+$/.test(prefix) || bits > (version === 6 ? 128 : 32))
    throw new Error(`"${rule}" has a bad prefix length`);
  list.addSubnet(address, bits, type);
}

/** What one host usually holds: the address itself, or its /64 for IPv6 (rotating inside it buys nothing). */
export function addressGroup(address: string): string {
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
