// WebSocket channels and idle tunnels, direct vs tunnelled in one run: `node bench/ws.mjs [--rounds 3]
// [--seconds 5] [--channels 5000] [--tunnels 2000] [--out bench/RESULTS-ws.md]`. Uses the compiled dist/.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ANALYSIS_END,
  ANALYSIS_START,
  ROOT,
  flag,
  fmt,
  killAll,
  median,
  previousAnalysis,
  rssKiB,
  sleep,
  spawnClient,
  spawnNode,
  spawnRelay,
  stopChild,
  waitForLine,
} from './lib.mjs';

const argv = process.argv.slice(2);
const rounds = Number(flag('rounds', 3));
const seconds = Number(flag('seconds', 5));
const channels = Number(flag('channels', 5000));
const tunnels = Number(flag('tunnels', 2000));
const out = flag('out', path.join(ROOT, 'bench', 'RESULTS-ws.md'));
const TOKEN = 'bench-token';
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

/** Runs one ws-load measurement in its own process and returns its JSON result. */
async function load(args, timeoutMs = 120_000) {
  const child = spawnNode('ws-load', [path.join(ROOT, 'bench', 'ws-load.mjs'), JSON.stringify(args)]);
  const m = await waitForLine(child, /^result (.*)$/, timeoutMs);
  await child.exited;
  return JSON.parse(m[1]);
}

/** Starts a load process that holds sockets open; resolves once they are all open. */
async function hold(args, count) {
  const child = spawnNode('ws-hold', [path.join(ROOT, 'bench', 'ws-load.mjs'), JSON.stringify(args)]);
  await waitForLine(child, new RegExp(`^open ${count}$`), 300_000);
  return child;
}

/** RSS after letting the process settle a moment (so freshly freed memory is not counted twice). */
async function settledRss(pid) {
  await sleep(1500);
  return rssKiB(pid);
}

const local = spawnNode('ws-local', [path.join(ROOT, 'bench', 'ws-local.mjs')]);
const localPort = Number((await waitForLine(local, /^port (\d+)$/))[1]);
/** A relay of its own process, with limits raised for the channel and tunnel counts. */
const startRelay = () =>
  spawnRelay({
    token: TOKEN,
    extra: [
      '--max-channels',
      String(channels + 100),
      '--rate-limit',
      '100000',
      '--max-tunnels-per-token',
      String(tunnels + 10),
    ],
  });
const { child: relay, port: relayPort } = await startRelay();
const client = await spawnClient({ localPort, relayPort, token: TOKEN, subdomain: 'ws' });
const direct = { url: `ws://127.0.0.1:${localPort}/` };
const tunnel = { url: `ws://127.0.0.1:${relayPort}/`, host: `ws.localhost:${relayPort}` };
console.log(`local :${localPort}, relay :${relayPort} (pid ${relay.pid}), client pid ${client.pid}`);

const results = {
  echo: { direct: [], tunnel: [] },
  p99: { direct: [], tunnel: [] },
  mib: { direct: [], tunnel: [] },
};
// Warm-up, results discarded: JIT and pools in every process, as on a relay that has been running for a while.
for (const target of [direct, tunnel]) {
  await load({ mode: 'echo', ...target, seconds, bytes: 1024 });
  await load({
    mode: 'throughput',
    ...target,
    totalBytes: 16 * 1024 * 1024,
    messageBytes: 64 * 1024,
    inFlight: 16,
  });
}

for (let round = 1; round <= rounds; round++) {
  for (const [name, target] of [
    ['direct', direct],
    ['tunnel', tunnel],
  ]) {
    const e = await load({ mode: 'echo', ...target, seconds, bytes: 1024 });
    results.echo[name].push(e.perSecond);
    results.p99[name].push(e.p99Ms);
    const t = await load({
      mode: 'throughput',
      ...target,
      totalBytes: 64 * 1024 * 1024,
      messageBytes: 64 * 1024,
      inFlight: 16,
    });
    results.mib[name].push(t.mibPerSecond);
  }
  console.log(
    `round ${round}/${rounds}: echo ${fmt(results.echo.direct.at(-1), 0)} / ${fmt(results.echo.tunnel.at(-1), 0)} rt/s, ` +
      `throughput ${fmt(results.mib.direct.at(-1))} / ${fmt(results.mib.tunnel.at(-1))} MiB/s (direct / tunnel)`,
  );
}

// Idle channels: relay and client memory per open, silent WebSocket through the tunnel.
const relayBefore = await settledRss(relay.pid);
const clientBefore = await settledRss(client.pid);
const holder = await hold({ mode: 'idle', ...tunnel, channels }, channels);
const relayAfter = await settledRss(relay.pid);
const clientAfter = await settledRss(client.pid);
const perChannelRelay = ((relayAfter - relayBefore) * 1024) / channels;
const perChannelClient = ((clientAfter - clientBefore) * 1024) / channels;
console.log(
  `idle channels: ${channels}, relay +${fmt((relayAfter - relayBefore) / 1024)} MiB (${fmt(perChannelRelay / 1024, 2)} KiB each)`,
);
await stopChild(holder, 'SIGKILL');

// Idle tunnels: relay memory per connected tunnel client (each with its own control WebSocket). A fresh relay:
// the first one may still hold the garbage of 10 000 closed channels, and freeing it would show as negative growth.
const { child: relay2, port: relay2Port } = await startRelay();
const relay2Before = await settledRss(relay2.pid);
const tunnelHolder = await hold(
  {
    mode: 'tunnels',
    server: `http://127.0.0.1:${relay2Port}`,
    token: TOKEN,
    port: localPort,
    count: tunnels,
  },
  tunnels,
);
const relay2After = await settledRss(relay2.pid);
const perTunnel = ((relay2After - relay2Before) * 1024) / tunnels;
console.log(
  `idle tunnels: ${tunnels}, relay +${fmt((relay2After - relay2Before) / 1024)} MiB (${fmt(perTunnel / 1024, 2)} KiB each)`,
);
await stopChild(tunnelHolder, 'SIGKILL');
await stopChild(relay2);

const m = (x) => median(x);
const ratio = (a, b) => (a && b ? b / a : undefined);
const rows = [
  [
    '1 KiB echo, one socket: round trips/s',
    m(results.echo.direct),
    m(results.echo.tunnel),
    ratio(m(results.echo.direct), m(results.echo.tunnel)),
    '≥ 0.40 (issue 3), ≥ 0.50 (issue 8)',
  ],
  [
    '1 KiB echo: p99 round trip (ms)',
    m(results.p99.direct),
    m(results.p99.tunnel),
    ratio(m(results.p99.direct), m(results.p99.tunnel)),
    '',
  ],
  [
    '64 MiB echoed in 64 KiB messages: MiB/s',
    m(results.mib.direct),
    m(results.mib.tunnel),
    ratio(m(results.mib.direct), m(results.mib.tunnel)),
    '',
  ],
  [
    `relay memory per idle channel (${channels} open), KiB`,
    undefined,
    perChannelRelay / 1024,
    undefined,
    '≤ 16 KiB',
  ],
  [
    `client memory per idle channel (${channels} open), KiB`,
    undefined,
    perChannelClient / 1024,
    undefined,
    '',
  ],
  [
    `relay memory per idle tunnel (${tunnels} connected), KiB`,
    undefined,
    perTunnel / 1024,
    undefined,
    '≤ 64 KiB (issue 8)',
  ],
];
const table = [
  '| metric | direct | tunnel | tunnel/direct | target |',
  '| --- | --: | --: | --: | --- |',
  ...rows.map(
    ([name, d, t, r, target]) => `| ${name} | ${fmt(d, 2)} | ${fmt(t, 2)} | ${fmt(r, 2)} | ${target} |`,
  ),
].join('\n');
const perRound = results.echo.direct
  .map(
    (d, i) =>
      `- round ${i + 1}: echo ${fmt(d, 0)} / ${fmt(results.echo.tunnel[i], 0)} rt/s (${fmt(ratio(d, results.echo.tunnel[i]), 2)}), ` +
      `throughput ${fmt(results.mib.direct[i], 1)} / ${fmt(results.mib.tunnel[i], 1)} MiB/s (direct / tunnel)`,
  )
  .join('\n');
console.log(`\n${table}\n`);
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
// A hand-written analysis block in the previous file is carried over.
const kept = previousAnalysis(out);
const analysis = kept === undefined ? undefined : `${ANALYSIS_START}\n${kept}\n${ANALYSIS_END}`;
writeFileSync(
  out,
  `# WebSocket channels and idle tunnels\n\nCommand: \`node bench/ws.mjs ${argv.join(' ')}\`  \nDate: ${new Date().toISOString()}  \n` +
    `Machine: node ${process.version}, ${os.cpus().length} cores (${cpu}); relay, client, local server and load tool are separate processes on the same machine. ` +
    `Both paths warmed up with one discarded echo and throughput run; medians of ${rounds} interleaved rounds; memory is the RSS growth of the relay (and client) process divided by the number of channels or tunnels, measured after a 1.5 s settle.\n\n${table}\n\nPer round:\n\n${perRound}\n` +
    (analysis ? `\n${analysis}\n` : ''),
);
console.log(`wrote ${path.relative(ROOT, out)}`);
await stopChild(client);
await stopChild(relay);
await stopChild(local);
process.exit(0);
