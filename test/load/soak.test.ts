// Soak: 30 concurrent uploads for about 30 s through client kills and a relay restart. Every answer is the
// request's own body, every failure is a clean relay error or a refused/reset connection, and nothing hangs.
// Then each failure mode the soak can meet by chance, forced on purpose.
import { createHash, randomBytes, randomInt } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import {
  Cleanup,
  rawRequest,
  runCli,
  sleep,
  startLocal,
  startTunnel,
  TOKEN,
  waitFor,
  type CliProcess,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const WORKERS = 30;
/** Load runs at least this long, and until TAIL_MS after the last disruption is over. */
const SOAK_MS = 30_000;
const TAIL_MS = 4_000;
/** Hard stop for the load whatever happens. */
const MAX_SOAK_MS = 80_000;
/** Upper bound per worker, so the loop is bounded by count as well as by time. */
const MAX_REQUESTS_PER_WORKER = 5000;
/** A request still unanswered after this long is a hang, and fails the test. */
const REQUEST_TIMEOUT_MS = 15_000;
const MAX_BODY_BYTES = 256 * 1024;
/** The disruptions in order, each GAP_MS after the previous one is over: client SIGKILL + restart, or relay SIGTERM + restart on its port. */
const SCHEDULE = ['client', 'client', 'relay', 'client', 'client'] as const;
const GAP_MS = 5_000;
/**
 * A relay told to stop finishes its in-flight requests (here well under a second each) and exits within this: long
 * before its 25 s drain deadline, which is what a relay waiting for the traffic to stop would take.
 */
const RELAY_STOP_MS = 15_000;
/**
 * Relay error pages a public client may meet while a client or the relay restarts: the tunnel dropped
 * mid-request (502), or its client did not come back in time (503). The local service never goes down
 * here, so a 502 local_unreachable is not among them.
 */
const CLEAN_ERRORS = new Set(['502 tunnel_closed', '503 tunnel_offline']);
/** Connection-level failures that are clean: refused while the relay restarts, reset or cut when a side goes. */
const CLEAN_NET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'cut']);

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

type Outcome =
  | { kind: 'response'; status: number; headers: IncomingHttpHeaders; body: Buffer }
  | { kind: 'net'; code: string }
  | { kind: 'hang' };

/** One POST with a deadline; never rejects. */
function post(agent: http.Agent, port: number, host: string, id: string, body: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: `/echo/${id}`,
      agent,
      headers: {
        Host: host,
        'Content-Type': 'application/octet-stream',
        'Content-Length': body.length,
        'X-Soak-Id': id,
      },
    });
    const timer = setTimeout(() => {
      finish({ kind: 'hang' });
      req.destroy();
    }, REQUEST_TIMEOUT_MS);
    req.on('error', (err: NodeJS.ErrnoException) => finish({ kind: 'net', code: err.code ?? err.message }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => {}); // 'close' without 'end' below says it was cut
      res.on('end', () =>
        finish({
          kind: 'response',
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
        }),
      );
      res.on('close', () => {
        if (!res.complete) finish({ kind: 'net', code: 'cut' });
      });
    });
    req.end(body);
  });
}

/** A body of 0..256 KiB: often small, sometimes empty or exactly the maximum. */
function randomBody(): Buffer {
  const r = Math.random();
  const size =
    r < 0.05 ? 0 : r < 0.1 ? MAX_BODY_BYTES : r < 0.5 ? randomInt(1, 4097) : randomInt(4097, MAX_BODY_BYTES);
  return randomBytes(size);
}

test('30 workers for 30 s through client kills and a relay restart: own bodies only, clean failures, no hang', async () => {
  // The local service echoes the body with its sha256 and the request's id, and notes how far it got with
  // each id (for the report of a hang).
  const localSeen = new Map<string, string>();
  const local = await startLocal(cleanup, (req, res) => {
    const id = String(req.headers['x-soak-id']);
    const chunks: Buffer[] = [];
    let received = 0;
    localSeen.set(id, 'head');
    req.on('data', (c: Buffer) => {
      chunks.push(c);
      received += c.length;
      localSeen.set(id, `${received} of ${String(req.headers['content-length'])} B`);
    });
    req.on('close', () => {
      if (!req.complete) localSeen.set(id, `${localSeen.get(id)}, then aborted`);
    });
    req.on('end', () => {
      localSeen.set(id, 'answered');
      const body = Buffer.concat(chunks);
      res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': body.length,
        'X-Body-Sha256': sha256(body),
        'X-Soak-Id': String(req.headers['x-soak-id']),
      });
      res.end(body);
    });
  });

  let port = 0;
  const startRelay = async (): Promise<CliProcess> => {
    const p = runCli(cleanup, [
      'relay',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--domain',
      'localhost',
      '--token',
      TOKEN,
    ]);
    const listening = Number((await p.waitForOutput(/listening on [^\s]+:(\d+)/, 20_000))[1]);
    if (port === 0) port = listening;
    expect(listening).toBe(port);
    return p;
  };
  let relay = await startRelay();
  const host = `soak.localhost:${port}`;
  const publicUrl = `http://${host}`;

  const startClient = async (): Promise<CliProcess> => {
    const p = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      `http://127.0.0.1:${port}`,
      '--token',
      TOKEN,
      '--subdomain',
      'soak',
      '-q',
    ]);
    // The new process reclaims the same name, hence the same URL.
    expect((await p.waitForOutput(/Forwarding\s+(\S+)/, 20_000))[1]).toBe(publicUrl);
    return p;
  };
  let client = await startClient();

  const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS });
  cleanup.add(() => agent.destroy());

  const stats = {
    ok: 0,
    bytes: 0,
    clean: new Map<string, number>(),
    net: new Map<string, number>(),
    hangs: [] as string[],
    corrupt: [] as string[],
    /** Anything else, by kind, with the first example of each. */
    unexpected: new Map<string, number>(),
    examples: [] as string[],
  };
  const bump = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
  const unexpected = (kind: string, example: string): void => {
    if (!stats.unexpected.has(kind)) stats.examples.push(`${kind}: ${example}`);
    bump(stats.unexpected, kind);
  };
  /** Start times of the successful requests, to check that every phase served some. */
  const okStarts: number[] = [];
  const latencies: number[] = [];

  const t0 = Date.now();
  /** Set once the last disruption is over. */
  let calmSince = Infinity;
  /** Set when a disruption fails: the workers stop with the test. */
  let aborted = false;
  const running = (): boolean => {
    const now = Date.now();
    return !aborted && now < t0 + MAX_SOAK_MS && (now < t0 + SOAK_MS || now < calmSince + TAIL_MS);
  };
  const worker = async (w: number): Promise<void> => {
    for (let n = 0; n < MAX_REQUESTS_PER_WORKER && running(); n++) {
      const id = `${w}-${n}`;
      const body = randomBody();
      const started = Date.now();
      const o = await post(agent, port, host, id, body);
      if (o.kind === 'hang') {
        stats.hangs.push(
          `${id} (${body.length} B) started at ${started - t0} ms; local service: ${localSeen.get(id) ?? 'never saw it'}`,
        );
      } else if (o.kind === 'net') {
        if (CLEAN_NET_ERRORS.has(o.code)) bump(stats.net, o.code);
        else unexpected(o.code, `${id} at ${started - t0} ms`);
      } else if (o.status === 200) {
        const good =
          o.headers['x-soak-id'] === id && o.headers['x-body-sha256'] === sha256(body) && o.body.equals(body);
        if (good) {
          stats.ok++;
          stats.bytes += body.length;
          okStarts.push(started);
          latencies.push(Date.now() - started);
        } else
          stats.corrupt.push(
            `${id}: sent ${body.length} B, got ${o.body.length} B, id ${String(o.headers['x-soak-id'])}`,
          );
      } else {
        const code = o.headers['x-ggrok-error'];
        if (CLEAN_ERRORS.has(`${o.status} ${String(code)}`)) bump(stats.clean, `${o.status} ${String(code)}`);
        else
          unexpected(
            `${o.status} ${String(code)}`,
            `${id} at ${started - t0} ms: ${/<p>(.*?)<\/p>/.exec(o.body.toString())?.[1] ?? o.body.length}`,
          );
      }
      // Visitors pause between requests (0–100 ms), which also leaves CPU for the tests running alongside;
      // after a failure at least 20 ms, as a browser would: a restarting relay refuses at once.
      await sleep(Math.max(o.kind === 'response' && o.status === 200 ? 0 : 20, randomInt(0, 101)));
    }
  };

  /** When each disruption ended (the new process online), for the "served after each restart" check. */
  const backAt: { what: string; atMs: number; downMs: number }[] = [];
  let relayStopMs = -1;
  const chaos = async (): Promise<void> => {
    for (const what of SCHEDULE) {
      await sleep(GAP_MS);
      const began = Date.now();
      if (what === 'client') {
        client.child.kill('SIGKILL');
        await client.exited;
        client = await startClient();
      } else {
        const reconnects = (client.stdout().match(/back online/g) ?? []).length;
        relay.child.kill('SIGTERM');
        expect(await relay.exited).toBe(0);
        relayStopMs = Date.now() - began;
        relay = await startRelay();
        // The client comes back by itself.
        await waitFor(
          () => (client.stdout().match(/back online/g) ?? []).length > reconnects,
          'the client to reconnect to the restarted relay',
          20_000,
        );
      }
      backAt.push({ what, atMs: Date.now() - t0, downMs: Date.now() - began });
    }
    calmSince = Date.now();
  };

  const disruptions = chaos().catch((err: unknown) => {
    aborted = true;
    throw err;
  });
  await Promise.all([disruptions, ...Array.from({ length: WORKERS }, (_, w) => worker(w))]);
  const elapsed = Date.now() - t0;

  // At the end the tunnel serves again.
  const last = randomBytes(100_000);
  const final = await post(agent, port, host, 'final', last);
  expect(final.kind === 'response' && final.status === 200 && final.body.equals(last)).toBe(true);

  latencies.sort((a, b) => a - b);
  const pct = (p: number): number =>
    latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? -1;
  const okAfter = backAt.map((b, i) => {
    const from = t0 + b.atMs;
    const until = i + 1 < backAt.length ? t0 + backAt[i + 1]!.atMs - backAt[i + 1]!.downMs : Infinity;
    return okStarts.filter((s) => s >= from && s < until).length;
  });
  console.log(
    [
      `soak: ${elapsed} ms, ${stats.ok} ok (${(stats.bytes / 1024 / 1024).toFixed(1)} MiB each way), ` +
        `p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, relay stopped ${relayStopMs} ms after SIGTERM`,
      `  relay errors ${JSON.stringify(Object.fromEntries(stats.clean))}, connection errors ${JSON.stringify(Object.fromEntries(stats.net))}`,
      `  hangs ${stats.hangs.length}, corrupt ${stats.corrupt.length}, unexpected ${JSON.stringify(Object.fromEntries(stats.unexpected))}`,
      `  disruptions ${backAt.map((b, i) => `${b.what}@${b.atMs}ms (down ${b.downMs} ms, ${okAfter[i]} ok after)`).join(', ')}`,
      ...stats.examples.map((u) => `  first ${u}`),
      ...stats.hangs.slice(0, 5).map((h) => `  hang ${h}`),
    ].join('\n'),
  );

  // Soft: one broken promise must not hide the others.
  expect.soft(stats.hangs, 'requests with no answer').toEqual([]);
  expect.soft(stats.corrupt, "responses that are not the request's own body").toEqual([]);
  expect
    .soft(
      Object.fromEntries(stats.unexpected),
      'failures other than a relay 5xx or a refused/reset connection',
    )
    .toEqual({});
  expect.soft(stats.ok).toBeGreaterThan(500);
  expect.soft(backAt.map((b) => b.what)).toEqual(SCHEDULE);
  expect
    .soft(
      okAfter.every((n) => n > 0),
      `requests served after each disruption: ${okAfter.join(', ')}`,
    )
    .toBe(true);
  // The kills did meet requests in flight, and those failed cleanly.
  expect.soft(stats.clean.get('502 tunnel_closed') ?? 0).toBeGreaterThan(0);
  // Graceful stop waits for requests in flight, not for the traffic to stop.
  expect
    .soft(relayStopMs, 'ms from SIGTERM to exit of a relay whose requests take ~100 ms')
    .toBeLessThan(RELAY_STOP_MS);
}, 120_000);

// Each failure mode the soak can meet by chance, made to happen every time.
describe('what the soak meets by chance, on purpose', () => {
  test('a relay told to stop under keep-alive load exits once its in-flight requests are done', async () => {
    const t = await startTunnel(cleanup, (_req, res) => void setTimeout(() => res.end('ok'), 250));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    cleanup.add(() => agent.destroy());
    let stop = false;
    let served = 0;
    const worker = async (): Promise<void> => {
      for (let n = 0; n < 1000 && !stop; n++) {
        const res = await rawRequest({ port: t.relay.port, headers: { Host: t.host }, agent }).catch(
          () => null,
        );
        if (res?.status === 200) served++;
        else await sleep(20);
      }
    };
    const load = Array.from({ length: 32 }, worker);
    await waitFor(() => served >= 50, 'the load to get going');
    const began = Date.now();
    const closing = t.relay.relay.close(20_000).then(() => Date.now() - began);
    // The load goes on for a while, as real visitors would; the relay must not wait for it to stop.
    const stopMs = await Promise.race([closing, sleep(15_000).then(() => -1)]);
    stop = true;
    await Promise.all(load);
    // Requests take 250 ms. A relay that kept taking new ones on kept-alive connections would serve until its 20 s
    // deadline; one that stops taking them is gone long before. 15 s leaves a loaded machine its margin.
    expect(stopMs, 'ms from close() to stopped (-1: still serving after 15 s)').toBeGreaterThanOrEqual(0);
  }, 60_000);

  test('after a tunnel drops mid-upload, the next request on the same kept-alive connection is answered', async () => {
    // The local service never reads a body, so flow control soon pauses the public upload on the relay.
    const t = await startTunnel(cleanup, (req, res) => {
      if (req.method === 'GET') res.end('second answered');
    });
    const socket = net.connect(t.relay.port, '127.0.0.1');
    cleanup.add(() => socket.destroy());
    socket.on('error', () => {});
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    const total = 32 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 120);
    socket.write(`POST /upload HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: ${total}\r\n\r\n`);
    let sent = 0;
    for (; sent < 8 * 1024 * 1024; sent += chunk.length) socket.write(chunk);
    await waitFor(() => t.local.requests.length === 1, 'the upload to reach the local service');
    await sleep(1000); // the tunnel's windows fill up and the relay stops reading the upload
    expect(t.relay.relay.dropTunnel('demo')).toBe(true);
    await waitFor(() => /\r\n\r\n/.test(got), 'the answer to the cut upload');
    expect(got).toMatch(/^HTTP\/1\.1 502 /);
    expect(got).toMatch(/X-Ggrok-Error: tunnel_closed/i);
    await waitFor(() => t.relay.relay.tunnelCount === 1, 'the client to come back');
    // The public client finishes sending what it announced, then reuses the connection, as an HTTP agent does.
    got = '';
    for (; sent < total; sent += chunk.length) socket.write(chunk);
    socket.write(`GET /second HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
    await waitFor(
      () => got.includes('second answered'),
      'the next request on the connection to be answered',
      15_000,
    );
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
  }, 60_000);

  test('a busy client (event loop held 400 ms while it connects to localhost) still reaches the local service', async () => {
    // startTunnel's target is a port number, i.e. `localhost`: 127.0.0.1 and ::1 in turn, Node's happy eyeballs.
    const t = await startTunnel(cleanup, (_req, res) => res.end('reached'));
    const local = t.local;
    let blocked = 0;
    const hold = (message: unknown): void => {
      const socket = (message as { socket: net.Socket }).socket;
      socket.once('connectionAttempt', (_ip: string, port: number) => {
        if (port !== local.port) return;
        blocked++;
        // Other work in the same process (a big JSON, a GC pause, a slow disk) right after the connect starts.
        setImmediate(() => {
          const until = Date.now() + 400;
          while (Date.now() < until);
        });
      });
    };
    diagnostics.subscribe('net.client.socket', hold);
    cleanup.add(() => diagnostics.unsubscribe('net.client.socket', hold));
    const res = await t.request({ path: '/busy' });
    expect(blocked).toBe(1);
    expect(
      `${res.status} ${String(res.headers['x-ggrok-error'] ?? '')} ${res.body.toString().slice(0, 300)}`,
    ).toBe('200  reached');
  }, 30_000);
});
