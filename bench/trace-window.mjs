// One download across a delay line, with the relay's stream window and buffered bytes sampled every 50 ms: where a
// long-path transfer waits. `node bench/trace-window.mjs [--delay 100] [--mib 100]` (delay one way, ms).
import path from 'node:path';
import { parseArgs } from 'node:util';
import { killAll, MiB, ROOT, sleep, spawnClient, spawnNode, spawnRelay, waitForLine } from './lib.mjs';

const { values } = parseArgs({ options: { delay: { type: 'string' }, mib: { type: 'string' } } });
const delay = Number(values.delay ?? 100);
const bytes = Number(values.mib ?? 100) * MiB;
const TOKEN = 'trace-token-0123456789';
process.on('exit', killAll);

const bench = (file) => path.join(ROOT, 'bench', file);
async function serve(name, args, re) {
  const child = spawnNode(name, args);
  return { child, port: Number((await waitForLine(child, re))[1]) };
}
const local = await serve('local server', [bench('local-server.mjs')], /^\{"port":(\d+)/);
const relay = await spawnRelay({ token: TOKEN });
const line = await serve(
  'delay',
  [bench('delay-line.mjs'), String(relay.port), String(delay)],
  /^port (\d+)$/,
);
await spawnClient({ localPort: local.port, relayPort: line.port, token: TOKEN, subdomain: 't' });
await sleep(2500); // the first heartbeats measure the round trip

async function metrics() {
  const res = await fetch(`http://127.0.0.1:${relay.port}/_ggrok/metrics`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  const text = await res.text();
  const value = (re) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    buffered: value(/^ggrok_buffered_bytes(?:\{[^}]*\})? (\S+)$/m),
    stream: value(/^ggrok_receive_window_bytes\{[^}]*scope="largest_stream"[^}]*\} (\S+)$/m),
    conn: value(/^ggrok_receive_window_bytes\{[^}]*scope="connections"[^}]*\} (\S+)$/m),
  };
}

const started = Date.now();
const samples = [];
let polling = true;
const poll = (async () => {
  while (polling) {
    const m = await metrics().catch(() => ({}));
    samples.push({ t: Date.now() - started, ...m });
    await sleep(50);
  }
})();
const load = spawnNode('load', [
  bench('load.mjs'),
  JSON.stringify({ mode: 'download', bytes, port: relay.port, host: `t.localhost:${relay.port}` }),
]);
const result = JSON.parse((await waitForLine(load, /^(\{"event":"result".*)$/, 300_000))[1]);
polling = false;
await poll;
console.log(`download ${bytes / MiB} MiB at ${delay} ms one way: ${result.mibPerSec.toFixed(1)} MiB/s`);
let last = '';
for (const s of samples) {
  const row = `stream ${(s.stream / MiB).toFixed(1)} MiB, conn ${(s.conn / MiB).toFixed(1)} MiB, buffered ${(s.buffered / MiB).toFixed(2)} MiB`;
  if (row !== last) console.log(`${String(s.t).padStart(6)} ms  ${row}`);
  last = row;
}
process.exit(0);
