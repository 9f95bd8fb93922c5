// Resource hygiene: a thousand connects and disconnects and ten thousand aborted streams leave the relay's
// memory, handles and tunnels where they were, and leave no stream behind on the client.
import { spawn, type ChildProcess } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { afterEach, expect, test } from 'vitest';
import { TunnelClient, type OfflineInfo } from '../../cli/client.js';
import { parseTarget } from '../../cli/target.js';
import { Cleanup, rawRequest, ROOT, startClient, startLocal, TOKEN, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** What the relay process reports about itself. `heapUsed` is measured after forced garbage collections. */
interface RelayStats {
  heapUsed: number;
  rss: number;
  /** process.getActiveResourcesInfo(): what keeps the relay's event loop alive. */
  handles: number;
  resources: Record<string, number>;
  tunnels: number;
  activeRequests: number;
  activeChannels: number;
  /** Open streams summed over every tunnel's session. */
  streams: number;
  /** Public requests waiting for a reconnecting client. */
  waiters: number;
  /** Control sockets open, handshakes included. */
  wsClients: number;
  /** TCP connections the relay's server holds (public and control). */
  connections: number;
}

/**
 * The relay, alone in a process started with --expose-gc, so its heap and handles can be read without the
 * test's own. It prints `{"port":n}`, then answers each stdin line `stats` (after GC) or `counts` (no GC)
 * with one JSON line.
 */
const HARNESS = `
import readline from 'node:readline';
const { createRelay } = await import(process.env.GGROK_RELAY_MODULE);
const relay = createRelay({
  tokens: [process.env.GGROK_TEST_TOKEN],
  domain: 'localhost',
  // Ten thousand aborted requests in a few seconds are the point here, not the concurrency limit.
  maxRequestsPerTunnel: 100000,
});
const port = await relay.listen(0, '127.0.0.1');
const connections = () =>
  new Promise((resolve, reject) => relay.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
async function report(gc) {
  if (gc) for (let i = 0; i < 4; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
  const counts = relay.counts();
  const resources = process.getActiveResourcesInfo();
  const byType = {};
  for (const r of resources) byType[r] = (byType[r] ?? 0) + 1;
  const mem = process.memoryUsage();
  return {
    heapUsed: mem.heapUsed,
    rss: mem.rss,
    handles: resources.length,
    resources: byType,
    tunnels: relay.tunnelCount,
    activeRequests: counts.activeRequests,
    activeChannels: counts.activeChannels,
    streams: counts.openStreams,
    waiters: counts.waitingRequests,
    wsClients: counts.controlSockets,
    connections: await connections(),
  };
}
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  report(line === 'stats').then((s) => process.stdout.write(JSON.stringify(s) + '\\n'));
});
process.stdout.write(JSON.stringify({ port }) + '\\n');
`;

interface RelayProcess {
  port: number;
  url: string;
  /** Heap and handles after GC, plus counters. */
  stats: () => Promise<RelayStats>;
  /** Counters only (no GC), for polling. */
  counts: () => Promise<RelayStats>;
}

async function startRelayProcess(): Promise<RelayProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', HARNESS], {
    cwd: ROOT,
    env: {
      ...process.env,
      GGROK_RELAY_MODULE: pathToFileURL(path.join(ROOT, 'dist', 'relay', 'relay.js')).href,
      GGROK_TEST_TOKEN: TOKEN,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    const next = waiting.shift();
    if (next) next(line);
    else lines.push(line);
  });
  const nextLine = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const line = lines.shift();
      if (line !== undefined) return resolve(line);
      const timer = setTimeout(
        () => reject(new Error(`relay process did not answer; stderr:\n${stderr}`)),
        20_000,
      );
      waiting.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  // One question at a time: answers come back in order.
  let queue: Promise<unknown> = Promise.resolve();
  const ask = (command: 'stats' | 'counts'): Promise<RelayStats> => {
    const answer = queue.then(() => {
      child.stdin!.write(`${command}\n`);
      return nextLine();
    });
    queue = answer.catch(() => undefined);
    return answer.then((line) => JSON.parse(line) as RelayStats);
  };
  const { port } = JSON.parse(await nextLine()) as { port: number };
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats: () => ask('stats'),
    counts: () => ask('counts'),
  };
}

const MiB = 1024 * 1024;

/** Status line, error code and detail of a raw relay answer, for failure messages. */
function describeAnswer(raw: string): string {
  const status = raw.split('\r\n')[0] ?? '';
  const code = /x-ggrok-error: (\S+)/i.exec(raw)?.[1] ?? '';
  const detail = /<p>(.*?)<\/p>/.exec(raw)?.[1] ?? '';
  return `${status} ${code} ${detail}`.trim();
}

test('after 1 000 connect/disconnect cycles and 10 000 aborted streams, relay memory and handles return to their baseline', async () => {
  const t0 = Date.now();
  const relay = await startRelayProcess();

  // The local service: /hang/<i> never answers; /slow/<i> sends its head and one chunk, then stalls.
  const arrived = new Set<string>();
  let localClosed = 0;
  const local = await startLocal(cleanup, (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    if (url.startsWith('/hang/') || url.startsWith('/slow/')) {
      arrived.add(url);
      res.on('close', () => localClosed++);
      if (url.startsWith('/slow/')) {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.write(`first-chunk ${url}\n`);
      }
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`cycle ${url}`);
  });

  // One long-lived tunnel receives every aborted stream. Its target is 127.0.0.1, not `localhost`: the
  // latter goes through Node's happy-eyeballs timer, which a busy machine can trip (see the soak test).
  const abortClient = await startClient(cleanup, relay.url, `127.0.0.1:${local.port}`, {
    subdomain: 'abort',
  });
  const abortHost = `abort.localhost:${relay.port}`;

  /** Opens `count` public requests, waits until each reached the local service, then aborts them all. */
  let nextId = 0;
  async function abortBatch(count: number): Promise<void> {
    const sockets: net.Socket[] = [];
    /** Whatever went wrong with a request: a socket error or an unexpected answer. */
    const problems = new Map<string, string>();
    let ready = 0;
    const wanted: string[] = [];
    for (let k = 0; k < count; k++) {
      const id = nextId++;
      const slow = id % 2 === 1;
      const url = `/${slow ? 'slow' : 'hang'}/${id}`;
      wanted.push(url);
      const socket = net.connect(relay.port, '127.0.0.1');
      socket.on('error', (err: NodeJS.ErrnoException) => problems.set(url, err.code ?? err.message));
      socket.write(`GET ${url} HTTP/1.1\r\nHost: ${abortHost}\r\n\r\n`);
      let seen: string | undefined = '';
      socket.on('data', (c: Buffer) => {
        if (seen === undefined) return;
        seen += c.toString('latin1');
        if (slow && seen.includes(`first-chunk ${url}\n`)) {
          seen = undefined; // counted once
          ready++;
        } else if (!slow || /^HTTP\/1\.1 [^2]/.test(seen)) problems.set(url, describeAnswer(seen));
      });
      sockets.push(socket);
    }
    await waitFor(
      () => ready === count / 2 && wanted.every((u) => arrived.has(u)),
      `a batch of ${count} requests to reach the local service`,
      30_000,
    ).catch((err: Error) => {
      const missing = wanted.filter((u) => !arrived.has(u));
      throw new Error(
        `${err.message}: ${ready}/${count / 2} first chunks, ${missing.length} missing ` +
          `(${missing.slice(0, 5).join(' ')} …), problems ${JSON.stringify(Object.fromEntries([...problems].slice(0, 5)))} (${problems.size})`,
      );
    });
    // Half leave with a FIN, half with a TCP reset.
    sockets.forEach((s, k) => (k % 4 < 2 ? s.destroy() : s.resetAndDestroy()));
  }

  /** Connects and disconnects a real TunnelClient `count` times; `workers` at once, each on its own names. */
  let cyclesDone = 0;
  let cycleRequests = 0;
  async function cycles(count: number, workers: number): Promise<void> {
    let started = 0;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        while (started < count) {
          const i = started++;
          const client = new TunnelClient({
            server: relay.url,
            token: TOKEN,
            // Names rotate so a name is never reclaimed while the relay may still be closing its last owner.
            subdomain: `cycle-${w}-${i % 8}`,
            target: parseTarget(`127.0.0.1:${local.port}`),
            minBackoffMs: 50,
            maxBackoffMs: 500,
          });
          const info = await client.start();
          expect(info.name).toBe(`cycle-${w}-${i % 8}`);
          if (i % 25 === 0) {
            const res = await rawRequest({
              port: relay.port,
              path: `/c${i}`,
              headers: { Host: new URL(info.url).host },
            });
            expect(`${res.status} ${res.body.toString()}`).toBe(`200 cycle /c${i}`);
            cycleRequests++;
          }
          if (i % 2 === 1) {
            // An abrupt drop (no close handshake), then the client is stopped before it reconnects.
            const offline = new Promise<OfflineInfo>((r) => client.once('offline', r));
            client.dropConnection();
            await offline;
          }
          await client.close();
          cyclesDone++;
        }
      }),
    );
  }

  async function aborts(total: number, batch: number): Promise<void> {
    for (let done = 0; done < total; done += batch) await abortBatch(batch);
  }

  /** Waits until the relay holds nothing but the abort tunnel and every aborted request is gone everywhere. */
  async function settle(connections: number): Promise<RelayStats> {
    let last: RelayStats | undefined;
    await waitFor(
      async () => {
        last = await relay.counts();
        return (
          last.activeRequests === 0 &&
          last.streams === 0 &&
          last.tunnels === 1 &&
          last.connections === connections &&
          localClosed === arrived.size &&
          abortClient.openStreams === 0
        );
      },
      'the relay, the client and the local service to let go of every aborted request',
      30_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}: relay ${JSON.stringify(last)}, local closed ${localClosed}/${arrived.size}, ` +
          `client streams ${abortClient.openStreams}`,
      );
    });
    return last!;
  }

  /** The smallest of a few readings, so one unlucky GC moment does not count as growth. */
  async function measure(): Promise<RelayStats> {
    const readings = [await relay.stats(), await relay.stats(), await relay.stats()];
    return readings.reduce((a, b) => (b.heapUsed < a.heapUsed ? b : a));
  }

  // Warm-up: JIT code, pools and per-name bookkeeping reach their steady state.
  await cycles(50, 4);
  await aborts(500, 100);
  const afterWarmup = await settle(1);
  expect(afterWarmup).toMatchObject({ tunnels: 1, wsClients: 1, waiters: 0, activeChannels: 0 });
  const baseline = await measure();
  const tWarm = Date.now();

  await cycles(1000, 4);
  const tCycles = Date.now();
  await aborts(10_000, 200);
  const tAborts = Date.now();
  await settle(1);
  const after = await measure();
  const tEnd = Date.now();

  console.log(
    [
      `hygiene: warm-up ${tWarm - t0} ms, 1000 cycles ${tCycles - tWarm} ms, 10000 aborts ${tAborts - tCycles} ms, settle ${tEnd - tAborts} ms`,
      `  heapUsed ${(baseline.heapUsed / MiB).toFixed(2)} -> ${(after.heapUsed / MiB).toFixed(2)} MiB, ` +
        `rss ${(baseline.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB`,
      `  handles ${baseline.handles} ${JSON.stringify(baseline.resources)} -> ${after.handles} ${JSON.stringify(after.resources)}`,
      `  tunnels ${baseline.tunnels} -> ${after.tunnels}, connections ${baseline.connections} -> ${after.connections}, ` +
        `local requests ${arrived.size} (closed ${localClosed}), cycles ${cyclesDone} (${cycleRequests} with a request)`,
    ].join('\n'),
  );

  // Everything really happened: every aborted request reached the local service and was cancelled there.
  expect(cyclesDone).toBe(1050);
  expect(cycleRequests).toBe(2 + 40);
  expect(arrived.size).toBe(10_500);
  expect(localClosed).toBe(10_500);
  // Nothing is left behind.
  expect(abortClient.openStreams).toBe(0);
  expect(abortClient.busyLocalConnections).toBe(0);
  expect(after).toMatchObject({
    tunnels: baseline.tunnels,
    activeRequests: 0,
    activeChannels: 0,
    streams: 0,
    waiters: 0,
    wsClients: 1,
    connections: baseline.connections,
  });
  expect(Math.abs(after.handles - baseline.handles)).toBeLessThanOrEqual(2);
  // Measured: under 1 MiB, and flat over four times the work; a leak of a few hundred bytes per stream shows.
  expect(after.heapUsed - baseline.heapUsed).toBeLessThan(4 * MiB);
  // The abort tunnel still works.
  const res = await rawRequest({ port: relay.port, path: '/final', headers: { Host: abortHost } });
  expect(`${res.status} ${res.body.toString()}`).toBe('200 cycle /final');
}, 120_000);
