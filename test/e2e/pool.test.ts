// Endpoint pools on one relay: real clients sharing a name, balanced by requests in flight; upgrades pinned; refusals.
import http from 'node:http';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import type { PoolInfo, TunnelClient } from '../../cli/client.js';
import { ErrorCode } from '../../protocol/errors.js';
import {
  Cleanup,
  TOKEN,
  rawRequest,
  refusal,
  reply,
  runCli,
  startClient,
  startLocal,
  startRelay,
  type LocalServer,
  type TestRelay,
  waitFor,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A local service that answers with its own id after `delayMs` (so that requests overlap under load). */
async function member(id: string, delayMs = 5): Promise<LocalServer> {
  return startLocal(cleanup, (req, res) => {
    req.resume();
    setTimeout(() => reply(res, 200, id), delayMs);
  });
}

/** A pool client of `local` for the name `shop`. */
function poolClient(relay: TestRelay, local: LocalServer, token = TOKEN): Promise<TunnelClient> {
  return startClient(cleanup, relay.url, local.port, { subdomain: 'shop', pool: true, token });
}

/** GET / on the pool through the relay with a keep-alive agent; resolves with status and body. */
function get(relay: TestRelay, agent: http.Agent, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: relay.port, path, agent, headers: { Host: `shop.localhost:${relay.port}` } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Sends `total` GETs, `concurrency` at a time; counts answers by body (non-200s as `status:<n>`). */
async function load(relay: TestRelay, total: number, concurrency: number): Promise<Map<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const counts = new Map<string, number>();
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < total) {
      sent++;
      const r = await get(relay, agent);
      const key = r.status === 200 ? r.body : `status:${r.status}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return counts;
}

/** The pool size each client was last told. */
function sizes(clients: TunnelClient[]): number[] {
  return clients.map((c) => c.pools.get(0)?.size ?? 0);
}

describe('endpoint pools on one relay', () => {
  it('spreads requests over two and then three members, each with a share, and counts them per member', async () => {
    const relay = await startRelay(cleanup, { metricsToken: 'metrics-secret' });
    const locals = await Promise.all(['a', 'b', 'c'].map((id) => member(id)));
    const a = await poolClient(relay, locals[0]!);
    const poolEvents: PoolInfo[] = [];
    a.on('pool', (p) => poolEvents.push(p));
    const b = await poolClient(relay, locals[1]!);
    expect([a.url, b.url]).toEqual([
      `http://shop.localhost:${relay.port}`,
      `http://shop.localhost:${relay.port}`,
    ]);
    await waitForSizes([a, b], [2, 2]);

    const two = await load(relay, 200, 8);
    expect([...two.keys()].sort()).toEqual(['a', 'b']);
    for (const id of ['a', 'b']) expect(two.get(id)!).toBeGreaterThanOrEqual(50);

    const c = await poolClient(relay, locals[2]!);
    await waitForSizes([a, b, c], [3, 3, 3]);
    expect(poolEvents.map((p) => p.size)).toEqual([2, 3]);
    expect(new Set([a, b, c].map((x) => x.pools.get(0)!.member)).size).toBe(3);

    const three = await load(relay, 300, 9);
    expect([...three.keys()].sort()).toEqual(['a', 'b', 'c']);
    for (const id of ['a', 'b', 'c']) expect(three.get(id)!).toBeGreaterThanOrEqual(50);

    // The relay counts each member's requests; the status JSON lists the members with their health.
    const expected = (local: string): number => (two.get(local) ?? 0) + three.get(local)!;
    const counted = async (): Promise<number[]> => {
      const metrics = await fetchText(relay, '/_ggrok/metrics', { Authorization: 'Bearer metrics-secret' });
      return [a, b, c].map((client) => {
        const id = client.pools.get(0)!.member;
        const line = new RegExp(`ggrok_pool_member_requests_total\\{[^}]*member="${id}"[^}]*\\} (\\d+)`);
        return Number(line.exec(metrics)?.[1]);
      });
    };
    // A request is counted when its exchange closes on the relay, a moment after the visitor read the answer.
    await waitFor(
      async () => JSON.stringify(await counted()) === JSON.stringify(['a', 'b', 'c'].map(expected)),
      'per-member request counts',
    );
    const page = await fetchText(relay, '/_ggrok/status', { Authorization: 'Bearer metrics-secret' });
    for (const client of [a, b, c])
      expect(page).toContain(`pool member ${client.pools.get(0)!.member} · ${os.hostname()} · healthy`);
    const status = relay.relay.statusReport();
    expect(status.tunnels.map((t) => [t.name, t.pool?.health])).toEqual([
      ['shop', 'healthy'],
      ['shop', 'healthy'],
      ['shop', 'healthy'],
    ]);

    // A member that leaves shrinks the pool for the others.
    await c.close();
    await waitForSizes([a, b], [2, 2]);
  });

  it('sends each request to the member with the fewest requests in flight', async () => {
    const relay = await startRelay(cleanup);
    // Member "slow" holds its requests until released; "fast" answers at once.
    const held: http.ServerResponse[] = [];
    const slow = await startLocal(cleanup, (req, res) => {
      req.resume();
      held.push(res);
    });
    const fast = await member('fast', 0);
    const s = await poolClient(relay, slow);
    await poolClient(relay, fast);
    const agent = new http.Agent({ keepAlive: true });
    // Two requests: one lands on each (round-robin between idle members); the slow one stays in flight.
    const pending = [get(relay, agent), get(relay, agent)];
    await waitForCount(() => held.length, 1);
    const answered = await Promise.race(pending);
    expect(answered.body).toBe('fast');
    // With one request in flight on "slow", every next request goes to "fast".
    for (let i = 0; i < 10; i++) expect((await get(relay, agent)).body).toBe('fast');
    expect(held.length).toBe(1);
    for (const res of held) reply(res, 200, 'slow');
    expect((await Promise.all(pending)).map((r) => r.body).sort()).toEqual(['fast', 'slow']);
    agent.destroy();
    expect(s.pools.get(0)?.size).toBe(2);
  });

  it('keeps a WebSocket on the member that accepted it while other requests are balanced', async () => {
    const relay = await startRelay(cleanup);
    const clients: TunnelClient[] = [];
    for (const id of ['a', 'b']) {
      const local = await member(id);
      const wss = new WebSocketServer({ noServer: true });
      local.server.on('upgrade', (req, socket, head) =>
        wss.handleUpgrade(req, socket, head, (ws) =>
          ws.on('message', (m: Buffer) => ws.send(`${id}:${m.toString()}`)),
        ),
      );
      cleanup.add(() => wss.close());
      clients.push(await poolClient(relay, local));
    }
    await waitForSizes(clients, [2, 2]);
    const ws = new WebSocket(`ws://127.0.0.1:${relay.port}/`, {
      headers: { Host: `shop.localhost:${relay.port}` },
    });
    cleanup.add(() => ws.terminate());
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const replies: string[] = [];
    ws.on('message', (m: Buffer) => replies.push(m.toString()));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const bodies: string[] = [];
    for (let i = 0; i < 20; i++) {
      ws.send(`m${i}`);
      const rs = await Promise.all([get(relay, agent), get(relay, agent)]);
      bodies.push(...rs.map((r) => r.body));
    }
    await waitForCount(() => replies.length, 20);
    agent.destroy();
    const pinned = replies[0]!.split(':')[0]!;
    expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => `${pinned}:m${i}`));
    // The plain requests still reached both members.
    expect(new Set(bodies)).toEqual(new Set(['a', 'b']));
  });

  it('pools the one tunnel of a relay without a domain (own-host mode) too', async () => {
    const relay = await startRelay(cleanup, { domain: undefined });
    const clients: TunnelClient[] = [];
    for (const id of ['a', 'b']) {
      const local = await member(id);
      clients.push(await startClient(cleanup, relay.url, local.port, { pool: true }));
    }
    await waitForSizes(clients, [2, 2]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const bodies = await Promise.all(
      Array.from({ length: 40 }, async () => {
        const r = await rawRequest({ port: relay.port, agent, headers: { Host: `127.0.0.1:${relay.port}` } });
        return r.body.toString();
      }),
    );
    agent.destroy();
    expect(new Set(bodies)).toEqual(new Set(['a', 'b']));
    const plain = await refusal(startClient(cleanup, relay.url, 1));
    expect(plain.code).toBe(ErrorCode.NameInUse);
  });

  it('refuses a client without --pool, a pool client of another owner, and --pool on a name served without it', async () => {
    const other = 'other-token';
    const relay = await startRelay(cleanup, { tokens: [TOKEN, other] });
    const local = await member('a');
    await poolClient(relay, local);
    const plain = await refusal(startClient(cleanup, relay.url, local.port, { subdomain: 'shop' }));
    expect(plain.code).toBe(ErrorCode.NameInUse);
    const foreign = await refusal(poolClient(relay, local, other));
    expect(foreign.code).toBe(ErrorCode.NameInUse);
    await startClient(cleanup, relay.url, local.port, { subdomain: 'solo' });
    const late = await refusal(
      startClient(cleanup, relay.url, local.port, { subdomain: 'solo', pool: true }),
    );
    expect(late.code).toBe(ErrorCode.NameInUse);
    expect(relay.relay.tunnelCount).toBe(2);
  });
});

describe('endpoint pool health checks (--health-path)', () => {
  it('keeps a member whose own check fails out of the pool, and takes it back when the check passes', async () => {
    const relay = await startRelay(cleanup);
    let bHealthy = true;
    const seen = { a: 0, b: 0 };
    const service = (id: 'a' | 'b') =>
      startLocal(cleanup, (req, res) => {
        req.resume();
        if (req.url === '/healthz') return reply(res, id === 'b' && !bHealthy ? 503 : 200, 'ok');
        seen[id]++;
        reply(res, 200, id);
      });
    const clients: TunnelClient[] = [];
    const health: string[] = [];
    for (const id of ['a', 'b'] as const) {
      const local = await service(id);
      const client = await startClient(cleanup, relay.url, local.port, {
        subdomain: 'shop',
        pool: true,
        healthPath: '/healthz',
        healthIntervalMs: 100,
      });
      client.on('health', (h) => health.push(`${id}:${h.ok}`));
      clients.push(client);
    }
    await waitForSizes(clients, [2, 2]);
    const memberHealth = (): (string | undefined)[] =>
      relay.relay.statusReport().tunnels.map((t) => t.pool?.health);
    // The first results may come before the listeners above: count the changes from here on.
    health.length = 0;
    bHealthy = false;
    await waitFor(() => memberHealth()[1] === 'out', "b's failing check to reach the relay");
    const before = seen.b;
    const out = await load(relay, 60, 4);
    expect(out.get('a')).toBe(60);
    expect(seen.b).toBe(before);
    bHealthy = true;
    await waitFor(() => memberHealth()[1] === 'healthy', "b's passing check to reach the relay");
    const back = await load(relay, 60, 4);
    expect(back.get('b')).toBeGreaterThanOrEqual(15);
    expect(health).toEqual(['b:false', 'b:true']);
  });

  it('is refused without --pool, and must be a path', async () => {
    const without = runCli(cleanup, ['http', '3000', '--health-path', '/healthz', '--token', TOKEN]);
    expect(await without.exited).toBe(2);
    expect(without.stderr()).toMatch(/--health-path needs --pool/);
    const relative = runCli(cleanup, [
      'http',
      '3000',
      '--pool',
      '--health-path',
      'healthz',
      '--token',
      TOKEN,
    ]);
    expect(await relative.exited).toBe(2);
    expect(relative.stderr()).toMatch(/must start with \//);
  });
});

/** Waits until each client was told the pool size expected of it. */
async function waitForSizes(clients: TunnelClient[], expected: number[]): Promise<void> {
  const until = Date.now() + 10_000;
  while (JSON.stringify(sizes(clients)) !== JSON.stringify(expected)) {
    if (Date.now() > until)
      throw new Error(`pool sizes ${JSON.stringify(sizes(clients))}, expected ${JSON.stringify(expected)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function waitForCount(count: () => number, atLeast: number): Promise<void> {
  const until = Date.now() + 10_000;
  while (count() < atLeast) {
    if (Date.now() > until) throw new Error(`count ${count()}, expected at least ${atLeast}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function fetchText(relay: TestRelay, path: string, headers: Record<string, string>): Promise<string> {
  const res = await fetch(`${relay.url}${path}`, { headers });
  return res.text();
}
