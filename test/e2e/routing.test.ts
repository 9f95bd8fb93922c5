// Routing by Host in both modes, refusals at connect time, and the relay's own error pages.
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import type { OnlineInfo } from '../../cli/client.js';
import { parseTarget } from '../../cli/target.js';
import {
  Cleanup,
  rawRequest,
  refusal,
  reply,
  startClient,
  startLocal,
  startRelay,
  startTunnel,
  waitFor,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

describe('domain mode', () => {
  test('Host matching is case-insensitive and an exact suffix', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `tunnel ${req.url}`));
    const port = t.relay.port;
    const upper = await rawRequest({ port, path: '/a', headers: { Host: `DEMO.LocalHost:${port}` } });
    expect(upper.body.toString()).toBe('tunnel /a');
    const trailingDot = await rawRequest({ port, path: '/b', headers: { Host: `demo.localhost.:${port}` } });
    expect(trailingDot.body.toString()).toBe('tunnel /b');
    // demo.localhost.evil.com is not demo: it is some other host, i.e. the relay's own.
    const evil = await rawRequest({ port, path: '/c', headers: { Host: `demo.localhost.evil.com:${port}` } });
    expect(evil.status).toBe(404);
    expect(evil.headers['x-ggrok-error']).toBe('not_found');
    const nested = await rawRequest({ port, path: '/', headers: { Host: `a.demo.localhost:${port}` } });
    expect(nested.status).toBe(404);
    expect(t.local.requests.map((r) => r.url)).toEqual(['/a', '/b']);
  });

  test('an unknown tunnel host gets a 404 page that names it', async () => {
    const r = await startRelay(cleanup);
    const res = await rawRequest({ port: r.port, headers: { Host: `nobody.localhost:${r.port}` } });
    expect(res.status).toBe(404);
    expect(res.headers['x-ggrok-error']).toBe('tunnel_not_found');
    expect(res.body.toString()).toContain(`nobody.localhost:${r.port}`);
  });

  test('a tunnel whose client left gets a 503 page while its name is held', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      relay: { waitForClientMs: 200 },
    });
    await t.client.close();
    await waitFor(() => t.relay.relay.tunnelCount === 0, 'the relay to notice the disconnect');
    const res = await t.request();
    expect(res.status).toBe(503);
    expect(res.headers['x-ggrok-error']).toBe('tunnel_offline');
    expect(res.headers['retry-after']).toBeDefined();
  });

  test('/_ggrok/ paths on a tunnel host belong to the local service; health answers on the relay host', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `local ${req.url}`));
    const onTunnel = await t.request({ path: '/_ggrok/health' });
    expect(onTunnel.body.toString()).toBe('local /_ggrok/health');
    const health = await rawRequest({
      port: t.relay.port,
      path: '/_ggrok/health',
      headers: { Host: `localhost:${t.relay.port}` },
    });
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body.toString())).toMatchObject({ ok: true, mode: 'domain', tunnels: 1 });
  });

  test('without --subdomain the relay picks a short readable name', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const client = await startClient(cleanup, r.url, local.port);
    expect(client.name).toMatch(/^[a-z]+-[a-z]+-\d{2}$/);
    expect(client.url).toBe(`http://${client.name}.localhost:${r.port}`);
  });

  test('refusals: bad token, name in use, invalid and reserved names', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));
    expect((await refusal(startClient(cleanup, r.url, local.port, { token: 'wrong' }))).code).toBe(
      'bad_token',
    );
    await startClient(cleanup, r.url, local.port, { subdomain: 'taken' });
    const inUse = await refusal(startClient(cleanup, r.url, local.port, { subdomain: 'taken' }));
    expect(inUse.code).toBe('name_in_use');
    expect(inUse.message).toContain('taken');
    expect((await refusal(startClient(cleanup, r.url, local.port, { subdomain: 'Bad_Name!' }))).code).toBe(
      'name_invalid',
    );
    expect((await refusal(startClient(cleanup, r.url, local.port, { subdomain: '-x' }))).code).toBe(
      'name_invalid',
    );
    expect((await refusal(startClient(cleanup, r.url, local.port, { subdomain: 'www' }))).code).toBe(
      'name_reserved',
    );
    expect(r.events.filter((e) => e.event === 'refused').map((e) => e.reason)).toEqual([
      'bad_token',
      'name_in_use',
      'name_invalid',
      'name_invalid',
      'name_reserved',
    ]);
    expect(JSON.stringify(r.events)).not.toContain('wrong');
  });
});

describe('several tunnels on one connection', () => {
  test('each name reaches its own local service; a drop and reconnect brings all of them back', async () => {
    const r = await startRelay(cleanup);
    const web = await startLocal(cleanup, (req, res) => reply(res, 200, `web ${req.url}`));
    const api = await startLocal(cleanup, (req, res) => reply(res, 200, `api ${req.url}`));
    const client = await startClient(cleanup, r.url, web.port, {
      subdomain: 'web',
      more: [
        { subdomain: 'backend', target: parseTarget(String(api.port)) },
        { target: parseTarget(String(api.port)) },
      ],
    });
    const names = r.events.filter((e) => e.event === 'connect').map((e) => e.name as string);
    expect(names.slice(0, 2)).toEqual(['web', 'backend']);
    expect(names[2]).toMatch(/^[a-z]+-[a-z]+-\d{2}$/);
    const get = (name: string): Promise<string> =>
      rawRequest({ port: r.port, path: '/x', headers: { Host: `${name}.localhost:${r.port}` } }).then((res) =>
        res.body.toString(),
      );
    expect(await Promise.all([get('web'), get('backend'), get(names[2]!)])).toEqual([
      'web /x',
      'api /x',
      'api /x',
    ]);
    const seen: string[] = [];
    client.on('request', (x) => seen.push(x.tunnel ?? '?'));
    await get('backend');
    await waitFor(() => seen.length === 1, 'the request event');
    expect(seen).toEqual(['backend']);
    const back = new Promise<OnlineInfo>((resolve) => client.once('online', resolve));
    expect(r.relay.dropTunnel('web')).toBe(true);
    const info = await back;
    expect(info.tunnels.map((t) => t.name)).toEqual(names);
    expect(await get(names[2]!)).toBe('api /x');
  });

  test('a refused name refuses the whole connection, naming the problem', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'x'));
    await startClient(cleanup, r.url, local.port, { subdomain: 'taken' });
    const err = await refusal(
      startClient(cleanup, r.url, local.port, {
        subdomain: 'free',
        more: [{ subdomain: 'taken', target: parseTarget('1') }],
      }),
    );
    expect(err.code).toBe('name_in_use');
    expect(err.message).toContain('taken');
    expect(r.relay.tunnelCount).toBe(1);
  });
});

describe('own-host mode', () => {
  test('one tunnel is served at the relay host itself; a second client is refused as in use', async () => {
    const r = await startRelay(cleanup, { domain: undefined });
    const local = await startLocal(cleanup, (req, res) =>
      reply(res, 200, `own ${req.headers.host} ${req.url}`),
    );
    const before = await rawRequest({ port: r.port, headers: { Host: 'myrelay.herokuapp.com' } });
    expect(before.status).toBe(503);
    expect(before.headers['x-ggrok-error']).toBe('tunnel_offline');
    const client = await startClient(cleanup, r.url, local.port);
    expect(client.url).toBe(r.url);
    const res = await rawRequest({ port: r.port, path: '/x', headers: { Host: 'myrelay.herokuapp.com' } });
    expect(res.body.toString()).toBe('own myrelay.herokuapp.com /x');
    const health = await rawRequest({
      port: r.port,
      path: '/_ggrok/health',
      headers: { Host: 'myrelay.herokuapp.com' },
    });
    expect(JSON.parse(health.body.toString())).toMatchObject({ ok: true, mode: 'own-host', tunnels: 1 });
    const second = await refusal(startClient(cleanup, r.url, local.port));
    expect(second.code).toBe('name_in_use');
  });
});

describe('local service errors', () => {
  test('an unreachable local service gives a 502 page naming the address and the error', async () => {
    const r = await startRelay(cleanup);
    const port = await closedPort();
    const client = await startClient(cleanup, r.url, `127.0.0.1:${port}`, { subdomain: 'down' });
    const res = await rawRequest({ port: r.port, headers: { Host: new URL(client.url).host } });
    expect(res.status).toBe(502);
    expect(res.headers['x-ggrok-error']).toBe('local_unreachable');
    expect(res.body.toString()).toContain(`ECONNREFUSED 127.0.0.1:${port}`);
  });

  test('localhost means both 127.0.0.1 and ::1, and an error names both', async () => {
    const r = await startRelay(cleanup);
    const v6 = await startLocal(cleanup, (_req, res) => reply(res, 200, 'on ::1'), '::1');
    const client = await startClient(cleanup, r.url, `localhost:${v6.port}`, { subdomain: 'six' });
    const res = await rawRequest({ port: r.port, headers: { Host: new URL(client.url).host } });
    expect(res.body.toString()).toBe('on ::1');
    const v4 = await startLocal(cleanup, (_req, res) => reply(res, 200, 'on 127.0.0.1'));
    const client4 = await startClient(cleanup, r.url, v4.port, { subdomain: 'four' });
    const res4 = await rawRequest({ port: r.port, headers: { Host: new URL(client4.url).host } });
    expect(res4.body.toString()).toBe('on 127.0.0.1');
    const port = await closedPort();
    const dead = await startClient(cleanup, r.url, port, { subdomain: 'dead' });
    const failed = await rawRequest({ port: r.port, headers: { Host: new URL(dead.url).host } });
    expect(failed.status).toBe(502);
    expect(failed.body.toString()).toContain(`127.0.0.1:${port}`);
    expect(failed.body.toString()).toContain(`[::1]:${port}`);
  });

  test('keep-alive connections to the local service are reused across requests', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `${req.socket.remotePort}`));
    const ports = new Set<string>();
    for (let i = 0; i < 10; i++) ports.add((await t.request()).body.toString());
    expect(ports.size).toBe(1);
  });

  test('a local server that closes idle keep-alive sockets does not fail the next request', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    t.local.server.keepAliveTimeout = 50;
    for (let i = 0; i < 5; i++) {
      expect((await t.request()).status).toBe(200);
      await new Promise((r) => setTimeout(r, 50 + i * 5));
    }
  });
});

describe('limits', () => {
  test('a tunnel at its limit of concurrent requests answers 503 with Retry-After, then recovers', async () => {
    const held: (() => void)[] = [];
    const t = await startTunnel(
      cleanup,
      (req, res) => {
        if (req.url === '/hold') return void held.push(() => reply(res, 200, 'held'));
        reply(res, 200, 'free');
      },
      { relay: { maxRequestsPerTunnel: 2 } },
    );
    const first = [t.request({ path: '/hold' }), t.request({ path: '/hold' })];
    await waitFor(() => held.length === 2, 'two requests to be in progress');
    const busy = await t.request({ path: '/third' });
    expect([busy.status, busy.headers['x-ggrok-error'], busy.headers['retry-after']]).toEqual([
      503,
      'tunnel_busy',
      '1',
    ]);
    held.forEach((release) => release());
    expect((await Promise.all(first)).map((r) => r.body.toString())).toEqual(['held', 'held']);
    expect((await t.request({ path: '/after' })).body.toString()).toBe('free');
    expect(t.local.requests.map((r) => r.url)).toEqual(['/hold', '/hold', '/after']);
  });
});

describe('the relay server itself', () => {
  test('oversized request headers get 431, malformed requests 400, and the relay keeps serving', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const big = await new Promise<number>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port: t.relay.port,
        agent: false,
        headers: { Host: t.host, 'X-Big': 'x'.repeat(20_000) },
      });
      req.on('response', (res) => resolve(res.statusCode!));
      req.on('error', () => resolve(-1));
      req.end();
    });
    expect(big).toBe(431);
    const socket = net.connect(t.relay.port, '127.0.0.1');
    socket.write('NOT HTTP AT ALL\r\n\r\n');
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect((await t.request()).status).toBe(200);
  });
});
