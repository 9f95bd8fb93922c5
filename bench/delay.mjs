// Long paths: the client reaches the relay through a userspace delay line (bench/delay-line.mjs; tc/netem is not
// available here) and the direct path crosses the same delay line, so the tunnel is compared with what TCP itself does
// over that round trip. `node bench/delay.mjs [--delays 0,25,100] [--rounds 3] [--download-mib 100]
// [--upload-mib 100] [--ws-mib 64] [--stall-seconds 3] [--before-dist DIR] [--loopback-seconds 5]
// [--out bench/RESULTS-delay.md]`. Delays are one way (25 = a 50 ms round trip).
// Per delay, interleaved rounds of: a download, an upload (POST /upload, hashed by the local server) and WebSocket
// bulk (64 KiB messages echoed, 256 in flight), direct through the delay line vs the tunnel; then relay RSS while a
// visitor stalls a 1 GiB download (fresh relay and client per delay). --before-dist adds the same tunnel through
// another build and a loopback comparison of the two builds (no delay line: small GETs, download, upload echo,
// 1 KiB WebSocket echo), interleaved. Writes the report to --out and a copy into bench/RESULTS.md's analysis.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  BIN,
  fmt,
  killAll,
  median,
  MiB,
  ROOT,
  sampleRss,
  sleep,
  spawnClient,
  spawnNode,
  spawnRelay,
  stopChild,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const { values } = parseArgs({
  options: {
    delays: { type: 'string' },
    rounds: { type: 'string' },
    'download-mib': { type: 'string' },
    'upload-mib': { type: 'string' },
    'ws-mib': { type: 'string' },
    'stall-seconds': { type: 'string' },
    'before-dist': { type: 'string' },
    'loopback-seconds': { type: 'string' },
    out: { type: 'string' },
  },
});
const opts = {
  delays: (values.delays ?? '0,25,100').split(',').map(Number),
  rounds: Number(values.rounds ?? 3),
  downloadBytes: Number(values['download-mib'] ?? 100) * MiB,
  uploadBytes: Number(values['upload-mib'] ?? 100) * MiB,
  wsBytes: Number(values['ws-mib'] ?? 64) * MiB,
  stallMs: Number(values['stall-seconds'] ?? 3) * 1000,
  loopbackSeconds: Number(values['loopback-seconds'] ?? 5),
  beforeDist: values['before-dist'] && path.resolve(values['before-dist']),
  out: path.resolve(values.out ?? path.join(ROOT, 'bench/RESULTS-delay.md')),
};
const COMMAND = `node bench/delay.mjs ${process.argv.slice(2).join(' ')}`.trim();
const TOKEN = 'bench-delay';
const OUT_DIR = path.join(ROOT, 'bench/out');
const RESULTS = path.join(ROOT, 'bench/RESULTS.md');
const bench = (file) => path.join(ROOT, 'bench', file);
const log = (line) => process.stdout.write(`${line}\n`);
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

/** Copies of the builds taken at start-up, so a rebuild during the run cannot mix builds. */
mkdirSync(OUT_DIR, { recursive: true });
const builds = { after: path.join(OUT_DIR, 'dist-delay') };
rmSync(builds.after, { recursive: true, force: true });
cpSync(path.join(ROOT, 'dist'), builds.after, { recursive: true });
if (opts.beforeDist) {
  builds.before = path.join(OUT_DIR, 'dist-delay-before');
  rmSync(builds.before, { recursive: true, force: true });
  cpSync(opts.beforeDist, builds.before, { recursive: true });
}
const binOf = (build) => path.join(builds[build], path.relative(path.join(ROOT, 'dist'), BIN));

async function serve(name, args, re) {
  const child = spawnNode(name, args);
  return { child, port: Number((await waitForLine(child, re))[1]) };
}
const delayLine = (port, delayMs) =>
  serve(
    `delay ${delayMs} ms → ${port}`,
    [bench('delay-line.mjs'), String(port), String(delayMs)],
    /^port (\d+)$/,
  );

/** Runs one load.mjs / ws-load.mjs measurement and returns its JSON result. */
async function measure(file, args, re, timeoutMs = 300_000) {
  const child = spawnNode(file, [bench(file), JSON.stringify({ hardTimeoutMs: timeoutMs, ...args })]);
  const m = await waitForLine(child, re, timeoutMs + 10_000);
  await child.exited;
  return JSON.parse(m[1]);
}
const RESULT = /^(\{"event":"result".*)$/;
/** A change with its sign: +5.8, -21.9. */
const signed = (x) => `${x >= 0 ? '+' : ''}${fmt(x)}`;

const loads = {
  async download(target) {
    const r = await measure('load.mjs', { mode: 'download', bytes: opts.downloadBytes, ...target }, RESULT);
    if (!r.ok) throw new Error(`download failed: ${JSON.stringify(r)}`);
    return r.mibPerSec;
  },
  async upload(target) {
    const r = await measure(
      'load.mjs',
      { mode: 'upload', path: '/upload', bytes: opts.uploadBytes, ...target },
      RESULT,
    );
    const counted = r.ok && JSON.parse(r.body ?? '{}').bytes === opts.uploadBytes;
    if (!counted) throw new Error(`upload failed: ${JSON.stringify(r)}`);
    return r.mibPerSec;
  },
  async ws(target) {
    const r = await measure(
      'ws-load.mjs',
      {
        mode: 'throughput',
        url: `ws://127.0.0.1:${target.port}/`,
        host: target.host,
        totalBytes: opts.wsBytes,
        messageBytes: 64 * 1024,
        inFlight: 256,
      },
      /^result (.*)$/,
    );
    return r.mibPerSecond;
  },
};

// ---------------------------------------------------------------- the paths

const httpLocal = await serve('local server', [bench('local-server.mjs')], /^\{"port":(\d+)/);
const wsLocal = await serve('ws local', [bench('ws-local.mjs')], /^port (\d+)$/);
const relays = {};
for (const build of Object.keys(builds))
  relays[build] = await spawnRelay({
    token: TOKEN,
    bin: binOf(build),
    env: { GGROK_RATE_LIMIT: '100000000' },
  });

/** paths[delay] = [[name, {port, host?, wsPort?}], …]: direct and one tunnel per build, all through `delay`. */
const paths = {};
for (const delay of opts.delays) {
  const directHttp = await delayLine(httpLocal.port, delay);
  const directWs = await delayLine(wsLocal.port, delay);
  paths[delay] = [['direct', { http: { port: directHttp.port }, ws: { port: directWs.port } }]];
  for (const [build, relay] of Object.entries(relays)) {
    const line = await delayLine(relay.port, delay);
    const client = (subdomain, localPort) =>
      spawnClient({ localPort, relayPort: line.port, token: TOKEN, subdomain, bin: binOf(build) });
    await client(`h${delay}-${build}`, httpLocal.port);
    await client(`w${delay}-${build}`, wsLocal.port);
    const at = (name) => ({ port: relay.port, host: `${name}.localhost:${relay.port}` });
    paths[delay].push([
      build === 'after' ? 'ggrok' : 'ggrok (before)',
      { http: at(`h${delay}-${build}`), ws: at(`w${delay}-${build}`) },
    ]);
  }
}
// Windows start growing once each end has measured the round trip (first heartbeat, within a second).
await sleep(1500);

const results = {};
const rotated = (list, r) => [...list.slice(r % list.length), ...list.slice(0, r % list.length)];
for (const delay of opts.delays) {
  // Warm-up (discarded): JIT and pools of every process in every path.
  for (const [, t] of paths[delay]) await loads.download({ ...t.http, bytes: 16 * MiB });
  results[delay] = { download: {}, upload: {}, ws: {} };
  for (let r = 0; r < opts.rounds; r++) {
    for (const [name, t] of rotated(paths[delay], r)) {
      (results[delay].download[name] ??= []).push(await loads.download(t.http));
      (results[delay].upload[name] ??= []).push(await loads.upload(t.http));
      (results[delay].ws[name] ??= []).push(await loads.ws(t.ws));
    }
    const last = (kind) =>
      paths[delay].map(([n]) => `${n} ${fmt(results[delay][kind][n].at(-1), 0)}`).join(', ');
    log(
      `delay ${delay} ms, round ${r + 1}/${opts.rounds}: down ${last('download')}; up ${last('upload')}; ws ${last('ws')} MiB/s`,
    );
  }
}

// ---------------------------------------------------------------- stalled visitor

/**
 * Relay RSS while a visitor stalls a 1 GiB download after reading `readFirst` bytes, on a fresh relay and client
 * (warmed with one 16 MiB download) whose control connection crosses `delay`.
 */
async function stall(build, delay, readFirst) {
  const relay = await spawnRelay({ token: TOKEN, bin: binOf(build), env: { GGROK_RATE_LIMIT: '100000000' } });
  const line = await delayLine(relay.port, delay);
  const client = await spawnClient({
    localPort: httpLocal.port,
    relayPort: line.port,
    token: TOKEN,
    subdomain: 's',
    bin: binOf(build),
  });
  const target = { port: relay.port, host: `s.localhost:${relay.port}` };
  await sleep(1500);
  await measure('load.mjs', { mode: 'download', bytes: 16 * MiB, ...target }, RESULT);
  const idle = sampleRss({ relay: relay.child.pid }, 100);
  await sleep(1000);
  const baseline = median(idle.stop().relay.samples.map((s) => s[1])) / 1024;
  const sampler = sampleRss({ relay: relay.child.pid }, 100);
  // What the relay holds for the visitor, exactly (RSS also moves with the garbage collector's mood).
  let held = 0;
  let window = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      const m = await metrics(relay.port);
      held = Math.max(held, m.buffered ?? 0);
      window = Math.max(window, m.largestStream ?? 0);
      await sleep(100);
    }
  })();
  const r = await measure(
    'load.mjs',
    { mode: 'stall', ...target, bytes: 1024 * MiB, readFirst, stallMs: opts.stallMs },
    RESULT,
  );
  polling = false;
  await poll;
  const peak = sampler.stop().relay.maxKiB / 1024;
  await Promise.all([stopChild(client), stopChild(relay.child), stopChild(line.child)]);
  return {
    ok: r.ok,
    growthMiB: peak - baseline,
    baselineMiB: baseline,
    heldMiB: held / MiB,
    windowMiB: window / MiB,
    received: r.received,
  };
}

/** The relay's buffered bytes and largest stream window, from /_ggrok/metrics (undefined on an older build). */
async function metrics(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/_ggrok/metrics`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
    });
    const text = await res.text();
    const value = (re) => {
      const m = re.exec(text);
      return m ? Number(m[1]) : undefined;
    };
    return {
      buffered: value(/^ggrok_buffered_bytes(?:\{[^}]*\})? (\S+)$/m),
      largestStream: value(/^ggrok_receive_window_bytes\{[^}]*scope="largest_stream"[^}]*\} (\S+)$/m),
    };
  } catch {
    return {};
  }
}
const stalls = {};
for (const delay of opts.delays)
  for (const build of Object.keys(builds))
    for (const readFirst of [MiB, 32 * MiB]) {
      const s = await stall(build, delay, readFirst);
      (stalls[delay] ??= {})[`${build}/${readFirst / MiB}`] = s;
      log(
        `stall at ${delay} ms (${build}, read ${readFirst / MiB} MiB first): relay holds ${fmt(s.heldMiB)} MiB ` +
          `(window ${fmt(s.windowMiB)} MiB), RSS ${signed(s.growthMiB)} MiB`,
      );
    }

// ---------------------------------------------------------------- loopback, before vs after

const loopback = {};
if (builds.before) {
  const tool = wrkVersion() ? 'wrk' : 'autocannon';
  const targets = {};
  for (const [build, relay] of Object.entries(relays)) {
    const client = (subdomain, localPort) =>
      spawnClient({ localPort, relayPort: relay.port, token: TOKEN, subdomain, bin: binOf(build) });
    await client(`lh-${build}`, httpLocal.port);
    await client(`lw-${build}`, wsLocal.port);
    targets[build] = {
      http: { port: relay.port, host: `lh-${build}.localhost:${relay.port}` },
      ws: { port: relay.port, host: `lw-${build}.localhost:${relay.port}` },
    };
  }
  const s = opts.loopbackSeconds;
  const kinds = {
    'small GETs, 50 connections (req/s)': async (t) =>
      (await measure('load.mjs', { mode: 'small', tool, connections: 50, duration: s, ...t.http }, RESULT))
        .reqPerSec,
    'download 200 MiB (MiB/s)': async (t) =>
      (await measure('load.mjs', { mode: 'download', bytes: 200 * MiB, ...t.http }, RESULT)).mibPerSec,
    'upload 50 MiB, echoed (MiB/s)': async (t) =>
      (await measure('load.mjs', { mode: 'upload', bytes: 50 * MiB, ...t.http }, RESULT)).mibPerSec,
    'WebSocket echo 1 KiB (round trips/s)': async (t) =>
      (
        await measure(
          'ws-load.mjs',
          { mode: 'echo', url: `ws://127.0.0.1:${t.ws.port}/`, host: t.ws.host, seconds: s, bytes: 1024 },
          /^result (.*)$/,
        )
      ).perSecond,
  };
  for (const build of Object.keys(builds)) await kinds['download 200 MiB (MiB/s)'](targets[build]); // warm-up
  const order = Object.keys(builds);
  for (let r = 0; r < opts.rounds; r++)
    for (const [kind, run] of Object.entries(kinds))
      for (const build of rotated(order, r))
        (loopback[kind] ??= { after: [], before: [] })[build].push(await run(targets[build]));
  log(`loopback: ${JSON.stringify(loopback)}`);
}

// ---------------------------------------------------------------- report

const names = (delay) => paths[delay].map(([n]) => n);
const ratio = (a, b) => (a !== undefined && b ? a / b : undefined);
function delayTable(delay) {
  const rows = [];
  for (const [kind, label] of [
    ['download', `download ${opts.downloadBytes / MiB} MiB`],
    ['upload', `upload ${opts.uploadBytes / MiB} MiB`],
    ['ws', `WebSocket bulk ${opts.wsBytes / MiB} MiB echoed`],
  ]) {
    const m = Object.fromEntries(names(delay).map((n) => [n, median(results[delay][kind][n])]));
    const cells = names(delay).map((n) => fmt(m[n], 1));
    const ratios = names(delay)
      .filter((n) => n !== 'direct')
      .map((n) => fmt(ratio(m[n], m.direct), 2));
    rows.push(`| ${label} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  const tunnels = names(delay).filter((n) => n !== 'direct');
  return [
    `| ${2 * delay} ms round trip (MiB/s, median) | ${names(delay).join(' | ')} | ${tunnels.map((n) => `${n} / direct`).join(' | ')} |`,
    `| --- | ${names(delay)
      .map(() => '--:')
      .join(' | ')} | ${tunnels.map(() => '--:').join(' | ')} |`,
    ...rows,
  ].join('\n');
}
function targetsTable() {
  const rows = [];
  const at = (delay, kind, name = 'ggrok') => median(results[delay]?.[kind]?.[name] ?? []);
  for (const kind of ['download', 'upload']) {
    if (results[25]) {
      const v = at(25, kind);
      const r = ratio(v, at(25, kind, 'direct'));
      rows.push(
        `| 50 ms: ${kind} ≥ 100 MiB/s and ≥ 0.3 × direct | ${fmt(v)} MiB/s, ${fmt(r, 2)} × direct | ${v >= 100 && r >= 0.3 ? 'PASS' : 'FAIL'} |`,
      );
    }
    if (results[100]) {
      const v = at(100, kind);
      rows.push(`| 200 ms: ${kind} ≥ 25 MiB/s | ${fmt(v)} MiB/s | ${v >= 25 ? 'PASS' : 'FAIL'} |`);
    }
  }
  const s = stalls[25]?.['after/1'];
  if (s)
    rows.push(
      `| 50 ms: stalled visitor holds ≤ 8 MiB of relay memory | ${fmt(s.heldMiB)} MiB held for it (RSS ${signed(s.growthMiB)} MiB) | ${s.heldMiB <= 8 ? 'PASS' : 'FAIL'} |`,
    );
  return ['| target (issue 21) | measured | met |', '| --- | --- | --- |', ...rows].join('\n');
}
function stallTable() {
  const rows = [];
  for (const delay of opts.delays)
    for (const [key, s] of Object.entries(stalls[delay])) {
      const [build, first] = key.split('/');
      const held = build === 'after' ? `${fmt(s.heldMiB)} (window ${fmt(s.windowMiB)})` : '—';
      rows.push(
        `| ${2 * delay} ms | ${build === 'after' ? 'ggrok' : 'ggrok (before)'} | ${first} MiB | ${held} | ${fmt(s.baselineMiB)} | ${signed(s.growthMiB)} | ${s.ok ? 'yes' : 'no'} |`,
      );
    }
  return [
    '| round trip | build | read before stalling | held for the visitor, MiB (stream window) | relay RSS idle (MiB) | RSS growth during the stall (MiB) | ok |',
    '| --- | --- | --: | --: | --: | --: | --- |',
    ...rows,
  ].join('\n');
}

function loopbackTable() {
  if (!builds.before) return '(run with --before-dist to compare builds on loopback)';
  const rows = Object.entries(loopback).map(([kind, v]) => {
    const a = median(v.after);
    const b = median(v.before);
    const perRound = v.after.map((x, i) => fmt(x / v.before[i], 2)).join(' / ');
    return `| ${kind} | ${fmt(b, 0)} | ${fmt(a, 0)} | ${fmt(a / b, 2)} | ${perRound} |`;
  });
  return [
    '| loopback (no delay line), median | before | after | after / before | per round |',
    '| --- | --: | --: | --: | --- |',
    ...rows,
  ].join('\n');
}

const body = `Command: \`${COMMAND}\`  
Date: ${new Date().toISOString()}  
Machine: node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), shared with other sessions (load average ${os
  .loadavg()
  .map((x) => x.toFixed(2))
  .join(' ')} at the end).  
Setup: the visitor (load.mjs / ws-load.mjs) and the relay are on loopback; the client reaches the relay through
\`bench/delay-line.mjs\` holding every chunk the given time one way (32 MiB at most per direction). "direct" is the
visitor talking to the local server through the same kind of delay line. Medians of ${opts.rounds} interleaved rounds
(the order of the paths rotates each round).${builds.before ? ` "ggrok (before)" is the build given as --before-dist (${opts.beforeDist}).` : ''}

${targetsTable()}

${opts.delays.map(delayTable).join('\n\n')}

Relay memory while a visitor stalls a 1 GiB download for ${opts.stallMs / 1000} s (fresh relay and client per row, warmed
with one 16 MiB download). "Held" is the peak of \`ggrok_buffered_bytes\` (bytes received for the visitor and not taken),
polled every 100 ms, with the largest stream window (\`ggrok_receive_window_bytes{scope="largest_stream"}\`); RSS growth
is peak RSS minus idle RSS, which also moves with garbage collection (the before build has no such metrics):

${stallTable()}

${loopbackTable()}`;

writeFileSync(opts.out, `# Long paths: flow-control windows that grow with the round trip\n\n${body}\n`);
log(`wrote ${path.relative(ROOT, opts.out)}`);
if (opts.out === path.join(ROOT, 'bench/RESULTS-delay.md') && existsSync(RESULTS)) {
  // Inside RESULTS.md's hand-written analysis (which bench/run.mjs carries over), between markers of its own.
  const START = '<!-- delay:start -->';
  const END = '<!-- delay:end -->';
  const section = `${START}\n\n### Long paths (bench/delay.mjs, issue 21)\n\n${body}\n\n${END}`;
  let text = readFileSync(RESULTS, 'utf8');
  const s = text.indexOf(START);
  const e = text.indexOf(END);
  if (s >= 0 && e > s) text = text.slice(0, s) + section + text.slice(e + END.length);
  else text = text.replace('<!-- analysis:end -->', `${section}\n<!-- analysis:end -->`);
  writeFileSync(RESULTS, text);
  log('updated bench/RESULTS.md');
}
process.exit(0);
