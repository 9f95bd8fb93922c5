// A relay cluster for real: three relay processes, one redis-server, a random L4 front (as Heroku's router) or a
// Fly-like front, real clients and local servers. Instances die, restart, stall; Redis dies and comes back empty.
import http, { type IncomingMessage } from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import type { TunnelClient } from '../../cli/client.js';
import { Cleanup, refusal, reply, sleep, startClient, startLocal, TOKEN, waitFor } from '../helpers.js';
import {
  freePort,
  startFlyFront,
  startL4Front,
  startRedis,
  startRelayProcess,
  type L4Front,
  type RedisServer,
  type RelayProcess,
} from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Ms the client has, after printing its URL, to be attached to every instance (the contract says 10 s). */
const ATTACH_WITHIN_MS = 10_000;

interface Cluster {
  redis: RedisServer;
  front: L4Front;
  /** Instances being stopped: the front sends them no new connections. */
  draining: Set<RelayProcess>;
  relays: RelayProcess[];
  /** The front visitors and clients use: http://127.0.0.1:<port>. */
  url: string;
  port: number;
}

/**
 * Starts redis-server, `n` relay processes sharing it (instances r1…rn, each with its --peer-url on loopback), and a
 * random L4 front over them.
 */
async function startCluster(n = 3, extra: (i: number) => string[] = () => []): Promise<Cluster> {
  const redis = await startRedis(cleanup);
  const relays: RelayProcess[] = [];
  for (let i = 1; i <= n; i++) {
    const port = await freePort();
    const args = ['--redis', redis.url, '--instance-id', `r${i}`, '--peer-url', `http://127.0.0.1:${port}`];
    relays.push(await startRelayProcess(cleanup, [...args, ...extra(i)], { port }));
  }
  // Like Heroku's router and Fly's proxy, the front stops sending new connections to an instance told to stop.
  const draining = new Set<RelayProcess>();
  const front = await startL4Front(cleanup, () =>
    relays.filter((r) => r.running && !draining.has(r)).map((r) => r.port),
  );
  return { redis, relays, front, draining, url: front.url, port: front.port };
}

interface StatusJson {
  instance: string;
  cluster?: { redis: string; members: { id: string; self: boolean; tunnels: number }[] };
}

interface Health {
  instance: string;
  tunnels: number;
  cluster?: { redis: string; members: string[] };
}

async function health(relay: RelayProcess): Promise<Health> {
  const res = await get(relay.port, '/_ggrok/health', '127.0.0.1');
  return JSON.parse(res.body) as Health;
}

/** A GET with a Host header, collecting status and body (agent false: a new connection, so the front picks anew). */
function get(
  port: number,
  path: string,
  host: string,
  timeoutMs = 10_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { Host: host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** A local service that answers each request with its own id: a response carrying another's body shows at once. */
async function echoService(label = 'local') {
  return startLocal(cleanup, (req: IncomingMessage, res) => reply(res, 200, `${label} ${req.url}`));
}

/** Waits until the client holds a socket to every running instance. */
async function attachedToAll(client: TunnelClient, c: Cluster): Promise<void> {
  const ids = c.relays.filter((r) => r.running).map((_, i) => `r${i + 1}`);
  await waitFor(
    () => c.relays.filter((r) => r.running).length === client.instances.length,
    `the client to attach to ${ids.join(', ')}`,
    ATTACH_WITHIN_MS,
  ).catch((err: Error) => {
    throw new Error(
      `${err.message}: it has ${client.instances.join(', ')}; the front sent ${JSON.stringify([...c.front.perBackend])}; ` +
        `relays: ${c.relays.map((r) => `${r.port}${r.running ? '' : ' (down)'}: ${r.output().slice(-400)}`).join(' | ')}`,
    );
  });
}

/**
 * Steady load through the front: `concurrency` loops of GETs with unique paths, each checked against its own
 * answer. Returns the outcomes with their times, once stop() is called.
 */
function steadyLoad(port: number, host: string, concurrency = 4) {
  const outcomes: { at: number; ok: boolean; why?: string }[] = [];
  let running = true;
  let seq = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      const id = `/req-${++seq}`;
      const at = Date.now();
      try {
        const res = await get(port, id, host, 8000);
        const ok = res.status === 200 && res.body === `local ${id}`;
        outcomes.push({ at, ok, why: ok ? undefined : `${res.status} ${res.body.slice(0, 80)}` });
        if (res.status === 200 && res.body !== `local ${id}`)
          throw new Error(`response for ${id} carried another request's body: ${res.body.slice(0, 80)}`);
      } catch (err) {
        if ((err as Error).message.includes('another request')) throw err;
        outcomes.push({ at, ok: false, why: (err as Error).message });
        await sleep(20);
      }
    }
  });
  return {
    outcomes,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

describe('a cluster behind a random front', () => {
  test('a client attaches to every instance within 10 s; requests and WebSockets are served whichever instance they hit', async () => {
    const c = await startCluster(3);
    const local = await echoService();
    const wss = new WebSocketServer({ server: local.server });
    wss.on('connection', (ws) => ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`)));
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'demo' });
    const printedAt = Date.now();
    await attachedToAll(client, c);
    expect(Date.now() - printedAt).toBeLessThan(ATTACH_WITHIN_MS);
    expect(client.instances).toEqual(['r1', 'r2', 'r3']);
    for (const relay of c.relays) {
      // Each instance reads the others' leases every 1.5 s: its view of the members converges within that.
      await waitFor(
        async () => (await health(relay)).cluster?.members.length === 3,
        'the members to converge',
      );
      const h = await health(relay);
      expect(h).toMatchObject({ tunnels: 1, cluster: { redis: 'up', members: ['r1', 'r2', 'r3'] } });
      // Straight to each instance: every one serves the tunnel from its own socket.
      expect((await get(relay.port, `/via-${h.instance}`, `demo.localhost`)).body).toBe(
        `local /via-${h.instance}`,
      );
    }
    // The status page lists every instance with the tunnels it carries, escaped, behind the bearer token.
    const status = async (): Promise<StatusJson> => {
      const res = await fetch(`http://127.0.0.1:${c.relays[0]!.port}/_ggrok/status?format=json`, {
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
      return (await res.json()) as StatusJson;
    };
    await waitFor(
      async () => (await status()).cluster?.members.every((m) => m.tunnels === 1) === true,
      'every member to report its tunnel',
    );
    expect((await status()).cluster).toMatchObject({
      redis: 'up',
      members: [
        { id: 'r1', self: true, tunnels: 1 },
        { id: 'r2', self: false, tunnels: 1 },
        { id: 'r3', self: false, tunnels: 1 },
      ],
    });
    const html = await fetch(`http://127.0.0.1:${c.relays[0]!.port}/_ggrok/status`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
    }).then((r) => r.text());
    expect(html).toContain('<h2>Cluster</h2>');
    expect(html).toContain('3 instances');
    for (let i = 0; i < 12; i++)
      expect((await get(c.port, `/x${i}`, 'demo.localhost')).body).toBe(`local /x${i}`);
    // WebSockets through the front, several connections (so several instances).
    for (let i = 0; i < 4; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${c.port}/ws`, { headers: { Host: 'demo.localhost' } });
      cleanup.add(() => ws.terminate());
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => ws.send(`hello ${i}`));
        ws.once('message', (m: Buffer) => {
          expect(m.toString()).toBe(`echo hello ${i}`);
          resolve();
        });
        ws.once('error', reject);
      });
      ws.close();
    }
  }, 60_000);

  test('a name held through one instance is refused to another owner through any', async () => {
    const c = await startCluster(3, () => ['--token', 'test-token', '--token', 'other-owner']);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'mine' });
    await attachedToAll(client, c);
    for (const relay of c.relays) {
      const err = await refusal(
        startClient(cleanup, relay.url, local.port, { subdomain: 'mine', token: 'other-owner' }),
      );
      expect(err.code).toBe('name_in_use');
    }
    // Gone, the name is still held for its owner through every instance (the hold is in Redis).
    await client.close();
    await waitFor(async () => (await health(c.relays[0]!)).tunnels === 0, 'the tunnel to go');
    for (const relay of c.relays) {
      const err = await refusal(
        startClient(cleanup, relay.url, local.port, { subdomain: 'mine', token: 'other-owner' }),
      );
      expect([err.code, err.message]).toEqual(['name_in_use', expect.stringContaining('held')]);
    }
  }, 60_000);

  test("kill -9 of one instance under load: nothing fails later than 5 s after the kill; no response is another request's", async () => {
    const c = await startCluster(3);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'demo' });
    await attachedToAll(client, c);
    const load = steadyLoad(c.port, 'demo.localhost');
    await sleep(1500);
    const killedAt = Date.now();
    await c.relays[1]!.kill('SIGKILL');
    await sleep(8000);
    const outcomes = await load.stop();
    const late = outcomes.filter((o) => !o.ok && o.at > killedAt + 5000);
    expect(late, JSON.stringify(late.slice(0, 5))).toEqual([]);
    expect(outcomes.filter((o) => o.ok && o.at > killedAt + 5000).length).toBeGreaterThan(20);
    expect(outcomes.filter((o) => o.ok && o.at < killedAt).length).toBeGreaterThan(10);
  }, 60_000);

  test('a rolling restart (SIGTERM, start again, next) under steady load fails no request', async () => {
    const c = await startCluster(3);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'demo' });
    await attachedToAll(client, c);
    const load = steadyLoad(c.port, 'demo.localhost');
    for (const relay of c.relays) {
      c.draining.add(relay);
      expect(await relay.stop()).toBe(0);
      c.draining.delete(relay);
      await relay.restart();
      await attachedToAll(client, c);
    }
    await sleep(500);
    const outcomes = await load.stop();
    const failed = outcomes.filter((o) => !o.ok);
    expect(failed, JSON.stringify(failed.slice(0, 5))).toEqual([]);
    expect(outcomes.length).toBeGreaterThan(30);
  }, 120_000);

  test('every instance killed and restarted: the owner gets the same URL back; another owner cannot take it meanwhile', async () => {
    const c = await startCluster(3, () => ['--token', 'test-token', '--token', 'other-owner']);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'keep' });
    await attachedToAll(client, c);
    const url = client.url;
    for (const relay of c.relays) await relay.kill('SIGKILL');
    await c.relays[0]!.restart();
    // The client is reconnecting; another owner asks first and is refused: the name is held in Redis.
    const err = await refusal(
      startClient(cleanup, c.relays[0]!.url, local.port, { subdomain: 'keep', token: 'other-owner' }),
    );
    expect(err.code).toBe('name_in_use');
    for (const relay of c.relays.slice(1)) await relay.restart();
    await attachedToAll(client, c);
    expect(client.url).toBe(url);
    expect((await get(c.port, '/back', 'keep.localhost')).body).toBe('local /back');
  }, 90_000);
});

describe('Redis trouble', () => {
  test('Redis killed: open tunnels keep serving on every instance; new names are refused with a clear reason', async () => {
    const c = await startCluster(3);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'demo' });
    await attachedToAll(client, c);
    await c.redis.kill();
    await waitFor(async () => (await health(c.relays[0]!)).cluster?.redis === 'down', 'the relays to notice');
    for (const relay of c.relays)
      expect((await get(relay.port, '/still', 'demo.localhost')).body).toBe('local /still');
    const err = await refusal(startClient(cleanup, c.url, local.port, { subdomain: 'fresh' }));
    expect([err.code, err.message]).toEqual(['cluster_unavailable', expect.stringContaining('Redis')]);
  }, 60_000);

  test('Redis restarted empty: state is rebuilt and new tunnels are accepted within 10 s', async () => {
    const c = await startCluster(3);
    const local = await echoService();
    const client = await startClient(cleanup, c.url, local.port, { subdomain: 'demo' });
    await attachedToAll(client, c);
    await c.redis.restart();
    const restartedAt = Date.now();
    await waitFor(
      async () => {
        const h = await health(c.relays[2]!);
        return h.cluster?.redis === 'up' && h.cluster.members.length === 3;
      },
      'the members to re-register',
      10_000,
    );
    const fresh = await startClient(cleanup, c.url, local.port, { subdomain: 'fresh' });
    expect(Date.now() - restartedAt).toBeLessThan(10_000);
    expect(fresh.url).toMatch(/^http:\/\/fresh\.localhost:/);
    // The old name was re-registered for its owner: another owner's claim is refused.
    expect((await get(c.port, '/after', 'demo.localhost')).body).toBe('local /after');
  }, 60_000);
});

describe('fencing', () => {
  test('an instance stopped (SIGSTOP) while its name was taken over never serves it through the old socket', async () => {
    const c = await startCluster(2);
    const oldService = await echoService('old');
    const newService = await echoService('new');
    // The old client holds a socket to r1 only (dialed directly; it never sees r2).
    const old = await startClient(cleanup, c.relays[0]!.url, oldService.port, { subdomain: 'fenced' });
    await waitFor(async () => (await health(c.relays[0]!)).tunnels === 1, 'the old tunnel');
    await c.relays[0]!.pause();
    // r1's lease runs out; the owner's new process takes the name over through r2.
    await waitFor(
      async () => (await health(c.relays[1]!)).cluster?.members.length === 1,
      'r1 to leave',
      15_000,
    );
    const fresh = await startClient(cleanup, c.relays[1]!.url, newService.port, { subdomain: 'fenced' });
    expect(fresh.url).toContain('fenced.');
    await c.relays[0]!.resume();
    // Straight to r1 after it wakes up: it must never answer through the superseded socket.
    for (let i = 0; i < 5; i++) {
      const res = await get(c.relays[0]!.port, `/wake${i}`, 'fenced.localhost');
      expect(res.body).not.toContain('old');
    }
    void old;
  }, 60_000);
});

describe('fallbacks to the instance that holds the tunnel', () => {
  test('--peer-url: an instance without a socket forwards to one that has it, visitor and host vouched for', async () => {
    const c = await startCluster(2);
    const seen: IncomingMessage[] = [];
    const local = await startLocal(cleanup, (req, res) => {
      seen.push(req);
      reply(res, 200, `local ${req.url}`);
    });
    const wss = new WebSocketServer({ server: local.server });
    wss.on('connection', (ws) => ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`)));
    // Dialed straight at r1, the client cannot reach r2 (no front, no --instance-url): r2 must forward.
    const client = await startClient(cleanup, c.relays[0]!.url, local.port, { subdomain: 'far' });
    expect(client.instances).toEqual(['r1']);
    await waitFor(async () => (await health(c.relays[1]!)).cluster?.members.length === 2, 'r2 to see r1');
    await sleep(2000); // r2 reads r1's lease (what it serves) on its next tick
    const res = await get(c.relays[1]!.port, '/forwarded?x=1', 'far.localhost');
    expect(res).toEqual({ status: 200, body: 'local /forwarded?x=1' });
    const req = seen.at(-1)!;
    expect(req.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(req.headers['x-forwarded-host']).toBe('far.localhost');
    expect(req.headers['x-ggrok-peer']).toBeUndefined();
    // An upgrade goes the same way.
    const ws = new WebSocket(`ws://127.0.0.1:${c.relays[1]!.port}/ws`, {
      headers: { Host: 'far.localhost' },
    });
    cleanup.add(() => ws.terminate());
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('through r2'));
      ws.once('message', (m: Buffer) => resolve(m.toString()));
      ws.once('error', reject);
    });
    expect(echoed).toBe('echo through r2');
    // A forged peer header is refused outright.
    const forged = await new Promise<number>((resolve, reject) => {
      http
        .get(
          {
            host: '127.0.0.1',
            port: c.relays[1]!.port,
            path: '/',
            agent: false,
            headers: {
              Host: 'far.localhost',
              'X-Ggrok-Peer': `v1 r1 10.0.0.1 https ${Date.now()} ${'0'.repeat(64)}`,
            },
          },
          (r) => {
            r.resume();
            resolve(r.statusCode ?? 0);
          },
        )
        .on('error', reject);
    });
    expect(forged).toBe(403);
  }, 60_000);

  test('on Fly: clients attach to every machine with fly-force-instance-id; a machine without a socket answers fly-replay', async () => {
    const redis = await startRedis(cleanup);
    const machines = new Map<string, number>();
    const relays: RelayProcess[] = [];
    for (const id of ['m1', 'm2', 'm3']) {
      const relay = await startRelayProcess(cleanup, ['--redis', redis.url], {
        env: { FLY_APP_NAME: 'ggrok-test', FLY_MACHINE_ID: id },
      });
      relays.push(relay);
      machines.set(id, relay.port);
    }
    const front = await startFlyFront(cleanup, () => machines);
    const local = await echoService();
    const client = await startClient(cleanup, front.url, local.port, { subdomain: 'flying' });
    await waitFor(() => client.instances.length === 3, 'the client on all three machines', ATTACH_WITHIN_MS);
    expect(client.instances).toEqual(['m1', 'm2', 'm3']);
    for (let i = 0; i < 6; i++)
      expect((await get(front.port, `/f${i}`, 'flying.localhost')).body).toBe(`local /f${i}`);
    // A second tunnel dialed straight at m1 only: the other machines replay its visitors to m1.
    const onlyM1 = await startClient(cleanup, relays[0]!.url, local.port, { subdomain: 'pinned' });
    expect(onlyM1.instances).toEqual(['m1']);
    await sleep(2000); // the other machines read m1's lease on their next tick
    const replaysBefore = front.replays;
    for (let i = 0; i < 9; i++)
      expect((await get(front.port, `/p${i}`, 'pinned.localhost')).body).toBe(`local /p${i}`);
    expect(front.replays).toBeGreaterThan(replaysBefore);
  }, 60_000);
});
