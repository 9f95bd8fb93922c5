// Access control, limits, TLS and hostile load: only owners get tunnels, protected tunnels stay protected,
// and one misbehaving visitor or tunnel does not slow the others.
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { parseTarget } from '../../cli/target.js';
import { testCertificate } from '../dev-server-fixtures.js';
import {
  Cleanup,
  rawExchange,
  rawRequest,
  refusal,
  reply,
  startClient,
  startLocal,
  startRelay,
  startTunnel,
  TOKEN,
  waitFor,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const basic = (user: string, pass: string): string =>
  `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

describe('visitor protection', () => {
  test('--basic-auth: 401 with WWW-Authenticate, credentials consumed by the relay', async () => {
    const t = await startTunnel(
      cleanup,
      (req, res) => reply(res, 200, `auth=${req.headers.authorization ?? 'none'}`),
      {
        client: { access: { basicAuth: ['alice:s3cret', 'bob:pw'], allowIp: [], optionsWithoutAuth: false } },
      },
    );
    const none = await t.request();
    expect([none.status, none.headers['www-authenticate']]).toEqual([
      401,
      'Basic realm="ggrok", charset="UTF-8"',
    ]);
    const wrong = await t.request({ headers: { Host: t.host, Authorization: basic('alice', 'nope') } });
    expect(wrong.status).toBe(401);
    for (const [user, pass] of [
      ['alice', 's3cret'],
      ['bob', 'pw'],
    ] as const) {
      const ok = await t.request({ headers: { Host: t.host, Authorization: basic(user, pass) } });
      expect([ok.status, ok.body.toString()]).toEqual([200, 'auth=none']);
    }
    const preflight = await t.request({ method: 'OPTIONS' });
    expect(preflight.status).toBe(401);
    expect(t.local.requests).toHaveLength(2); // refused visitors never reached the local service
  });

  test('--options-without-auth lets CORS preflights through', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 204, ''), {
      client: { access: { basicAuth: ['a:b'], allowIp: [], optionsWithoutAuth: true } },
    });
    expect((await t.request({ method: 'OPTIONS' })).status).toBe(204);
    expect((await t.request({ method: 'GET' })).status).toBe(401);
  });

  test('--allow-ip: other addresses get 403; behind a trusted proxy the proxy-reported address counts', async () => {
    const denied = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      subdomain: 'denied',
      client: {
        access: { basicAuth: [], allowIp: ['10.0.0.0/8', '2001:db8::/32'], optionsWithoutAuth: false },
      },
    });
    const no = await denied.request();
    expect([no.status, no.headers['x-ggrok-error']]).toEqual([403, 'ip_not_allowed']);
    expect(no.body.toString()).toContain('127.0.0.1');
    const allowed = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      subdomain: 'allowed',
      client: { access: { basicAuth: [], allowIp: ['127.0.0.0/8'], optionsWithoutAuth: false } },
    });
    expect((await allowed.request()).status).toBe(200);
    const proxied = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      subdomain: 'proxied',
      relay: { trustProxy: true },
      client: { access: { basicAuth: [], allowIp: ['203.0.113.0/24'], optionsWithoutAuth: false } },
    });
    const viaProxy = await proxied.request({
      headers: { Host: proxied.host, 'X-Forwarded-For': '198.51.100.1, 203.0.113.9' },
    });
    expect(viaProxy.status).toBe(200);
    const spoofedLeft = await proxied.request({
      headers: { Host: proxied.host, 'X-Forwarded-For': '203.0.113.9, 198.51.100.1' },
    });
    expect(spoofedLeft.status).toBe(403);
    // Fly-Client-IP is a header like any other off Fly.io: behind Caddy, Heroku or nginx a visitor forges it.
    const forgedFly = await proxied.request({
      headers: { Host: proxied.host, 'Fly-Client-IP': '203.0.113.9', 'X-Forwarded-For': '198.51.100.1' },
    });
    expect(forgedFly.status).toBe(403);
    expect(proxied.relay.relay.visitorAddressSource).toBe('x-forwarded-for');
    // On Fly.io (FLY_APP_NAME set, so onFly), Fly's proxy sets and overwrites it: that one counts.
    const fly = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      subdomain: 'fly',
      relay: { trustProxy: true, onFly: true },
      client: { access: { basicAuth: [], allowIp: ['203.0.113.0/24'], optionsWithoutAuth: false } },
    });
    const viaFly = await fly.request({
      headers: { Host: fly.host, 'Fly-Client-IP': '203.0.113.9', 'X-Forwarded-For': '198.51.100.1' },
    });
    expect(viaFly.status).toBe(200);
    // Without --trust-proxy nothing a visitor sends counts, only the TCP peer.
    const direct = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      subdomain: 'direct',
      relay: { onFly: true },
      client: { access: { basicAuth: [], allowIp: ['203.0.113.0/24'], optionsWithoutAuth: false } },
    });
    const forged = await direct.request({
      headers: { Host: direct.host, 'Fly-Client-IP': '203.0.113.9', 'X-Forwarded-For': '203.0.113.9' },
    });
    expect(forged.status).toBe(403);
  });

  test('malformed access rules are refused at connect time', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'x'));
    const bad = await refusal(
      startClient(cleanup, r.url, local.port, {
        access: { basicAuth: [], allowIp: ['10.0.0.0/99'], optionsWithoutAuth: false },
      }),
    );
    expect(bad.code).toBe('access_invalid');
    expect(bad.message).toContain('10.0.0.0/99');
  });

  test('--host-header and header add/remove are applied on the way in and out', async () => {
    const t = await startTunnel(
      cleanup,
      (req, res) => {
        res.setHeader('X-Powered-By', 'secret-stack');
        reply(
          res,
          200,
          JSON.stringify({
            host: req.headers.host,
            added: req.headers['x-added'],
            cookie: req.headers.cookie ?? null,
          }),
        );
      },
      {
        client: {
          headerRules: {
            hostHeader: 'rewrite',
            requestAdd: ['X-Added', 'yes'],
            requestRemove: ['Cookie'],
            responseAdd: ['X-Frame-Options', 'DENY'],
            responseRemove: ['x-powered-by'],
          },
        },
      },
    );
    const res = await t.request({ headers: { Host: t.host, Cookie: 'session=1' } });
    expect(JSON.parse(res.body.toString())).toEqual({
      host: `localhost:${t.local.port}`,
      added: 'yes',
      cookie: null,
    });
    expect(res.headers['x-frame-options']).toBe('DENY');
    expect(res.headers['x-powered-by']).toBeUndefined();
  });
});

describe('wrong secrets are counted, logged and slowed down per address', () => {
  /** A clock the test moves: the throttle refills over time, and the test must not depend on how fast it runs. */
  function testClock(): { now: () => number; advance: (ms: number) => void } {
    let t = Date.now();
    return { now: () => t, advance: (ms) => (t += ms) };
  }

  test('client tokens: ten wrong ones, then even the right one waits; the wait ends after the refill', async () => {
    const clock = testClock();
    const r = await startRelay(cleanup, { now: clock.now });
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const connect = (token: string): Promise<unknown> =>
      startClient(cleanup, r.url, local.port, {
        token,
        subdomain: 'owner',
        maxBackoffMs: 60_000,
        minBackoffMs: 60_000,
      });
    for (let i = 0; i < 10; i++) expect((await refusal(connect(`wrong-${i}`))).code).toBe('bad_token');
    const blocked = await refusal(connect(TOKEN));
    expect(blocked.code).toBe('too_many_attempts');
    expect(blocked.message).toMatch(/try again in 6 s/);
    clock.advance(6000);
    const client = (await connect(TOKEN)) as { url: string };
    expect(client.url).toMatch(/owner\./);
    expect(r.events.filter((e) => e.event === 'auth_failed' && e.kind === 'client_token')).toHaveLength(10);
    expect(r.events.filter((e) => e.event === 'refused' && e.reason === 'too_many_attempts')).toHaveLength(1);
  });

  test('Basic credentials: a guessing address gets 429; another visitor and the tunnel are unaffected', async () => {
    const clock = testClock();
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'in'), {
      relay: { now: clock.now, trustProxy: true },
      client: { access: { basicAuth: ['alice:s3cret'], allowIp: [], optionsWithoutAuth: false } },
    });
    const attempt = (pass: string, from: string) =>
      t.request({ headers: { Host: t.host, Authorization: basic('alice', pass), 'X-Forwarded-For': from } });
    // A browser's first request has no credentials: that is not a guess and costs nothing.
    for (let i = 0; i < 20; i++)
      expect((await t.request({ headers: { Host: t.host, 'X-Forwarded-For': '198.51.100.1' } })).status).toBe(
        401,
      );
    for (let i = 0; i < 10; i++) expect((await attempt(`guess${i}`, '198.51.100.1')).status).toBe(401);
    const blocked = await attempt('s3cret', '198.51.100.1');
    expect([blocked.status, blocked.headers['x-ggrok-error'], blocked.headers['retry-after']]).toEqual([
      429,
      'too_many_attempts',
      '6',
    ]);
    expect((await attempt('s3cret', '198.51.100.2')).status).toBe(200);
    clock.advance(6000);
    expect((await attempt('s3cret', '198.51.100.1')).status).toBe(200);
    expect(t.relay.events.filter((e) => e.event === 'auth_failed' && e.kind === 'basic_auth')).toHaveLength(
      10,
    );
  });

  test('metrics and status bearer tokens: 429 after ten wrong ones; failures are in the metrics', async () => {
    const clock = testClock();
    const r = await startRelay(cleanup, { now: clock.now });
    const get = (token: string) =>
      rawRequest({
        port: r.port,
        path: '/_ggrok/status?format=json',
        headers: { Authorization: `Bearer ${token}` },
      });
    for (let i = 0; i < 10; i++) expect((await get(`nope${i}`)).status).toBe(401);
    expect((await get(TOKEN)).status).toBe(429);
    clock.advance(6000);
    const metrics = await rawRequest({
      port: r.port,
      path: '/_ggrok/metrics',
      headers: { Authorization: `Bearer ${TOKEN}` },
    });
    expect(metrics.status).toBe(200);
    expect(metrics.body.toString()).toMatch(
      /^ggrok_auth_failures_total\{kind="observer_token",instance="[^"]+"\} 10$/m,
    );
    expect(metrics.body.toString()).toMatch(
      /^ggrok_refusals_total\{reason="too_many_attempts",instance="[^"]+"\} 1$/m,
    );
  });
});

describe('limits', () => {
  test('tunnels per token are capped; a second token has its own budget', async () => {
    const r = await startRelay(cleanup, { maxTunnelsPerToken: 2, tokens: [TOKEN, 'other-token'] });
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'x'));
    await startClient(cleanup, r.url, local.port, { subdomain: 'one' });
    await startClient(cleanup, r.url, local.port, { subdomain: 'two' });
    const third = await refusal(startClient(cleanup, r.url, local.port, { subdomain: 'three' }));
    expect(third.code).toBe('too_many_tunnels');
    await startClient(cleanup, r.url, local.port, { subdomain: 'three', token: 'other-token' });
    expect(r.relay.tunnelCount).toBe(3);
  });

  test('new requests above the per-tunnel rate get 429 with Retry-After', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      relay: { streamsPerSecond: 5 },
    });
    const statuses = await Promise.all(Array.from({ length: 40 }, () => t.request().then((r) => r)));
    const ok = statuses.filter((r) => r.status === 200).length;
    const limited = statuses.filter((r) => r.status === 429);
    expect(ok).toBeGreaterThanOrEqual(10); // the burst
    expect(ok).toBeLessThan(20);
    expect(limited.length).toBe(40 - ok);
    expect(limited[0]!.headers['retry-after']).toBe('1');
    expect(limited[0]!.headers['x-ggrok-error']).toBe('rate_limited');
  });

  test('a stream with no data either way is reset after the idle timeout (504)', async () => {
    const t = await startTunnel(cleanup, () => {}, { relay: { idleStreamMs: 300, heartbeatMs: 200 } });
    const res = await t.request();
    expect([res.status, res.headers['x-ggrok-error']]).toEqual([504, 'idle_timeout']);
    await waitFor(() => t.local.requests[0]!.socket.destroyed, 'the local request to be aborted');
  });

  test('a request head that does not complete within --headers-timeout gets 408 and the connection closes', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      relay: { headersTimeoutMs: 500 },
    });
    const answer = await rawExchange(
      t.relay.port,
      `GET / HTTP/1.1\r\nHost: ${t.host}\r\nX-Slow: `,
      undefined,
      10_000,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(t.local.requests).toHaveLength(0);
  });

  test('a control socket that never says hello is closed at the handshake timeout, TCP connection included', async () => {
    const r = await startRelay(cleanup, { handshakeTimeoutMs: 300 });
    // A hand-made WebSocket handshake: this peer will never answer the close frame, as a hostile one would not.
    const socket = net.connect(r.port, '127.0.0.1');
    socket.on('error', () => {});
    cleanup.add(() => socket.destroy());
    await once(socket, 'connect');
    socket.write(
      `GET /_ggrok/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    const started = Date.now();
    await once(socket, 'close');
    expect(text).toMatch(/^HTTP\/1\.1 101 /);
    expect(text).toContain('no hello in time');
    // ws would wait 30 s for the close handshake; the relay gives it one second.
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  test('request heads over --max-header-bytes get 431', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      relay: { maxHeaderBytes: 4096 },
    });
    const status = await new Promise<number>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port: t.relay.port,
        agent: false,
        headers: { Host: t.host, 'X-Pad': 'x'.repeat(6000) },
      });
      req.on('response', (res) => resolve(res.statusCode!));
      req.on('error', () => resolve(-1));
      req.end();
    });
    expect(status).toBe(431);
    expect((await t.request()).status).toBe(200);
  });
});

/** A throwaway self-signed certificate for localhost, *.localhost and 127.0.0.1. */
const selfSignedCertificate = () =>
  testCertificate(cleanup, 'localhost', ['DNS:localhost', 'DNS:*.localhost', 'IP:127.0.0.1']);

describe('TLS', () => {
  test('an https local target works with --insecure for a self-signed certificate, and is refused without it', async () => {
    const tls = selfSignedCertificate();
    const server = https.createServer(tls, (req, res) => reply(res, 200, `over tls ${req.url}`));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.add(() => new Promise((r) => server.close(r)));
    const port = (server.address() as { port: number }).port;
    const r = await startRelay(cleanup);
    const loose = await startClient(cleanup, r.url, `https://localhost:${port}`, {
      subdomain: 'loose',
      target: parseTarget(`https://localhost:${port}`, true),
    });
    const ok = await rawRequest({ port: r.port, path: '/x', headers: { Host: new URL(loose.url).host } });
    expect(ok.body.toString()).toBe('over tls /x');
    const strict = await startClient(cleanup, r.url, `https://localhost:${port}`, {
      subdomain: 'strict-target',
    });
    const refused = await rawRequest({ port: r.port, headers: { Host: new URL(strict.url).host } });
    expect([refused.status, refused.headers['x-ggrok-error']]).toEqual([502, 'local_unreachable']);
    expect(refused.body.toString()).toMatch(/SELF_SIGNED|CERT|self-signed/i);
  });

  test('the relay terminates TLS; the client verifies certificates unless --insecure', async () => {
    const tls = selfSignedCertificate();
    const r = await startRelay(cleanup, { tls });
    const local = await startLocal(cleanup, (req, res) =>
      reply(res, 200, `secure ${String(req.headers['x-forwarded-proto'])}`),
    );
    const server = `https://127.0.0.1:${r.port}`;
    const untrusted = await refusal(startClient(cleanup, server, local.port, { subdomain: 'strict' }));
    expect(untrusted.code).toBe('relay_tls');
    expect(untrusted.message).toContain('--insecure');
    const client = await startClient(cleanup, server, local.port, { subdomain: 'tls', insecure: true });
    expect(client.url).toBe(`https://tls.localhost:${r.port}`);
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(
          {
            host: '127.0.0.1',
            port: r.port,
            rejectUnauthorized: false,
            headers: { Host: `tls.localhost:${r.port}` },
          },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve(text));
          },
        )
        .on('error', reject);
    });
    expect(body).toBe('secure https');
  });
});
