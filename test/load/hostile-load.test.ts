// Load that must not spill over: slow or flooding visitors of one tunnel leave the others fast. These run in
// the serial load pass (vitest.load.config.ts) so other test files do not compete for the two cores.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { Cleanup, rawRequest, reply, runCli, startLocal, startTunnel, TOKEN, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('hostile load', () => {
  test('300 slow-header connections do not delay a normal request', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'fast'));
    const sockets: net.Socket[] = [];
    cleanup.add(() => sockets.forEach((s) => s.destroy()));
    for (let i = 0; i < 300; i++) {
      const s = net.connect(t.relay.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(`GET / HTTP/1.1\r\nHost: ${t.host}\r\nX-Slow: `);
      sockets.push(s);
    }
    await waitFor(() => sockets.every((s) => !s.connecting), 'the slow connections to open');
    // Latency is the behaviour here, with a margin for a loaded machine: the median of three requests. A request
    // queued behind the slow connections would wait for the relay's 30 s headers timeout, the only thing that frees
    // them; a working relay answers in milliseconds.
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      const res = await t.request();
      times.push(Date.now() - started);
      expect(res.body.toString()).toBe('fast');
    }
    times.sort((a, b) => a - b);
    expect(times[1], `ms per request: ${times.join(', ')}`).toBeLessThan(3000);
    expect(sockets.every((s) => !s.destroyed)).toBe(true); // the slow connections were all still open
  });

  test('a 3 000-request flood on one tunnel leaves another tunnel answering in under a second', async () => {
    // Relay, clients and the flood run as separate processes, as in production: the test process only
    // hosts the quiet tunnel's local server and measures it.
    const relay = runCli(cleanup, [
      'relay',
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--domain',
      'localhost',
      '--token',
      TOKEN,
    ]);
    const port = Number((await relay.waitForOutput(/listening on [^\s]+:(\d+)/))[1]);
    const server = `http://127.0.0.1:${port}`;
    const quietLocal = await startLocal(cleanup, (_req, res) => reply(res, 200, 'quiet ok'));
    const floodLocal = spawnNode(
      `require('http').createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1', function () { console.log('port ' + this.address().port) })`,
    );
    const floodPort = Number((await floodLocal.waitForOutput(/port (\d+)/))[1]);
    const flooded = runCli(cleanup, [
      'http',
      String(floodPort),
      '--server',
      server,
      '--token',
      TOKEN,
      '--subdomain',
      'flooded',
      '-q',
    ]);
    const quiet = runCli(cleanup, [
      'http',
      String(quietLocal.port),
      '--server',
      server,
      '--token',
      TOKEN,
      '--subdomain',
      'quiet',
      '-q',
    ]);
    await flooded.waitForOutput(/Forwarding/);
    await quiet.waitForOutput(/Forwarding/);
    const flood = spawnNode(`
      const http = require('http');
      const agent = new http.Agent({ keepAlive: true, maxSockets: 200 });
      const counts = {}; let done = 0;
      for (let i = 0; i < 3000; i++) {
        const req = http.get({ host: '127.0.0.1', port: ${port}, agent, headers: { Host: 'flooded.localhost:${port}' } }, (res) => {
          res.resume();
          res.on('end', () => { counts[res.statusCode] = (counts[res.statusCode] || 0) + 1; finish(); });
        });
        req.on('error', () => { counts.error = (counts.error || 0) + 1; finish(); });
      }
      function finish() { if (++done === 100) console.log('flooding'); if (done === 3000) { console.log('counts ' + JSON.stringify(counts)); process.exit(0); } }
    `);
    await flood.waitForOutput(/flooding/);
    const times: number[] = [];
    // Latency is the behaviour here ("under a second"); the margin for a loaded machine is the median of seven.
    for (let i = 0; i < 7; i++) {
      const started = Date.now();
      const res = await rawRequest({ port, headers: { Host: `quiet.localhost:${port}` } });
      times.push(Date.now() - started);
      expect(res.body.toString()).toBe('quiet ok');
    }
    const counts = JSON.parse((await flood.waitForOutput(/counts (.*)/, 60_000))[1]!) as Record<
      string,
      number
    >;
    expect(Object.keys(counts).every((k) => k === '200' || k === '429')).toBe(true);
    expect((counts['200'] ?? 0) + (counts['429'] ?? 0)).toBe(3000);
    times.sort((a, b) => a - b);
    expect(times[3], `ms per quiet request: ${times.join(', ')}`).toBeLessThan(1000); // the median during the flood
  });
});

/** Runs a small node script as its own process, collecting its output. */
function spawnNode(script: string): {
  waitForOutput: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
} {
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  cleanup.add(() => child.kill('SIGKILL'));
  return {
    waitForOutput: async (re, timeoutMs = 30_000) => {
      await waitFor(() => re.test(out), `output ${re}`, timeoutMs);
      return out.match(re)!;
    },
  };
}
