// The programmatic API, as a library user would call it: import { connect } from 'ggrok'.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { connect, GgrokError, loadConfig, type Exchange, type HostCheckHint } from '../../cli/index.js';
import { Cleanup, rawRequest, refusal, reply, startLocal, startRelay, TOKEN, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('connect() resolves with the URL, reports requests, and close() takes the tunnel down', async () => {
  const r = await startRelay(cleanup);
  const local = await startLocal(cleanup, (req, res) => reply(res, 200, `api ${req.url}`));
  const tunnel = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'lib' });
  cleanup.add(() => tunnel.close());
  expect(tunnel.url).toBe(`http://lib.localhost:${r.port}`);
  const seen: Exchange[] = [];
  tunnel.on('request', (x) => seen.push(x));
  const res = await rawRequest({
    port: r.port,
    path: '/hello',
    headers: { Host: `lib.localhost:${r.port}` },
  });
  expect(res.body.toString()).toBe('api /hello');
  await waitFor(() => seen.length === 1, 'the request event');
  expect(seen[0]).toMatchObject({ tunnel: 'lib', method: 'GET', target: '/hello', status: 200, bytes: 10 });
  await tunnel.close();
  await waitFor(() => r.relay.tunnelCount === 0, 'the relay to drop the tunnel');
});

test('connect() rejects with a GgrokError whose code says why', async () => {
  const r = await startRelay(cleanup);
  const codeOf = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'resolved',
      (err: unknown) => (err instanceof GgrokError ? err.code : `not a GgrokError: ${String(err)}`),
    );
  expect(await codeOf(connect({ port: 3000, server: r.url, token: 'nope' }))).toBe('bad_token');
  expect(await codeOf(connect({ port: 3000, server: r.url, token: TOKEN, subdomain: 'NOT OK' }))).toBe(
    'name_invalid',
  );
  expect(await codeOf(connect({ target: 'ftp://x', server: r.url, token: TOKEN }))).toBe('bad_target');
  expect(await codeOf(connect({ port: 3000, server: r.url }))).toMatch(/^(no_token|bad_token)$/);
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
  expect(await codeOf(connect({ port: 3000, server: `http://127.0.0.1:${closed}`, token: TOKEN }))).toBe(
    'relay_unreachable',
  );
  expect(await codeOf(connect({ port: 3000, server: 'not a url at all', token: TOKEN }))).toBe(
    'bad_server_url',
  );
});

test("the relay's traffic counters reach the client as 'stats' events", async () => {
  const r = await startRelay(cleanup, { statsIntervalMs: 100 });
  const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'twelve bytes'));
  const tunnel = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'counted' });
  cleanup.add(() => tunnel.close());
  for (let i = 0; i < 3; i++)
    await rawRequest({
      port: r.port,
      method: 'POST',
      body: 'abcd',
      headers: { Host: `counted.localhost:${r.port}`, 'Content-Length': '4' },
    });
  await waitFor(() => tunnel.counters.requests === 3, 'stats for three requests', 10_000);
  expect(tunnel.counters).toEqual({
    requests: 3,
    bytesIn: 12,
    bytesOut: 36,
    channels: 0,
    inFlight: 0,
    openStreams: 0,
  });
});

test('close() drains: a request in flight finishes, one arriving meanwhile gets 503, then the tunnel is gone', async () => {
  const r = await startRelay(cleanup);
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  const local = await startLocal(cleanup, (req, res) => {
    if (req.url === '/slow') void released.then(() => reply(res, 200, 'finished'));
    else reply(res, 200, 'quick');
  });
  const tunnel = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'drain' });
  cleanup.add(() => tunnel.close({ drainMs: 0 }));
  const host = { Host: `drain.localhost:${r.port}` };
  const slow = rawRequest({ port: r.port, path: '/slow', headers: host });
  await waitFor(() => tunnel.counters.inFlight === 1, 'the slow request to reach the client');
  const closedEvents: string[] = [];
  tunnel.on('closed', () => closedEvents.push('closed'));
  const closing = tunnel.close({ drainMs: 20_000 });
  const during = await rawRequest({ port: r.port, path: '/new', headers: host });
  expect([during.status, during.headers['x-ggrok-error']]).toEqual([503, 'refused_stream']);
  expect(closedEvents).toEqual([]);
  release();
  const done = await slow;
  expect([done.status, done.body.toString()]).toEqual([200, 'finished']);
  await closing;
  expect(closedEvents).toEqual(['closed']);
  expect(tunnel.close()).toBe(closing);
  await waitFor(() => r.relay.tunnelCount === 0, 'the relay to drop the tunnel');
});

test('close() with a drain of 0 resets what is in flight at once', async () => {
  const r = await startRelay(cleanup);
  const local = await startLocal(cleanup, () => {}); // never answers
  const tunnel = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'cut' });
  const slow = rawRequest({ port: r.port, path: '/', headers: { Host: `cut.localhost:${r.port}` } });
  await waitFor(() => tunnel.counters.inFlight === 1, 'the request to reach the client');
  await tunnel.close({ drainMs: 0 });
  expect((await slow).status).toBeGreaterThanOrEqual(500);
});

test('inspect: <address> serves the inspector and inspectorUrl says where; off by default', async () => {
  const r = await startRelay(cleanup);
  const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'x'));
  const plain = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'plain' });
  cleanup.add(() => plain.close({ drainMs: 0 }));
  expect(plain.inspectorUrl).toBeUndefined();
  const seen = await connect({
    port: local.port,
    server: r.url,
    token: TOKEN,
    subdomain: 'seen',
    inspect: '127.0.0.1:0',
  });
  cleanup.add(() => seen.close({ drainMs: 0 }));
  expect(seen.inspectorUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  await rawRequest({ port: r.port, path: '/watched', headers: { Host: `seen.localhost:${r.port}` } });
  const port = Number(new URL(seen.inspectorUrl!).port);
  await waitFor(
    async () =>
      (await rawRequest({ port, path: '/api/exchanges', headers: { Host: `127.0.0.1:${port}` } })).body
        .toString()
        .includes('/watched'),
    'the inspector to list the request',
  );
  await seen.close({ drainMs: 0 });
  await expect(rawRequest({ port, path: '/', headers: { Host: `127.0.0.1:${port}` } })).rejects.toThrow(
    /ECONNREFUSED/,
  );
});

test("a Tunnel reports 'offline' and 'online' around a dropped connection, and a dev server's refusal as 'hint'", async () => {
  const r = await startRelay(cleanup);
  const local = await startLocal(cleanup, (req, res) =>
    reply(
      res,
      403,
      `Blocked request. This host ("${req.headers.host}") is not allowed.\nTo allow this host, add "${req.headers.host}" to \`server.allowedHosts\` in vite.config.js.`,
      { 'Content-Type': 'text/plain' },
    ),
  );
  const tunnel = await connect({ port: local.port, server: r.url, token: TOKEN, subdomain: 'events' });
  cleanup.add(() => tunnel.close({ drainMs: 0 }));
  const events: string[] = [];
  tunnel.on('offline', () => events.push('offline'));
  tunnel.on('online', (info) => events.push(`online ${info.reconnected} ${info.name}`));
  tunnel.client.dropConnection();
  await waitFor(() => events.length === 2, 'offline then online', 15_000);
  expect(events).toEqual(['offline', 'online true events']);
  expect(tunnel.name).toBe('events');
  const hints: HostCheckHint[] = [];
  tunnel.on('hint', (h) => hints.push(h));
  await rawRequest({ port: r.port, headers: { Host: `events.localhost:${r.port}` } });
  await waitFor(() => hints.length === 1, 'the hint');
  expect(hints[0]).toMatchObject({ tunnel: 'events', server: 'vite', status: 403 });
});

test('connect() reads server and token from the config file named by `config`; options win over it', async () => {
  const r = await startRelay(cleanup);
  const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'from config'));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-api-config-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ggrok.yml');
  writeFileSync(
    file,
    `server: ${r.url}\ntoken: ${TOKEN}\ntunnels:\n  web:\n    addr: ${local.port}\n    subdomain: cfg\n    response_header: { add: ['X-From: file'] }\n`,
  );
  const { name: _name, addr, ...settings } = loadConfig(file).tunnels[0]!;
  const tunnel = await connect({ target: addr, config: file, ...settings });
  cleanup.add(() => tunnel.close({ drainMs: 0 }));
  expect(tunnel.url).toBe(`http://cfg.localhost:${r.port}`);
  const res = await rawRequest({ port: r.port, headers: { Host: `cfg.localhost:${r.port}` } });
  expect([res.status, res.body.toString(), res.headers['x-from']]).toEqual([200, 'from config', 'file']);
  const wrongToken = await refusal(
    connect({ target: addr, config: file, token: 'not-it', subdomain: 'cfg2' }),
  );
  expect(wrongToken.code).toBe('bad_token');
});
