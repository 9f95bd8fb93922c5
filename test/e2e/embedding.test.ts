// Embedding ggrok: the README's createRelay + connect example runs as written, a relay and a tunnel in one process
// serve a request end to end and both close() calls drain, and the package's exports and option names hold.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { connect } from '../../cli/index.js';
import { createRelay, type RelayOptions } from '../../relay/index.js';
import { relayCommand } from '../../relay/main.js';
import { Cleanup, rawRequest, reply, ROOT, startLocal, TOKEN, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** The first fenced block of `lang` after `marker` in the README. */
function readmeBlock(marker: string, lang: string): string {
  const start = README.indexOf(marker);
  expect(start, `README has ${marker}`).toBeGreaterThanOrEqual(0);
  const open = README.indexOf(`\`\`\`${lang}\n`, start);
  return README.slice(open + lang.length + 4, README.indexOf('\n```', open));
}

test("the README's createRelay example runs as written, importing the package by its name", () => {
  // Inside the package a module may import it by its own name: exactly what an installed copy resolves.
  const file = path.join(ROOT, `.readme-example-${process.pid}.mjs`);
  writeFileSync(file, readmeBlock('### `createRelay(options)`', 'js'));
  cleanup.add(() => rmSync(file, { force: true }));
  const run = spawnSync(process.execPath, [file], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
    env: {
      ...process.env,
      FORCE_COLOR: undefined,
      NO_COLOR: '1',
      GGROK_TOKEN: undefined,
      GGROK_SERVER: undefined,
      GGROK_CONFIG: undefined,
    },
  });
  expect(run.stderr).toBe('');
  expect(run.stdout).toBe('200 hello from /hi\n');
  expect(run.status).toBe(0);
});

test('createRelay and connect in one process serve a request; relay.close() lets the one in flight finish', async () => {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  const local = await startLocal(cleanup, (req, res) => {
    if (req.url === '/slow') void released.then(() => reply(res, 200, 'slow done'));
    else reply(res, 200, `fast ${req.url}`);
  });
  const relay = createRelay({ domain: 'localhost', tokens: [TOKEN] });
  const port = await relay.listen(0, '127.0.0.1');
  cleanup.add(() => relay.close(0));
  const tunnel = await connect({
    port: local.port,
    server: `http://127.0.0.1:${port}`,
    token: TOKEN,
    subdomain: 'one',
  });
  cleanup.add(() => tunnel.close({ drainMs: 0 }));
  const host = { Host: `one.localhost:${port}` };
  const fast = await rawRequest({ port, path: '/a', headers: host });
  expect([fast.status, fast.body.toString()]).toEqual([200, 'fast /a']);
  const slow = rawRequest({ port, path: '/slow', headers: host });
  await waitFor(() => tunnel.counters.inFlight === 1, 'the slow request at the client');
  const offline: string[] = [];
  tunnel.on('offline', (o) => offline.push(o.reason));
  const closing = relay.close(20_000);
  await waitFor(() => relay.counts().tunnels === 1 && offline.length === 0, 'the drain to start');
  release();
  const done = await slow;
  expect([done.status, done.body.toString()]).toEqual([200, 'slow done']);
  await closing;
  await waitFor(() => offline.length > 0, 'the client to notice the relay went away');
});

/** Every RelayOptions key; the type makes this list exactly the interface's. */
const RELAY_OPTION_NAMES = {
  domain: true,
  tokens: true,
  trustProxy: true,
  onFly: true,
  heartbeatMs: true,
  deadAfterMs: true,
  handshakeTimeoutMs: true,
  nameGraceMs: true,
  waitForClientMs: true,
  startupGraceMs: true,
  streamsPerSecond: true,
  visitorStreamsPerSecond: true,
  maxTunnelsPerToken: true,
  maxHeaderBytes: true,
  idleStreamMs: true,
  tls: true,
  maxRequestsPerTunnel: true,
  maxChannelsPerTunnel: true,
  flow: true,
  keepAliveTimeoutMs: true,
  headersTimeoutMs: true,
  log: true,
  accessLog: true,
  metricsToken: true,
  metricsPerTunnel: true,
  webhook: true,
  statsIntervalMs: true,
  now: true,
  instanceId: true,
  cluster: true,
  inboxDir: true,
  inboxStatus: true,
  inboxMaxBodyBytes: true,
  inboxMaxRequests: true,
  inboxMaxTunnelBytes: true,
  inboxMaxTotalBytes: true,
  inboxTtlMs: true,
  inboxRetryMs: true,
  inboxMaxAttempts: true,
} satisfies Record<keyof RelayOptions, true>;

test('the README maps every `ggrok relay` flag to a createRelay option that exists', () => {
  const marker = '| `ggrok relay` flag';
  const lines = README.slice(README.indexOf(marker)).split('\n').slice(2);
  const rows = lines
    .slice(
      0,
      lines.findIndex((line) => !line.startsWith('|')),
    )
    .map((line) => line.split('|').map((c) => c.trim()));
  const flagsInReadme = rows.flatMap((cells) => cells[1]!.match(/--[\w-]+/g) ?? []);
  const flags = relayCommand().options.map((o) => o.long!);
  expect(new Set(flagsInReadme)).toEqual(new Set(flags));
  for (const cells of rows) {
    const option = /^`(?:relay\.)?(\w+)/.exec(cells[2]!)![1]!;
    if (option === 'listen') continue;
    expect(Object.keys(RELAY_OPTION_NAMES)).toContain(option);
  }
});

test('package.json exports put types first, and every export is built', () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    exports: Record<string, Record<string, string>>;
  };
  expect(Object.keys(pkg.exports)).toEqual(['.', './relay', './vite']);
  for (const [name, entry] of Object.entries(pkg.exports)) {
    expect(Object.keys(entry)[0], name).toBe('types');
    for (const file of Object.values(entry)) expect(existsSync(path.join(ROOT, file)), file).toBe(true);
  }
});
