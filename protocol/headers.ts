// HTTP header rules both ends apply: hop-by-hop stripping, upgrade detection and X-Forwarded-* headers.
import type { HeaderList } from './frames.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies must not forward. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'transfer-encoding',
  'upgrade',
]);

/** Lowercased tokens of every Connection header in the list (a header may repeat and hold a list). */
export function connectionTokens(headers: HeaderList): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'connection') continue;
    for (const t of headers[i + 1]!.split(',')) {
      const token = t.trim().toLowerCase();
      if (token) tokens.add(token);
    }
  }
  return tokens;
}

/**
 * Returns the list without hop-by-hop headers: the fixed set, anything Connection names, and every
 * Proxy-* header. With `keepUpgrade`, Connection and Upgrade survive (a protocol switch needs them end to end).
 */
export function stripHopByHop(headers: HeaderList, keepUpgrade = false): HeaderList {
  const named = connectionTokens(headers);
  const out: HeaderList = [];
  let connectionKept = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const lower = name.toLowerCase();
    if (keepUpgrade && lower === 'connection') {
      if (!connectionKept) out.push(name, 'Upgrade');
      connectionKept = true;
    } else if (keepUpgrade && lower === 'upgrade') {
      out.push(name, headers[i + 1]!);
    } else if (!HOP_BY_HOP.has(lower) && !lower.startsWith('proxy-') && !named.has(lower)) {
      out.push(name, headers[i + 1]!);
    }
  }
  return out;
}

/** True when the headers ask for a protocol upgrade (Connection lists "upgrade" and Upgrade is present). */
export function isUpgradeRequest(headers: HeaderList): boolean {
  return connectionTokens(headers).has('upgrade') && getHeader(headers, 'upgrade') !== undefined;
}

/** First value of a header, case-insensitive. */
export function getHeader(headers: HeaderList, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === lower) return headers[i + 1];
  return undefined;
}

/** A copy of the list without any header of this name (case-insensitive). */
export function withoutHeader(headers: HeaderList, name: string): HeaderList {
  const lower = name.toLowerCase();
  const out: HeaderList = [];
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i]!.toLowerCase() !== lower) out.push(headers[i]!, headers[i + 1]!);
  return out;
}

/** True if any header with this name is present. */
export function hasHeader(headers: HeaderList, name: string): boolean {
  return getHeader(headers, name) !== undefined;
}

/**
 * Sets a header in place, keeping its position (and the case of its name) if it exists,
 * removing any duplicates, or appending it at the end.
 */
export function setHeader(headers: HeaderList, name: string, value: string): void {
  const lower = name.toLowerCase();
  let found = false;
  for (let i = 0; i < headers.length;) {
    if (headers[i]!.toLowerCase() !== lower) {
      i += 2;
      continue;
    }
    if (found) {
      headers.splice(i, 2);
      continue;
    }
    headers[i + 1] = value;
    found = true;
    i += 2;
  }
  if (!found) headers.push(name, value);
}

export interface ForwardedInfo {
  /** Address of the peer that connected to the relay. */
  remoteAddress: string;
  /** Scheme, host (with port if any) and port the public client used. */
  proto: string;
  host: string;
  port: string;
  /** Keep X-Forwarded-Proto/Host/Port an upstream proxy set (Heroku router, Fly proxy) instead of replacing them. */
  trustProxy: boolean;
}

/** Appends the peer to X-Forwarded-For and sets X-Forwarded-Proto/Host/Port, editing the list in place. */
export function addForwardedHeaders(headers: HeaderList, info: ForwardedInfo): void {
  let last = -1;
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === 'x-forwarded-for') last = i;
  if (last >= 0) headers[last + 1] = `${headers[last + 1]}, ${info.remoteAddress}`;
  else headers.push('X-Forwarded-For', info.remoteAddress);
  const set = (name: string, value: string): void => {
    if (info.trustProxy && hasHeader(headers, name)) return;
    setHeader(headers, name, value);
  };
  set('X-Forwarded-Proto', info.proto);
  set('X-Forwarded-Host', info.host);
  set('X-Forwarded-Port', info.port);
}

/** Converts a flat header list to the [name, value] pairs Node's addTrailers() takes. */
export function toPairs(headers: HeaderList): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i]!, headers[i + 1]!]);
  return pairs;
}
