// Real dev servers through a real relay and client: Vite 6, webpack-dev-server 5 and Django refuse the tunnel's host,
// ggrok says which and how to fix it; with --host-header rewrite pages load and hot reload works, also over https:443.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { HostCheckHint } from '../../cli/host-check.js';
import type { ClientOptions } from '../../cli/client.js';
import { launchChromium } from '../browser.js';
import { tempProject, testCertificate, VITE_HMR_APP } from '../dev-server-fixtures.js';
import {
  Cleanup,
  rawRequest,
  reply,
  ROOT,
  runCli,
  startClient,
  startRelay,
  TOKEN,
  waitFor,
  type TestRelay,
} from '../helpers.js';

/** Not *.localhost: Vite, webpack-dev-server and Django all let localhost names through without asking. */
const DOMAIN = 'relay.test';
/** Dev servers take seconds to start and compile on a busy two-core machine. */
const START_MS = 45_000;

const suite = new Cleanup();
const cleanup = new Cleanup();
afterEach(() => cleanup.run());
afterAll(() => suite.run());

let relay: TestRelay; // plain http, tunnels at http://<name>.relay.test:<port>
let tlsRelay: TestRelay; // TLS, which the browser reaches as https://<name>.relay.test on port 443
let browser: Browser;

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** A temporary directory with these files, removed at the end of the suite. */
const project = (files: Record<string, string>): string => tempProject(suite, files);

/** Starts a dev server process for the suite; its output is kept for failure messages. */
function spawnServer(
  command: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): () => string {
  const child = spawn(command, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  child.on('error', (err) => (output += `\nspawn error: ${err.message}`));
  suite.add(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const exited = once(child, 'exit');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  });
  return () => output;
}

/** Polls until the server answers `path` on 127.0.0.1 with 200. */
async function waitForServer(port: number, urlPath: string, output: () => string): Promise<void> {
  try {
    await waitFor(
      () =>
        rawRequest({ port, path: urlPath, headers: { Host: `localhost:${port}` } }).then(
          (r) => r.status === 200,
          () => false,
        ),
      `a dev server on port ${port}`,
      START_MS,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; its output:\n${output()}`);
  }
}

/** A throwaway certificate for *.relay.test, so the TLS relay can stand in for a public one. */
const certificate = (): { cert: Buffer; key: Buffer } => testCertificate(suite, DOMAIN);

beforeAll(async () => {
  relay = await startRelay(suite, { domain: DOMAIN });
  tlsRelay = await startRelay(suite, { domain: DOMAIN, tls: certificate() });
  // *.relay.test is 127.0.0.1; port 443 of it is the TLS relay, so pages load from https://<name>.relay.test/.
  browser = await launchChromium(suite, [
    `--host-resolver-rules=MAP *.${DOMAIN}:443 127.0.0.1:${tlsRelay.port}, MAP *.${DOMAIN} 127.0.0.1`,
  ]);
}, START_MS);

/** A tunnel client in this process, collecting its hints. */
async function tunnel(
  target: string,
  subdomain: string,
  options: Partial<ClientOptions> & { tls?: boolean } = {},
): Promise<{ host: string; url: string; hints: HostCheckHint[]; requests: () => number }> {
  const { tls, ...rest } = options;
  const r = tls ? tlsRelay : relay;
  const hints: HostCheckHint[] = [];
  let requests = 0;
  const client = await startClient(cleanup, tls ? `https://127.0.0.1:${r.port}` : r.url, target, {
    subdomain,
    insecure: tls,
    ...rest,
  });
  client.on('hint', (h) => hints.push(h));
  client.on('request', () => requests++);
  const host = new URL(client.url).host;
  return {
    host,
    url: tls ? `https://${subdomain}.${DOMAIN}/` : `${client.url}/`,
    hints,
    requests: () => requests,
  };
}

const REWRITE = {
  hostHeader: 'rewrite',
  requestAdd: [],
  requestRemove: [],
  responseAdd: [],
  responseRemove: [],
};

/** Opens `url` in a fresh page; counts full page loads so a test can tell hot updates from reloads. */
async function open(url: string): Promise<{ page: Page; loads: () => number; console: string[] }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  cleanup.add(() => context.close());
  const page = await context.newPage();
  let loads = 0;
  const lines: string[] = [];
  page.on('load', () => loads++);
  page.on('console', (m) => lines.push(m.text()));
  const res = await page.goto(url);
  expect(res?.status()).toBe(200);
  return { page, loads: () => loads, console: lines };
}

describe('Vite 6', () => {
  let port: number;
  let dir: string;

  beforeAll(async () => {
    dir = project(VITE_HMR_APP);
    port = await freePort();
    const vite = path.join(ROOT, 'node_modules', 'vite6', 'bin', 'vite.js');
    const output = spawnServer(
      process.execPath,
      [vite, '--port', String(port), '--strictPort', '--host', '127.0.0.1', '--clearScreen', 'false'],
      dir,
    );
    await waitForServer(port, '/', output);
  }, START_MS);

  test('its refusal is recognised: one json hint, and the inspector shows it', async () => {
    const cli = runCli(cleanup, [
      'http',
      String(port),
      ...['--server', relay.url, '--token', TOKEN, '--subdomain', 'vite'],
      ...['--log-format', 'json', '--inspect', '127.0.0.1:0'],
    ]);
    await cli.waitForOutput(/"event":"online"/);
    const host = `vite.${DOMAIN}:${relay.port}`;
    for (const p of ['/', '/main.js']) {
      const res = await rawRequest({ port: relay.port, path: p, headers: { Host: host } });
      expect(res.status).toBe(403);
      expect(res.body.toString()).toMatch(
        /^Blocked request\. This host \("vite\.relay\.test"\) is not allowed/,
      );
    }
    await cli.waitForOutput(/"event":"request".*"target":"\/main\.js"/);
    await cli.waitForOutput(/"event":"hint"/);
    const events = cli
      .stdout()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { event: string } & Partial<HostCheckHint>);
    const hints = events.filter((e) => e.event === 'hint');
    expect(hints).toHaveLength(1); // once per tunnel, though two requests were refused
    expect(hints[0]).toMatchObject({ tunnel: 'vite', server: 'vite', host: 'vite.relay.test', status: 403 });
    expect(hints[0]!.fixes![0]).toContain('--host-header rewrite');
    expect(hints[0]!.fixes![0]).toContain(`Host: localhost:${port}`);
    expect(hints[0]!.fixes![1]).toContain("server: { allowedHosts: ['.relay.test'] }");

    const inspector = (await cli.waitForOutput(/"inspector":"(http:\/\/127\.0\.0\.1:\d+)"/))[1]!;
    const { page } = await open(inspector);
    const banner = page.getByTestId('hint');
    await banner.waitFor({ timeout: 15_000 });
    expect(await banner.textContent()).toContain('Vite refused vite.relay.test');
    expect(await page.getByTestId('hints').textContent()).toContain("allowedHosts: ['.relay.test']");
  });

  test('with --host-header rewrite the page loads over https:443 and an edited module hot-updates without a reload', async () => {
    const t = await tunnel(String(port), 'vitehmr', { tls: true, headerRules: REWRITE });
    const { page, loads, console: lines } = await open(t.url);
    await page.waitForFunction("document.getElementById('app')?.textContent === 'one'");
    // The HMR socket is built from the page's location: wss://vitehmr.relay.test/ through the tunnel.
    await waitFor(() => lines.includes('[vite] connected.'), 'the Vite HMR socket', 15_000);
    await page.evaluate('window.marker = 42');
    writeFileSync(path.join(dir, 'msg.js'), "export const text = 'two';\n");
    await page.waitForFunction("document.getElementById('app')?.textContent === 'two'", undefined, {
      timeout: 20_000,
    });
    expect(await page.evaluate('window.marker')).toBe(42);
    expect(loads()).toBe(1);
    expect(t.hints).toEqual([]);
  });
});

describe('webpack-dev-server 5', () => {
  let port: number;
  let dir: string;

  beforeAll(async () => {
    dir = project({
      'index.html':
        '<!doctype html><html><body><div id="app"></div><script src="/main.js"></script></body></html>\n',
      'src/index.js': [
        "import { text } from './msg.js';",
        "const render = (t) => { document.getElementById('app').textContent = t; };",
        'render(text);',
        "if (import.meta.webpackHot) import.meta.webpackHot.accept('./msg.js', () => render(text));",
        '',
      ].join('\n'),
      'src/msg.js': "export const text = 'one';\n",
      // The dev server as its API starts it (webpack-cli is not installed). webSocketURL 'auto://0.0.0.0:0/ws' makes
      // its client open the hot-reload socket at the page's own host and port, i.e. through the tunnel.
      'serve.cjs': [
        "const path = require('node:path');",
        "const load = require('node:module').createRequire(path.join(process.env.GGROK_ROOT, 'package.json'));",
        "const webpack = load('webpack');",
        "const WebpackDevServer = load('webpack-dev-server');",
        'const compiler = webpack({',
        "  mode: 'development', context: __dirname, entry: './src/index.js',",
        "  output: { path: path.join(__dirname, 'dist') }, infrastructureLogging: { level: 'warn' }, stats: 'errors-only',",
        '});',
        'const server = new WebpackDevServer({',
        "  host: '127.0.0.1', port: Number(process.argv[2]), hot: true,",
        "  client: { webSocketURL: 'auto://0.0.0.0:0/ws', overlay: false }, static: { directory: __dirname, watch: false },",
        '}, compiler);',
        'server.start().catch((err) => { console.error(err); process.exit(1); });',
        '',
      ].join('\n'),
    });
    port = await freePort();
    const output = spawnServer(process.execPath, ['serve.cjs', String(port)], dir, { GGROK_ROOT: ROOT });
    await waitForServer(port, '/main.js', output);
  }, START_MS);

  test('"Invalid Host header" is recognised, and the API emits the hint once', async () => {
    const t = await tunnel(String(port), 'wds');
    for (let i = 0; i < 2; i++) {
      const res = await rawRequest({ port: relay.port, path: '/main.js', headers: { Host: t.host } });
      expect([res.status, res.body.toString()]).toEqual([403, 'Invalid Host header']);
    }
    await waitFor(() => t.hints.length > 0 && t.requests() === 2, 'the hint');
    await new Promise((r) => setImmediate(r));
    expect(t.hints).toHaveLength(1);
    expect(t.hints[0]).toMatchObject({
      server: 'webpack-dev-server',
      host: 'wds.relay.test',
      target: '/main.js',
    });
    expect(t.hints[0]!.fixes.join('\n')).toContain("devServer: { allowedHosts: ['.relay.test'] }");
    expect(t.hints[0]!.note).toContain("webSocketURL: 'auto://0.0.0.0:0/ws'");
  });

  test('with --host-header rewrite the page loads, its HMR socket connects through the tunnel and hot-updates', async () => {
    const t = await tunnel(String(port), 'wdshmr', { headerRules: REWRITE });
    const frames: string[] = [];
    const sockets: string[] = [];
    const context = await browser.newContext();
    cleanup.add(() => context.close());
    const page = await context.newPage();
    page.on('websocket', (ws) => {
      sockets.push(ws.url());
      ws.on('framereceived', (f) => frames.push(String(f.payload)));
    });
    let loads = 0;
    page.on('load', () => loads++);
    expect((await page.goto(t.url))?.status()).toBe(200);
    await page.waitForFunction("document.getElementById('app')?.textContent === 'one'");
    // The server accepted the socket (the Origin ggrok rewrote matches the rewritten Host) and said so.
    await waitFor(() => frames.some((f) => f.includes('"type":"ok"')), 'the HMR socket', 15_000);
    expect(sockets).toEqual([`ws://wdshmr.${DOMAIN}:${relay.port}/ws`]);
    expect(frames.join('\n')).not.toContain('Invalid Host/Origin header');
    await page.evaluate('window.marker = 7');
    writeFileSync(path.join(dir, 'src', 'msg.js'), "export const text = 'two';\n");
    await page.waitForFunction("document.getElementById('app')?.textContent === 'two'", undefined, {
      timeout: 30_000,
    });
    expect(await page.evaluate('window.marker')).toBe(7);
    expect(loads).toBe(1);
  });
});

/** Debian's python3 has python3-django; a python3 earlier on PATH (pyenv, a venv) may not. */
function djangoPython(): string {
  for (const python of ['/usr/bin/python3', 'python3']) {
    try {
      execFileSync(python, ['-c', 'import django'], { stdio: 'ignore' });
      return python;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    'Django is missing: run scripts/install-test-deps.sh (npm run test:setup) to install python3-django',
  );
}

describe('Django (DEBUG)', () => {
  let port: number;

  beforeAll(async () => {
    const dir = project({
      'settings.py': "DEBUG = True\nSECRET_KEY = 'ggrok-test'\nALLOWED_HOSTS = []\nROOT_URLCONF = 'urls'\n",
      'urls.py': [
        'from django.http import HttpResponse',
        'from django.urls import path',
        "page = lambda request: HttpResponse('<h1>hello from django</h1><p>' + request.get_host() + '</p>')",
        "urlpatterns = [path('', page)]",
        '',
      ].join('\n'),
    });
    port = await freePort();
    const output = spawnServer(
      djangoPython(),
      ['-m', 'django', 'runserver', `127.0.0.1:${port}`, '--noreload', '--nothreading'],
      dir,
      { DJANGO_SETTINGS_MODULE: 'settings', PYTHONPATH: dir, PYTHONDONTWRITEBYTECODE: '1' },
    );
    await waitForServer(port, '/', output);
  }, START_MS);

  test('DisallowedHost is recognised: the terminal names Django and ALLOWED_HOSTS', async () => {
    const cli = runCli(cleanup, [
      'http',
      String(port),
      '--server',
      relay.url,
      '--token',
      TOKEN,
      '--subdomain',
      'dj',
    ]);
    await cli.waitForOutput(/Forwarding/);
    const res = await rawRequest({ port: relay.port, headers: { Host: `dj.${DOMAIN}:${relay.port}` } });
    expect(res.status).toBe(400);
    const hint = (
      await cli.waitForOutput(/hint: Django refused dj\.relay\.test \(GET \/ 400, tunnel dj\).*\n.*\n.*\n/)
    )[0];
    expect(hint).toContain('ALLOWED_HOSTS');
    expect(hint).toContain('--host-header rewrite');
    expect(hint).toContain(`Host: localhost:${port}`);
    expect(hint).toContain("ALLOWED_HOSTS = ['.relay.test', 'localhost', '127.0.0.1']");
    expect(cli.stdout()).toMatch(/GET\s+\/\s+400/);
  });

  test('host_header: rewrite in the config file: the page renders, Django sees the target as its host', async () => {
    const dir = project({
      'ggrok.yml': `version: 1\ntunnels:\n  site:\n    addr: ${port}\n    subdomain: dj2\n    host_header: rewrite\n`,
    });
    const cli = runCli(cleanup, ['start', 'site', '--server', relay.url, '--token', TOKEN], {
      GGROK_CONFIG: path.join(dir, 'ggrok.yml'),
    });
    await cli.waitForOutput(/Forwarding/);
    const res = await rawRequest({ port: relay.port, headers: { Host: `dj2.${DOMAIN}:${relay.port}` } });
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(`<h1>hello from django</h1><p>localhost:${port}</p>`);
    const { page } = await open(`http://dj2.${DOMAIN}:${relay.port}/`);
    expect(await page.textContent('h1')).toBe('hello from django');
    await cli.waitForOutput(/GET\s+\/\s+200/);
    expect(cli.stdout() + cli.stderr()).not.toContain('hint:');
  });
});

describe('start-up check', () => {
  test('nothing listening at start: a warning, then the tunnel serves as soon as a server starts', async () => {
    const port = await freePort();
    const cli = runCli(cleanup, [
      'http',
      String(port),
      '--server',
      relay.url,
      '--token',
      TOKEN,
      '--subdomain',
      'late',
    ]);
    await cli.waitForOutput(new RegExp(`warning: nothing is listening on http://localhost:${port} yet`));
    const host = `late.${DOMAIN}:${relay.port}`;
    expect((await rawRequest({ port: relay.port, headers: { Host: host } })).status).toBe(502);
    const server = http.createServer((_req, res) => reply(res, 200, 'started late'));
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    cleanup.add(() => new Promise((r) => server.close(r)));
    const res = await rawRequest({ port: relay.port, headers: { Host: host } });
    expect([res.status, res.body.toString()]).toEqual([200, 'started late']);
    expect(cli.child.exitCode).toBeNull();
  });

  test('an https target with a self-signed certificate: the warning names --insecure', async () => {
    const { cert, key } = certificate();
    const server = https.createServer({ cert, key }, (_req, res) => reply(res, 200, 'tls'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanup.add(() => new Promise((r) => server.close(r)));
    const target = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const cli = runCli(cleanup, [
      'http',
      target,
      '--server',
      relay.url,
      '--token',
      TOKEN,
      '--log-format',
      'json',
    ]);
    const line = (await cli.waitForOutput(/^.*"event":"warning".*$/m))[0];
    expect(JSON.parse(line)).toMatchObject({ code: 'target_untrusted_certificate' });
    expect(line).toContain('--insecure (-k)');
  });
});

describe('no false positives', () => {
  test("an app's own 400s and 403s, however they talk about hosts, give no hint", async () => {
    const bodies: [number, string, string][] = [
      [403, 'text/plain', 'Forbidden'],
      [400, 'text/plain', 'Bad Request'],
      [403, 'text/html', '<h1>This host is not allowed to use the admin area.</h1>'],
      [400, 'text/plain', 'Invalid Host header value: expected a DNS name'],
      [403, 'application/json', '{"error":"blocked request","reason":"host not allowed"}'],
      [400, 'text/html', '<!doctype html><title>Bad Request (400)</title><h1>Bad Request (400)</h1>'],
      [403, 'text/plain', 'Blocked hosts: evil.example'],
      [403, 'text/plain', ''],
    ];
    const server = http.createServer((req, res) => {
      const [status, type, body] = bodies[Number(req.url!.slice(1))]!;
      reply(res, status, body, { 'Content-Type': type });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanup.add(() => new Promise((r) => server.close(r)));
    const t = await tunnel(String((server.address() as AddressInfo).port), 'plain');
    for (let i = 0; i < bodies.length; i++) {
      const res = await rawRequest({ port: relay.port, path: `/${i}`, headers: { Host: t.host } });
      expect(res.status).toBe(bodies[i]![0]);
    }
    await waitFor(() => t.requests() === bodies.length, 'every request reported');
    await new Promise((r) => setImmediate(r)); // a hint comes right after its request's report
    expect(t.hints).toEqual([]);
  });
});

test('ggrok http --help says when to use --host-header rewrite and what it changes', async () => {
  const help = runCli(cleanup, ['http', '--help']);
  expect(await help.exited).toBe(0);
  const text = help.stdout().replace(/\s+/g, ' ');
  for (const words of [
    '--host-header rewrite (config file: host_header: rewrite) sends Host: <target host:port>',
    'redirects and absolute URLs the app builds from Host name the target',
    'X-Forwarded-Host still carries the public host',
    'Rails checks X-Forwarded-Host too',
  ])
    expect(text).toContain(words);
});

// Keeps this file honest about where Django comes from on a clean machine.
test('scripts/install-test-deps.sh installs python3-django', () => {
  const script = readFileSync(path.join(ROOT, 'scripts', 'install-test-deps.sh'), 'utf8');
  expect(script).toContain('python3-django');
  expect(existsSync(path.join(ROOT, 'node_modules', 'vite6', 'bin', 'vite.js'))).toBe(true);
});
