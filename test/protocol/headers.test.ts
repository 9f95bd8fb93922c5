// Hop-by-hop stripping, upgrade detection and X-Forwarded-* rules on flat header lists.
import { describe, expect, it } from 'vitest';
import type { HeaderList } from '../../protocol/frames.js';
import {
  addForwardedHeaders,
  allowedTrailers,
  connectionTokens,
  declaredLength,
  getHeader,
  hasHeader,
  isUpgradeRequest,
  setHeader,
  stripHopByHop,
  toPairs,
  type ForwardedInfo,
} from '../../protocol/headers.js';

describe('stripHopByHop', () => {
  it('removes the fixed hop-by-hop set in any case and keeps everything else in order and case', () => {
    // prettier-ignore
    const input: HeaderList = [
      'Host', 'a.example',
      'CONNECTION', 'keep-alive',
      'Keep-Alive', 'timeout=5',
      'accept', 'text/html',
      'Proxy-Connection', 'keep-alive',
      'TE', 'trailers',
      'Transfer-Encoding', 'chunked',
      'upgrade', 'h2c',
      'X-Mixed-Case', 'Value With Spaces',
      'Proxy-Authorization', 'Basic Zm9vOmJhcg==',
      'proxy-authenticate', 'Basic',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
    ];
    // prettier-ignore
    expect(stripHopByHop(input)).toEqual([
      'Host', 'a.example',
      'accept', 'text/html',
      'X-Mixed-Case', 'Value With Spaces',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
    ]);
  });

  it('removes headers named by Connection, across repeated Connection headers and odd spacing', () => {
    // prettier-ignore
    const input: HeaderList = [
      'Connection', 'X-Hop ,  close',
      'x-hop', '1',
      'X-Keep', '2',
      'connection', 'X-Other',
      'X-OTHER', '3',
      'X-Hop-Not', '4',
    ];
    expect(stripHopByHop(input)).toEqual(['X-Keep', '2', 'X-Hop-Not', '4']);
    expect([...connectionTokens(input)].sort()).toEqual(['close', 'x-hop', 'x-other']);
  });

  it('removes every Proxy-* header, not only the well-known ones', () => {
    // prettier-ignore
    expect(stripHopByHop(['Proxy-Foo', '1', 'proxy-bar', '2', 'X-Proxy', '3', 'Proxyish', '4'])).toEqual([
      'X-Proxy', '3',
      'Proxyish', '4',
    ]);
  });

  it('does not modify its input', () => {
    const input: HeaderList = ['Connection', 'close', 'Host', 'x'];
    const copy = [...input];
    stripHopByHop(input);
    stripHopByHop(input, true);
    expect(input).toEqual(copy);
  });

  it('keepUpgrade keeps one Connection (as "Upgrade", at its first position, its case) and Upgrade', () => {
    // prettier-ignore
    const input: HeaderList = [
      'Host', 'a.example',
      'connection', 'keep-alive, Upgrade, X-Hop',
      'Upgrade', 'websocket',
      'X-Hop', 'gone',
      'Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==',
      'Keep-Alive', 'timeout=5',
      'Connection', 'close',
      'Transfer-Encoding', 'chunked',
      'Proxy-Authorization', 'secret',
      'Sec-WebSocket-Version', '13',
    ];
    // prettier-ignore
    expect(stripHopByHop(input, true)).toEqual([
      'Host', 'a.example',
      'connection', 'Upgrade',
      'Upgrade', 'websocket',
      'Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version', '13',
    ]);
  });

  it('without keepUpgrade an upgrade request loses Connection and Upgrade', () => {
    expect(stripHopByHop(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Host', 'h'])).toEqual([
      'Host',
      'h',
    ]);
  });
});

describe('isUpgradeRequest', () => {
  it('accepts Upgrade listed among other Connection tokens', () => {
    expect(isUpgradeRequest(['Host', 'h', 'Connection', 'keep-alive, Upgrade', 'Upgrade', 'websocket'])).toBe(
      true,
    );
    expect(isUpgradeRequest(['connection', 'UPGRADE', 'upgrade', 'h2c'])).toBe(true);
    expect(
      isUpgradeRequest(['Connection', 'keep-alive', 'Connection', 'upgrade', 'Upgrade', 'websocket']),
    ).toBe(true);
  });

  it('needs both the Connection token and an Upgrade header', () => {
    expect(isUpgradeRequest(['Connection', 'keep-alive, Upgrade'])).toBe(false);
    expect(isUpgradeRequest(['Upgrade', 'websocket'])).toBe(false);
    expect(isUpgradeRequest(['Connection', 'keep-alive', 'Upgrade', 'websocket'])).toBe(false);
    expect(isUpgradeRequest(['Connection', 'upgraded', 'Upgrade', 'websocket'])).toBe(false);
    expect(isUpgradeRequest([])).toBe(false);
  });
});

describe('getHeader / hasHeader / toPairs', () => {
  const list: HeaderList = ['Host', 'h', 'Accept', 'a', 'accept', 'b'];
  it('finds the first value case-insensitively', () => {
    expect(getHeader(list, 'ACCEPT')).toBe('a');
    expect(getHeader(list, 'x')).toBeUndefined();
    expect(hasHeader(list, 'host')).toBe(true);
    expect(hasHeader(['X-Empty', ''], 'x-empty')).toBe(true);
    expect(hasHeader(list, 'Cookie')).toBe(false);
  });
  it('converts to pairs keeping duplicates and order', () => {
    expect(toPairs(list)).toEqual([
      ['Host', 'h'],
      ['Accept', 'a'],
      ['accept', 'b'],
    ]);
  });
});

describe('setHeader', () => {
  it('replaces in place keeping the position and case of the first occurrence, removing duplicates', () => {
    const list: HeaderList = [
      'A',
      '1',
      'x-forwarded-proto',
      'http',
      'B',
      '2',
      'X-Forwarded-Proto',
      'ftp',
      'C',
      '3',
      'X-FORWARDED-PROTO',
      'x',
    ];
    setHeader(list, 'X-Forwarded-Proto', 'https');
    expect(list).toEqual(['A', '1', 'x-forwarded-proto', 'https', 'B', '2', 'C', '3']);
  });

  it('appends when missing', () => {
    const list: HeaderList = ['A', '1'];
    setHeader(list, 'X-New', 'v');
    expect(list).toEqual(['A', '1', 'X-New', 'v']);
  });

  it('handles adjacent duplicates', () => {
    const list: HeaderList = ['X', '1', 'x', '2', 'X', '3', 'Y', '4'];
    setHeader(list, 'x', 'new');
    expect(list).toEqual(['X', 'new', 'Y', '4']);
  });
});

describe('addForwardedHeaders', () => {
  const info: ForwardedInfo = {
    remoteAddress: '203.0.113.9',
    proto: 'https',
    host: 'demo.example.com',
    port: '443',
    trustProxy: false,
  };

  it('appends the peer to an existing X-Forwarded-For (the last one) and sets Proto/Host/Port', () => {
    // prettier-ignore
    const list: HeaderList = [
      'Host', 'demo.example.com',
      'x-forwarded-for', '198.51.100.1',
      'Accept', '*/*',
      'X-Forwarded-For', '10.0.0.1, 10.0.0.2',
      'Cookie', 'a=1',
    ];
    addForwardedHeaders(list, info);
    // prettier-ignore
    expect(list).toEqual([
      'Host', 'demo.example.com',
      'x-forwarded-for', '198.51.100.1',
      'Accept', '*/*',
      'X-Forwarded-For', '10.0.0.1, 10.0.0.2, 203.0.113.9',
      'Cookie', 'a=1',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Host', 'demo.example.com',
      'X-Forwarded-Port', '443',
    ]);
  });

  it('adds X-Forwarded-For when absent', () => {
    const list: HeaderList = ['Host', 'h'];
    addForwardedHeaders(list, info);
    expect(list.slice(0, 4)).toEqual(['Host', 'h', 'X-Forwarded-For', '203.0.113.9']);
    expect(getHeader(list, 'x-forwarded-port')).toBe('443');
  });

  it('without trustProxy, replaces client-supplied Proto/Host/Port in place (a client cannot spoof them)', () => {
    // prettier-ignore
    const list: HeaderList = [
      'x-forwarded-proto', 'http',
      'Host', 'h',
      'X-Forwarded-Host', 'evil.example',
      'X-Forwarded-Port', '80',
      'X-Forwarded-Host', 'evil2.example',
    ];
    addForwardedHeaders(list, info);
    // prettier-ignore
    expect(list).toEqual([
      'x-forwarded-proto', 'https',
      'Host', 'h',
      'X-Forwarded-Host', 'demo.example.com',
      'X-Forwarded-Port', '443',
      'X-Forwarded-For', '203.0.113.9',
    ]);
  });

  it('with trustProxy, keeps the upstream proxy values and fills in only the missing ones', () => {
    const list: HeaderList = [
      'X-Forwarded-For',
      '198.51.100.7',
      'X-Forwarded-Proto',
      'https',
      'X-Forwarded-Port',
      '8443',
    ];
    addForwardedHeaders(list, {
      ...info,
      proto: 'http',
      port: '80',
      remoteAddress: '10.1.2.3',
      trustProxy: true,
    });
    // prettier-ignore
    expect(list).toEqual([
      'X-Forwarded-For', '198.51.100.7, 10.1.2.3',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Port', '8443',
      'X-Forwarded-Host', 'demo.example.com',
    ]);
  });
});

describe('fields a Connection header or a trailer may never carry off', () => {
  it('stripHopByHop ignores Connection tokens naming framing, routing or vouched-for fields', () => {
    // prettier-ignore
    const input: HeaderList = [
      'Host', 'a.example',
      'Connection', 'Content-Length, host, AUTHORIZATION, X-Forwarded-For, Forwarded, Fly-Client-IP, X-Hop',
      'Content-Length', '5',
      'Authorization', 'Bearer t',
      'X-Forwarded-For', '198.51.100.1',
      'Forwarded', 'for=198.51.100.1',
      'Fly-Client-IP', '198.51.100.1',
      'X-Hop', 'gone',
    ];
    // prettier-ignore
    expect(stripHopByHop(input)).toEqual([
      'Host', 'a.example',
      'Content-Length', '5',
      'Authorization', 'Bearer t',
      'X-Forwarded-For', '198.51.100.1',
      'Forwarded', 'for=198.51.100.1',
      'Fly-Client-IP', '198.51.100.1',
    ]);
  });

  it('declaredLength reads one length, repeated identical values once, and flags anything else', () => {
    expect(declaredLength(['Host', 'h'])).toBeUndefined();
    expect(declaredLength(['content-length', '12'])).toBe(12);
    expect(declaredLength(['Content-Length', '7, 7', 'CONTENT-LENGTH', '7'])).toBe(7);
    for (const bad of [
      ['Content-Length', '7, 8'],
      ['Content-Length', '-1'],
      ['Content-Length', '0x10'],
      ['Content-Length', ''],
      ['Content-Length', '1', 'content-length', '2'],
    ])
      expect(declaredLength(bad)).toBeNaN();
  });

  it('allowedTrailers drops framing, routing, credential and cookie fields and keeps the rest in order', () => {
    // prettier-ignore
    expect(allowedTrailers([
      'X-Checksum', 'abc',
      'Content-Length', '9',
      'host', 'evil',
      'Set-Cookie', 'a=1',
      'Authorization', 'x',
      'Proxy-Foo', 'y',
      'Server-Timing', 'db;dur=5',
    ])).toEqual(['X-Checksum', 'abc', 'Server-Timing', 'db;dur=5']);
    const clean = ['X-A', '1'];
    expect(allowedTrailers(clean)).toBe(clean);
  });

  it('with trustProxy, X-Forwarded-Host is still the Host the relay routed on (proxies in front do not set it)', () => {
    const list: HeaderList = ['X-Forwarded-Host', 'evil.example', 'X-Forwarded-Proto', 'https'];
    addForwardedHeaders(list, {
      remoteAddress: '10.1.2.3',
      proto: 'http',
      host: 'demo.example.com',
      port: '80',
      trustProxy: true,
    });
    expect(getHeader(list, 'x-forwarded-host')).toBe('demo.example.com');
    expect(getHeader(list, 'x-forwarded-proto')).toBe('https');
  });
});
