// ggrok benchmark: direct (load tool -> local server) vs tunnelled (load tool -> relay -> control WebSocket ->
// client -> the same local server), interleaved rounds, medians and ratios; writes bench/RESULTS.md.
// Relay, client, local server and every load run are separate processes (the compiled CLI from dist/).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  ANALYSIS_END,
  ANALYSIS_START,
  previousAnalysis,
  BIN,
  busyCores,
  machineCpu,
  cpuSnapshot,
  fmt,
  killAll,
  machineBusyCores,
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
import { markdown, summarizeFile } from './profile-summary.mjs';

const USAGE = `usage: node bench/run.js [options]
  --duration <s>     seconds per small-GET load run (default 10; 2 with --quick)
  --rounds <n>       interleaved rounds, medians reported (default 3)
  --quick            smoke run: short loads, smaller transfers, writes bench/out/RESULTS.quick.md by default
  --out <file>       where to write the report (default bench/RESULTS.md)
  --no-profile       skip the --cpu-prof phase ("where the time goes")
  --download-mib <n> single-stream download size (default 200; 32 with --quick)
  --upload-mib <n>   echoed upload size (default 50; 16 with --quick)
  --stall-seconds <n> how long the public client stops reading the 1 GiB download (default 5; 2 with --quick)
  --connections <n>  connections for small GETs (default 50)
  --tool <name>      small-GET load tool: wrk (Debian's wrk, the default when installed) or autocannon`;

const OUT_DIR = path.join(ROOT, 'bench/out');
const LOAD = path.join(ROOT, 'bench/load.mjs');
const SERVER = path.join(ROOT, 'bench/local-server.mjs');
const SUBDOMAIN = 'bench';
/**
 * The run uses a copy of dist/ taken at start-up: other agents may rebuild dist/ while the benchmark runs, and
 * every relay and client of one run must be the same build. (Bare imports still resolve to ROOT/node_modules.)
 */
const DIST_SNAPSHOT = path.join(ROOT, 'bench/out/dist');
const SNAPSHOT_BIN = path.join(DIST_SNAPSHOT, path.relative(path.join(ROOT, 'dist'), BIN));
/** ggrok as users get it: no flags and no environment for the relay (no request-rate limit applies by default). */
const RELAY_ENV = {};
const STALL_BYTES = 1024 * MiB;

function options() {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      rounds: { type: 'string' },
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      'no-profile': { type: 'boolean', default: false },
      'download-mib': { type: 'string' },
      'upload-mib': { type: 'string' },
      'stall-seconds': { type: 'string' },
      connections: { type: 'string' },
      tool: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const q = values.quick;
  const num = (name, fallback, min = 1) => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) {
      process.stderr.write(`--${name} must be a number >= ${min}\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  return {
    quick: q,
    duration: num('duration', q ? 2 : 10),
    rounds: Math.round(num('rounds', 3)),
    downloadBytes: Math.round(num('download-mib', q ? 32 : 200) * MiB),
    uploadBytes: Math.round(num('upload-mib', q ? 16 : 50) * MiB),
    stallMs: num('stall-seconds', q ? 2 : 5, 0.5) * 1000,
    connections: Math.round(num('connections', 50)),
    tool: loadTool(values.tool),
    profile: !values['no-profile'],
    out: path.resolve(values.out ?? path.join(ROOT, q ? 'bench/out/RESULTS.quick.md' : 'bench/RESULTS.md')),
  };
}

/**
 * wrk when installed: it is C and takes far less CPU per request than autocannon, and in tunnel mode every
 * microsecond the load tool spends is taken from the relay and client on the same two cores.
 */
function loadTool(requested) {
  if (requested !== undefined && requested !== 'wrk' && requested !== 'autocannon') {
    process.stderr.write(`--tool must be wrk or autocannon\n${USAGE}\n`);
    process.exit(2);
  }
  if (requested === 'autocannon') return 'autocannon';
  if (wrkVersion()) return 'wrk';
  if (requested === 'wrk') {
    process.stderr.write('--tool wrk: wrk is not installed (apt-get install wrk)\n');
    process.exit(2);
  }
  return 'autocannon';
}

const log = (line) => process.stdout.write(`${line}\n`);

// ---------------------------------------------------------------- processes

async function startLocalServer() {
  const child = spawnNode('local server', [SERVER]);
  const m = await waitForLine(child, /^\{"port":(\d+)/);
  return { child, port: Number(m[1]) };
}

/** Starts relay and client (compiled CLI), each its own process, optionally under --cpu-prof. */
async function startTunnel(localPort, token, profile) {
  const prof = (who) =>
    profile
      ? ['--cpu-prof', '--cpu-prof-dir', profile.dir, '--cpu-prof-name', `${who}-${profile.tag}.cpuprofile`]
      : [];
  const { child: relay, port: relayPort } = await spawnRelay({
    token,
    bin: SNAPSHOT_BIN,
    nodeArgs: prof('relay'),
    env: RELAY_ENV,
  });
  const client = await spawnClient({
    localPort,
    relayPort,
    token,
    subdomain: SUBDOMAIN,
    bin: SNAPSHOT_BIN,
    nodeArgs: prof('client'),
    inspect: true, // the client's default
  });
  const host = `${SUBDOMAIN}.localhost:${relayPort}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const status = await getStatus(relayPort, host, '/small').catch(() => 0);
    if (status === 200) break;
    if (Date.now() > deadline) throw new Error(`tunnel not answering /small (last status ${status})`);
    await sleep(100);
  }
  return { relay, client, relayPort, host };
}

async function stopTunnel(t) {
  // Client first, so it does not start reconnecting to a relay that is going away.
  await stopChild(t.client, 'SIGTERM', 15_000);
  await stopChild(t.relay, 'SIGTERM', 35_000);
}

function getStatus(port, host, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: urlPath, headers: { host }, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Runs one load child; resolves with its result line (or an ok:false stand-in). `onEvent` sees progress lines. */
async function runLoad(args, onEvent = () => {}) {
  const hardTimeoutMs = args.hardTimeoutMs ?? 180_000;
  const child = spawnNode(`load ${args.mode}`, [LOAD, JSON.stringify({ ...args, hardTimeoutMs })]);
  let result;
  child.on('line', (line) => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (msg.event === 'result') result = msg;
    else onEvent(msg);
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), hardTimeoutMs + 10_000);
  const exit = await child.exited;
  clearTimeout(killer);
  return (
    result ?? {
      ok: false,
      error: `load child exited ${exit.code ?? exit.signal}: ${child.stderrText.slice(-500)}`,
    }
  );
}

// ---------------------------------------------------------------- measurements

function diff(after, before) {
  const out = {};
  for (const k of Object.keys(after)) out[k] = after[k] - before[k];
  return out;
}

function makeBench(opts, server, tunnel) {
  const target = (mode) =>
    mode === 'direct' ? { port: server.port } : { port: tunnel.relayPort, host: tunnel.host };
  const pids = (mode) =>
    mode === 'direct'
      ? { server: server.child.pid }
      : { relay: tunnel.relay.pid, client: tunnel.client.pid, server: server.child.pid };
  const transferTimeoutMs = 180_000;

  return {
    async small(mode, duration = opts.duration) {
      const p = pids(mode);
      const before = cpuSnapshot(p);
      const machine0 = machineCpu();
      const r = await runLoad({
        mode: 'small',
        ...target(mode),
        tool: opts.tool,
        connections: opts.connections,
        duration,
        hardTimeoutMs: (duration + 60) * 1000,
      });
      const machine1 = machineCpu();
      const cpu = diff(cpuSnapshot(p), before);
      r.cpuMs = cpu;
      cpu.load = r.runCpuMs;
      // Cores busy with anything but this benchmark's processes while the load ran: the noise of this phase.
      const ours = Object.values(cpu).reduce((a, b) => a + (b ?? 0), 0) + (r.loadCpuMs - (r.runCpuMs ?? 0));
      r.otherCores = busyCores(machine0, machine1) - ours / (machine1.at - machine0.at);
      r.cpuPer10k = {};
      for (const [k, v] of Object.entries(cpu))
        r.cpuPer10k[k] = r.total > 0 ? (v / r.total) * 10_000 : undefined;
      return r;
    },

    async transfer(mode, kind) {
      const p = pids(mode);
      const watched = mode === 'direct' ? { server: p.server } : { relay: p.relay, client: p.client };
      const before = cpuSnapshot(p);
      const sampler = sampleRss(watched, 100);
      const bytes = kind === 'download' ? opts.downloadBytes : opts.uploadBytes;
      const r = await runLoad({
        mode: kind,
        ...target(mode),
        bytes,
        timeoutMs: transferTimeoutMs,
        hardTimeoutMs: transferTimeoutMs + 10_000,
      });
      const rss = sampler.stop();
      const cpu = diff(cpuSnapshot(p), before);
      r.peakRssMiB = {};
      r.rssGrowthMiB = {};
      for (const [k, v] of Object.entries(rss)) {
        r.peakRssMiB[k] = v.maxKiB / 1024;
        r.rssGrowthMiB[k] = (v.maxKiB - v.firstKiB) / 1024;
      }
      r.cpuPer100MiB = {};
      for (const [k, v] of Object.entries(cpu)) r.cpuPer100MiB[k] = (v / (bytes / MiB)) * 100;
      return r;
    },

    /** Relay (and client) RSS growth while the public client stops reading a 1 GiB download. */
    async stall() {
      const watched = { relay: tunnel.relay.pid, client: tunnel.client.pid };
      const idle = sampleRss(watched, 100);
      await sleep(1000);
      const baseline = idle.stop();
      const sampler = sampleRss(watched, 100);
      let stalledAt;
      let received;
      const r = await runLoad(
        {
          mode: 'stall',
          ...target('tunnel'),
          bytes: STALL_BYTES,
          readFirst: MiB,
          stallMs: opts.stallMs,
          hardTimeoutMs: opts.stallMs + 60_000,
        },
        (e) => {
          if (e.event === 'stalled') {
            stalledAt = performance.now() - sampler.started;
            received = e.received;
          }
        },
      );
      const during = sampler.stop();
      const out = {
        ok: r.ok && stalledAt !== undefined,
        error: r.error,
        receivedBeforeStall: received,
        stallMs: opts.stallMs,
      };
      for (const name of Object.keys(watched)) {
        const base = median(baseline[name].samples.map((s) => s[1])) / 1024;
        const inStall = during[name].samples
          .filter((s) => stalledAt !== undefined && s[0] >= stalledAt)
          .map((s) => s[1]);
        const peak = Math.max(...during[name].samples.map((s) => s[1])) / 1024;
        const lastInStall = inStall.length ? inStall[inStall.length - 1] / 1024 : undefined;
        out[name] = { baselineMiB: base, peakMiB: peak, growthMiB: peak - base, endOfStallMiB: lastInStall };
      }
      // The stalled stream was cut; the tunnel must still serve requests afterwards.
      out.tunnelHealthyAfter =
        (await getStatus(tunnel.relayPort, tunnel.host, '/small').catch(() => 0)) === 200;
      return out;
    },
  };
}

// ---------------------------------------------------------------- machine

function sh(cmd, args) {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return '';
  }
}

function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return 'absent';
  }
}

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const commit = sh('git', ['rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['status', '--porcelain', '--', 'bin', 'cli', 'relay', 'protocol'])
    ? ' (source tree modified)'
    : '';
  return {
    node: process.version,
    nproc: sh('nproc', []) || String(os.availableParallelism()),
    cpuModel: model,
    kernel: `${os.type()} ${os.release()}`,
    memGiB: os.totalmem() / 1024 ** 3,
    commit: `${commit}${dirty}`,
    libs: `ws ${pkgVersion('ws')}, bufferutil ${pkgVersion('bufferutil')}, msgpackr ${pkgVersion('msgpackr')}, autocannon ${pkgVersion('autocannon')}, ${wrkVersion() ?? 'no wrk'}`,
  };
}

function commandLine() {
  const args = process.argv.slice(2).join(' ');
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench${args ? ` -- ${args}` : ''}`;
  return `node ${path.relative(process.cwd(), process.argv[1])}${args ? ` ${args}` : ''}`;
}

// ---------------------------------------------------------------- report

const pass = (ok) => (ok === undefined ? '—' : ok ? 'PASS' : 'FAIL');

/** Medians per mode and metric, plus the per-round raw numbers. */
function aggregate(rounds) {
  const pick = (mode, f) => rounds.map((r) => (r[mode] ? f(r[mode]) : undefined));
  const val = (f) => ({ direct: median(pick('direct', f)), tunnel: median(pick('tunnel', f)) });
  return {
    rps: val((m) => (m.small?.ok ? m.small.reqPerSec : undefined)),
    p50: val((m) => (m.small?.ok ? m.small.p50 : undefined)),
    p99: val((m) => (m.small?.ok ? m.small.p99 : undefined)),
    download: val((m) => (m.download?.ok ? m.download.mibPerSec : undefined)),
    upload: val((m) => (m.upload?.ok ? m.upload.mibPerSec : undefined)),
    serverCpu10k: val((m) => m.small?.cpuPer10k?.server),
    loadCpu10k: val((m) => m.small?.cpuPer10k?.load),
    totalCpu10k: val((m) => {
      const c = m.small?.cpuPer10k;
      return c ? (c.relay ?? 0) + (c.client ?? 0) + (c.server ?? 0) + (c.load ?? 0) : undefined;
    }),
    relayCpu10k: median(pick('tunnel', (m) => m.small?.cpuPer10k?.relay)),
    clientCpu10k: median(pick('tunnel', (m) => m.small?.cpuPer10k?.client)),
    relayPeakRss: median(pick('tunnel', (m) => m.download?.peakRssMiB?.relay)),
    clientPeakRss: median(pick('tunnel', (m) => m.download?.peakRssMiB?.client)),
    serverPeakRss: median(pick('direct', (m) => m.download?.peakRssMiB?.server)),
    relayGrowthDown: median(pick('tunnel', (m) => m.download?.rssGrowthMiB?.relay)),
    clientGrowthDown: median(pick('tunnel', (m) => m.download?.rssGrowthMiB?.client)),
    serverGrowthDown: median(pick('direct', (m) => m.download?.rssGrowthMiB?.server)),
    relayPeakRssMax: Math.max(...pick('tunnel', (m) => m.download?.peakRssMiB?.relay ?? 0)),
    clientPeakRssMax: Math.max(...pick('tunnel', (m) => m.download?.peakRssMiB?.client ?? 0)),
    relayCpuDown: median(pick('tunnel', (m) => m.download?.cpuPer100MiB?.relay)),
    clientCpuDown: median(pick('tunnel', (m) => m.download?.cpuPer100MiB?.client)),
    relayCpuUp: median(pick('tunnel', (m) => m.upload?.cpuPer100MiB?.relay)),
    clientCpuUp: median(pick('tunnel', (m) => m.upload?.cpuPer100MiB?.client)),
  };
}

function ratio(v) {
  return v.direct && v.tunnel !== undefined ? v.tunnel / v.direct : undefined;
}

function resultsTable(a, stall, opts) {
  const r = {
    rps: ratio(a.rps),
    p50: ratio(a.p50),
    p99: ratio(a.p99),
    download: ratio(a.download),
    upload: ratio(a.upload),
  };
  const p99Limit = a.p99.direct !== undefined ? 2 * a.p99.direct + 2 : undefined;
  const ge = (x, t) => (x === undefined ? undefined : x >= t);
  const dl = `${opts.downloadBytes / MiB} MiB`;
  const ul = `${opts.uploadBytes / MiB} MiB`;
  const rows = [
    ['Metric', 'Direct', 'Tunnel', 'Tunnel/Direct', 'Target (issue)', 'Met', 'Later target', 'Met'],
    ['---', '--:', '--:', '--:', '---', '---', '---', '---'],
    [
      `Small GET, ${opts.connections} conn: req/s`,
      fmt(a.rps.direct, 0),
      fmt(a.rps.tunnel, 0),
      fmt(r.rps, 2),
      'ratio ≥ 0.35',
      pass(ge(r.rps, 0.35)),
      'ratio ≥ 0.50',
      pass(ge(r.rps, 0.5)),
    ],
    [
      'Small GET: p50 latency (ms)',
      fmt(a.p50.direct, 2),
      fmt(a.p50.tunnel, 2),
      fmt(r.p50, 2),
      '',
      '',
      '',
      '',
    ],
    [
      'Small GET: p99 latency (ms)',
      fmt(a.p99.direct, 2),
      fmt(a.p99.tunnel, 2),
      fmt(r.p99, 2),
      '',
      '',
      `≤ 2×direct+2 = ${fmt(p99Limit, 1)}`,
      pass(p99Limit === undefined || a.p99.tunnel === undefined ? undefined : a.p99.tunnel <= p99Limit),
    ],
    [
      `Download ${dl}, 1 stream (MiB/s)`,
      fmt(a.download.direct),
      fmt(a.download.tunnel),
      fmt(r.download, 2),
      'ratio ≥ 0.40',
      pass(ge(r.download, 0.4)),
      'ratio ≥ 0.80',
      pass(ge(r.download, 0.8)),
    ],
    [
      `Upload ${ul} streamed, echoed (MiB/s)`,
      fmt(a.upload.direct),
      fmt(a.upload.tunnel),
      fmt(r.upload, 2),
      'ratio ≥ 0.40',
      pass(ge(r.upload, 0.4)),
      'ratio ≥ 0.60',
      pass(ge(r.upload, 0.6)),
    ],
    [
      `Peak RSS during download: relay (MiB, growth in brackets)`,
      '',
      `${fmt(a.relayPeakRss)} (+${fmt(a.relayGrowthDown)})`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      `Peak RSS during download: client (MiB, growth in brackets)`,
      '',
      `${fmt(a.clientPeakRss)} (+${fmt(a.clientGrowthDown)})`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      `Peak RSS during download: local server (MiB, growth in brackets)`,
      `${fmt(a.serverPeakRss)} (+${fmt(a.serverGrowthDown)})`,
      '',
      '',
      '',
      '',
      '',
      '',
    ],
    ['CPU per 10k small GETs: relay (ms)', '', fmt(a.relayCpu10k, 0), '', '', '', '', ''],
    ['CPU per 10k small GETs: client (ms)', '', fmt(a.clientCpu10k, 0), '', '', '', '', ''],
    [
      'CPU per 10k small GETs: local server (ms)',
      fmt(a.serverCpu10k.direct, 0),
      fmt(a.serverCpu10k.tunnel, 0),
      fmt(ratio(a.serverCpu10k), 2),
      '',
      '',
      '',
      '',
    ],
    [
      'CPU per 10k small GETs: load tool (ms)',
      fmt(a.loadCpu10k.direct, 0),
      fmt(a.loadCpu10k.tunnel, 0),
      fmt(ratio(a.loadCpu10k), 2),
      '',
      '',
      '',
      '',
    ],
    [
      'CPU per 10k small GETs: all processes (ms)',
      fmt(a.totalCpu10k.direct, 0),
      fmt(a.totalCpu10k.tunnel, 0),
      fmt(ratio(a.totalCpu10k), 2),
      '',
      '',
      '',
      '',
    ],
    [
      'CPU per 100 MiB download: relay / client (ms)',
      '',
      `${fmt(a.relayCpuDown, 0)} / ${fmt(a.clientCpuDown, 0)}`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      'CPU per 100 MiB upload echo: relay / client (ms)',
      '',
      `${fmt(a.relayCpuUp, 0)} / ${fmt(a.clientCpuUp, 0)}`,
      '',
      '',
      '',
      '',
      '',
    ],
    [
      `Relay RSS growth, public client stalls a 1 GiB download ${opts.stallMs / 1000} s (MiB)`,
      '',
      fmt(stall?.relay?.growthMiB),
      '',
      '< 32 MiB',
      pass(stall?.ok ? stall.relay.growthMiB < 32 : undefined),
      '',
      '',
    ],
    [`Client RSS growth, same stall (MiB)`, '', fmt(stall?.client?.growthMiB), '', '', '', '', ''],
  ];
  return rows.map((row) => `| ${row.join(' | ')} |`).join('\n');
}

function roundsTable(rounds) {
  const rows = [
    '| Round | order | req/s D / T (ratio) | p99 ms D / T | download MiB/s D / T (ratio) | upload MiB/s D / T (ratio) | relay / client CPU ms per 10k | relay / client peak RSS MiB | other load D / T (cores) |',
    '|--:|---|---|---|---|---|---|---|---|',
  ];
  rounds.forEach((r, i) => {
    const d = r.direct;
    const t = r.tunnel;
    const pair = (f, digits) => {
      const a = d ? f(d) : undefined;
      const b = t ? f(t) : undefined;
      const q = a && b !== undefined ? ` (${fmt(b / a, 2)})` : '';
      return `${fmt(a, digits)} / ${fmt(b, digits)}${q}`;
    };
    rows.push(
      `| ${i + 1} | ${r.order.join(' → ')} | ${pair((m) => (m.small?.ok ? m.small.reqPerSec : undefined), 0)} | ` +
        `${fmt(d?.small?.p99, 1)} / ${fmt(t?.small?.p99, 1)} | ${pair((m) => (m.download?.ok ? m.download.mibPerSec : undefined), 0)} | ` +
        `${pair((m) => (m.upload?.ok ? m.upload.mibPerSec : undefined), 0)} | ` +
        `${fmt(t?.small?.cpuPer10k?.relay, 0)} / ${fmt(t?.small?.cpuPer10k?.client, 0)} | ` +
        `${fmt(t?.download?.peakRssMiB?.relay)} / ${fmt(t?.download?.peakRssMiB?.client)} | ` +
        `${fmt(d?.small?.otherCores, 2)} / ${fmt(t?.small?.otherCores, 2)} |`,
    );
  });
  return rows.join('\n');
}

function failures(rounds, stall, integrity) {
  const out = [];
  if (!integrity.ok) out.push(`integrity check through the tunnel failed: ${JSON.stringify(integrity)}`);
  rounds.forEach((r, i) => {
    for (const mode of ['direct', 'tunnel'])
      for (const kind of ['small', 'download', 'upload']) {
        const m = r[mode]?.[kind];
        if (!m) continue;
        if (!m.ok)
          out.push(
            `round ${i + 1} ${mode} ${kind}: ${m.error ?? `errors ${m.errors}, timeouts ${m.timeouts}, non-2xx ${m.non2xx}, status ${m.status}, bytes ${m.bytes}`}`,
          );
      }
  });
  if (stall && !stall.ok) out.push(`stall test: ${stall.error ?? 'did not reach the stalled state'}`);
  if (stall && !stall.tunnelHealthyAfter)
    out.push('the tunnel did not answer /small after the stalled download was cut');
  return out;
}

function report({ opts, info, startedAt, finishedAt, noise, integrity, rounds, stall, profiles }) {
  const a = aggregate(rounds);
  const fails = failures(rounds, stall, integrity);
  const analysis =
    previousAnalysis(opts.out) ??
    '_No hand-written analysis yet. Text between the analysis markers survives re-runs._';
  const lines = [
    '# ggrok benchmark results',
    '',
    'Generated by `bench/run.mjs` (see bench/README.md). Re-run with `npm run bench`; the "Analysis" section at the end is',
    'hand-written and carried over between runs, everything else is regenerated.',
    '',
    `- Date: ${startedAt.toISOString()} (took ${((finishedAt - startedAt) / 60000).toFixed(1)} min)`,
    `- Machine: node ${info.node}, nproc ${info.nproc}, CPU "${info.cpuModel}", ${info.kernel}, ${fmt(info.memGiB)} GiB RAM`,
    `- Code: commit ${info.commit}; dist/ built ${info.build} (copied to bench/out/dist/ for the run); ${info.libs}`,
    '- Relay and client run with their defaults: no request-rate limit, the inspector on (bench/bounds.mjs has the --no-inspect figure beside it).',
    `- Command: \`${commandLine()}\``,
    `- Settings: ${opts.rounds} interleaved rounds (direct and tunnel alternate which goes first), small GET ${opts.duration} s at ${opts.connections} connections (${opts.tool === 'wrk' ? 'wrk -t1' : 'autocannon'}), download ${opts.downloadBytes / MiB} MiB, upload ${opts.uploadBytes / MiB} MiB echoed, stall ${STALL_BYTES / MiB / 1024} GiB for ${opts.stallMs / 1000} s; values are medians over rounds.`,
    `- Processes: load tool, local server, relay and client are four separate node processes on ${info.nproc} cores; in tunnel mode all four compete for the CPU, in direct mode two.`,
    `- Noise: other agents share this machine. Machine-wide CPU busy with the benchmark idle: ${fmt(noise.before, 2)} cores before, ${fmt(noise.after, 2)} after; load average ${noise.loadBefore} before, ${noise.loadAfter} after. The "other load" column of the per-round table is the CPU used by everything else during each small-GET run (machine busy time from /proc/stat minus this benchmark's processes). Absolute numbers move with that load, and CPU per request rises under contention (less batching per wake-up); the ratios within one interleaved run are the figures to compare.`,
    `- Integrity: ${integrity.ok ? 'PASS' : 'FAIL'} (sha256 of a ${fmt(integrity.bytes / MiB, 0)} MiB random upload and of a patterned download through the tunnel)`,
    '',
    '## Results',
    '',
    resultsTable(a, stall, opts),
    '',
    fails.length ? `**Failures:**\n\n${fails.map((f) => `- ${f}`).join('\n')}\n` : 'No failed runs.',
    '',
    '## Per round',
    '',
    roundsTable(rounds),
    '',
    stall
      ? `Stall detail (fresh relay and client, warmed with one 16 MiB download): the public client read ${fmt((stall.receivedBeforeStall ?? 0) / MiB)} MiB, then stopped reading for ${stall.stallMs / 1000} s. ` +
        `Relay RSS ${fmt(stall.relay.baselineMiB)} MiB idle → peak ${fmt(stall.relay.peakMiB)} MiB (end of stall ${fmt(stall.relay.endOfStallMiB)}); ` +
        `client ${fmt(stall.client.baselineMiB)} → ${fmt(stall.client.peakMiB)} MiB. Tunnel answered afterwards: ${stall.tunnelHealthyAfter ? 'yes' : 'NO'}.`
      : '',
    '',
    '## Where the time goes',
    '',
  ];
  if (!profiles) lines.push('_Profiling skipped (--no-profile)._', '');
  else {
    lines.push(
      `Relay and client re-started under \`node --cpu-prof\` (profiles in bench/out/profiles/, git-ignored) and driven by the same load:`,
      `"small" = ${profiles.smallSeconds} s of small GETs at ${opts.connections} connections; "bulk" = one ${opts.downloadBytes / MiB} MiB download plus one ${opts.uploadBytes / MiB} MiB echoed upload.`,
      'Only samples taken while the load ran are counted (start-up and shutdown are left out).',
      "Self time per function (time spent in the function itself, not its callees), as a share of the process's non-idle time;",
      '`(program)` is native work V8 cannot attribute to a JS function, `(garbage collector)` is GC, native names such as',
      '`writev`/`writeBuffer`/`writeLatin1String` are the socket-write bindings (the syscall included).',
      'The profiler samples wall-clock time: when the process is runnable but preempted (four busy processes on shared cores),',
      'the sample is charged to the function it was in. That is mostly the socket writes, because a write to a loopback socket',
      'wakes the reader and the scheduler often switches to it. "Non-idle" minus "CPU time used" is roughly that preempted time.',
      'Aggregated by `node bench/profile-summary.mjs <file>`.',
      '',
    );
    for (const p of profiles.items)
      lines.push(p.ok ? markdown(p.title, p.summary) : `**${p.title}**: ${p.error}\n`);
  }
  lines.push('## Analysis', '', ANALYSIS_START, analysis, ANALYSIS_END, '');
  return { text: lines.join('\n'), table: resultsTable(a, stall, opts), fails };
}

// ---------------------------------------------------------------- main

async function profilePhase(opts, server, token) {
  const dir = path.join(OUT_DIR, 'profiles');
  mkdirSync(dir, { recursive: true });
  const items = [];
  const smallSeconds = opts.duration;
  for (const tag of ['small', 'bulk']) {
    for (const who of ['relay', 'client'])
      rmSync(path.join(dir, `${who}-${tag}.cpuprofile`), { force: true });
    log(`profile: ${tag} …`);
    const t = await startTunnel(server.port, token, { dir, tag });
    const nowUs = () => Number(process.hrtime.bigint() / 1000n);
    let window;
    let cpu0;
    let cpuMs = {};
    try {
      const bench = makeBench(opts, server, t);
      const fromUs = nowUs();
      cpu0 = cpuSnapshot({ relay: t.relay.pid, client: t.client.pid });
      if (tag === 'small') await bench.small('tunnel', smallSeconds);
      else {
        await bench.transfer('tunnel', 'download');
        await bench.transfer('tunnel', 'upload');
      }
      window = { fromUs, toUs: nowUs() };
      cpuMs = diff(cpuSnapshot({ relay: t.relay.pid, client: t.client.pid }), cpu0);
    } finally {
      await stopTunnel(t);
    }
    for (const who of ['relay', 'client']) {
      const file = path.join(dir, `${who}-${tag}.cpuprofile`);
      const title = `${who[0].toUpperCase()}${who.slice(1)}, ${tag} (${path.relative(ROOT, file)})`;
      if (!existsSync(file)) {
        items.push({ ok: false, title, error: 'no profile written (the process did not exit cleanly)' });
        continue;
      }
      const summary = summarizeFile(file, 10, window);
      summary.procCpuMs = cpuMs[who];
      items.push({ ok: true, title, summary });
    }
  }
  return { smallSeconds, items };
}

async function main() {
  const opts = options();
  if (!existsSync(BIN))
    throw new Error(`${path.relative(ROOT, BIN)} not found: build first (npx tsc -p . or npm run build)`);
  mkdirSync(OUT_DIR, { recursive: true });
  rmSync(DIST_SNAPSHOT, { recursive: true, force: true });
  cpSync(path.join(ROOT, 'dist'), DIST_SNAPSHOT, { recursive: true });
  const startedAt = new Date();
  const info = machine();
  info.build = statSync(BIN).mtime.toISOString();
  log(
    `ggrok bench: node ${info.node}, ${info.nproc} × ${info.cpuModel}; ${opts.rounds} rounds, ${opts.duration} s loads${opts.quick ? ' (quick)' : ''}`,
  );
  const noise = {
    loadBefore: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
  };
  noise.before = await machineBusyCores(opts.quick ? 1000 : 2000);

  const token = randomBytes(16).toString('hex');
  const server = await startLocalServer();
  let tunnel = await startTunnel(server.port, token);
  let bench = makeBench(opts, server, tunnel);
  log(
    `local server :${server.port}, relay :${tunnel.relayPort} (pid ${tunnel.relay.pid}), client pid ${tunnel.client.pid}`,
  );

  const integrity = await runLoad({
    mode: 'integrity',
    port: tunnel.relayPort,
    host: tunnel.host,
    bytes: 4 * MiB,
  });
  log(`integrity: ${integrity.ok ? 'ok' : `FAILED ${JSON.stringify(integrity)}`}`);

  // Warm-up: JIT and connection pools on both paths; results discarded.
  for (const mode of ['direct', 'tunnel']) {
    await bench.small(mode, Math.min(5, opts.duration));
    await runLoad({
      mode: 'download',
      ...(mode === 'direct' ? { port: server.port } : { port: tunnel.relayPort, host: tunnel.host }),
      bytes: 16 * MiB,
    });
  }

  const rounds = [];
  for (let i = 0; i < opts.rounds; i++) {
    const order = i % 2 === 0 ? ['direct', 'tunnel'] : ['tunnel', 'direct'];
    const round = { order, direct: {}, tunnel: {} };
    for (const mode of order) round[mode].small = await bench.small(mode);
    for (const mode of order) round[mode].download = await bench.transfer(mode, 'download');
    for (const mode of order) round[mode].upload = await bench.transfer(mode, 'upload');
    rounds.push(round);
    const d = round.direct;
    const t = round.tunnel;
    log(
      `round ${i + 1}/${opts.rounds}: small ${fmt(d.small.reqPerSec, 0)} / ${fmt(t.small.reqPerSec, 0)} req/s, ` +
        `p99 ${fmt(d.small.p99, 1)} / ${fmt(t.small.p99, 1)} ms, download ${fmt(d.download.mibPerSec, 0)} / ${fmt(t.download.mibPerSec, 0)} MiB/s, ` +
        `upload ${fmt(d.upload.mibPerSec, 0)} / ${fmt(t.upload.mibPerSec, 0)} MiB/s (direct / tunnel)`,
    );
    for (const [who, child] of [
      ['relay', tunnel.relay],
      ['client', tunnel.client],
    ])
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`${who} died during round ${i + 1}: ${child.stderrText.slice(-500)}`);
  }

  await stopTunnel(tunnel);
  // The stall test gets a fresh relay and client: after the small-GET phase their heaps are large and mostly
  // free, which would hide buffering. Warm the data path first so JIT and pools are not counted as growth.
  tunnel = await startTunnel(server.port, token);
  bench = makeBench(opts, server, tunnel);
  await runLoad({ mode: 'download', port: tunnel.relayPort, host: tunnel.host, bytes: 16 * MiB });
  await sleep(500);
  const stall = await bench.stall();
  log(
    `stall: relay RSS +${fmt(stall.relay.growthMiB)} MiB, client +${fmt(stall.client.growthMiB)} MiB; tunnel healthy after: ${stall.tunnelHealthyAfter}`,
  );
  await stopTunnel(tunnel);
  tunnel = undefined;
  bench = undefined;

  const profiles = opts.profile ? await profilePhase(opts, server, token) : undefined;
  await stopChild(server.child);

  noise.after = await machineBusyCores(opts.quick ? 1000 : 2000);
  noise.loadAfter = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
  const out = report({
    opts,
    info,
    startedAt,
    finishedAt: new Date(),
    noise,
    integrity,
    rounds,
    stall,
    profiles,
  });
  mkdirSync(path.dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, out.text);
  writeFileSync(
    path.join(OUT_DIR, 'last-run.json'),
    JSON.stringify({ opts, info, noise, integrity, rounds, stall, profiles }, null, 1),
  );
  log('');
  log(out.table);
  if (out.fails.length) log(`\nfailures:\n${out.fails.map((f) => `  - ${f}`).join('\n')}`);
  log(
    `\nwrote ${path.relative(process.cwd(), opts.out)} (raw numbers: ${path.relative(process.cwd(), path.join(OUT_DIR, 'last-run.json'))})`,
  );
  return out.fails.length ? 1 : 0;
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });

main().then(
  (code) => {
    killAll();
    process.exit(code);
  },
  (err) => {
    process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
    killAll();
    process.exit(1);
  },
);
