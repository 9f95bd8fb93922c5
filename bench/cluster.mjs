// The relay cluster as operators get it: `node bench/cluster.mjs [--seconds 5] [--rounds 3] [--idle-clients 20]
// [--out bench/RESULTS-cluster.md]` starts a real redis-server, N relay instances sharing it (`--redis`) behind a
// round-robin TCP front (what Heroku's router, Fly's proxy or an L4 balancer do), and one ggrok client given the
// front's URL, then measures:
//   1. small GETs through the front with 1, 2 and 3 instances, beside the local server direct and one relay alone
//      (no Redis) — on 2 shared cores more instances mean more processes, so this shows the cost, not a speed-up;
//   2. kill -9 of one of 3 instances under a steady stream of GETs (new connection each, like browsers spread over
//      a front): failures, and the time from the kill to the last failure;
//   3. the idle cost of attached clients: relay RSS and CPU per control socket with `--idle-clients` clients.
// Every load loop is bounded in time and count; everything listens on 127.0.0.1.
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  cpuMs,
  flag,
  fmt,
  killAll,
  median,
  ROOT,
  rssKiB,
  sleep,
  spawnClient,
  spawnNode,
  spawnRelay,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const argv = process.argv.slice(2);
const seconds = Number(flag('seconds', 5));
const rounds = Number(flag('rounds', 3));
const idleClients = Number(flag('idle-clients', 20));
const out = path.resolve(flag('out', path.join(ROOT, 'bench', 'RESULTS-cluster.md')));
const TOKEN = 'bench-token';
const tool = wrkVersion() ? 'wrk' : 'autocannon';
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

/** A port nobody listens on right now. */
async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** redis-server on its own port, nothing persisted; killed when the bench exits. */
async function startRedis() {
  if (spawnSync('redis-server', ['--version']).status !== 0) throw new Error('redis-server is not installed');
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  process.on('exit', () => child.kill('SIGKILL'));
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return { url: `redis://127.0.0.1:${port}`, child };
    await sleep(50);
  }
  throw new Error('redis-server did not start');
}

/**
 * A round-robin TCP front in this process: each connection goes to the next live upstream; an upstream that refuses
 * is skipped (as a platform's health checks would), so a killed instance only costs the connections it held.
 */
async function startFront(upstreams) {
  let next = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const tryFrom = (attempt) => {
      const list = upstreams();
      if (attempt >= list.length) return socket.destroy();
      const port = list[(next++ + attempt) % list.length];
      const up = net.connect(port, '127.0.0.1');
      up.once('connect', () => {
        up.removeAllListeners('error');
        up.on('error', () => socket.destroy());
        socket.on('close', () => up.destroy());
        up.on('close', () => socket.destroy());
        socket.pipe(up);
        up.pipe(socket);
      });
      up.once('error', () => tryFrom(attempt + 1));
    };
    tryFrom(0);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return { port: server.address().port, close: () => server.close() };
}

/** One GET with a Host header on a new connection: its status, or 0 when the connection failed. */
function get(port, host, pathName = '/small', timeoutMs = 5000) {
  return new Promise((resolve) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: pathName, headers: { Host: host }, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

async function health(port) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/_ggrok/health', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(JSON.parse(body)));
      })
      .on('error', () => resolve(undefined));
  });
}

async function waitUntil(check, what, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function smallGets(port, host) {
  const child = spawnNode('load', [
    path.join(ROOT, 'bench', 'load.mjs'),
    JSON.stringify({ mode: 'small', tool, connections: 50, duration: seconds, port, host }),
  ]);
  const m = await waitForLine(child, /^(\{"event":"result".*)$/, (seconds + 60) * 1000);
  const r = JSON.parse(m[1]);
  if (!r.ok) throw new Error(`small GETs failed: ${m[1]}`);
  return r;
}

/**
 * N instances on one Redis behind a front, with one client attached to all of them. Each cluster serves a name of its
 * own: the last one's instances were killed (SIGKILL), and their leases say they serve theirs for a few more seconds.
 */
let clusters = 0;
async function startCluster(n, redis, localPort) {
  const name = `c${++clusters}`;
  const relays = [];
  for (let i = 1; i <= n; i++) {
    const port = await freePort();
    const extra = ['--redis', redis.url, '--instance-id', `r${i}`, '--peer-url', `http://127.0.0.1:${port}`];
    const relay = await spawnRelay({ token: TOKEN, port, extra });
    relays.push({ ...relay, alive: true });
  }
  const front = await startFront(() => relays.filter((r) => r.alive).map((r) => r.port));
  const client = await spawnClient({ localPort, relayPort: front.port, token: TOKEN, subdomain: name });
  await waitUntil(
    async () => (await Promise.all(relays.map((r) => health(r.port)))).every((h) => h?.tunnels === 1),
    `the client on all ${n} instances`,
  );
  const stop = async () => {
    client.kill('SIGKILL');
    for (const r of relays) r.child.kill('SIGKILL');
    front.close();
    await sleep(300);
  };
  return { relays, front, client, stop, host: `${name}.localhost` };
}

const local = spawnNode('local server', [path.join(ROOT, 'bench', 'local-server.mjs')]);
const localPort = Number((await waitForLine(local, /^\{"port":(\d+)/))[1]);
const redis = await startRedis();

// 1. Throughput: direct, a relay alone, and clusters of 1, 2, 3 behind the front; interleaved rounds.
const alone = await spawnRelay({ token: TOKEN });
await spawnClient({ localPort, relayPort: alone.port, token: TOKEN, subdomain: 'a' });
const throughput = { direct: [], alone: [], 1: [], 2: [], 3: [] };
const p99 = { direct: [], alone: [], 1: [], 2: [], 3: [] };
for (let r = 0; r < rounds; r++) {
  let m = await smallGets(localPort);
  throughput.direct.push(m.reqPerSec);
  p99.direct.push(m.p99);
  m = await smallGets(alone.port, `a.localhost:${alone.port}`);
  throughput.alone.push(m.reqPerSec);
  p99.alone.push(m.p99);
  for (const n of r % 2 === 0 ? [1, 2, 3] : [3, 2, 1]) {
    const c = await startCluster(n, redis, localPort);
    await smallGets(c.front.port, c.host); // warm-up, discarded
    m = await smallGets(c.front.port, c.host);
    throughput[n].push(m.reqPerSec);
    p99[n].push(m.p99);
    await c.stop();
  }
  console.log(
    `round ${r + 1}/${rounds}: ${Object.entries(throughput)
      .map(([k, v]) => `${k} ${fmt(v.at(-1), 0)}`)
      .join(', ')}`,
  );
}
alone.child.kill('SIGKILL');

// 2. kill -9 of one of three instances under a stream of GETs through the front.
const kill = await (async () => {
  const c = await startCluster(3, redis, localPort);
  const results = [];
  let stop = false;
  let killedAt = 0;
  const started = Date.now();
  const loop = (async () => {
    for (let i = 0; i < 20_000 && !stop; i++) {
      const at = Date.now();
      const status = await get(c.front.port, c.host);
      results.push({ at, status });
      await sleep(5);
    }
  })();
  await sleep(2000);
  killedAt = Date.now();
  const victim = c.relays[1];
  victim.child.kill('SIGKILL');
  victim.alive = false; // the front's health check notices at once here; platforms take a few seconds more
  await sleep(10_000);
  stop = true;
  await loop;
  await c.stop();
  const after = results.filter((x) => x.at >= killedAt);
  const failed = after.filter((x) => x.status !== 200);
  const lastFailure = failed.length ? Math.max(...failed.map((x) => x.at)) - killedAt : 0;
  const firstOk = after.find((x) => x.status === 200);
  return {
    before: results.filter((x) => x.at < killedAt).length,
    beforeFailed: results.filter((x) => x.at < killedAt && x.status !== 200).length,
    after: after.length,
    failed: failed.length,
    statuses: [...new Set(failed.map((x) => x.status))],
    lastFailureMs: lastFailure,
    firstOkMs: firstOk ? firstOk.at - killedAt : undefined,
    wallMs: Date.now() - started,
  };
})();
console.log(`kill -9: ${JSON.stringify(kill)}`);

// 3. Idle cost of attached clients on a 3-instance cluster: relay RSS and CPU per control socket.
const idle = await (async () => {
  const relays = [];
  for (let i = 1; i <= 3; i++) {
    const port = await freePort();
    const extra = ['--redis', redis.url, '--instance-id', `i${i}`, '--peer-url', `http://127.0.0.1:${port}`];
    relays.push({ ...(await spawnRelay({ token: TOKEN, port, extra })), alive: true });
  }
  const front = await startFront(() => relays.map((r) => r.port));
  await sleep(2000);
  const pid = relays[0].child.pid;
  const rssBefore = rssKiB(pid);
  const clients = [];
  for (let i = 0; i < idleClients; i++)
    clients.push(
      await spawnClient({ localPort, relayPort: front.port, token: TOKEN, subdomain: `idle${i}` }),
    );
  await waitUntil(
    async () => (await health(relays[0].port))?.tunnels === idleClients,
    'every idle client on i1',
    60_000,
  );
  await sleep(3000);
  const cpu0 = cpuMs(pid);
  const t0 = Date.now();
  await sleep(10_000);
  const cpuPerSecond = ((cpuMs(pid) - cpu0) / (Date.now() - t0)) * 1000;
  const rssAfter = rssKiB(pid);
  for (const c of clients) c.kill('SIGKILL');
  for (const r of relays) r.child.kill('SIGKILL');
  front.close();
  return {
    clients: idleClients,
    rssPerSocketKiB: (rssAfter - rssBefore) / idleClients,
    cpuMsPerSecond: cpuPerSecond,
    cpuMsPerSocketPerMinute: (cpuPerSecond * 60) / idleClients,
  };
})();
console.log(`idle: ${JSON.stringify(idle)}`);

const row = (k, label) =>
  `| ${label} | ${fmt(median(throughput[k]), 0)} | ${fmt(median(throughput[k]) / median(throughput.direct), 2)} | ${fmt(median(throughput[k]) / median(throughput.alone), 2)} | ${fmt(median(p99[k]), 2)} | ${throughput[k].map((v) => fmt(v, 0)).join(' / ')} |`;
const report = `# Relay cluster benchmark

Command: \`node bench/cluster.mjs ${argv.join(' ')}\`  
Date: ${new Date().toISOString()}  
Machine: node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}); redis-server, every relay, the
client, the local server, the load tool and the front are separate processes on the same cores (the front runs in the
benchmark's own process).  
Load: small GETs with ${tool} at 50 connections for ${seconds} s per measurement; ${rounds} interleaved rounds (cluster
sizes alternate order); each cluster is started fresh, warmed with one discarded run, and measured through the front.
Relays and the client run with their defaults (the client with \`--no-inspect -q\`, as every bench client).

## Small GETs through the front

| path | req/s (median) | ratio to direct | ratio to a relay alone | p99 ms | per round |
| --- | --: | --: | --: | --: | --- |
${row('direct', 'direct (local server)')}
${row('alone', 'one relay, no Redis')}
${row(1, 'cluster of 1 behind the front')}
${row(2, 'cluster of 2 behind the front')}
${row(3, 'cluster of 3 behind the front')}

On two shared cores the instances compete with the client and the load tool for the same CPU, so adding instances
cannot raise throughput here; what the rows show is the cost of the front hop and of requests that reach an instance
holding the tunnel on its own socket (every instance does: the client is attached to all of them, so nothing is
forwarded between instances). On separate machines each instance adds its own cores.

## kill -9 of one of three instances

A GET every 5 ms through the front, each on a new connection. ${kill.before} requests before the kill (${kill.beforeFailed}
failed); after it ${kill.after}, of which **${kill.failed} failed**${kill.failed ? ` (statuses ${kill.statuses.join(', ')}; 0 = connection reset)` : ''}; the last failure came
**${kill.lastFailureMs} ms** after the kill; the first success after the kill at ${kill.firstOkMs ?? '—'} ms. The front
stops sending to the dead instance at once here (a platform's health check takes a few seconds more); the client
keeps serving through its sockets to the two live instances and nothing waits for a reconnect.

## Idle cost of attached clients

${idle.clients} idle clients attached to a 3-instance cluster (one control socket each per instance, heartbeats every 2 s):
instance i1 holds **${fmt(idle.rssPerSocketKiB, 0)} KiB of RSS per control socket** and spends **${fmt(idle.cpuMsPerSecond, 1)} ms of CPU
per second** in all (${fmt(idle.cpuMsPerSocketPerMinute, 1)} ms per socket per minute) on heartbeats, membership and lease renewals.
`;
writeFileSync(out, report);
console.log(`wrote ${path.relative(ROOT, out)}`);
process.exit(0);
