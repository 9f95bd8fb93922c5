// A/B of two builds on the same loads: `node bench/ab.mjs --before DIR [--after dist] [--rounds 3] [--seconds 5]
// [--out bench/RESULTS-ab.md]`. Each build gets its own relay and client (both from that build), the same local
// servers serve both, and the builds alternate which goes first each round. Loads: small GETs at 50 connections
// (wrk), a 200 MiB download, a 50 MiB streamed upload echoed back, a 1 KiB WebSocket echo. Clients run with
// --no-inspect (the inspector changed separately; this isolates the data path).
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  cpuMs,
  fmt,
  killAll,
  median,
  MiB,
  ROOT,
  spawnClient,
  spawnNode,
  spawnRelay,
  stopChild,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const { values } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string', default: path.join(ROOT, 'dist') },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    out: { type: 'string', default: path.join(ROOT, 'bench/RESULTS-ab.md') },
    'before-label': { type: 'string', default: 'before' },
    'after-label': { type: 'string', default: 'after' },
  },
});
if (!values.before) throw new Error('--before <dist dir> is required');
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const tool = wrkVersion() ? 'wrk' : 'autocannon';
const TOKEN = 'bench-ab';
const COMMAND = `node bench/ab.mjs ${process.argv.slice(2).join(' ')}`;
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

// Snapshots, so a rebuild during the run cannot mix builds.
const builds = {};
for (const [label, dir] of [
  [values['before-label'], values.before],
  [values['after-label'], values.after],
]) {
  const copy = path.join(ROOT, 'bench/out', `ab-${label}`);
  rmSync(copy, { recursive: true, force: true });
  mkdirSync(path.dirname(copy), { recursive: true });
  cpSync(path.resolve(dir), copy, { recursive: true });
  builds[label] = path.join(copy, 'bin/ggrok.js');
}
const labels = Object.keys(builds);

const httpLocal = spawnNode('local server', [path.join(ROOT, 'bench/local-server.mjs')]);
const httpPort = Number((await waitForLine(httpLocal, /^\{"port":(\d+)/))[1]);
const wsLocal = spawnNode('ws local', [path.join(ROOT, 'bench/ws-local.mjs')]);
const wsPort = Number((await waitForLine(wsLocal, /^port (\d+)$/))[1]);

/** A relay and two clients (http, ws) from one build; clients with --no-inspect (the inspector changed separately). */
async function startBuild(label) {
  const bin = builds[label];
  // Builds before the default went off limited each tunnel to 500 requests/s: the same high limit for both.
  const { child: relay, port: relayPort } = await spawnRelay({
    token: TOKEN,
    bin,
    extra: ['--rate-limit', '100000000'],
  });
  const client = (subdomain, localPort) =>
    spawnClient({ localPort, relayPort, token: TOKEN, subdomain, bin });
  return { relay, relayPort, http: await client('h', httpPort), ws: await client('w', wsPort) };
}

async function measure(file, args, re) {
  const child = spawnNode(file, [path.join(ROOT, 'bench', file), JSON.stringify(args)]);
  const m = await waitForLine(child, re, (seconds + 120) * 1000);
  await child.exited;
  return JSON.parse(m[1]);
}
const RESULT = /^(\{"event":"result".*)$/;

const results = {};
for (const label of labels)
  results[label] = { small: [], p99: [], download: [], upload: [], ws: [], cpu: [] };
for (let r = 0; r < rounds; r++) {
  for (const label of r % 2 === 0 ? labels : [...labels].reverse()) {
    const b = await startBuild(label);
    const host = (k) => `${k}.localhost:${b.relayPort}`;
    await measure(
      'load.mjs',
      { mode: 'small', tool, connections: 50, duration: 2, port: b.relayPort, host: host('h') },
      RESULT,
    ); // warm-up
    const cpu0 = cpuMs(b.relay.pid) + cpuMs(b.http.pid);
    const small = await measure(
      'load.mjs',
      { mode: 'small', tool, connections: 50, duration: seconds, port: b.relayPort, host: host('h') },
      RESULT,
    );
    const cpu = cpuMs(b.relay.pid) + cpuMs(b.http.pid) - cpu0;
    const download = await measure(
      'load.mjs',
      { mode: 'download', bytes: 200 * MiB, port: b.relayPort, host: host('h') },
      RESULT,
    );
    const upload = await measure(
      'load.mjs',
      { mode: 'upload', bytes: 50 * MiB, port: b.relayPort, host: host('h') },
      RESULT,
    );
    const ws = await measure(
      'ws-load.mjs',
      { mode: 'echo', url: `ws://127.0.0.1:${b.relayPort}/`, host: host('w'), seconds, bytes: 1024 },
      /^result (.*)$/,
    );
    const res = results[label];
    res.small.push(small.reqPerSec);
    res.p99.push(small.p99);
    res.cpu.push((cpu / small.total) * 10_000);
    res.download.push(download.mibPerSec);
    res.upload.push(upload.mibPerSec);
    res.ws.push(ws.perSecond);
    console.log(
      `round ${r + 1} ${label}: ${fmt(small.reqPerSec, 0)} req/s, p99 ${fmt(small.p99, 2)} ms, ${fmt(download.mibPerSec, 0)} / ${fmt(upload.mibPerSec, 0)} MiB/s, ${fmt(ws.perSecond, 0)} echoes/s`,
    );
    await Promise.all([stopChild(b.http), stopChild(b.ws)]);
    await stopChild(b.relay);
  }
}

const [A, B] = labels;
const rows = [
  ['small GETs, 50 conn (req/s)', 'small', 0],
  ['small GET p99 (ms)', 'p99', 2],
  ['relay + client CPU per 10 000 small GETs (ms)', 'cpu', 0],
  ['download 200 MiB (MiB/s)', 'download', 0],
  ['upload 50 MiB echoed (MiB/s)', 'upload', 0],
  ['WebSocket 1 KiB echo (round trips/s)', 'ws', 0],
].map(([what, key, digits]) => {
  const a = median(results[A][key]);
  const b = median(results[B][key]);
  return `| ${what} | ${fmt(a, digits)} | ${fmt(b, digits)} | ${fmt(b / a, 2)} | ${results[A][key].map((v, i) => fmt(results[B][key][i] / v, 2)).join(' / ')} |`;
});
const report = `# A/B: ${A} vs ${B}

Command: \`${COMMAND}\`  
Date: ${new Date().toISOString()}  
Machine: node ${process.version}, ${os.cpus().length} cores; load tool, local servers, relay and client are separate processes
on the same cores. ${rounds} rounds, the builds alternate which goes first; each build gets a fresh relay and clients
per round, warmed with a discarded 2 s small-GET run. Clients with --no-inspect.

| load | ${A} (median) | ${B} (median) | ${B}/${A} | per round |
| --- | --: | --: | --: | --- |
${rows.join('\n')}
`;
writeFileSync(path.resolve(values.out), report);
console.log(report);
process.exit(0);
