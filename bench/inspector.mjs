// Inspector A/B: the same relay and local apps through clients with the inspector off (--no-inspect), on, and on with
// a page connected to its live events; interleaved rounds, medians and ranges -> bench/RESULTS-inspector.md.
// Usage: node bench/inspector.mjs [--rounds 5] [--duration 5] [--download-mib 200] [--upload-mib 50]
//        [--ws-seconds 5] [--variants off,on,page] [--workloads small,download,echo,ws] [--before-dist DIR]
//        [--out file] [--profile]
// Runs the compiled dist/; --before-dist adds before-on and before-page, the same through another build's dist/.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  ANALYSIS_END,
  ANALYSIS_START,
  BIN,
  cpuMs,
  fmt,
  killAll,
  machineBusyCores,
  median,
  MiB,
  previousAnalysis,
  ROOT,
  rssKiB,
  sampleRss,
  spawnNode,
  spawnRelay,
  stopChild,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '5' },
    'download-mib': { type: 'string', default: '200' },
    'upload-mib': { type: 'string', default: '50' },
    'ws-seconds': { type: 'string', default: '5' },
    variants: { type: 'string' },
    'before-dist': { type: 'string' },
    workloads: { type: 'string', default: 'small,download,echo,ws' },
    connections: { type: 'string', default: '50' },
    out: { type: 'string' },
    profile: { type: 'boolean', default: false },
  },
});
const opts = {
  rounds: Number(values.rounds),
  duration: Number(values.duration),
  downloadBytes: Number(values['download-mib']) * MiB,
  uploadBytes: Number(values['upload-mib']) * MiB,
  wsSeconds: Number(values['ws-seconds']),
  connections: Number(values.connections),
  variants: (
    values.variants ?? (values['before-dist'] ? 'off,on,page,before-on,before-page' : 'off,on,page')
  ).split(','),
  beforeDist: values['before-dist'] && path.resolve(values['before-dist']),
  workloads: values.workloads.split(','),
  out: path.resolve(values.out ?? path.join(ROOT, 'bench/RESULTS-inspector.md')),
  profile: values.profile,
};
const COMMAND = `node bench/inspector.mjs ${process.argv.slice(2).join(' ')}`.trim();
const TOKEN = 'bench-inspector';
const OUT_DIR = path.join(ROOT, 'bench/out');
/** A copy of dist/ taken at start-up, so a rebuild during the run cannot mix builds. */
const SNAPSHOT = path.join(OUT_DIR, 'dist-inspector');
const SNAPSHOT_BIN = path.join(SNAPSHOT, path.relative(path.join(ROOT, 'dist'), BIN));
const PROFILE_DIR = path.join(OUT_DIR, 'profiles-inspector');
/** The build to compare with (--before-dist), copied like dist/: variants named before-on and before-page run it. */
const BEFORE_SNAPSHOT = path.join(OUT_DIR, 'dist-inspector-before');
const BEFORE_BIN = path.join(BEFORE_SNAPSHOT, path.relative(path.join(ROOT, 'dist'), BIN));

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
const log = (line) => process.stdout.write(`${line}\n`);

rmSync(SNAPSHOT, { recursive: true, force: true });
mkdirSync(OUT_DIR, { recursive: true });
cpSync(path.join(ROOT, 'dist'), SNAPSHOT, { recursive: true });
if (opts.beforeDist) {
  rmSync(BEFORE_SNAPSHOT, { recursive: true, force: true });
  cpSync(opts.beforeDist, BEFORE_SNAPSHOT, { recursive: true });
}
if (opts.profile) {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
}

/** Starts `ggrok http <port>` for one variant; resolves with the child and its inspector URL (if any). */
async function startClient(variant, kind, localPort, relayPort) {
  const subdomain = `${variant}-${kind}`;
  const prof = opts.profile
    ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR, '--cpu-prof-name', `client-${subdomain}.cpuprofile`]
    : [];
  const child = spawnNode(`client ${subdomain}`, [
    ...prof,
    variant.startsWith('before-') ? BEFORE_BIN : SNAPSHOT_BIN,
    'http',
    String(localPort),
    '--server',
    `http://127.0.0.1:${relayPort}`,
    '--token',
    TOKEN,
    '--subdomain',
    subdomain,
    '-q',
    ...(variant === 'off' || variant === 'before-off' ? ['--no-inspect'] : ['--inspect', '127.0.0.1:0']),
  ]);
  await waitForLine(child, /Forwarding\s+\S+/);
  const inspector = variant.endsWith('off') ? undefined : (await waitForLine(child, /Inspector\s+(\S+)/))[1];
  return { child, host: `${subdomain}.localhost:${relayPort}`, inspector };
}

/** What a page with the inspector open costs: a live-events subscriber that reads everything it is sent. */
function subscribe(inspectorUrl) {
  const u = new URL(inspectorUrl);
  let bytes = 0;
  const req = http.get({ host: u.hostname, port: u.port, path: '/api/events', agent: false }, (res) =>
    res.on('data', (c) => (bytes += c.length)),
  );
  req.on('error', () => {});
  return { close: () => req.destroy(), bytes: () => bytes };
}

async function runLoad(args) {
  const child = spawnNode(`load ${args.mode}`, [
    path.join(ROOT, 'bench/load.mjs'),
    JSON.stringify({ hardTimeoutMs: 240_000, ...args }),
  ]);
  const line = await waitForLine(child, /^(\{"event":"result".*)$/, 250_000);
  await child.exited;
  return JSON.parse(line[1]);
}

async function runWsEcho(url, host) {
  const child = spawnNode('ws-load', [
    path.join(ROOT, 'bench/ws-load.mjs'),
    JSON.stringify({ mode: 'echo', url, host, seconds: opts.wsSeconds, bytes: 1024 }),
  ]);
  const m = await waitForLine(child, /^result (.*)$/, (opts.wsSeconds + 60) * 1000);
  await child.exited;
  return JSON.parse(m[1]);
}

/** Runs `fn` while sampling the client's CPU and RSS; returns fn's result with cpuMs and peak/end RSS (MiB). */
/** CPU ms a process has used, on its main thread and on all its other threads (V8's GC helpers, libuv's pool). */
function threadCpuMs(pid) {
  const out = { main: 0, other: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      out[tid === String(pid) ? 'main' : 'other'] += cpuMs(`${pid}/task/${tid}`); // reads /proc/<that>/stat
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Runs `fn` while sampling the client's CPU and RSS; returns fn's result with CPU (ms) and peak RSS (MiB). */
async function measured(client, fn) {
  const cpu0 = threadCpuMs(client.pid);
  const rss = sampleRss({ client: client.pid }, 100);
  const r = await fn();
  const s = rss.stop().client;
  const cpu1 = threadCpuMs(client.pid);
  const main = cpu1.main - cpu0.main;
  const other = cpu1.other - cpu0.other;
  return { ...r, clientCpuMs: main + other, clientOtherMs: other, peakRssMiB: s.maxKiB / 1024 };
}

// ------------------------------------------------------------------ setup

const localHttp = spawnNode('local server', [path.join(ROOT, 'bench/local-server.mjs')]);
const httpPort = Number((await waitForLine(localHttp, /^\{"port":(\d+)/))[1]);
const localWs = spawnNode('ws-local', [path.join(ROOT, 'bench/ws-local.mjs')]);
const wsPort = Number((await waitForLine(localWs, /^port (\d+)$/))[1]);
const { child: relay, port: relayPort } = await spawnRelay({
  token: TOKEN,
  bin: SNAPSHOT_BIN,
  env: { GGROK_RATE_LIMIT: '100000000' },
});
const clients = {};
for (const variant of opts.variants) {
  clients[variant] = {
    http: await startClient(variant, 'http', httpPort, relayPort),
    ws: await startClient(variant, 'ws', wsPort, relayPort),
  };
  if (variant.endsWith('page')) {
    clients[variant].pages = [
      subscribe(clients[variant].http.inspector),
      subscribe(clients[variant].ws.inspector),
    ];
  }
}
log(`relay :${relayPort}, local http :${httpPort}, ws :${wsPort}; variants ${opts.variants.join(', ')}`);
const idleBefore = await machineBusyCores(2000);
log(`machine busy before the run: ${fmt(idleBefore, 2)} cores`);

// ------------------------------------------------------------------ workloads

const allWorkloads = {
  small: async (c) => {
    const r = await measured(c.http.child, () =>
      runLoad({
        mode: 'small',
        port: relayPort,
        host: c.http.host,
        tool: wrkVersion() ? 'wrk' : 'autocannon',
        connections: opts.connections,
        duration: opts.duration,
      }),
    );
    return {
      ok: r.ok,
      value: r.reqPerSec,
      p99: r.p99,
      cpuPer10k: r.total ? (r.clientCpuMs / r.total) * 10_000 : undefined,
      otherPer10k: r.total ? (r.clientOtherMs / r.total) * 10_000 : undefined,
      rss: r.peakRssMiB,
    };
  },
  download: async (c) => {
    const r = await measured(c.http.child, () =>
      runLoad({ mode: 'download', port: relayPort, host: c.http.host, bytes: opts.downloadBytes }),
    );
    return {
      ok: r.ok,
      value: r.mibPerSec,
      cpuPerGiB: (r.clientCpuMs / opts.downloadBytes) * 1024 * MiB,
      rss: r.peakRssMiB,
    };
  },
  echo: async (c) => {
    const r = await measured(c.http.child, () =>
      runLoad({ mode: 'upload', port: relayPort, host: c.http.host, bytes: opts.uploadBytes }),
    );
    return {
      ok: r.ok,
      value: r.mibPerSec,
      cpuPerGiB: (r.clientCpuMs / opts.uploadBytes) * 1024 * MiB,
      rss: r.peakRssMiB,
    };
  },
  ws: async (c) => {
    const r = await measured(c.ws.child, () => runWsEcho(`ws://127.0.0.1:${relayPort}/`, c.ws.host));
    return {
      ok: r.roundTrips > 0,
      value: r.perSecond,
      p99: r.p99Ms,
      cpuPer10k: (r.clientCpuMs / r.roundTrips) * 10_000,
      otherPer10k: (r.clientOtherMs / r.roundTrips) * 10_000,
      rss: r.peakRssMiB,
    };
  },
};
const workloads = Object.fromEntries(opts.workloads.map((name) => [name, allWorkloads[name]]));
const UNITS = { small: 'req/s', download: 'MiB/s', echo: 'MiB/s', ws: 'round trips/s' };
const LABELS = {
  small: `small GETs, ${opts.connections} connections, ${opts.duration} s (wrk)`,
  download: `download ${opts.downloadBytes / MiB} MiB, one stream`,
  echo: `streamed echo ${opts.uploadBytes / MiB} MiB (POST /echo)`,
  ws: `WebSocket echo, 1 KiB, one socket, ${opts.wsSeconds} s`,
};

// Warm-up (discarded): JIT, pools and the inspector's store in every client.
for (const variant of opts.variants)
  for (const name of Object.keys(workloads)) {
    if (name === 'small') continue;
    await workloads[name](clients[variant]);
  }
if (workloads.small) for (const variant of opts.variants) await workloads.small(clients[variant]);

const results = {};
for (const name of Object.keys(workloads)) {
  results[name] = {};
  for (const v of opts.variants) results[name][v] = [];
}
for (let round = 0; round < opts.rounds; round++) {
  // Rotate the order each round so no variant always runs first (or right after the heaviest one).
  const order = opts.variants.map((_, i) => opts.variants[(i + round) % opts.variants.length]);
  const line = [];
  for (const name of Object.keys(workloads)) {
    for (const v of order) {
      const r = await workloads[name](clients[v]);
      results[name][v].push(r);
      if (!r.ok) log(`  round ${round + 1} ${name} ${v}: not ok`);
    }
    line.push(`${name} ${opts.variants.map((v) => fmt(results[name][v].at(-1).value, 0)).join('/')}`);
  }
  log(`round ${round + 1}/${opts.rounds}: ${line.join(', ')} (${opts.variants.join('/')})`);
}
const idleAfter = await machineBusyCores(2000);
const rssEnd = {};
for (const v of opts.variants) {
  rssEnd[v] = { http: rssKiB(clients[v].http.child.pid) / 1024, ws: rssKiB(clients[v].ws.child.pid) / 1024 };
}
for (const v of opts.variants) for (const p of clients[v].pages ?? []) p.close();
for (const v of opts.variants) {
  await stopChild(clients[v].http.child, 'SIGINT', 15_000);
  await stopChild(clients[v].ws.child, 'SIGINT', 15_000);
}
await stopChild(relay);
await stopChild(localHttp);
await stopChild(localWs);

// ------------------------------------------------------------------ report

const ok = (rs) => rs.filter((r) => r && r.ok);
const finite = (xs) => xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
const med = (rs, key) => median(ok(rs).map((r) => r[key]));
const span = (xs, digits) =>
  xs.length ? `${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)}` : '—';
const base = opts.variants.includes('off') ? 'off' : opts.variants[0];
/** Per-round ratios to the base variant of the same round (the runs next to each other in time). */
const ratios = (name, v, key) =>
  finite(
    results[name][v].map((r, i) => {
      const b = results[name][base][i];
      return r?.ok && b?.ok ? r[key] / b[key] : undefined;
    }),
  );
const rows = [];
for (const name of Object.keys(workloads)) {
  const cpu = name === 'small' || name === 'ws' ? 'cpuPer10k' : 'cpuPerGiB';
  for (const v of opts.variants) {
    const rs = results[name][v];
    const r = ratios(name, v, 'value');
    const c = ratios(name, v, cpu);
    rows.push(
      `| ${LABELS[name]} | ${v} | ${fmt(med(rs, 'value'), 0)} ${UNITS[name]} | ${span(finite(ok(rs).map((x) => x.value)), 0)} | ` +
        (v === base ? '— | — | ' : `**${fmt(median(r), 3)}** | ${span(r, 2)} | `) +
        `${fmt(med(rs, cpu), 0)} | ${cpu === 'cpuPer10k' ? fmt(med(rs, 'otherPer10k'), 0) : '—'} | ` +
        `${v === base ? '—' : fmt(median(c), 2)} | ${fmt(med(rs, 'rss'), 1)} |`,
    );
  }
}
const perRound = Object.keys(workloads)
  .map(
    (name) =>
      `- ${name}: ` +
      results[name][base]
        .map((_, i) => opts.variants.map((v) => fmt(results[name][v][i]?.value, 0)).join(' / '))
        .join(', '),
  )
  .join('\n');

/**
 * Share of a profile's busy samples spent inside the inspector (any frame of cli/inspector/ on the stack) and in the
 * garbage collector: CPU shares, unlike throughput, barely move when other work on the machine steals time.
 */
function shares(file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const parent = new Map();
  const byId = new Map();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const inside = new Map();
  const isInspector = (id) => {
    if (inside.has(id)) return inside.get(id);
    const n = byId.get(id);
    const yes =
      n.callFrame.url.includes('/cli/inspector/') || (parent.has(id) && isInspector(parent.get(id)));
    inside.set(id, yes);
    return yes;
  };
  let busy = 0;
  let inspector = 0;
  let gc = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const name = byId.get(id).callFrame.functionName;
    if (name === '(idle)') return;
    busy += dt;
    if (name === '(garbage collector)') gc += dt;
    else if (isInspector(id)) inspector += dt;
  });
  return { busyMs: busy / 1000, inspector: (100 * inspector) / busy, gc: (100 * gc) / busy };
}
let profileTable = '';
if (opts.profile) {
  const lines = [
    '| client | inspector | busy CPU s | in inspector code (inclusive) | in GC |',
    '| --- | --- | --: | --: | --: |',
  ];
  for (const kind of ['http', 'ws'])
    for (const v of opts.variants) {
      const file = path.join(PROFILE_DIR, `client-${v}-${kind}.cpuprofile`);
      if (!existsSync(file)) continue;
      const s = shares(file);
      lines.push(
        `| ${kind} | ${v} | ${fmt(s.busyMs / 1000, 2)} | ${fmt(s.inspector, 1)} % | ${fmt(s.gc, 1)} % |`,
      );
    }
  profileTable =
    `\nWhere the client's CPU went (\`--cpu-prof\`, whole run: start-up, warm-up and every round; the http ` +
    `client served small GETs, downloads and echoes, the ws client the WebSocket echo):\n\n${lines.join('\n')}\n`;
}

const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
const table = [
  '| workload | inspector | median | range | ratio to off (median of rounds) | ratio range | client CPU ms (per 10 000 requests or round trips; per GiB) | of which off the main thread (GC helpers) | CPU ratio to off | client peak RSS MiB |',
  '| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |',
  ...rows,
].join('\n');
const report =
  `# Inspector on vs off\n\n` +
  `Command: \`${COMMAND}\`  \nDate: ${new Date().toISOString()}  \n` +
  `Machine: node ${process.version}, ${os.cpus().length} cores (${cpuModel}), shared with other work: ` +
  `${fmt(idleBefore, 2)} cores busy before the run, ${fmt(idleAfter, 2)} after.\n\n` +
  `One relay and one local app; each variant has its own client processes (\`ggrok http\`): **off** = ` +
  `\`--no-inspect\`, **on** = inspector listening, nobody looking, **page** = inspector with a page open (a ` +
  `subscriber to its live events)${opts.beforeDist ? '; **before-on** and **before-page** are the same through the build given as --before-dist' : ''}. Workloads run variant after variant, the order rotated each round; ` +
  `${opts.rounds} rounds. Ratios are taken within each round (runs next to each other in time), then the median.` +
  `\n\n${table}\n${profileTable}\n` +
  `Client RSS after the run (MiB, http / ws client): ${opts.variants
    .map((v) => `${v} ${fmt(rssEnd[v].http, 1)} / ${fmt(rssEnd[v].ws, 1)}`)
    .join(', ')}.\n\nPer round (${opts.variants.join(' / ')}):\n\n${perRound}\n`;
// A hand-written analysis in the previous file is carried over.
const kept = previousAnalysis(opts.out);
writeFileSync(
  opts.out,
  kept === undefined ? report : `${report}\n${ANALYSIS_START}\n${kept}\n${ANALYSIS_END}\n`,
);
log(`\n${table}\n${profileTable}\nwrote ${path.relative(ROOT, opts.out)}`);
process.exit(0);
