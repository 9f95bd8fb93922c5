// Webhook delivery: signed bodies, a deadline per delivery, and a bounded queue that drops instead of growing.
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { signBody, WebhookSender, type HookEvent } from '../../relay/hooks.js';
import type { RelayEvent } from '../../relay/log.js';
import { Cleanup, reply, startLocal, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const event = (name: string): HookEvent => ({
  event: 'connect',
  name,
  url: `http://${name}.example`,
  at: new Date().toISOString(),
});

/** A TCP server that accepts connections and never answers. */
async function silentServer(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => sockets.add(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

describe('WebhookSender', () => {
  it('signs the exact body with HMAC-SHA256', () => {
    const body = '{"event":"connect"}';
    expect(signBody(body, 'k')).toBe(`sha256=${createHmac('sha256', 'k').update(body).digest('hex')}`);
  });

  it('sends no signature header without a secret, and counts deliveries', async () => {
    const seen: (string | undefined)[] = [];
    const hook = await startLocal(cleanup, (req, res) => {
      seen.push(req.headers['x-ggrok-signature'] as string | undefined);
      reply(res, 200, 'ok');
    });
    const sender = new WebhookSender({ url: `http://127.0.0.1:${hook.port}/` });
    sender.send(event('a'));
    await sender.drain(5000);
    expect(seen).toEqual([undefined]);
    expect(sender.delivered).toBe(1);
  });

  it('a receiver that never answers times out; a full queue drops, counts and logs; send() never waits', async () => {
    const port = await silentServer();
    const logs: RelayEvent[] = [];
    let dropped = 0;
    const sender = new WebhookSender({
      url: `http://127.0.0.1:${port}/`,
      timeoutMs: 300,
      maxPending: 2,
      concurrency: 1,
      log: (e) => logs.push(e),
      onDropped: () => dropped++,
    });
    // send() never waits: it returns nothing to await, and all six are decided (queued or dropped) before the
    // receiver could have answered or timed out — order, not a stopwatch.
    const returned = [0, 1, 2, 3, 4, 5].map((i) => sender.send(event(`n${i}`)) as unknown);
    expect(returned).toEqual(Array(6).fill(undefined));
    expect(sender.delivered + sender.failed).toBe(0);
    // One in flight, two queued, three dropped.
    expect(sender.pending).toBe(3);
    expect(sender.dropped).toBe(3);
    expect(dropped).toBe(3);
    expect(logs.filter((e) => e.event === 'webhook_dropped')).toHaveLength(3);
    await waitFor(() => sender.failed === 3, 'three timeouts', 10_000);
    expect(logs.filter((e) => e.event === 'webhook_failed').map((e) => e.error)).toEqual([
      'timeout',
      'timeout',
      'timeout',
    ]);
    expect(sender.pending).toBe(0);
    // The URL is never logged (it may hold a secret).
    expect(JSON.stringify(logs)).not.toContain(String(port));
  });

  it('a non-2xx answer is a failure', async () => {
    const hook = await startLocal(cleanup, (_req, res) => reply(res, 500, 'no'));
    const logs: RelayEvent[] = [];
    const sender = new WebhookSender({ url: `http://127.0.0.1:${hook.port}/`, log: (e) => logs.push(e) });
    sender.send(event('x'));
    await sender.drain(5000);
    expect(sender.failed).toBe(1);
    expect(logs[0]).toMatchObject({ event: 'webhook_failed', error: 'HTTP 500' });
  });
});
