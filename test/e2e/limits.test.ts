// Limits that protect a tunnel without throttling honest use: no request rate limit by default, a fair share of
// a nearly full tunnel per visitor address, an opt-in per-visitor rate, and the owner told when visitors are refused.
import http from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import { FAIR_SHARE_FROM, FAIR_SHARE_MAX } from '../../relay/admission.js';
import { RELAY_DEFAULTS } from '../../relay/options.js';
import { Cleanup, reply, startTunnel, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Sends `count` GETs over `connections` kept-alive sockets from one address; returns the count per status. */
async function burst(
  port: number,
  host: string,
  count: number,
  connections: number,
): Promise<Record<number, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const counts: Record<number, number> = {};
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < count) {
      sent++;
      const status = await new Promise<number>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, agent, headers: { Host: host } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          })
          .on('error', reject);
      });
      counts[status] = (counts[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: connections }, worker));
  agent.destroy();
  return counts;
}

describe('request limits', () => {
  test('the defaults set no request rate: a burst of 5 000 requests from one address gets no 429', async () => {
    expect(RELAY_DEFAULTS.streamsPerSecond).toBe(0);
    expect(RELAY_DEFAULTS.visitorStreamsPerSecond).toBe(0);
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const counts = await burst(t.relay.port, t.host, 5000, 50);
    expect(counts).toEqual({ 200: 5000 });
  });

  test('one address holding as many slow requests as the tunnel allows does not keep another from being served', async () => {
    const limit = 20;
    const held: http.ServerResponse[] = [];
    const t = await startTunnel(
      cleanup,
      (req, res) => {
        if (req.url === '/slow') held.push(res);
        else reply(res, 200, 'fast');
      },
      { relay: { maxRequestsPerTunnel: limit, statsIntervalMs: 50 } },
    );
    cleanup.add(() => held.forEach((res) => res.destroy()));
    // The greedy visitor (127.0.0.2) tries to open every slot with requests that never finish.
    const greedy = Array.from({ length: limit }, () =>
      t.request({ path: '/slow', localAddress: '127.0.0.2' }).catch(() => undefined),
    );
    const shareLimit = Math.ceil(FAIR_SHARE_FROM * limit);
    await waitFor(() => held.length >= shareLimit, `${shareLimit} slow requests at the local server`);
    const refused = (await Promise.race([
      Promise.all(greedy.slice(shareLimit)),
      new Promise((r) => setTimeout(r, 10_000)),
    ])) as ({ status: number; headers: http.IncomingHttpHeaders; body: Buffer } | undefined)[];
    // What the greedy address got beyond its share: 503 tunnel_busy that says why.
    expect(refused?.length).toBe(limit - shareLimit);
    for (const res of refused) {
      expect(res?.status).toBe(503);
      expect(res?.headers['x-ggrok-error']).toBe('tunnel_busy');
      expect(res?.body.toString()).toContain('Your address already has');
    }
    expect(held.length).toBe(shareLimit);
    expect(shareLimit).toBeGreaterThanOrEqual(FAIR_SHARE_MAX * limit);
    // Another visitor is still served while the greedy one holds its share.
    const other = await t.request({ path: '/', localAddress: '127.0.0.3' });
    expect([other.status, other.body.toString()]).toEqual([200, 'fast']);
    // The owner hears that visitors were turned away.
    await waitFor(
      () => (t.client.stats.get(0)?.refused ?? 0) === limit - shareLimit,
      'the refusals in Stats',
    );
  });

  test('with a per-visitor rate set, the abusive address gets 429 and another visitor is served', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      relay: { visitorStreamsPerSecond: 5 },
    });
    const abusive = await Promise.all(
      Array.from({ length: 40 }, () => t.request({ localAddress: '127.0.0.2' })),
    );
    const ok = abusive.filter((r) => r.status === 200).length;
    const limited = abusive.filter((r) => r.status === 429);
    expect(ok).toBeGreaterThanOrEqual(10); // the burst (2 × 5)
    expect(ok).toBeLessThan(20);
    expect(limited.length).toBe(40 - ok);
    expect(limited[0]!.headers['x-ggrok-error']).toBe('rate_limited');
    expect(limited[0]!.body.toString()).toContain('limit per visitor');
    const others = await Promise.all(
      Array.from({ length: 10 }, () => t.request({ localAddress: '127.0.0.3' })),
    );
    expect(others.map((r) => r.status)).toEqual(Array<number>(10).fill(200));
  });
});
