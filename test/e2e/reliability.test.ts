// Drops, reconnects, held requests and graceful shutdown: a ggrok URL keeps working through them.
import { afterEach, describe, expect, test } from 'vitest';
import { createRelay } from '../../relay/relay.js';
import type { OnlineInfo } from '../../cli/client.js';
import {
  Cleanup,
  rawRequest,
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

describe('reconnects', () => {
  test('after its control socket drops, the client comes back with the same name and URL', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const onlines: OnlineInfo[] = [];
    const offlines: string[] = [];
    t.client.on('online', (info) => onlines.push(info));
    t.client.on('offline', (info) => offlines.push(info.reason));
    const before = t.client.url;
    expect(t.relay.relay.dropTunnel('demo')).toBe(true);
    await waitFor(() => onlines.length === 1, 'the client to come back');
    expect(onlines[0]).toMatchObject({ url: before, name: 'demo', reconnected: true });
    expect(offlines).toHaveLength(1);
    expect((await t.request()).body.toString()).toBe('ok');
  });

  test('public requests made while the client is away wait for it instead of failing', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `served ${req.url}`), {
      client: { minBackoffMs: 400, maxBackoffMs: 400 },
    });
    expect(t.relay.relay.dropTunnel('demo')).toBe(true);
    await waitFor(() => t.relay.relay.tunnelCount === 0, 'the tunnel to go away');
    const results = await Promise.all([1, 2, 3].map((i) => t.request({ path: `/${i}` })));
    expect(results.map((r) => `${r.status} ${r.body.toString()}`)).toEqual([
      '200 served /1',
      '200 served /2',
      '200 served /3',
    ]);
  });

  test('the client survives a relay restart on the same port and reclaims its name', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'after restart'));
    const client = await startClient(cleanup, r.url, local.port, { subdomain: 'sticky' });
    const back = new Promise<OnlineInfo>((resolve) => client.once('online', resolve));
    await r.relay.close(0);
    const again = createRelay({ tokens: [TOKEN], domain: 'localhost' });
    await again.listen(r.port, '127.0.0.1');
    cleanup.add(() => again.close(0));
    expect(await back).toMatchObject({ name: 'sticky', reconnected: true });
    const res = await rawRequest({ port: r.port, headers: { Host: `sticky.localhost:${r.port}` } });
    expect(res.body.toString()).toBe('after restart');
  });

  test('just after a relay restart, requests for a name it has not seen yet wait for its client', async () => {
    const r = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'waited for'));
    await startClient(cleanup, r.url, local.port, {
      subdomain: 'comeback',
      minBackoffMs: 300,
      maxBackoffMs: 300,
    });
    await r.relay.close(0);
    const again = createRelay({ tokens: [TOKEN], domain: 'localhost', startupGraceMs: 10_000 });
    await again.listen(r.port, '127.0.0.1');
    cleanup.add(() => again.close(0));
    // Sent before the client is back (its next try is ~300 ms away): it waits instead of getting a 404.
    expect(again.tunnelCount).toBe(0);
    const res = await rawRequest({ port: r.port, headers: { Host: `comeback.localhost:${r.port}` } });
    expect([res.status, res.body.toString()]).toEqual([200, 'waited for']);
    // A name nobody reconnects with still ends in a 404, after the wait.
    const unknown = await rawRequest({ port: r.port, headers: { Host: `nobody.localhost:${r.port}` } });
    expect(unknown.status).toBe(404);
  });

  test('requests in flight on a dropped control socket fail at once with 502, never hang', async () => {
    const t = await startTunnel(cleanup, () => {
      /* never answers */
    });
    const pending = t.request({ path: '/hang' });
    await waitFor(() => t.local.requests.length === 1, 'the request to reach the local server');
    expect(t.relay.relay.dropTunnel('demo')).toBe(true);
    const res = await pending;
    expect(res.status).toBe(502);
    expect(res.headers['x-ggrok-error']).toBe('tunnel_closed');
  });
});

describe('graceful shutdown', () => {
  test('in-flight requests finish, new tunnels are refused, clients are told to come back', async () => {
    let release: () => void = () => {};
    const t = await startTunnel(cleanup, (req, res) => {
      if (req.url === '/slow')
        return void new Promise<void>((r) => (release = r)).then(() => reply(res, 200, 'finished'));
      reply(res, 200, 'ok');
    });
    const slow = t.request({ path: '/slow' });
    await waitFor(() => t.local.requests.length === 1, 'the slow request to start');
    const closing = t.relay.relay.close(10_000);
    // While closing: health says so, and a new client is refused as "shutting down".
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'x'));
    await expect(startClient(cleanup, t.relay.url, local.port, { subdomain: 'late' })).rejects.toMatchObject({
      code: expect.stringMatching(/relay_shutting_down|relay_unreachable/),
    });
    release();
    expect((await slow).body.toString()).toBe('finished');
    await closing;
    expect(t.relay.events.at(-1)).toEqual({ event: 'shutdown' });
  });
});
