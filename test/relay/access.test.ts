// The visitor checks a client can ask for (allowed addresses, Basic credentials) and where the relay reads a
// visitor's address from (TCP peer, X-Forwarded-For, Fly-Client-IP), with real requests for the address.
import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import {
  AccessPolicy,
  describeVisitorAddressSource,
  plainAddress,
  visitorAddress,
  visitorAddressSource,
  type VisitorAddressSource,
} from '../../relay/access.js';
import type { AccessRules } from '../../protocol/frames.js';
import { Cleanup, rawRequest, startLocal } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const rules = (r: Partial<AccessRules>): AccessRules => ({
  basicAuth: [],
  allowIp: [],
  optionsWithoutAuth: false,
  ...r,
});

/** What check() reads of a request: its method and Authorization header. */
const request = (authorization?: string, method = 'GET'): IncomingMessage =>
  ({ method, headers: authorization === undefined ? {} : { authorization } }) as IncomingMessage;

const basic = (pair: string): string => `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;

describe('AccessPolicy: rules', () => {
  test('bad address rules throw, naming the rule', () => {
    for (const rule of [
      'not-an-ip',
      '10.0.0.300',
      '10.0.0.0/33',
      '10.0.0.0/-1',
      '10.0.0.0/',
      '10.0.0.0/0x8',
      '10.0.0.0/8/1',
      '10.0.0.0/ 8',
      '::1/129',
      '2001:db8::/1.5',
      '',
    ])
      expect(() => new AccessPolicy(rules({ allowIp: [rule] })), rule).toThrow(`"${rule}"`);
    // One bad rule among good ones is still refused.
    expect(() => new AccessPolicy(rules({ allowIp: ['10.0.0.0/8', 'nope'] }))).toThrow('"nope"');
  });

  test('bad credential rules throw, naming the user but never the password', () => {
    expect(() => new AccessPolicy(rules({ basicAuth: ['alice'] }))).toThrow(
      'basic auth "alice:…" must be user:password',
    );
    expect(() => new AccessPolicy(rules({ basicAuth: ['alice:'] }))).toThrow('"alice:…"');
    let message = '';
    try {
      new AccessPolicy(rules({ basicAuth: [':hunter2'] }));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/must be user:password/);
    expect(message).not.toContain('hunter2');
  });

  test('good rules are accepted, surrounding spaces included; requiresAuth says whether credentials are needed', () => {
    expect(
      new AccessPolicy(rules({ allowIp: [' 10.0.0.0/8 ', '::1', '2001:db8::/32', '0.0.0.0/0'] }))
        .requiresAuth,
    ).toBe(false);
    expect(new AccessPolicy(rules({ basicAuth: ['a:b'] })).requiresAuth).toBe(true);
    // A password may hold ':'; only the first one separates the user.
    expect(new AccessPolicy(rules({ basicAuth: ['a:b:c'] })).requiresAuth).toBe(true);
  });
});

describe('AccessPolicy: addresses', () => {
  const ipv4 = new AccessPolicy(rules({ allowIp: ['10.0.0.0/8', '192.168.1.5', '172.16.0.0/32'] }));
  const ipv6 = new AccessPolicy(rules({ allowIp: ['2001:db8::/32', '::1'] }));

  test('IPv4 CIDR ranges and single addresses', () => {
    for (const ok of ['10.0.0.0', '10.1.2.3', '10.255.255.255', '192.168.1.5', '172.16.0.0'])
      expect(ipv4.check(request(), ok), ok).toBeUndefined();
    for (const no of ['11.0.0.1', '9.255.255.255', '192.168.1.6', '172.16.0.1', '127.0.0.1'])
      expect(ipv4.check(request(), no)?.status, no).toBe(403);
  });

  test('IPv6 CIDR ranges and single addresses; IPv6 visitors never match IPv4 rules', () => {
    for (const ok of ['2001:db8::1', '2001:db8:ffff::', '2001:0db8:0000::5', '::1'])
      expect(ipv6.check(request(), ok), ok).toBeUndefined();
    for (const no of ['2001:db9::1', '::2', 'fe80::1', '10.1.2.3'])
      expect(ipv6.check(request(), no)?.status, no).toBe(403);
    expect(ipv4.check(request(), '2001:db8::1')?.status).toBe(403);
  });

  test('an IPv4-mapped IPv6 visitor is the IPv4 address it maps', () => {
    expect(ipv4.check(request(), '::ffff:10.1.2.3')).toBeUndefined();
    expect(ipv4.check(request(), '::ffff:11.1.2.3')?.status).toBe(403);
    // And a rule written as the mapped range covers the plain IPv4 visitors.
    const mapped = new AccessPolicy(rules({ allowIp: ['::ffff:10.0.0.0/104'] }));
    expect(mapped.check(request(), '10.9.8.7')).toBeUndefined();
    expect(mapped.check(request(), '11.9.8.7')?.status).toBe(403);
  });

  test('the refusal is a 403 page naming the address; a visitor that is not an address is refused', () => {
    expect(ipv4.check(request(), '11.0.0.1')).toEqual({
      status: 403,
      code: 'ip_not_allowed',
      title: 'Forbidden',
      detail: 'Your address (11.0.0.1) may not use this tunnel.',
    });
    // Even when every address is allowed: an unreadable visitor address is never waved through.
    const everyone = new AccessPolicy(rules({ allowIp: ['0.0.0.0/0', '::/0'] }));
    expect(everyone.check(request(), '203.0.113.9')).toBeUndefined();
    for (const odd of ['', 'unknown', '10.1.2.3:80', ' 10.1.2.3'])
      expect(everyone.check(request(), odd)?.status, odd).toBe(403);
    for (const odd of ['', 'unknown', '10.1.2.3:80', ' 10.1.2.3'])
      expect(ipv4.check(request(), odd)?.status, odd).toBe(403);
  });

  test('the address is checked before the credentials, and OPTIONS does not skip it', () => {
    const both = new AccessPolicy(
      rules({ allowIp: ['10.0.0.0/8'], basicAuth: ['u:p'], optionsWithoutAuth: true }),
    );
    expect(both.check(request(basic('u:p')), '11.0.0.1')?.status).toBe(403);
    expect(both.check(request(undefined, 'OPTIONS'), '11.0.0.1')?.status).toBe(403);
    expect(both.check(request(), '10.0.0.1')?.status).toBe(401);
    expect(both.check(request(basic('u:p')), '10.0.0.1')).toBeUndefined();
  });

  test('no rules: everyone passes', () => {
    const open = new AccessPolicy(rules({}));
    expect(open.check(request(), '203.0.113.9')).toBeUndefined();
    expect(open.check(request('Basic garbage'), '')).toBeUndefined();
  });
});

describe('AccessPolicy: Basic credentials', () => {
  const policy = new AccessPolicy(rules({ basicAuth: ['alice:s3cret', 'bob:pa:ss', 'émile:mötley'] }));
  const pass = (authorization?: string, method?: string): boolean =>
    policy.check(request(authorization, method), '127.0.0.1') === undefined;

  test('the right credentials pass, any of the configured pairs', () => {
    expect(pass(basic('alice:s3cret'))).toBe(true);
    expect(pass(basic('bob:pa:ss'))).toBe(true);
    expect(pass(basic('émile:mötley'))).toBe(true); // UTF-8, as browsers send with charset="UTF-8"
    // The scheme is case-insensitive; spaces around the credentials are allowed; padding may be left out.
    const token = Buffer.from('alice:s3cret').toString('base64');
    expect(pass(`basic ${token}`)).toBe(true);
    expect(pass(`BASIC   ${token}  `)).toBe(true);
    expect(pass(`Basic ${Buffer.from('bob:pa:ss').toString('base64').replace(/=+$/, '')}`)).toBe(true);
  });

  test('wrong, missing and malformed credentials get the 401 page with a Basic challenge', () => {
    expect(policy.check(request(), '127.0.0.1')).toEqual({
      status: 401,
      code: 'auth_required',
      title: 'Authentication required',
      detail: expect.any(String),
      headers: { 'WWW-Authenticate': 'Basic realm="ggrok", charset="UTF-8"' },
    });
    for (const authorization of [
      basic('alice:wrong'),
      basic('alice:s3cret '),
      basic('Alice:s3cret'),
      basic('bob:pa'),
      basic('alice'),
      basic(':s3cret'),
      basic(''),
      basic('alice:s3cret\nbob:pa:ss'),
      `Basic ${Buffer.from('émile:mötley', 'latin1').toString('base64')}`, // not UTF-8
      'Basic',
      'Basic ',
      'Basic !!!!',
      `Basic ${Buffer.from('alice:s3cret').toString('base64url')}x-_`, // base64url alphabet
      `Basic ${Buffer.from('alice:s3cret').toString('base64')} extra`,
      `Bearer ${Buffer.from('alice:s3cret').toString('base64')}`,
      `${Buffer.from('alice:s3cret').toString('base64')}`,
      'alice:s3cret',
      '',
    ])
      expect(pass(authorization), JSON.stringify(authorization)).toBe(false);
  });

  test('OPTIONS passes without credentials only when optionsWithoutAuth is set', () => {
    expect(pass(undefined, 'OPTIONS')).toBe(false);
    const cors = new AccessPolicy(rules({ basicAuth: ['alice:s3cret'], optionsWithoutAuth: true }));
    expect(cors.check(request(undefined, 'OPTIONS'), '127.0.0.1')).toBeUndefined();
    expect(cors.check(request(basic('alice:wrong'), 'OPTIONS'), '127.0.0.1')).toBeUndefined();
    for (const method of ['GET', 'POST', 'HEAD', 'options'])
      expect(cors.check(request(undefined, method), '127.0.0.1')?.status, method).toBe(401);
  });
});

describe('visitor address', () => {
  test('which source: the TCP peer unless a proxy is trusted; Fly-Client-IP only on Fly', () => {
    expect(visitorAddressSource(false, false)).toBe('peer');
    expect(visitorAddressSource(false, true)).toBe('peer');
    expect(visitorAddressSource(true, false)).toBe('x-forwarded-for');
    expect(visitorAddressSource(true, true)).toBe('fly-client-ip');
    expect(describeVisitorAddressSource('peer')).toMatch(/TCP peer/);
    expect(describeVisitorAddressSource('x-forwarded-for')).toMatch(/right-most X-Forwarded-For/);
    expect(describeVisitorAddressSource('fly-client-ip')).toMatch(/Fly-Client-IP/);
  });

  test('plainAddress strips only the IPv4-mapped prefix', () => {
    expect(plainAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(plainAddress('::FFFF:10.1.2.3')).toBe('10.1.2.3');
    expect(plainAddress('10.1.2.3')).toBe('10.1.2.3');
    expect(plainAddress('::ffff:a01:203')).toBe('::ffff:a01:203'); // hex form: left as it is (still valid IPv6)
    expect(plainAddress('2001:db8::1')).toBe('2001:db8::1');
    expect(plainAddress('')).toBe('');
  });

  /** A real server on `host` that answers with the visitor address read from each source. */
  async function addressServer(host: string): Promise<number> {
    const local = await startLocal(
      cleanup,
      (req, res) => {
        const sources: VisitorAddressSource[] = ['peer', 'x-forwarded-for', 'fly-client-ip'];
        res.end(JSON.stringify(Object.fromEntries(sources.map((s) => [s, visitorAddress(req, s)]))));
      },
      host,
    );
    return local.port;
  }

  type Seen = Record<VisitorAddressSource, string>;
  async function seen(
    port: number,
    headers: Record<string, string | string[]>,
    host = '127.0.0.1',
  ): Promise<Seen> {
    const req = http.request({ host, port, headers: { Host: 'x', ...headers }, agent: false });
    req.end();
    const [res] = (await once(req, 'response')) as [http.IncomingMessage];
    let body = '';
    for await (const chunk of res) body += String(chunk);
    return JSON.parse(body) as Seen;
  }

  test('each source reads its own header and falls back to the peer', async () => {
    const port = await addressServer('127.0.0.1');
    // No headers: the peer everywhere.
    expect(await seen(port, {})).toEqual({
      peer: '127.0.0.1',
      'x-forwarded-for': '127.0.0.1',
      'fly-client-ip': '127.0.0.1',
    });
    // The peer source ignores both headers; X-Forwarded-For ignores Fly-Client-IP; Fly-Client-IP wins on Fly.
    expect(await seen(port, { 'X-Forwarded-For': '198.51.100.1', 'Fly-Client-IP': '203.0.113.7' })).toEqual({
      peer: '127.0.0.1',
      'x-forwarded-for': '198.51.100.1',
      'fly-client-ip': '203.0.113.7',
    });
    // On Fly, a missing or bad Fly-Client-IP falls back to X-Forwarded-For, then to the peer.
    expect(
      await seen(port, { 'X-Forwarded-For': '198.51.100.1', 'Fly-Client-IP': 'nonsense' }),
    ).toMatchObject({
      'fly-client-ip': '198.51.100.1',
    });
    expect(await seen(port, { 'Fly-Client-IP': ' 2001:db8::7 ' })).toMatchObject({
      'fly-client-ip': '2001:db8::7',
    });
    expect(await seen(port, { 'Fly-Client-IP': '::ffff:203.0.113.7' })).toMatchObject({
      'fly-client-ip': '203.0.113.7',
    });
  });

  test('X-Forwarded-For: the right-most entry (the trusted proxy appended it), across repeated headers', async () => {
    const port = await addressServer('127.0.0.1');
    const xff = async (value: string | string[]): Promise<string> =>
      (await seen(port, { 'X-Forwarded-For': value }))['x-forwarded-for'];
    expect(await xff('203.0.113.1, 198.51.100.2')).toBe('198.51.100.2'); // a visitor cannot choose the left part
    expect(await xff('203.0.113.1,198.51.100.2  ')).toBe('198.51.100.2');
    expect(await xff(['203.0.113.1', '198.51.100.2, 192.0.2.3'])).toBe('192.0.2.3');
    expect(await xff('2001:db8::9')).toBe('2001:db8::9');
    expect(await xff('::ffff:192.0.2.4')).toBe('192.0.2.4');
    // A right-most entry that is not an address falls back to the peer, never to an entry further left.
    expect(await xff('203.0.113.1, unknown')).toBe('127.0.0.1');
    expect(await xff('203.0.113.1,')).toBe('127.0.0.1');
    expect(await xff('198.51.100.2:4711')).toBe('127.0.0.1');
  });

  test('an IPv6 peer, and an IPv4 peer on a dual-stack socket (reported IPv4-mapped) seen as plain IPv4', async () => {
    const v6Port = await addressServer('::1');
    expect(await seen(v6Port, { 'X-Forwarded-For': '192.0.2.1' }, '::1')).toEqual({
      peer: '::1',
      'x-forwarded-for': '192.0.2.1',
      'fly-client-ip': '192.0.2.1',
    });
    const mappedPort = await addressServer('::ffff:127.0.0.1');
    expect((await seen(mappedPort, {})).peer).toBe('127.0.0.1');
    const policy = new AccessPolicy(rules({ allowIp: ['127.0.0.0/8'] }));
    const local = await startLocal(
      cleanup,
      (req, res) => {
        expect(req.socket.remoteAddress).toBe('::ffff:127.0.0.1');
        res.end(String(policy.check(req, visitorAddress(req, 'peer'))?.status ?? 'pass'));
      },
      '::ffff:127.0.0.1',
    );
    expect((await rawRequest({ port: local.port, headers: { Host: 'x' } })).body.toString()).toBe('pass');
  });
});
