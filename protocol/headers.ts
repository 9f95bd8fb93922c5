// HTTP header rules both ends apply: hop-by-hop stripping, upgrade detection and X-Forwarded-* headers.
import type { HeaderList } from './frames.js';

/** RFC 9110 token characters: methods and header names. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Header values and reason phrases: visible ASCII, obs-text, space and tab; never CR, LF, NUL or other controls. */
export const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

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

/**
 * Fields a Connection header may never remove, whatever it names. They frame the message (Content-Length; the
 * transfer coding is the tunnel's own), route it (Host) or carry what the relay decided and vouches for (credentials,
 * the visitor's address and scheme). Naming one in Connection is meaningless for an honest peer (RFC 9110 §7.6.1:
 * a sender must not list fields meant for every recipient) and is how requests get smuggled, so such a token is
 * ignored: the field stays, the token goes with the Connection header.
 */
export const CONNECTION_PROOF = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'authorization',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'fly-client-ip',
]);

/** A header list as HTTP/1.1 field lines, each ending in CRLF (heads and trailer sections). */
export function headerLines(headers: HeaderList): string {
  let out = '';
  for (let i = 0; i < headers.length; i += 2) out += `${headers[i]!}: ${headers[i + 1]!}\r\n`;
  return out;
}

/** Lowercased tokens of every Connection header in the list (a header may repeat and hold a list). */
export function connectionTokens(headers: HeaderList): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue;
    for (const t of headers[i + 1]!.split(',')) {
      const token = t.trim().toLowerCase();
      if (token) tokens.add(token);
    }
  }
  return tokens;
}

/**
 * True if `name` may be hop-by-hop: in the fixed set or a Proxy-* header. Checks the length first so that
 * most names are never lowercased (this runs for every header of every request and response).
 */
function maybeHopByHop(name: string): boolean {
  const n = name.length;
  if (n === 2 || n === 7 || n === 10 || n === 17) return HOP_BY_HOP.has(name.toLowerCase());
  const first = name.charCodeAt(0) | 0x20; // ASCII lowercase
  return first === 0x70 && n >= 6 && name.slice(0, 6).toLowerCase() === 'proxy-';
}

/**
 * Returns a new list without hop-by-hop headers: the fixed set, anything Connection names (except the
 * CONNECTION_PROOF fields), and every Proxy-* header. With `keepUpgrade`, Connection and Upgrade survive (a protocol switch needs them end to end).
 */
export function stripHopByHop(headers: HeaderList, keepUpgrade = false): HeaderList {
  // Fast path, most messages: nothing to strip (no Connection header, no hop-by-hop name).
  let clean = true;
  for (let i = 0; i < headers.length; i += 2)
    if (maybeHopByHop(headers[i]!)) {
      clean = false;
      break;
    }
  if (clean) return headers.slice();
  // Names Connection adds to the fixed set (usually none: "keep-alive" and "upgrade" are in it already). Only
  // names of their lengths are lowercased to be looked up.
  const named = connectionTokens(headers);
  for (const name of HOP_BY_HOP) named.delete(name);
  for (const name of CONNECTION_PROOF) named.delete(name);
  const namedLengths = new Set<number>();
  for (const name of named) namedLengths.add(name.length);
  const out: HeaderList = [];
  let connectionKept = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (maybeHopByHop(name)) {
      // Hop-by-hop (the fixed set or Proxy-*): dropped, except what an upgrade needs end to end.
      const lower = name.toLowerCase();
      if (keepUpgrade && lower === 'connection') {
        if (!connectionKept) out.push(name, 'Upgrade');
        connectionKept = true;
      } else if (keepUpgrade && lower === 'upgrade') {
        out.push(name, headers[i + 1]!);
      }
    } else if (!namedLengths.has(name.length) || !named.has(name.toLowerCase())) {
      out.push(name, headers[i + 1]!);
    }
  }
  return out;
}

/**
 * The Content-Length a header list declares: undefined when there is none, NaN when it is malformed (not digits, or
 * several different values; a repeated identical value, as a list or as repeated fields, counts once).
 */
export function declaredLength(headers: HeaderList): number | undefined {
  let length: number | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length !== 14 || name.toLowerCase() !== 'content-length') continue;
    for (const part of headers[i + 1]!.split(',')) {
      const v = part.trim();
      if (!/^\d{1,15}$/.test(v)) return NaN;
      const n = Number(v);
      if (length !== undefined && length !== n) return NaN;
      length = n;
    }
  }
  return length;
}

/**
 * Fields that may not travel as trailers (RFC 9110 §6.5.1): framing, routing, connection management, credentials
 * and content metadata. A recipient that merges trailers into the header section must never find them there.
 */
const NOT_A_TRAILER = new Set([
  'content-length',
  'transfer-encoding',
  'content-encoding',
  'content-type',
  'content-range',
  'trailer',
  'host',
  'connection',
  'keep-alive',
  'te',
  'upgrade',
  'authorization',
  'proxy-authorization',
  'proxy-authenticate',
  'www-authenticate',
  'cookie',
  'set-cookie',
  'expect',
  'max-forwards',
  'cache-control',
  'age',
  'expires',
  'date',
  'location',
  'retry-after',
  'vary',
  'warning',
]);

/** A copy of a trailer list without the fields trailers may not carry (see NOT_A_TRAILER); usually the list itself. */
export function allowedTrailers(trailers: HeaderList): HeaderList {
  let out: HeaderList | undefined;
  for (let i = 0; i < trailers.length; i += 2) {
    const lower = trailers[i]!.toLowerCase();
    const bad = NOT_A_TRAILER.has(lower) || lower.startsWith('proxy-');
    if (bad && !out) out = trailers.slice(0, i);
    else if (!bad && out) out.push(trailers[i]!, trailers[i + 1]!);
  }
  return out ?? trailers;
}

/** True when the headers ask for a protocol upgrade (Connection lists "upgrade" and Upgrade is present). */
export function isUpgradeRequest(headers: HeaderList): boolean {
  return connectionTokens(headers).has('upgrade') && getHeader(headers, 'upgrade') !== undefined;
}

/** First value of a header, case-insensitive. */
export function getHeader(headers: HeaderList, name: string): string | undefined {
  const lower = name.toLowerCase();
  const n = lower.length;
  // Names of another length are never lowercased (most of them, on the per-request path).
  for (let i = 0; i < headers.length; i += 2) {
    const h = headers[i]!;
    if (h.length === n && h.toLowerCase() === lower) return headers[i + 1];
  }
  return undefined;
}

/** The header naming a request the relay kept while the client was away: on the answer to its sender and on its delivery. */
export const INBOX_ID_HEADER = 'X-Ggrok-Inbox';
/** On a delivery: when the relay received the request (ISO 8601), so an app can tell late events. */
export const INBOX_RECEIVED_HEADER = 'X-Ggrok-Received-At';

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
  /** Keep X-Forwarded-Proto/Port an upstream proxy set (Heroku router, Fly proxy) instead of replacing them. */
  trustProxy: boolean;
}

const FORWARDED = ['x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port'] as const;

/** Appends the peer to X-Forwarded-For and sets X-Forwarded-Proto/Host/Port, editing the list in place. */
export function addForwardedHeaders(headers: HeaderList, info: ForwardedInfo): void {
  // One pass finds the X-Forwarded-* headers already present (names of 15 to 17 characters only).
  let lastFor = -1;
  let present = 0; // bit i: FORWARDED[i] is present
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.length;
    if (n < 15 || n > 17) continue;
    const lower = headers[i]!.toLowerCase();
    if (lower === 'x-forwarded-for') lastFor = i;
    else {
      const k = FORWARDED.indexOf(lower as (typeof FORWARDED)[number]);
      if (k >= 0) present |= 1 << k;
    }
  }
  if (lastFor >= 0) headers[lastFor + 1] = `${headers[lastFor + 1]}, ${info.remoteAddress}`;
  else headers.push('X-Forwarded-For', info.remoteAddress);
  const values = [info.proto, info.host, info.port];
  const names = ['X-Forwarded-Proto', 'X-Forwarded-Host', 'X-Forwarded-Port'];
  for (let k = 0; k < 3; k++) {
    if (!(present & (1 << k))) headers.push(names[k]!, values[k]!);
    // X-Forwarded-Host is always the Host the relay routed on: Heroku's and Fly's proxies do not set it, so behind
    // them a visitor's own value would reach the app looking vouched for (host header injection).
    else if (!info.trustProxy || k === 1) setHeader(headers, names[k]!, values[k]!);
  }
}

/** Converts a flat header list to the [name, value] pairs Node's addTrailers() takes. */
export function toPairs(headers: HeaderList): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i]!, headers[i + 1]!]);
  return pairs;
}
