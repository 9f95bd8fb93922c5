// Endpoint pools: throughput of one name served by 1 member vs 2 members (`--pool`), interleaved rounds, report only:
// `node bench/pool.mjs [--rounds 3] [--seconds 5] [--connections 32] [--out bench/RESULTS-pool.md]`.
// Workloads: `small` (a ~100-byte answer, nothing else: the tunnel's own cost) and `busy` (each answer burns ~2 ms of
// the local service's single thread, as an app that is the bottleneck). Uses the compiled dist/ and Debian's wrk.
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ROOT,
  flag,
  fmt,
  killAll,
  median,
  spawnClient,
  spawnNode,
  spawnRelay,
  stopChild,
  waitForLine,
  wrkVersion,
} from './lib.mjs';

const BUSY_MS = 2;

// Child mode: the local app of one member.
if (process.argv[2] === 'local') {
  const body = Buffer.from(`${'ggrok pool benchmark '.repeat(5).slice(0, 99)}\n`);
  const server = http.createServer((req, res) => {
    req.resume();
    if (req.url === '/busy') {
      const until = performance.now() + BUSY_MS;
      while (performance.now() < until);
    }
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  });
  server.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`));
} else {
  await main();
}

async function main() {
  const rounds = Number(flag('rounds', 3));
  const seconds = Number(flag('seconds', 5));
  const connections = Number(flag('connections', 32));
  const out = flag('out', path.join(ROOT, 'bench', 'RESULTS-pool.md'));
  if (!wrkVersion()) {
    process.stderr.write('bench/pool.mjs needs wrk (apt-get install wrk)\n');
    process.exit(2);
  }
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
  const token = 'bench-token';
  const relay = await spawnRelay({ token, extra: ['--rate-limit', '1000000', '--max-requests', '100000'] });
  const locals = [];
  for (let i = 0; i < 2; i++) {
    const child = spawnNode(`local ${i}`, [path.join(ROOT, 'bench', 'pool.mjs'), 'local']);
    locals.push(Number((await waitForLine(child, /^port (\d+)$/))[1]));
  }
  const member = (i) =>
    spawnClient({
      localPort: locals[i],
      relayPort: relay.port,
      token,
      subdomain: 'shop',
      extraArgs: ['--pool'],
    });
  const first = await member(0);
  const results = { small: { 1: [], 2: [] }, busy: { 1: [], 2: [] } };
  for (let round = 0; round < rounds; round++) {
    for (const size of [1, 2]) {
      const second = size === 2 ? await member(1) : undefined;
      if (second) await new Promise((r) => setTimeout(r, 500)); // the relay announces the pool of 2
      for (const workload of ['small', 'busy']) {
        const r = wrk(relay.port, workload, seconds, connections);
        results[workload][size].push(r);
        process.stderr.write(
          `round ${round + 1} ${workload} ${size} member(s): ${fmt(r.rps, 0)} req/s, p99 ${fmt(r.p99Ms, 2)} ms, ${r.errors} errors\n`,
        );
      }
      if (second) await stopChild(second, 'SIGTERM');
    }
  }
  await stopChild(first, 'SIGTERM');
  await stopChild(relay.child, 'SIGTERM');
  writeFileSync(out, report(results, { rounds, seconds, connections }));
  process.stderr.write(`wrote ${out}\n`);
}

/** One wrk run against the pool; requests per second, p99 latency and errors (non-2xx, socket errors). */
function wrk(port, workload, seconds, connections) {
  const text = execFileSync(
    'wrk',
    [
      '-t1',
      `-c${connections}`,
      `-d${seconds}s`,
      '--latency',
      '-H',
      `Host: shop.localhost:${port}`,
      `http://127.0.0.1:${port}/${workload}`,
    ],
    { encoding: 'utf8' },
  );
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(text);
  const p99Ms = p99 ? Number(p99[1]) * { us: 0.001, ms: 1, s: 1000 }[p99[2]] : NaN;
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const errors = non2xx + (socket ? socket.slice(1).reduce((n, x) => n + Number(x), 0) : 0);
  return { rps, p99Ms, errors };
}

function report(results, { rounds, seconds, connections }) {
  const rows = ['small', 'busy'].map((w) => {
    const one = median(results[w][1].map((r) => r.rps));
    const two = median(results[w][2].map((r) => r.rps));
    const p1 = median(results[w][1].map((r) => r.p99Ms));
    const p2 = median(results[w][2].map((r) => r.p99Ms));
    const errors = [...results[w][1], ...results[w][2]].reduce((n, r) => n + r.errors, 0);
    return `| ${w} | ${fmt(one, 0)} | ${fmt(two, 0)} | ${fmt(two / one, 2)}× | ${fmt(p1, 2)} | ${fmt(p2, 2)} | ${errors} |`;
  });
  return `# Endpoint pools: 1 member vs 2 members

\`node bench/pool.mjs --rounds ${rounds} --seconds ${seconds} --connections ${connections}\` on ${os.cpus().length} cores
(${os.cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.versions.node}, ${new Date().toISOString().slice(0, 10)}.
One relay, one name served by one \`ggrok http --pool\` client, then by two (each with its own local app process);
wrk with ${connections} connections through the relay; medians of ${rounds} interleaved rounds. Report only.

| workload | 1 member req/s | 2 members req/s | ratio | 1 member p99 ms | 2 members p99 ms | errors |
| -------- | -------------- | --------------- | ----- | --------------- | ---------------- | ------ |
${rows.join('\n')}

- \`small\`: a ~100-byte answer; the tunnel itself is the cost, and relay, clients, apps and wrk share the cores.
- \`busy\`: each answer holds the local app's one thread for ${BUSY_MS} ms, so one member tops out near
  ${fmt(1000 / BUSY_MS, 0)} req/s; a second member (its own app process) takes half the requests.
`;
}
