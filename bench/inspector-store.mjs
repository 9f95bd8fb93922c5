// The inspector's own cost, without the network: CPU per exchange of its store (the observer calls the tunnel makes)
// for small GETs, with and without a page listening, and per WebSocket round trip (1 KiB each way, parsed). Each
// measurement is its own process; builds alternate in every round. Usage:
//   node bench/inspector-store.mjs [--before-dist DIR] [--rounds 5] [--count 200000]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fmt, median, ROOT } from './lib.mjs';

/** Ops between yields to the event loop, so timers (the store's batches) run as they would in the client. */
const OPS_PER_TURN = 500;

/** One measurement in this process: prints µs of CPU per op (with the bare cost of the loop subtracted). */
async function measure(dist, mode, count) {
  const { InspectorStore } = await import(pathToFileURL(path.join(dist, 'cli/inspector/store.js')).href);
  const { summarize } = await import(pathToFileURL(path.join(dist, 'cli/inspector/server.js')).href);
  const store = new InspectorStore();
  if (mode === 'page') {
    // What the server does for a page: a summary per announced change (one event per exchange before batching).
    store.subscribe((e) => {
      let text = '';
      for (const r of e.records ?? (e.record ? [e.record] : [])) text += JSON.stringify(summarize(r));
      return text;
    });
  }
  const requestHeaders = (i) => [
    'Host',
    'bench.localhost:8080',
    'User-Agent',
    'wrk',
    'Accept',
    '*/*',
    'X-Forwarded-For',
    `127.0.0.${i & 255}`,
    'X-Forwarded-Proto',
    'http',
  ];
  const read = Buffer.allocUnsafeSlow(250);
  let op;
  if (mode === 'ws') {
    const frame = (payload, key) => {
      const head = [0x82, (key ? 0x80 : 0) | 126, payload.length >> 8, payload.length & 0xff];
      const body = key ? payload.map((b, i) => b ^ key[i & 3]) : payload;
      return Buffer.concat([Buffer.from(head), key ?? Buffer.alloc(0), body]);
    };
    const payload = randomBytes(1024);
    const inFrame = frame(payload, randomBytes(4));
    const outFrame = frame(payload);
    const started = store.begin({
      tunnel: 'bench',
      method: 'GET',
      target: '/ws',
      headers: requestHeaders(0),
      upgrade: true,
    });
    started.response(101, 'Switching Protocols', ['Upgrade', 'websocket', 'Connection', 'Upgrade']);
    // Fresh buffers, as socket reads and tunnel frames are.
    op = () => {
      started.channelData('in', Buffer.from(inFrame));
      started.channelData('out', Buffer.from(outFrame));
    };
  } else {
    op = (i) => {
      const headers = requestHeaders(i);
      const x = store.begin({
        tunnel: 'bench',
        method: 'GET',
        target: '/small',
        headers,
        publicHeaders: headers,
        upgrade: false,
      });
      x.response(200, 'OK', [
        'Content-Type',
        'text/plain',
        'Content-Length',
        '100',
        'Connection',
        'keep-alive',
      ]);
      x.responseData(read.subarray(150));
      x.end({ method: 'GET', target: '/small', status: 200, durationMs: 1, bytes: 100, upgrade: false });
    };
  }
  const run = async (fn, n) => {
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      fn(i);
      if (i % OPS_PER_TURN === 0) await new Promise(setImmediate);
    }
    store.list(); // what is still queued gets parsed too
    const cpu = process.cpuUsage(cpu0);
    return (cpu.user + cpu.system) / n;
  };
  await run(op, Math.min(count, 20_000)); // warm-up
  const bare = await run(() => {}, count);
  const us = (await run(op, count)) - bare;
  store.close();
  process.stdout.write(`${JSON.stringify({ us })}\n`);
}

const { values } = parseArgs({
  options: {
    'before-dist': { type: 'string' },
    rounds: { type: 'string', default: '5' },
    count: { type: 'string', default: '200000' },
    child: { type: 'string' },
  },
});
if (values.child) {
  const [dist, mode] = values.child.split('|');
  await measure(dist, mode, Number(values.count));
} else {
  const builds = { after: path.join(ROOT, 'dist') };
  if (values['before-dist']) builds.before = path.resolve(values['before-dist']);
  const modes = ['small', 'page', 'ws'];
  const results = {};
  const self = fileURLToPath(import.meta.url);
  for (let round = 0; round < Number(values.rounds); round++)
    for (const mode of modes)
      for (const [name, dist] of Object.entries(builds)) {
        const out = execFileSync(
          process.execPath,
          [self, '--child', `${dist}|${mode}`, '--count', values.count],
          { encoding: 'utf8' },
        );
        ((results[mode] ??= {})[name] ??= []).push(JSON.parse(out).us);
      }
  const label = {
    small: 'small GET exchange',
    page: 'small GET exchange, page listening',
    ws: 'WebSocket round trip (2 × 1 KiB)',
  };
  process.stdout.write(
    `| inspector work per | ${Object.keys(builds).join(' µs | ')} µs |\n| --- |${Object.keys(builds)
      .map(() => ' --: |')
      .join('')}\n`,
  );
  for (const mode of modes)
    process.stdout.write(
      `| ${label[mode]} | ${Object.keys(builds)
        .map(
          (b) => `${fmt(median(results[mode][b]), 2)} (${results[mode][b].map((x) => fmt(x, 1)).join(', ')})`,
        )
        .join(' | ')} |\n`,
    );
}
