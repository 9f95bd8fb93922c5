// An endpoint pool across a relay cluster: two relay processes on one redis-server behind a random L4 front, two
// pool clients attached to both through the front; requests through the front reach both members, for longer than
// the instances' fence checks, and a client without --pool is refused.
import http from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import type { TunnelClient } from '../../cli/client.js';
import { ErrorCode } from '../../protocol/errors.js';
import { Cleanup, refusal, reply, sleep, startClient, startLocal, waitFor } from '../helpers.js';
import { freePort, startL4Front, startRedis, startRelayProcess, type RelayProcess } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A GET through the front on a new connection (the front picks an instance for each). */
function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/', headers: { Host: host }, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

describe('an endpoint pool across a cluster', () => {
  test('two members attached through the front share the name on both instances', async () => {
    const redis = await startRedis(cleanup);
    const relays: RelayProcess[] = [];
    for (let i = 1; i <= 2; i++) {
      const port = await freePort();
      const args = ['--redis', redis.url, '--instance-id', `r${i}`, '--peer-url', `http://127.0.0.1:${port}`];
      relays.push(await startRelayProcess(cleanup, args, { port }));
    }
    const front = await startL4Front(cleanup, () => relays.map((r) => r.port));
    const clients: TunnelClient[] = [];
    for (const id of ['a', 'b']) {
      const local = await startLocal(cleanup, (req, res) => {
        req.resume();
        reply(res, 200, id);
      });
      clients.push(await startClient(cleanup, front.url, local.port, { subdomain: 'shop', pool: true }));
    }
    // Each client holds a socket to each instance, so each instance has both members.
    for (const client of clients)
      await waitFor(() => client.instances.join(',') === 'r1,r2', 'the client attached to r1 and r2', 15_000);
    await waitFor(() => clients.every((c) => c.pools.get(0)?.size === 2), 'pool of 2 on every instance');
    // The same member id whichever instance told it.
    expect(new Set(clients.map((c) => c.pools.get(0)!.member)).size).toBe(2);

    // Load through the front for longer than the instances' fence checks (every 5 s): no member is superseded.
    const host = `shop.localhost:${front.port}`;
    const counts = new Map<string, number>();
    const until = Date.now() + 7000;
    let sent = 0;
    const worker = async (): Promise<void> => {
      while (Date.now() < until && sent < 5000) {
        sent++;
        const r = await get(front.port, host);
        const key = r.status === 200 ? r.body : `status:${r.status}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        await sleep(5);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    expect([...counts.keys()].sort()).toEqual(['a', 'b']);
    for (const id of ['a', 'b']) expect(counts.get(id)!).toBeGreaterThan(sent / 5);
    expect(clients.map((c) => c.instances.join(','))).toEqual(['r1,r2', 'r1,r2']);
    for (const r of relays) expect(r.output()).not.toMatch(/superseded/);

    // A client of the owner without --pool is refused, whichever instance it reaches.
    const plain = await refusal(startClient(cleanup, front.url, 1, { subdomain: 'shop' }));
    expect(plain.code).toBe(ErrorCode.NameInUse);
  }, 90_000);
});
