// Flow-control windows that grow with the path: a tunnel whose control socket crosses a 50 ms round trip (a userspace
// delay line) carries more than the fixed window allows, both ways, byte-exact; a visitor that stalls or slows down
// pins only the window it had, and the window shrinks again for a slow visitor.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import { WINDOW_AUTOTUNE } from '../../protocol/flow.js';
import { DEFAULT_FLOW, type FlowSettings } from '../../protocol/frames.js';
import { startDelayLine } from '../delay-line.js';
import { Cleanup, startClient, startLocal, startRelay, waitFor, type LocalServer } from '../helpers.js';

const MiB = 1024 * 1024;
const ONE_WAY_MS = 25;
const RTT_S = (2 * ONE_WAY_MS) / 1000;
/**
 * Both ends announce 64 KiB stream windows (and frames) in the throughput test, so the bar (1.5 × what that fixed
 * window allows across the round trip, 1.9 MiB/s) measures the growth, not how much CPU this shared machine has left
 * for four roles in one process.
 */
const SMALL_FLOW = { ...DEFAULT_FLOW, streamWindow: 64 * 1024, maxData: 64 * 1024 };
const FIXED_WINDOW_BAR_MIBS = (1.5 * SMALL_FLOW.streamWindow) / MiB / RTT_S;
const BYTES = 64 * MiB;

let cleanup: Cleanup;
afterEach(async () => {
  await cleanup.run();
});

/** A deterministic 64 KiB pattern: byte i of a body is PATTERN[i % 64 KiB]. */
const PATTERN = Buffer.alloc(64 * 1024);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 31 + 7) & 0xff;

function patternHash(bytes: number): string {
  const hash = createHash('sha256');
  for (let left = bytes; left > 0; left -= PATTERN.length)
    hash.update(PATTERN.subarray(0, Math.min(PATTERN.length, left)));
  return hash.digest('hex');
}

/** The local app: GET /download?bytes=N sends the pattern (counting what it wrote); POST hashes the body. */
function app(written: { bytes: number }): http.RequestListener {
  return (req, res) => {
    if (req.method === 'POST') {
      const hash = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        hash.update(c);
      });
      req.on('end', () => res.end(JSON.stringify({ bytes: n, sha256: hash.digest('hex') })));
      return;
    }
    const bytes = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes'));
    res.writeHead(200, { 'Content-Length': String(bytes) });
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes && !res.destroyed) {
        const chunk = PATTERN.subarray(0, Math.min(PATTERN.length, bytes - sent));
        sent += chunk.length;
        written.bytes += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  };
}

/** Relay and local server on loopback; the client reaches the relay through the delay line. */
async function longTunnel(flow: FlowSettings = DEFAULT_FLOW): Promise<{
  relayPort: number;
  host: string;
  local: LocalServer;
  written: { bytes: number };
  streams: () => { bufferedBytes: number; recvWindowBytes: number }[];
}> {
  const written = { bytes: 0 };
  const relay = await startRelay(cleanup, { heartbeatMs: 500, deadAfterMs: 10_000, flow });
  const local = await startLocal(cleanup, app(written));
  const line = await startDelayLine(cleanup, relay.port, { delayMs: ONE_WAY_MS });
  const client = await startClient(cleanup, `http://127.0.0.1:${line.port}`, local.port, {
    subdomain: 'far',
  });
  // Windows grow only once a round trip is known on both ends.
  await waitFor(
    () => client.rttMs >= 2 * ONE_WAY_MS && (relay.relay.tunnel('far')?.rttMs ?? -1) >= 2 * ONE_WAY_MS,
    'both ends to measure the round trip',
    10_000,
  );
  return {
    relayPort: relay.port,
    host: `far.localhost:${relay.port}`,
    local,
    written,
    streams: () => relay.relay.tunnel('far')?.streams ?? [],
  };
}

function get(t: { relayPort: number; host: string }, path: string): Promise<http.IncomingMessage> {
  const req = http.get({
    host: '127.0.0.1',
    port: t.relayPort,
    path,
    agent: false,
    headers: { Host: t.host },
  });
  cleanup.add(() => req.destroy());
  return once(req, 'response').then(([res]) => res as http.IncomingMessage);
}

describe('across a 50 ms round trip', () => {
  test('a large download and upload are byte-exact and faster than the fixed window allows', async () => {
    cleanup = new Cleanup();
    const t = await longTunnel(SMALL_FLOW);

    let started = performance.now();
    const res = await get(t, `/download?bytes=${BYTES}`);
    const hash = createHash('sha256');
    let got = 0;
    res.on('data', (c: Buffer) => {
      got += c.length;
      hash.update(c);
    });
    await once(res, 'end');
    const downMiBs = BYTES / MiB / ((performance.now() - started) / 1000);
    expect(got).toBe(BYTES);
    expect(hash.digest('hex')).toBe(patternHash(BYTES));

    started = performance.now();
    const req = http.request({
      host: '127.0.0.1',
      port: t.relayPort,
      method: 'POST',
      path: '/upload',
      agent: false,
      headers: { Host: t.host, 'Content-Length': String(BYTES) },
    });
    let sent = 0;
    const pump = (): void => {
      while (sent < BYTES) {
        const chunk = PATTERN.subarray(0, Math.min(PATTERN.length, BYTES - sent));
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
    const [up] = (await once(req, 'response')) as [http.IncomingMessage];
    let body = '';
    for await (const c of up) body += String(c);
    const upMiBs = BYTES / MiB / ((performance.now() - started) / 1000);
    expect(JSON.parse(body)).toEqual({ bytes: BYTES, sha256: patternHash(BYTES) });

    console.log(
      `50 ms RTT: download ${downMiBs.toFixed(1)} MiB/s, upload ${upMiBs.toFixed(1)} MiB/s ` +
        `(fixed 64 KiB window: ≤ ${(FIXED_WINDOW_BAR_MIBS / 1.5).toFixed(1)} MiB/s)`,
    );
    expect(downMiBs).toBeGreaterThan(FIXED_WINDOW_BAR_MIBS);
    expect(upMiBs).toBeGreaterThan(FIXED_WINDOW_BAR_MIBS);
  }, 60_000);

  test('a visitor that stalls mid-download pins at most the grown window; one that slows down shrinks it', async () => {
    cleanup = new Cleanup();
    const t = await longTunnel();
    const res = await get(t, `/download?bytes=${1024 * MiB}`);
    // Read fast until the window has grown.
    let got = 0;
    res.on('data', (c: Buffer) => void (got += c.length));
    await waitFor(
      () => (t.streams()[0]?.recvWindowBytes ?? 0) > DEFAULT_FLOW.streamWindow,
      'the window to grow',
      20_000,
    );
    const grown = t.streams()[0]!.recvWindowBytes;
    expect(grown).toBeLessThanOrEqual(WINDOW_AUTOTUNE.STREAM_MAX_BYTES);

    // Stall: the whole chain pushes back, and the relay holds at most the window.
    res.pause();
    let last = -1;
    await waitFor(
      async () => {
        const before = t.written.bytes;
        await new Promise((r) => setTimeout(r, 500));
        const settled = before === t.written.bytes && t.written.bytes === last;
        last = t.written.bytes;
        return settled;
      },
      'the local server to be stopped by backpressure',
      30_000,
    );
    const stalled = t.streams()[0]!;
    expect(stalled.bufferedBytes).toBeLessThanOrEqual(WINDOW_AUTOTUNE.STREAM_MAX_BYTES);
    // Socket buffers (loopback and the delay line's) plus the window; unbounded buffering would be ~1 GiB.
    expect(t.written.bytes - got).toBeLessThan(96 * MiB);

    // Slow down: 64 KiB every 20 ms (3 MiB/s). The window goes back to what was announced.
    res.removeAllListeners('data');
    const slow = setInterval(() => {
      let c: Buffer | null;
      let n = 0;
      while (n < 64 * 1024 && (c = res.read() as Buffer | null) !== null) n += c.length;
    }, 20);
    cleanup.add(() => clearInterval(slow));
    await waitFor(
      () => t.streams()[0]?.recvWindowBytes === DEFAULT_FLOW.streamWindow,
      'the window to shrink back',
      30_000,
    );
  }, 90_000);
});
