// Benchmark plumbing: child processes (tracked so they always die), /proc readings, sampling and statistics.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (bench/..). */
export const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
/** The compiled CLI. */
export const BIN = path.join(ROOT, 'dist/bin/ggrok.js');
export const MiB = 1024 * 1024;
/** Chunk size of the local server's downloads and of the load tool's uploads. */
export const CHUNK_BYTES = 64 * 1024;

/** Deterministic 64 KiB of content, so what came through the tunnel can be verified. */
export function patternChunk() {
  const b = Buffer.allocUnsafe(CHUNK_BYTES);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/** Every child still running; killed on any way out of the benchmark. */
const live = new Set();

/** Kernel clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * Spawns `node <args>` with stdout/stderr piped. stdout is split into lines: `child.lines` keeps them and
 * 'line' is emitted for each. The child is killed when the benchmark exits, however it exits.
 */
export function spawnNode(name, args, { cwd = ROOT, env } = {}) {
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.benchName = name;
  child.lines = [];
  child.stderrText = '';
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.on('error', () => {}); // 'exit' (or the startup timeout) reports the failure
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    partial += text;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (child.lines.length < 10_000) child.lines.push(line);
      child.emit('line', line);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    if (child.stderrText.length < 64 * 1024) child.stderrText += text;
  });
  return child;
}

/** Resolves with the match of the first stdout line matching `re`; rejects on exit or after `timeoutMs`. */
export function waitForLine(child, re, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    for (const line of child.lines) {
      const m = re.exec(line);
      if (m) return resolve(m);
    }
    const cleanup = () => {
      clearTimeout(timer);
      child.off('line', onLine);
      child.off('exit', onExit);
    };
    const onLine = (line) => {
      const m = re.exec(line);
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(
        new Error(`${child.benchName} exited (${code ?? signal}) before printing ${re}: ${tail(child)}`),
      );
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${child.benchName} did not print ${re} within ${timeoutMs} ms: ${tail(child)}`));
    }, timeoutMs);
    child.on('line', onLine);
    child.once('exit', onExit);
  });
}

function tail(child) {
  return `${child.lines.slice(-5).join(' | ')} ${child.stderrText.slice(-500)}`.trim();
}

/** Asks a child to stop with `signal`, then SIGKILLs it after `graceMs`. Resolves once it has exited. */
export async function stopChild(child, signal = 'SIGTERM', graceMs = 10_000) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exited;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const result = await child.exited;
  clearTimeout(timer);
  return result;
}

/** SIGKILLs every child still alive (synchronous, so it also works from process 'exit'). */
export function killAll() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** CPU time (user + system) a process has used so far, in ms. */
export function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may contain spaces and parentheses: fields are counted after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK; // utime and stime: fields 14 and 15
}

/** Resident set size of a process, in KiB (0 once it is gone). */
export function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU ms of several processes at once: { name: ms }. */
export function cpuSnapshot(pids) {
  const out = {};
  for (const [name, pid] of Object.entries(pids)) out[name] = cpuMs(pid);
  return out;
}

/**
 * Polls VmRSS of the named processes every `intervalMs` until stop(); stop() returns
 * { name: { maxKiB, firstKiB, samples: [[msSinceStart, KiB], …] } }.
 */
export function sampleRss(pids, intervalMs = 100) {
  const started = performance.now();
  const series = {};
  for (const name of Object.keys(pids)) series[name] = [];
  const tick = () => {
    const t = Math.round(performance.now() - started);
    for (const [name, pid] of Object.entries(pids)) series[name].push([t, rssKiB(pid)]);
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    /** performance.now() at the first sample: the origin of the samples' timestamps. */
    started,
    stop() {
      clearInterval(timer);
      tick();
      const out = {};
      for (const [name, samples] of Object.entries(series)) {
        const values = samples.map((s) => s[1]);
        out[name] = { maxKiB: Math.max(...values), firstKiB: values[0], samples };
      }
      return out;
    },
  };
}

/** Machine-wide CPU counters from /proc/stat: busy ms summed over all CPUs, and when they were read. */
export function machineCpu() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  const total = f.reduce((x, y) => x + y, 0);
  return { busyMs: ((total - idle) * 1000) / CLK_TCK, at: performance.now() };
}

/** CPU cores kept busy by everyone on the machine between two machineCpu() readings. */
export function busyCores(a, b) {
  const wall = b.at - a.at;
  return wall > 0 ? (b.busyMs - a.busyMs) / wall : 0;
}

/** Machine-wide busy cores over `ms`: how loaded the box is by everyone. */
export async function machineBusyCores(ms) {
  const a = machineCpu();
  await new Promise((r) => setTimeout(r, ms));
  return busyCores(a, machineCpu());
}

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Formats a number with `digits` decimals, or "—" for missing values. */
export function fmt(x, digits = 1) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Markers around the hand-written analysis in a results file; the text between them survives re-runs. */
export const ANALYSIS_START = '<!-- analysis:start -->';
export const ANALYSIS_END = '<!-- analysis:end -->';

/** The hand-written analysis of an earlier results file (the text between the markers), if there is one. */
export function previousAnalysis(file) {
  if (!existsSync(file)) return undefined;
  const old = readFileSync(file, 'utf8');
  const s = old.indexOf(ANALYSIS_START);
  const e = old.indexOf(ANALYSIS_END);
  return s >= 0 && e > s ? old.slice(s + ANALYSIS_START.length, e).trim() : undefined;
}

/** The version line of wrk if it is installed, else undefined. */
export function wrkVersion() {
  try {
    return /^wrk \S+/m.exec(
      execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
    )?.[0];
  } catch (err) {
    // wrk -v prints its version and exits 1.
    return /^wrk \S+/m.exec(String(err.stdout ?? ''))?.[0];
  }
}

/** `--name value` from this process's arguments, or `fallback` when the flag is absent. */
export function flag(name, fallback) {
  const argv = process.argv.slice(2);
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
}

/**
 * Starts a relay (`node [nodeArgs] <bin> relay`) on 127.0.0.1, port 0, tunnels at `<name>.localhost`, with `token`
 * and any `extra` flags; resolves with the child and the port it listens on.
 */
export async function spawnRelay({
  token,
  bin = BIN,
  nodeArgs = [],
  extra = [],
  env,
  port: wanted = 0,
} = {}) {
  const args = [
    ...nodeArgs,
    bin,
    'relay',
    '--port',
    String(wanted),
    '--host',
    '127.0.0.1',
    '--domain',
    'localhost',
  ];
  const child = spawnNode('relay', [...args, '--token', token, ...extra], { env });
  // A cluster instance listens only after its first read of the cluster: allow for that.
  const port = Number((await waitForLine(child, /listening on 127\.0\.0\.1:(\d+)/, 30_000))[1]);
  return { child, port };
}

/**
 * Starts a client (`node [nodeArgs] <bin> http <localPort>`) on the relay at `relayPort` as `<subdomain>.localhost`,
 * quiet and without the inspector (which records bodies on top of the data path); resolves once it forwards.
 */
export async function spawnClient({
  localPort,
  relayPort,
  token,
  subdomain,
  bin = BIN,
  nodeArgs = [],
  extraArgs = [],
  // The inspector is on by default for users; benchmarks that measure ggrok as users get it pass true.
  inspect = false,
}) {
  const child = spawnNode(`client ${subdomain}`, [
    ...nodeArgs,
    bin,
    'http',
    String(localPort),
    '--server',
    `http://127.0.0.1:${relayPort}`,
    '--token',
    token,
    '--subdomain',
    subdomain,
    '-q',
    ...(inspect ? [] : ['--no-inspect']),
    ...extraArgs,
  ]);
  await waitForLine(child, /Forwarding\s+\S+/);
  return child;
}
