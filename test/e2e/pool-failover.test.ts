// Endpoint pools under failure: a member's local service stopping, a member killed or stopped, with GETs running.
import http from 'node:http';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import type { TunnelClient } from '../../cli/client.js';
import {
  Cleanup,
  TOKEN,
  reply,
  runCli,
  sleep,
  startClient,
  startLocal,
  startRelay,
  waitFor,
  type CliProcess,
  type LocalServer,
  type TestRelay,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A local service that answers with its own id after a few ms. */
function handler(id: string): http.RequestListener {
  return (req, res) => {
    req.resume();
    setTimeout(() => reply(res, 200, id), 3);
  };
}

function poolClient(relay: TestRelay, local: LocalServer): Promise<TunnelClient> {
  return startClient(cleanup, relay.url, local.port, { subdomain: 'shop', pool: true });
}

/** A `ggrok http --pool` process for `port`; resolves once it is online. */
async function poolProcess(relay: TestRelay, port: number): Promise<CliProcess> {
  const p = runCli(cleanup, [
    'http',
    String(port),
    '--subdomain',
    'shop',
    '--pool',
    '--server',
    relay.url,
    '--token',
    TOKEN,
    '--log-format',
    'json',
  ]);
  await p.waitForOutput(/"event":"pool"/);
  return p;
}

/** Answers seen by a load run: by body for 200s, `status:<n>` or `error:<code>` otherwise, with when they came. */
interface Tally {
  counts: Map<string, number>;
  /** [ms since start, answer] of every answer. */
  log: [number, string][];
  failures: string[];
  /** Date.now() when the load started. */
  startedAt: number;
}

/**
 * Sends GETs, `concurrency` at a time, for `ms` (and at most `maxRequests`); `during` runs alongside and the load
 * stops when both are done.
 */
async function loadWhile(
  relay: TestRelay,
  concurrency: number,
  ms: number,
  during: () => Promise<void>,
  maxRequests = 20_000,
): Promise<Tally> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const start = Date.now();
  const tally: Tally = { counts: new Map(), log: [], failures: [], startedAt: start };
  let sent = 0;
  let stop = false;
  const one = (): Promise<string> =>
    new Promise((resolve) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: relay.port,
          path: '/',
          agent,
          headers: { Host: `shop.localhost:${relay.port}` },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(res.statusCode === 200 ? body : `status:${res.statusCode}`));
          res.on('error', (e: NodeJS.ErrnoException) => resolve(`error:${e.code ?? e.message}`));
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => resolve(`error:${e.code ?? e.message}`));
      req.end();
    });
  const worker = async (): Promise<void> => {
    while (!stop && sent < maxRequests) {
      sent++;
      const answer = await one();
      tally.log.push([Date.now() - start, answer]);
      tally.counts.set(answer, (tally.counts.get(answer) ?? 0) + 1);
      if (answer.includes(':')) tally.failures.push(answer);
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  await Promise.all([during(), sleep(ms)]);
  stop = true;
  await Promise.all(workers);
  agent.destroy();
  return tally;
}

describe('endpoint pool failover', () => {
  it('takes a member whose local service stopped out without failing GETs, and back once it restarts', async () => {
    const relay = await startRelay(cleanup, { streamsPerSecond: 100_000 });
    const a = await startLocal(cleanup, handler('a'));
    const b = await startLocal(cleanup, handler('b'));
    await poolClient(relay, a);
    const bc = await poolClient(relay, b);
    await waitFor(() => bc.pools.get(0)?.size === 2, 'pool of 2');
    let restartedAt = 0;
    const tally = await loadWhile(relay, 6, 6000, async () => {
      await sleep(1000);
      // Stop b's service with requests in flight on it.
      b.server.close();
      b.server.closeAllConnections();
      await sleep(1500);
      b.server.listen(b.port, '127.0.0.1');
      await once(b.server, 'listening');
      restartedAt = Date.now();
    });
    expect(tally.failures.length).toBeLessThanOrEqual(1);
    // Requests in flight on b when its service stopped, and b's probes while it was down, went to a instead.
    expect(relay.relay.metrics.retries).toBeGreaterThan(0);
    expect(tally.counts.get('a')).toBeGreaterThan(100);
    // b served before it stopped and again after its service came back (its back-off is a few seconds at most).
    const restartMs = restartedAt - tally.startedAt;
    expect(tally.log.some(([t, answer]) => answer === 'b' && t < 1000)).toBe(true);
    expect(tally.log.filter(([t, answer]) => answer === 'b' && t > restartMs).length).toBeGreaterThan(10);
    const status = relay.relay.statusReport().tunnels.map((t) => t.pool?.health);
    expect(status).toEqual(['healthy', 'healthy']);
  });

  it('fails no GET when a member is killed with SIGKILL under load', async () => {
    const relay = await startRelay(cleanup, { streamsPerSecond: 100_000 });
    const a = await startLocal(cleanup, handler('a'));
    const b = await startLocal(cleanup, handler('b'));
    const ac = await poolClient(relay, a);
    const killed = await poolProcess(relay, b.port);
    await waitFor(() => ac.pools.get(0)?.size === 2, 'pool of 2');
    const tally = await loadWhile(relay, 8, 3000, async () => {
      await sleep(1000);
      killed.child.kill('SIGKILL');
      await killed.exited;
    });
    expect(tally.failures).toEqual([]);
    expect(relay.relay.metrics.retries).toBeGreaterThan(0);
    expect(tally.counts.get('b')).toBeGreaterThan(20);
    expect(tally.log.at(-1)![1]).toBe('a');
    await waitFor(() => ac.pools.get(0)?.size === 1, 'pool of 1');
  });

  it('fails no request when a member stops with SIGTERM under load: it drains first', async () => {
    const relay = await startRelay(cleanup, { streamsPerSecond: 100_000 });
    const a = await startLocal(cleanup, handler('a'));
    // b's answers take a while, so that requests are in flight on it when it is told to stop.
    const b = await startLocal(cleanup, (req, res) => {
      req.resume();
      setTimeout(() => reply(res, 200, 'b'), 150);
    });
    const ac = await poolClient(relay, a);
    const stopped = await poolProcess(relay, b.port);
    await waitFor(() => ac.pools.get(0)?.size === 2, 'pool of 2');
    let exitCode: number | null = -1;
    const tally = await loadWhile(relay, 8, 3000, async () => {
      await sleep(1000);
      stopped.child.kill('SIGTERM');
      exitCode = await stopped.exited;
    });
    expect(exitCode).toBe(0);
    expect(tally.failures).toEqual([]);
    expect(tally.counts.get('b')).toBeGreaterThan(5);
    expect(b.requests.length).toBe(tally.counts.get('b'));
    // Nothing had to be retried: b finished what it had and got nothing new.
    expect(relay.relay.metrics.retries).toBe(0);
    // Its JSON output showed the pool's size and which member served each request.
    const lines = stopped
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; size?: number; member?: string });
    const member = lines.find((l) => l.event === 'pool' && l.size === 2)?.member;
    expect(member).toMatch(/^[0-9a-f]{8}$/);
    const served = lines.filter((l) => l.event === 'request');
    expect(served.length).toBe(tally.counts.get('b'));
    expect(served.every((l) => l.member === member)).toBe(true);
    await waitFor(() => ac.pools.get(0)?.size === 1, 'pool of 1');
  });

  it('takes out a member whose control socket stops answering (SIGSTOP) without failing a GET', async () => {
    // A frozen member is dropped after 2 s of silence; its requests in flight go to the other member.
    const relay = await startRelay(cleanup, {
      streamsPerSecond: 100_000,
      heartbeatMs: 500,
      deadAfterMs: 2000,
    });
    const a = await startLocal(cleanup, handler('a'));
    const b = await startLocal(cleanup, handler('b'));
    const ac = await poolClient(relay, a);
    const frozen = await poolProcess(relay, b.port);
    await waitFor(() => ac.pools.get(0)?.size === 2, 'pool of 2');
    const tally = await loadWhile(relay, 8, 5000, async () => {
      await sleep(1000);
      frozen.child.kill('SIGSTOP');
      await waitFor(() => ac.pools.get(0)?.size === 1, 'the frozen member to be dropped', 10_000);
    });
    frozen.child.kill('SIGCONT');
    expect(tally.failures).toEqual([]);
    // The requests that were stuck on the frozen member were answered by the other one.
    expect(relay.relay.metrics.retries).toBeGreaterThan(0);
    expect(tally.counts.get('b')).toBeGreaterThan(20);
    expect(tally.log.at(-1)![1]).toBe('a');
  });
});
