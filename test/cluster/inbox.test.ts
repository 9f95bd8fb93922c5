// Webhook inbox in a cluster: each instance keeps what reaches it (Redis carries no bodies) and delivers it over the
// owner's link to that instance when the client is back: every kept request arrives exactly once.
import { afterEach, describe, expect, test } from 'vitest';
import { createRelay, type Relay } from '../../relay/index.js';
import { Cleanup, rawRequest, sleep, startClient, startLocal, TOKEN, waitFor } from '../helpers.js';
import { freePort, startRedis } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** An in-process instance of the cluster on its own port, reachable by clients and peers on loopback. */
async function instance(id: string, redisUrl: string): Promise<{ relay: Relay; port: number; url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const relay = createRelay({
    tokens: [TOKEN],
    domain: 'localhost',
    startupGraceMs: 0,
    instanceId: id,
    inboxRetryMs: 50,
    cluster: { redisUrl, peerUrl: url, instanceUrl: url },
  });
  await relay.listen(port, '127.0.0.1');
  cleanup.add(() => relay.close(0));
  return { relay, port, url };
}

describe('webhook inbox in a cluster', () => {
  test('requests kept by two instances while the client is away each arrive exactly once when it is back', async () => {
    const redis = await startRedis(cleanup);
    const r1 = await instance('r1', redis.url);
    const r2 = await instance('r2', redis.url);
    const seen: string[] = [];
    const local = await startLocal(cleanup, (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push(`${req.url} ${body} ${String(req.headers['x-ggrok-inbox'])}`);
        res.end('ok');
      });
    });
    const first = await startClient(cleanup, r1.url, local.port, { subdomain: 'hooks', inbox: ['/*'] });
    await waitFor(() => first.instances.length === 2, 'the client attached to both instances', 20_000);
    await first.close();
    await waitFor(() => r1.relay.tunnelCount + r2.relay.tunnelCount === 0, 'the tunnels to go');
    // ... and each instance to have read that from the other's lease: until then it would pass a request on to the
    // other, which keeps it there (still exactly once, but not where it arrived).
    const peersIdle = (r: Awaited<ReturnType<typeof instance>>) =>
      r.relay.statusReport().cluster?.members.every((m) => m.tunnels === 0) ?? false;
    await waitFor(() => peersIdle(r1) && peersIdle(r2), 'both instances to see no tunnel anywhere', 10_000);

    const ids = new Map<string, string>();
    for (const [n, r] of [
      [1, r1],
      [2, r2],
      [3, r1],
      [4, r2],
    ] as const) {
      const res = await rawRequest({
        port: r.port,
        method: 'POST',
        path: `/e${n}`,
        headers: { Host: `hooks.localhost:${r.port}` },
        body: `event ${n}`,
      });
      expect(res.status).toBe(202);
      ids.set(`/e${n}`, res.headers['x-ggrok-inbox'] as string);
    }
    // Each request is kept in exactly one place: where it arrived.
    expect([r1.relay.inbox.count, r2.relay.inbox.count]).toEqual([2, 2]);

    const again = await startClient(cleanup, r2.url, local.port, { subdomain: 'hooks', inbox: ['/*'] });
    await waitFor(() => again.instances.length === 2, 'the client attached to both again', 20_000);
    await waitFor(() => seen.length === 4, 'four deliveries', 20_000);
    await waitFor(() => r1.relay.inbox.count + r2.relay.inbox.count === 0, 'both inboxes empty');
    await sleep(500);
    expect(seen.sort()).toEqual(
      ['/e1', '/e2', '/e3', '/e4'].map((p) => `${p} event ${p.slice(2)} ${ids.get(p)}`).sort(),
    );
    // Kept where they arrived, and delivered in arrival order by each instance.
    const at = (p: string) => seen.findIndex((x) => x.startsWith(`${p} `));
    expect(at('/e1')).toBeLessThan(at('/e3'));
    expect(at('/e2')).toBeLessThan(at('/e4'));
  });
});
