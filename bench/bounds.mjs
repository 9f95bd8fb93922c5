// How fast can any relay + client tunnel be on this machine? `node bench/bounds.mjs [--rounds 3] [--seconds 5]
// [--out bench/BOUNDS.md]` measures, in interleaved rounds and against the same local servers:
//   direct                 load tool → local server
//   one pipe               load tool → raw TCP pipe (Node) → local server
//   two pipes              load tool → pipe → pipe → local server: a relay + client topology doing no work at all
//   node:http proxy        load tool → node:http reverse proxy (keep-alive Agent) → local server
//   nginx                  load tool → Debian's nginx, one worker, keep-alive upstream → local server (when installed)
//   ggrok                  load tool → relay → control WebSocket → client → local server
// for small GETs at 50 connections (wrk when installed, else autocannon), a 200 MiB download on one connection, and a
// 1 KiB WebSocket echo on one socket.
// The baselines put the issue's ratios in context: every process in the path costs wake-ups on two shared cores.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ANALYSIS_END,
  ANALYSIS_START,
  flag,
  fmt,
  killAll,
  median,
  previousAnalysis,
  ROOT,
  spawnClient,
  spawnNode,
  spawnRelay,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const argv = process.argv.slice(2);
const rounds = Number(flag('rounds', 3));
const seconds = Number(flag('seconds', 5));
const out = path.resolve(flag('out', path.join(ROOT, 'bench', 'BOUNDS.md')));
const tool = wrkVersion() ? 'wrk' : 'autocannon';
const TOKEN = 'bench-token';
const DOWNLOAD_BYTES = 200 * 1024 * 1024;
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

const bench = (file) => path.join(ROOT, 'bench', file);

/** Starts a node process and returns it with the port it printed. */
async function serve(name, args, portLine) {
  const child = spawnNode(name, args);
  return { child, port: Number((await waitForLine(child, portLine))[1]) };
}
const proxy = (kind, port) =>
  serve(`${kind} proxy`, [bench('baseline-proxy.mjs'), kind, String(port)], /^port (\d+)$/);

/** Runs one measurement process and returns the JSON result it prints. */
async function measure(file, args, resultLine) {
  const child = spawnNode(file, [bench(file), JSON.stringify(args)]);
  const m = await waitForLine(child, resultLine, (seconds + 60) * 1000);
  await child.exited;
  return JSON.parse(m[1]);
}
const smallGets = async (target) => {
  const r = await measure(
    'load.mjs',
    { mode: 'small', tool, connections: 50, duration: seconds, ...target },
    /^(\{"event":"result".*)$/,
  );
  if (!r.ok) throw new Error(`small GETs failed: ${JSON.stringify(r)}`);
  return { reqPerSec: r.reqPerSec, p99: r.p99 };
};

/** Debian's nginx as a reference hop: one worker, HTTP/1.1 keep-alive to the upstream, WebSocket upgrades passed. */
function startNginx(httpPort, wsPort) {
  if (spawnSync('nginx', ['-v']).status !== 0) return undefined;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-bench-nginx-'));
  const listenHttp = 20000 + Math.floor(Math.random() * 20000);
  const listenWs = listenHttp + 1;
  const conf = `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream h { server 127.0.0.1:${httpPort}; keepalive 64; }
  upstream w { server 127.0.0.1:${wsPort}; }
  server {
    listen 127.0.0.1:${listenHttp};
    location / { proxy_pass http://h; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
  server {
    listen 127.0.0.1:${listenWs};
    location / {
      proxy_pass http://w; proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";
    }
  }
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const child = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  process.on('exit', () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    http: listenHttp,
    ws: listenWs,
    version: spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim(),
  };
}
/** Waits until a port accepts connections. */
async function listening(port) {
  const net = await import('node:net');
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}
const download = async (target) => {
  const r = await measure(
    'load.mjs',
    { mode: 'download', bytes: DOWNLOAD_BYTES, ...target },
    /^(\{"event":"result".*)$/,
  );
  if (!r.ok) throw new Error(`download failed: ${JSON.stringify(r)}`);
  return r.mibPerSec;
};
const echo = async ({ port, host }) =>
  (
    await measure(
      'ws-load.mjs',
      { mode: 'echo', url: `ws://127.0.0.1:${port}/`, host, seconds, bytes: 1024 },
      /^result (.*)$/,
    )
  ).perSecond;

const httpLocal = await serve('local server', [bench('local-server.mjs')], /^\{"port":(\d+)/);
const wsLocal = await serve('ws local', [bench('ws-local.mjs')], /^port (\d+)$/);
const httpPipe = await proxy('pipe', httpLocal.port);
const httpPipes = await proxy('pipe', httpPipe.port);
const httpProxy = await proxy('http', httpLocal.port);
const wsPipe = await proxy('pipe', wsLocal.port);
const wsPipes = await proxy('pipe', wsPipe.port);
const nginx = startNginx(httpLocal.port, wsLocal.port);
if (nginx) await Promise.all([listening(nginx.http), listening(nginx.ws)]);
// ggrok as users get it: the relay's and client's defaults (inspector on), and tuned: the inspector off.
const { port: relayPort } = await spawnRelay({ token: TOKEN });
await spawnClient({ localPort: httpLocal.port, relayPort, token: TOKEN, subdomain: 'h', inspect: true });
await spawnClient({ localPort: wsLocal.port, relayPort, token: TOKEN, subdomain: 'w', inspect: true });
await spawnClient({ localPort: httpLocal.port, relayPort, token: TOKEN, subdomain: 'ht' });
await spawnClient({ localPort: wsLocal.port, relayPort, token: TOKEN, subdomain: 'wt' });
const ggrok = (name) => ({ port: relayPort, host: `${name}.localhost:${relayPort}` });

const paths = {
  http: [
    ['direct', { port: httpLocal.port }],
    ['one pipe', { port: httpPipe.port }],
    ['two pipes', { port: httpPipes.port }],
    ['node:http proxy', { port: httpProxy.port }],
    ...(nginx ? [['nginx', { port: nginx.http }]] : []),
    ['ggrok', ggrok('h')],
    ['ggrok --no-inspect', ggrok('ht')],
  ],
  ws: [
    ['direct', { port: wsLocal.port }],
    ['one pipe', { port: wsPipe.port }],
    ['two pipes', { port: wsPipes.port }],
    ...(nginx ? [['nginx', { port: nginx.ws }]] : []),
    ['ggrok', ggrok('w')],
    ['ggrok --no-inspect', ggrok('wt')],
  ],
};
// Warm-up, results discarded: JIT and connection pools of every process in every path (a relay runs for days).
for (const [, target] of paths.http) {
  await smallGets(target);
  await download(target);
}
for (const [, target] of paths.ws) await echo(target);
console.log('warmed up');

const results = { http: {}, p99: {}, download: {}, ws: {} };
/** Round r starts at a different path, so slow drift of the machine does not always favour the same one. */
const rotated = (list, r) => [...list.slice(r % list.length), ...list.slice(0, r % list.length)];
for (let r = 0; r < rounds; r++) {
  for (const [name, target] of rotated(paths.http, r)) {
    const small = await smallGets(target);
    (results.http[name] ??= []).push(small.reqPerSec);
    (results.p99[name] ??= []).push(small.p99);
    (results.download[name] ??= []).push(await download(target));
  }
  for (const [name, target] of rotated(paths.ws, r)) (results.ws[name] ??= []).push(await echo(target));
  console.log(
    `round ${r + 1}/${rounds}: ` +
      paths.http.map(([n]) => `${n} ${fmt(results.http[n].at(-1), 0)}`).join(', ') +
      ' req/s; ' +
      paths.http.map(([n]) => `${n} ${fmt(results.download[n].at(-1), 0)}`).join(', ') +
      ' MiB/s; ' +
      paths.ws.map(([n]) => `${n} ${fmt(results.ws[n].at(-1), 0)}`).join(', ') +
      ' echoes/s',
  );
}

/** One table: median per path, its ratio to direct and to two pipes, with every round's ratio to direct. */
function table(kind, unit) {
  const direct = results[kind].direct;
  const pipes = results[kind]['two pipes'];
  const rows = paths[kind === 'download' ? 'http' : kind].map(([name]) => {
    const values = results[kind][name];
    const perRound = values.map((v, i) => fmt(v / direct[i], 2)).join(' / ');
    return `| ${name} | ${fmt(median(values), 0)} | ${fmt(median(values) / median(direct), 2)} | ${fmt(median(values) / median(pipes), 2)} | ${perRound} |`;
  });
  return [
    `| path | ${unit} (median) | ratio to direct | ratio to two pipes | ratio to direct per round |`,
    '| --- | --: | --: | --: | --- |',
    ...rows,
  ].join('\n');
}

/** The issue's targets for ggrok against the two-pipe bound, and its p99 against nginx's, from this run. */
function targets() {
  const r = (kind, who = 'ggrok') => median(results[kind][who]) / median(results[kind]['two pipes']);
  const tuned = 'ggrok --no-inspect';
  const cost = (kind) => median(results[kind].ggrok) / median(results[kind][tuned]);
  const rows = [
    ['WebSocket 1 KiB echo / two pipes', r('ws'), '≥ 0.9', r('ws') >= 0.9],
    ['small GETs / two pipes', r('http'), '≥ 0.8', r('http') >= 0.8],
    ['download / two pipes', r('download'), '≥ 0.9', r('download') >= 0.9],
    ['(tuned, --no-inspect) WebSocket echo / two pipes', r('ws', tuned), '≥ 0.9', r('ws', tuned) >= 0.9],
    ['(tuned, --no-inspect) small GETs / two pipes', r('http', tuned), '≥ 0.8', r('http', tuned) >= 0.8],
    [
      '(tuned, --no-inspect) download / two pipes',
      r('download', tuned),
      '≥ 0.9',
      r('download', tuned) >= 0.9,
    ],
    ['inspector on / off: small GETs', cost('http'), '≥ 0.9', cost('http') >= 0.9],
    ['inspector on / off: download', cost('download'), '≥ 0.9', cost('download') >= 0.9],
    ['inspector on / off: WebSocket echo', cost('ws'), '≥ 0.9', cost('ws') >= 0.9],
  ].map(([what, v, target, met]) => `| ${what} | ${fmt(v, 2)} | ${target} | ${met ? 'met' : 'not met'} |`);
  if (results.p99.nginx) {
    const g = median(results.p99.ggrok);
    const n = median(results.p99.nginx);
    rows.push(
      `| small GET p99 (ms): ggrok / nginx | ${fmt(g, 2)} / ${fmt(n, 2)} | ≤ nginx | ${g <= n ? 'met' : 'not met'} |`,
    );
  }
  const p99 = paths.http.map(([name]) => `${name} ${fmt(median(results.p99[name]), 2)}`).join(', ');
  return [
    '| target | this run | target | |',
    '| --- | --: | --- | --- |',
    ...rows,
    '',
    `Small GET p99 latency at 50 connections, median of rounds (ms): ${p99}.`,
  ].join('\n');
}

const kept = previousAnalysis(out);
const analysis = kept === undefined ? '' : `\n${ANALYSIS_START}\n${kept}\n${ANALYSIS_END}\n`;
const report = `# Bounds: what any relay + client tunnel can reach on this machine

Command: \`node bench/bounds.mjs ${argv.join(' ')}\`  
Date: ${new Date().toISOString()}  
Machine: node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}); every box in a path is its own process on the same cores.
Load: small GETs with ${tool === 'wrk' ? `${wrkVersion()} (-t1)` : 'autocannon'} at 50 connections for ${seconds} s; one 200 MiB download with load.mjs (Node's http client); WebSocket echo of 1 KiB messages on one socket for ${seconds} s. Every path is warmed up with one discarded run first; medians of ${rounds} rounds; the order of the paths rotates each round.

"One pipe" and "two pipes" are raw TCP pipes in Node (\`bench/baseline-proxy.mjs pipe\`): no parsing, no framing, nothing
but read and write. Two pipes have the shape of relay + client with none of their work. "node:http proxy" is the
textbook reverse proxy on node:http with a keep-alive Agent (\`bench/baseline-proxy.mjs http\`), in one process.
${nginx ? `"nginx" is ${nginx.version} with one worker, keep-alive to the upstream and proxy buffering off (a reference hop in C).` : 'nginx was not installed: no nginx row.'}
"ggrok" runs with the relay's and client's defaults (inspector on, no rate limit); "ggrok --no-inspect" is the
tuned figure beside it (same relay, the client's inspector off).

## Issue 17 targets (ggrok with its defaults)

${targets()}

## Small GETs (req/s)

${table('http', 'req/s')}

## Download of 200 MiB, one connection (MiB/s; load.mjs, a Node client)

${table('download', 'MiB/s')}

## 1 KiB WebSocket echo, one socket (round trips/s)

${table('ws', 'round trips/s')}
${analysis}`;
writeFileSync(out, report);
console.log(`wrote ${path.relative(ROOT, out)}`);
process.exit(0);
