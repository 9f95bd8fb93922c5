// Side experiment behind RESULTS.md's analysis: the same loads against data-path variants that need no source
// change (ws monkeypatched in the child, or relay flow settings through createRelay), interleaved with the
// unmodified CLI. Evidence for suggestions, not a product configuration.
//   node bench/variants.mjs [--rounds 5] [--duration 5] [--only base,cork,zeroMask]
// Roles used internally: `variants.mjs relay` and `variants.mjs client <localPort> <serverUrl>`.
import { cpSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuSnapshot, fmt, killAll, median, MiB, ROOT, spawnNode, waitForLine } from './lib.mjs';

const DIST = process.env.GGROK_VARIANTS_DIST ?? path.join(ROOT, 'bench/out/variants-dist');
const RATE_ENV = { GGROK_RATE_LIMIT: '100000000' };
const BIG_FLOW = { streamWindow: 16 * MiB, connWindow: 64 * MiB, maxData: 128 * 1024 };
const MID_FLOW = { streamWindow: 1 * MiB, connWindow: 16 * MiB, maxData: 128 * 1024 };

/** name -> environment of the patched relay and client; `base` is the unmodified CLI. */
const VARIANTS = {
  base: null,
  // Cork the control socket on the first send and uncork on setImmediate: one write per event-loop turn.
  cork: { CORK: 'immediate' },
  // Same, uncorked at the end of the current microtask queue (one write per Session.flush).
  corkMicro: { CORK: 'micro' },
  // All-zero masking key on the client: ws then skips masking (client) and unmasking (relay).
  zeroMask: { ZEROMASK: '1' },
  // Relay announces 128 KiB Data frames (the wire maximum) with the default windows.
  frames128k: {
    FLOW: JSON.stringify({ streamWindow: 256 * 1024, connWindow: 4 * MiB, maxData: 128 * 1024 }),
  },
  // 128 KiB frames, 1 MiB stream window, 16 MiB connection window.
  flow1m: { FLOW: JSON.stringify(MID_FLOW) },
  all: { CORK: 'immediate', ZEROMASK: '1', FLOW: JSON.stringify(BIG_FLOW) },
};

/** Applies the CORK / ZEROMASK patches to this process's copy of ws. */
function patchWs() {
  const require = createRequire(path.join(ROOT, 'node_modules/ws/index.js'));
  const WebSocket = require('./lib/websocket.js');
  const Sender = require('./lib/sender.js');
  const mode = process.env.CORK;
  if (mode === 'immediate' || mode === 'micro') {
    const later = mode === 'micro' ? queueMicrotask : setImmediate;
    const send = WebSocket.prototype.send;
    const corked = new WeakSet();
    WebSocket.prototype.send = function (data, options, cb) {
      const socket = this._socket;
      if (socket && !corked.has(socket)) {
        socket.cork();
        corked.add(socket);
        later(() => {
          corked.delete(socket);
          socket.uncork();
        });
      }
      return send.call(this, data, options, cb);
    };
  }
  if (process.env.ZEROMASK === '1') {
    const frame = Sender.frame;
    Sender.frame = (data, options) =>
      frame(data, options.mask ? { ...options, generateMask: (m) => m.fill(0) } : options);
  }
}

/** Imports a module of the dist/ snapshot. */
const imp = (file) => import(pathToFileURL(path.join(DIST, file)).href);

async function relayRole() {
  patchWs();
  const { createRelay } = await imp('relay/relay.js');
  const flow = process.env.FLOW ? JSON.parse(process.env.FLOW) : undefined;
  const relay = createRelay({
    tokens: ['T'],
    domain: 'localhost',
    streamsPerSecond: 1e8,
    ...(flow ? { flow } : {}),
  });
  const port = await relay.listen(0, '127.0.0.1');
  process.stdout.write(`listening on 127.0.0.1:${port}\n`);
}

async function clientRole(localPort, server) {
  patchWs();
  const { TunnelClient } = await imp('cli/client.js');
  const { parseTarget } = await imp('cli/local-request.js');
  const client = new TunnelClient({ server, token: 'T', subdomain: 'bench', target: parseTarget(localPort) });
  const info = await client.start();
  process.stdout.write(`Forwarding ${info.url}\n`);
}

async function runLoad(args) {
  const child = spawnNode('load', [path.join(ROOT, 'bench/load.mjs'), JSON.stringify(args)]);
  await child.exited;
  const line = child.lines.filter((l) => l.includes('"event":"result"')).pop();
  return line ? JSON.parse(line) : { ok: false };
}

async function orchestrate() {
  const { values } = parseArgs({
    options: { rounds: { type: 'string' }, duration: { type: 'string' }, only: { type: 'string' } },
  });
  const rounds = Number(values.rounds ?? 5);
  const duration = Number(values.duration ?? 5);
  const names = values.only ? values.only.split(',') : Object.keys(VARIANTS);
  rmSync(DIST, { recursive: true, force: true });
  cpSync(path.join(ROOT, 'dist'), DIST, { recursive: true });
  process.on('exit', killAll);
  const server = spawnNode('local server', [path.join(ROOT, 'bench/local-server.mjs')]);
  const localPort = Number((await waitForLine(server, /"port":(\d+)/))[1]);
  const self = path.join(ROOT, 'bench/variants.mjs');
  const setups = {};
  for (const name of names) {
    const env = VARIANTS[name];
    if (env === undefined) throw new Error(`unknown variant ${name}`);
    const bin = path.join(DIST, 'bin/ggrok.js');
    const relay = env
      ? spawnNode(`relay ${name}`, [self, 'relay'], { env: { ...env, GGROK_VARIANTS_DIST: DIST } })
      : spawnNode(
          `relay ${name}`,
          [bin, 'relay', '--port', '0', '--host', '127.0.0.1', '--domain', 'localhost', '--token', 'T'],
          { env: RATE_ENV },
        );
    const port = Number((await waitForLine(relay, /listening on 127\.0\.0\.1:(\d+)/))[1]);
    const server = `http://127.0.0.1:${port}`;
    const client = env
      ? spawnNode(`client ${name}`, [self, 'client', String(localPort), server], {
          env: { ...env, GGROK_VARIANTS_DIST: DIST },
        })
      : spawnNode(`client ${name}`, [
          bin,
          'http',
          String(localPort),
          '--server',
          server,
          '--token',
          'T',
          '--subdomain',
          'bench',
          '-q',
        ]);
    await waitForLine(client, /Forwarding/);
    const target = { port, host: `bench.localhost:${port}` };
    setups[name] = { relay, client, target, r: {} };
    await runLoad({ mode: 'small', ...target, duration: 1 }); // warm-up
    await runLoad({ mode: 'download', ...target, bytes: 32 * MiB });
  }
  const push = (s, key, v) => (s.r[key] ??= []).push(v);
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? [...names].reverse() : names;
    for (const name of order) {
      const s = setups[name];
      const pids = { relay: s.relay.pid, client: s.client.pid };
      let before = cpuSnapshot(pids);
      const small = await runLoad({ mode: 'small', ...s.target, duration });
      let cpu = cpuSnapshot(pids);
      if (small.ok) {
        push(s, 'rps', small.reqPerSec);
        push(s, 'p99', small.p99);
        push(s, 'relay10k', ((cpu.relay - before.relay) / small.total) * 1e4);
        push(s, 'client10k', ((cpu.client - before.client) / small.total) * 1e4);
      }
      for (const [kind, bytes] of [
        ['download', 200 * MiB],
        ['upload', 50 * MiB],
      ]) {
        before = cpuSnapshot(pids);
        const x = await runLoad({ mode: kind, ...s.target, bytes, timeoutMs: 120_000 });
        cpu = cpuSnapshot(pids);
        if (!x.ok) continue;
        push(s, kind, x.mibPerSec);
        push(s, `relay${kind}`, ((cpu.relay - before.relay) / (bytes / MiB)) * 100);
        push(s, `client${kind}`, ((cpu.client - before.client) / (bytes / MiB)) * 100);
      }
    }
    process.stderr.write(`round ${round + 1}/${rounds} done\n`);
  }
  const m = (s, k, d = 0) => fmt(median(s.r[k] ?? []), d);
  process.stdout.write(
    `medians of ${rounds} interleaved rounds (small GET ${duration} s, 50 connections; download 200 MiB; upload 50 MiB echoed)\n\n` +
      '| variant | req/s | p99 ms | relay / client CPU ms per 10k GET | download MiB/s | relay / client CPU ms per 100 MiB down | upload MiB/s | relay / client CPU ms per 100 MiB up |\n' +
      '|---|--:|--:|--:|--:|--:|--:|--:|\n',
  );
  for (const [name, s] of Object.entries(setups))
    process.stdout.write(
      `| ${name} | ${m(s, 'rps')} | ${m(s, 'p99', 1)} | ${m(s, 'relay10k')} / ${m(s, 'client10k')} | ${m(s, 'download')} | ` +
        `${m(s, 'relaydownload')} / ${m(s, 'clientdownload')} | ${m(s, 'upload')} | ${m(s, 'relayupload')} / ${m(s, 'clientupload')} |\n`,
    );
}

const [role, ...rest] = process.argv.slice(2);
if (role === 'relay') await relayRole();
else if (role === 'client') await clientRole(rest[0], rest[1]);
else
  await orchestrate().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`variants failed: ${err.stack ?? err}\n`);
      killAll();
      process.exit(1);
    },
  );
