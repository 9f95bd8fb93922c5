// Soak benchmark: echo uploads through a relay and a client (both child processes) for minutes, while the client
// is killed and restarted and the relay is restarted on its port. Every 10 s: latency, errors by kind, RSS.
//
//   npx tsc -p . && node bench/soak.mjs [--minutes 10] [--workers 30] [--client-every <s>] [--relay-every <s>]
//                                       [--sample <s>] [--out bench/SOAK.md]
//
// Exit code 0 when every answer was the request's own body, nothing hung and every failure was a relay 502/503
// (tunnel_closed, tunnel_offline) or a refused/reset connection; 1 otherwise.
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const BIN = path.join(ROOT, 'dist/bin/ggrok.js');
const TOKEN = 'soak-token';
const MAX_BODY_BYTES = 256 * 1024;
const REQUEST_TIMEOUT_MS = 15_000;
/** Failures a restart explains; anything else is counted as unexpected. */
const CLEAN_ERRORS = new Set(['502 tunnel_closed', '503 tunnel_offline']);
const CLEAN_NET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'cut']);

const { values: flags } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    workers: { type: 'string', default: '30' },
    'client-every': { type: 'string' },
    'relay-every': { type: 'string' },
    sample: { type: 'string', default: '10' },
    out: { type: 'string', default: path.join(ROOT, 'bench/SOAK.md') },
  },
});
const RUN_MS = Number(flags.minutes) * 60_000;
const WORKERS = Number(flags.workers);
// Every minute and every 5 minutes, or a quarter and a half of a shorter run, so a short run still sees both.
const CLIENT_EVERY_MS = Number(flags['client-every'] ?? Math.min(60, RUN_MS / 4000)) * 1000;
const RELAY_EVERY_MS = Number(flags['relay-every'] ?? Math.min(300, RUN_MS / 2000)) * 1000;
const SAMPLE_MS = Number(flags.sample) * 1000;
for (const [name, v] of Object.entries({ RUN_MS, WORKERS, CLIENT_EVERY_MS, RELAY_EVERY_MS, SAMPLE_MS }))
  if (!(v > 0)) throw new Error(`bad value for ${name}: ${v}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b) => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

// ---- child processes ----

const children = new Set();
function killAll() {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'])
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });

/** Spawns the compiled CLI; `output()` is everything it printed so far. */
function runCli(args) {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', GGROK_TOKEN: undefined, GGROK_SERVER: undefined, PORT: undefined },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const keep = (c) => {
    text += c.toString();
    if (text.length > 256 * 1024) text = text.slice(-128 * 1024);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('error', () => {});
  children.add(child);
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const waitFor = async (re, timeoutMs = 20_000) => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(text);
      if (m) return m;
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`${args[0]} exited before printing ${re}:\n${text}`);
      if (Date.now() > until) throw new Error(`${args[0]} did not print ${re} in time:\n${text}`);
      await sleep(20);
    }
  };
  return { child, exited, waitFor, output: () => text };
}

/** VmRSS of a process in MiB, or NaN once it is gone. */
function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

// ---- the local service: echoes the body with its sha256 and the request id ----

const local = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': body.length,
      'X-Body-Sha256': sha256(body),
      'X-Soak-Id': String(req.headers['x-soak-id']),
    });
    res.end(body);
  });
});
await new Promise((r) => local.listen(0, '127.0.0.1', r));
const localPort = local.address().port;

// ---- relay and client ----

let port = 0;
async function startRelay() {
  const p = runCli([
    'relay',
    '--port',
    String(port),
    '--host',
    '127.0.0.1',
    '--domain',
    'localhost',
    '--token',
    TOKEN,
    '--rate-limit',
    '100000',
  ]);
  const listening = Number((await p.waitFor(/listening on [^\s]+:(\d+)/))[1]);
  if (port === 0) port = listening;
  if (listening !== port) throw new Error(`relay restarted on ${listening}, not ${port}`);
  return p;
}
async function startClient() {
  const p = runCli([
    'http',
    String(localPort),
    '--server',
    `http://127.0.0.1:${port}`,
    '--token',
    TOKEN,
    '--subdomain',
    'soak',
    '-q',
  ]);
  const url = (await p.waitFor(/Forwarding\s+(\S+)/))[1];
  if (url !== `http://soak.localhost:${port}`) throw new Error(`client got ${url}`);
  return p;
}

let relay = await startRelay();
let client = await startClient();
const host = `soak.localhost:${port}`;

// ---- load ----

/** Counters for one sampling window; `total` accumulates every window. */
const newWindow = () => ({
  ok: 0,
  bytes: 0,
  latencies: [],
  errors: new Map(),
  hangs: 0,
  corrupt: 0,
  unexpected: 0,
  events: [],
});
let win = newWindow();
/** First occurrence of each kind of problem (hang, corrupt body, unexpected failure). */
const total = { ...newWindow(), examples: new Map() };
const bump = (m, k) => m.set(k, (m.get(k) ?? 0) + 1);

/** Counts one failed request: `kind` is clean, unexpected, hang or corrupt; `what` names the error. */
function record(kind, what, detail = '') {
  for (const w of [win, total]) {
    if (kind === 'hang') w.hangs++;
    else if (kind === 'corrupt') w.corrupt++;
    else if (kind === 'unexpected') w.unexpected++;
    if (kind !== 'hang' && kind !== 'corrupt') bump(w.errors, what);
  }
  const key = `${kind} ${what}`;
  if (kind !== 'clean' && !total.examples.has(key))
    total.examples.set(key, `${((Date.now() - t0) / 1000).toFixed(1)} s ${detail}`.trim());
}

function post(agent, id, body) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: `/echo/${id}`,
      agent,
      headers: {
        Host: host,
        'Content-Type': 'application/octet-stream',
        'Content-Length': body.length,
        'X-Soak-Id': id,
      },
    });
    const timer = setTimeout(() => {
      finish({ kind: 'hang' });
      req.destroy();
    }, REQUEST_TIMEOUT_MS);
    req.on('error', (err) => finish({ kind: 'net', code: err.code ?? err.message }));
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', () => {});
      res.on('end', () =>
        finish({
          kind: 'response',
          status: res.statusCode,
          headers: res.headers,
          body: Buffer.concat(chunks),
        }),
      );
      res.on('close', () => {
        if (!res.complete) finish({ kind: 'net', code: 'cut' });
      });
    });
    req.end(body);
  });
}

function randomBody() {
  const r = Math.random();
  const size =
    r < 0.05 ? 0 : r < 0.1 ? MAX_BODY_BYTES : r < 0.5 ? randomInt(1, 4097) : randomInt(4097, MAX_BODY_BYTES);
  return randomBytes(size);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS });
const t0 = Date.now();
const end = t0 + RUN_MS;
/** Bounded by count as well as time: far above what one worker can do in the run. */
const MAX_REQUESTS_PER_WORKER = Math.ceil(RUN_MS / 2);

async function worker(w) {
  for (let n = 0; n < MAX_REQUESTS_PER_WORKER && Date.now() < end; n++) {
    const id = `${w}-${n}`;
    const body = randomBody();
    const started = Date.now();
    const o = await post(agent, id, body);
    if (o.kind === 'hang')
      record(
        'hang',
        'no answer',
        `${id} (${body.length} B) started at ${((started - t0) / 1000).toFixed(1)} s`,
      );
    else if (o.kind === 'net') record(CLEAN_NET_ERRORS.has(o.code) ? 'clean' : 'unexpected', o.code, id);
    else if (o.status === 200) {
      if (
        o.headers['x-soak-id'] === id &&
        o.headers['x-body-sha256'] === sha256(body) &&
        o.body.equals(body)
      ) {
        for (const w of [win, total]) {
          w.ok++;
          w.bytes += body.length;
          w.latencies.push(Date.now() - started);
        }
      } else record('corrupt', 'body', `${id}: sent ${body.length} B, got ${o.body.length} B`);
    } else {
      const what = `${o.status} ${o.headers['x-ggrok-error'] ?? '-'}`;
      const page = /<p>(.*?)<\/p>/.exec(o.body.toString())?.[1] ?? '';
      record(CLEAN_ERRORS.has(what) ? 'clean' : 'unexpected', what, `${id}: ${page}`);
    }
    if (o.kind !== 'response' || o.status !== 200) await sleep(20); // as a browser would, not a busy loop
  }
}

// ---- disruptions ----

async function restartClient() {
  const began = Date.now();
  client.child.kill('SIGKILL');
  await client.exited;
  client = await startClient();
  return `client SIGKILL+restart, online after ${Date.now() - began} ms`;
}

async function restartRelay() {
  const began = Date.now();
  const reconnects = (client.output().match(/back online/g) ?? []).length;
  relay.child.kill('SIGTERM');
  const { code } = await relay.exited;
  const stopMs = Date.now() - began;
  relay = await startRelay();
  const until = Date.now() + 60_000;
  while ((client.output().match(/back online/g) ?? []).length === reconnects && Date.now() < until)
    await sleep(20);
  const back = (client.output().match(/back online/g) ?? []).length > reconnects;
  return `relay SIGTERM (exit ${code} after ${stopMs} ms)+restart, client ${back ? `back after ${Date.now() - began} ms` : 'NOT back after 60 s'}`;
}

async function chaos() {
  let nextClient = t0 + CLIENT_EVERY_MS;
  let nextRelay = t0 + RELAY_EVERY_MS;
  for (;;) {
    const at = Math.min(nextClient, nextRelay);
    if (at >= end - 1000) return;
    await sleep(at - Date.now());
    // When both are due, the relay restart covers the client's reconnect too.
    const relayDue = nextRelay <= at;
    const began = ((Date.now() - t0) / 1000).toFixed(1);
    const event = relayDue ? await restartRelay() : await restartClient();
    if (relayDue) nextRelay += RELAY_EVERY_MS;
    if (nextClient <= at) nextClient += CLIENT_EVERY_MS;
    const line = `${began}–${((Date.now() - t0) / 1000).toFixed(1)} s: ${event}`;
    win.events.push(`from ${began} s: ${event}`);
    total.events.push(line);
  }
}

// ---- sampling and report ----

const pct = (sorted, p) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
const fmtErrors = (m) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ×${n}`)
    .join(', ') || '—';
const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '—');

const HEADER =
  '| t (s) | ok | MiB each way | p50 ms | p99 ms | errors (kind ×n) | hangs | corrupt | unexpected | relay RSS MiB | client RSS MiB | event |';
const RULE = '| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |';
const rows = [];
console.log(
  `soak: ${WORKERS} workers, ${RUN_MS / 60_000} min, client kill every ${CLIENT_EVERY_MS / 1000} s, ` +
    `relay restart every ${RELAY_EVERY_MS / 1000} s, relay on :${port}, local on :${localPort}\n`,
);
console.log(HEADER);
console.log(RULE);

let lastSampleAt = Date.now();
function sample() {
  lastSampleAt = Date.now();
  const w = win;
  win = newWindow();
  const lat = w.latencies.sort((a, b) => a - b);
  const row =
    `| ${fmt((Date.now() - t0) / 1000, 1)} | ${w.ok} | ${fmt(w.bytes / MiB, 1)} | ${fmt(pct(lat, 0.5))} | ` +
    `${fmt(pct(lat, 0.99))} | ${fmtErrors(w.errors)} | ${w.hangs} | ${w.corrupt} | ${w.unexpected} | ` +
    `${fmt(rssMiB(relay.child.pid), 1)} | ${fmt(rssMiB(client.child.pid), 1)} | ${w.events.join('; ') || ''} |`;
  rows.push(row);
  console.log(row);
}

const sampler = setInterval(sample, SAMPLE_MS);
const startedAt = new Date();
await Promise.all([chaos(), ...Array.from({ length: WORKERS }, (_, w) => worker(w))]);
clearInterval(sampler);
// The last moments of the run get their own row only if they are more than a second long (totals count them).
if (Date.now() - lastSampleAt > 1000) sample();

// The tunnel serves again at the end.
const last = randomBytes(100_000);
const final = await post(agent, 'final', last);
const finalOk = final.kind === 'response' && final.status === 200 && final.body.equals(last);

const lat = total.latencies.sort((a, b) => a - b);
const passed = total.hangs === 0 && total.corrupt === 0 && total.unexpected === 0 && finalOk && total.ok > 0;
const summary = [
  `Total: ${total.ok} ok (${fmt(total.bytes / MiB, 0)} MiB each way), p50 ${fmt(pct(lat, 0.5))} ms, ` +
    `p99 ${fmt(pct(lat, 0.99))} ms; errors: ${fmtErrors(total.errors)}; hangs ${total.hangs}, corrupt ` +
    `${total.corrupt}, unexpected ${total.unexpected}; final request ${finalOk ? 'ok' : 'FAILED'}.`,
  `Verdict: ${passed ? 'PASS' : 'FAIL'} (pass = no hang, no corrupt body, no failure other than a relay ` +
    `${[...CLEAN_ERRORS].join('/')} or a refused/reset connection, and the tunnel serves at the end).`,
];
console.log(`\n${summary.join('\n')}`);
if (total.events.length) console.log(`Disruptions:\n${total.events.map((e) => `- ${e}`).join('\n')}`);
const examples = [...total.examples].map(([k, v]) => `- ${k}: first at ${v}`);
if (examples.length) console.log(`First problem of each kind:\n${examples.join('\n')}`);

let md = `# Soak

Run: \`npx tsc -p . && node bench/soak.mjs\` (10 minutes; \`--minutes N\`, \`--workers N\`, \`--client-every <s>\`,
\`--relay-every <s>\`, \`--sample <s>\`, \`--out <file>\`). It is not part of CI. N workers (30 by default) post random bodies of
0–256 KiB to an echo service through a relay and a client (both \`dist/bin/ggrok.js\` child processes) and check that
each 200 carries the request's own bytes; the client is killed (SIGKILL) and restarted every minute and the relay is
restarted (SIGTERM, then the same port) every 5 minutes (a quarter and a half of shorter runs). Every ${SAMPLE_MS / 1000} s
a row records p50/p99 latency of the successful requests, errors by kind, and the relay's and client's VmRSS from
\`/proc/<pid>/status\`. This file is rewritten by each run.

## Last run

${startedAt.toISOString()}, node ${process.version}, ${WORKERS} workers, ${RUN_MS / 60_000} min, client kill every
${CLIENT_EVERY_MS / 1000} s, relay restart every ${RELAY_EVERY_MS / 1000} s.

${HEADER}
${RULE}
${rows.join('\n')}

${summary.join('\n\n')}
${total.events.length ? `\nDisruptions:\n\n${total.events.map((e) => `- ${e}`).join('\n')}\n` : ''}${
  examples.length ? `\nFirst problem of each kind:\n\n${examples.join('\n')}\n` : ''
}`;
try {
  // Keep the file as `prettier --check .` wants it, when prettier is installed.
  const prettier = await import('prettier');
  md = await prettier.format(md, { ...(await prettier.resolveConfig(flags.out)), filepath: flags.out });
} catch {
  // unformatted is fine
}
writeFileSync(flags.out, md);
console.log(`\nwrote ${path.relative(process.cwd(), flags.out) || flags.out}`);

agent.destroy();
local.close();
local.closeAllConnections();
relay.child.kill('SIGTERM');
client.child.kill('SIGTERM');
await Promise.all([relay.exited, client.exited]);
process.exit(passed ? 0 : 1);
