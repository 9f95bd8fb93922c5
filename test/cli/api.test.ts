// The programmatic API, as a library user would call it: import { connect } from 'ggrok'.
import net from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { connect, GgrokError, type Exchange } from '../../cli/index.js';
import { Cleanup, rawRequest, reply, startLocal, startRelay, TOKEN, waitFor } from '../helpers.js';

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
