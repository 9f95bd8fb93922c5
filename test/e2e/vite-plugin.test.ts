// The Vite plugin with a real Vite 6 dev server, a real TLS relay and Chromium: the page loads through the tunnel
// with Vite's host check on, an edited module hot-updates over wss without a reload, the URL is printed beside
// Local/Network, closing the server closes the tunnel, and `vite build` opens nothing.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest';
import type { Plugin as LatestVitePlugin } from 'vite';
import type { Logger, Plugin } from 'vite6';
import { ggrok } from '../../cli/vite.js';
import type { RelayEvent } from '../../relay/index.js';
import { launchChromium } from '../browser.js';
import { tempProject, testCertificate, VITE_HMR_APP } from '../dev-server-fixtures.js';
import { Cleanup, rawRequest, ROOT, sleep, startRelay, TOKEN, waitFor, type TestRelay } from '../helpers.js';

const DOMAIN = 'relay.test';
const START_MS = 45_000;

const suite = new Cleanup();
const cleanup = new Cleanup();
afterEach(() => cleanup.run());
afterAll(() => suite.run());

let relay: TestRelay;
let browser: Browser;
let vite: typeof import('vite6');

beforeAll(async () => {
  relay = await startRelay(suite, { domain: DOMAIN, tls: testCertificate(suite, DOMAIN) });
  // *.relay.test is 127.0.0.1 (the port stays): https://<name>.relay.test:<relay port>/ is the TLS relay.
  browser = await launchChromium(suite, [`--host-resolver-rules=MAP *.${DOMAIN} 127.0.0.1`]);
  vite = await import('vite6');
}, START_MS);

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** Vite's logger, keeping what it is given (printUrls writes through it). */
function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  // Vite colours its lines when the terminal (or FORCE_COLOR, as in CI) allows it; the test reads the text.
  const keep = (msg: string): void => void lines.push(stripVTControlCharacters(msg));
  const logger: Logger = {
    info: keep,
    warn: keep,
    warnOnce: keep,
    error: keep,
    clearScreen: () => {},
    hasErrorLogged: () => false,
    hasWarned: false,
  };
  return { logger, lines };
}

/** GET / at a tunnel URL of the TLS relay (its certificate is a throwaway one). */
function statusThroughRelay(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: '127.0.0.1',
        port: relay.port,
        path: '/',
        servername: new URL(url).hostname,
        rejectUnauthorized: false,
        headers: { Host: new URL(url).host },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
  });
}

/** The plugin's options for this relay. */
const pluginOptions = (subdomain: string) => ({
  server: `https://127.0.0.1:${relay.port}`,
  token: TOKEN,
  subdomain,
  insecure: true, // the relay's certificate is a throwaway one
});

test('through the tunnel the page loads with the host check on, an edit hot-updates, and close() takes the tunnel down', async () => {
  const dir = tempProject(cleanup, VITE_HMR_APP);
  const plugin = ggrok(pluginOptions('vplug'));
  // The plugin type-checks as Vite's own Plugin type.
  const asVitePlugin: Plugin = plugin;
  const { logger, lines } = capturingLogger();
  const port = await freePort();
  const server = await vite.createServer({
    root: dir,
    configFile: false,
    customLogger: logger,
    plugins: [asVitePlugin],
    server: { host: '127.0.0.1', port, strictPort: true },
  });
  cleanup.add(() => server.close());
  expect(server.config.server.allowedHosts).toEqual([]); // Vite's default host check: only localhost and IPs
  await server.listen();
  server.printUrls();
  await waitFor(() => plugin.api.tunnel !== undefined, 'the tunnel', 15_000);
  const tunnel = plugin.api.tunnel!;
  expect(tunnel.url).toBe(`https://vplug.${DOMAIN}:${relay.port}`);
  // Printed with Vite's own lines, after them.
  await waitFor(() => lines.some((l) => l.includes('Tunnel:')), 'the tunnel line');
  const local = lines.findIndex((l) => l.includes('Local:'));
  const printed = lines.findIndex((l) => l.includes('Tunnel:'));
  expect(local).toBeGreaterThanOrEqual(0);
  expect(printed).toBeGreaterThan(local);
  expect(lines[printed]).toContain(`${tunnel.url}/`);
  // The host check is on: a host nobody allowed is still refused; the tunnel's host was added.
  const stranger = await rawRequest({ port, headers: { Host: 'stranger.example' } });
  expect(stranger.status).toBe(403);

  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  cleanup.add(() => context.close());
  const page = await context.newPage();
  let loads = 0;
  const consoleLines: string[] = [];
  page.on('load', () => loads++);
  page.on('console', (m) => consoleLines.push(m.text()));
  const res = await page.goto(`${tunnel.url}/`);
  expect(res?.status()).toBe(200);
  await page.waitForFunction("document.getElementById('app')?.textContent === 'one'");
  await waitFor(
    () => consoleLines.includes('[vite] connected.'),
    'the HMR socket through the tunnel',
    15_000,
  );
  await page.evaluate('window.marker = 42');
  writeFileSync(path.join(dir, 'msg.js'), "export const text = 'two';\n");
  await page.waitForFunction("document.getElementById('app')?.textContent === 'two'", undefined, {
    timeout: 20_000,
  });
  expect(await page.evaluate('window.marker')).toBe(42);
  expect(loads).toBe(1);
  expect(relay.relay.counts().tunnels).toBe(1);
  expect(server.config.server.allowedHosts).toEqual([`vplug.${DOMAIN}`]);

  const closed: string[] = [];
  tunnel.on('closed', () => closed.push('closed'));
  await server.close();
  expect(closed).toEqual(['closed']); // server.close() resolved after the tunnel's close
  expect(plugin.api.tunnel).toBeUndefined();
  await waitFor(() => relay.relay.counts().tunnels === 0, 'the relay to drop the tunnel');
}, 90_000);

test('a tunnel that cannot open is reported through Vite, which keeps serving', async () => {
  const dir = tempProject(cleanup, VITE_HMR_APP);
  const plugin = ggrok({ ...pluginOptions('refused'), token: 'wrong' });
  const { logger, lines } = capturingLogger();
  const port = await freePort();
  const server = await vite.createServer({
    root: dir,
    configFile: false,
    customLogger: logger,
    plugins: [plugin],
    server: { host: '127.0.0.1', port, strictPort: true },
  });
  cleanup.add(() => server.close());
  await server.listen();
  await waitFor(() => lines.some((l) => l.startsWith('ggrok: no tunnel:')), 'the error line', 15_000);
  expect(lines.find((l) => l.startsWith('ggrok: no tunnel:'))).toMatch(/\(bad_token\)$/);
  expect((await rawRequest({ port, headers: { Host: `localhost:${port}` } })).status).toBe(200);
  await server.close();
});

test('`vite build` opens nothing, nor does `vite preview`', async () => {
  const dir = tempProject(cleanup, VITE_HMR_APP);
  const plugin = ggrok(pluginOptions('built'));
  const before = relay.relay.counts().controlSockets;
  await vite.build({
    root: dir,
    configFile: false,
    logLevel: 'silent',
    plugins: [plugin],
    build: { outDir: path.join(dir, 'dist') },
  });
  expect(existsSync(path.join(dir, 'dist', 'index.html'))).toBe(true);
  expect(plugin.api.tunnel).toBeUndefined();
  expect(relay.relay.counts()).toMatchObject({ tunnels: 0, controlSockets: before });
  // `vite preview` serves the build with the same plugins; the plugin hooks only the dev server.
  const port = await freePort();
  const preview = await vite.preview({
    root: dir,
    configFile: false,
    logLevel: 'silent',
    plugins: [plugin],
    build: { outDir: path.join(dir, 'dist') },
    preview: { host: '127.0.0.1', port, strictPort: true },
  });
  cleanup.add(() => preview.close());
  expect((await rawRequest({ port, headers: { Host: `localhost:${port}` } })).status).toBe(200);
  await sleep(500); // a dev server's tunnel is online within ~100 ms of listening
  expect(plugin.api.tunnel).toBeUndefined();
  expect(relay.relay.counts()).toMatchObject({ tunnels: 0, controlSockets: before });
});

test('a restart (what a config change does) closes the tunnel and opens it again under the same name', async () => {
  const dir = tempProject(cleanup, VITE_HMR_APP);
  const plugin = ggrok(pluginOptions('restarts'));
  const { logger } = capturingLogger();
  const port = await freePort();
  const server = await vite.createServer({
    root: dir,
    configFile: false,
    customLogger: logger,
    plugins: [plugin],
    server: { host: '127.0.0.1', port, strictPort: true },
  });
  cleanup.add(() => server.close());
  await server.listen();
  await waitFor(() => plugin.api.tunnel !== undefined, 'the tunnel', 15_000);
  const first = plugin.api.tunnel!;
  const firstClosed = new Promise<void>((resolve) => first.once('closed', resolve));
  await server.restart();
  await firstClosed;
  await waitFor(
    () => plugin.api.tunnel !== undefined && plugin.api.tunnel !== first,
    'the new tunnel',
    15_000,
  );
  expect(plugin.api.tunnel!.url).toBe(first.url);
  expect(await statusThroughRelay(first.url)).toBe(200);
  await server.close();
  await waitFor(() => relay.relay.counts().tunnels === 0, 'the relay to drop the tunnel');
});

test("the plugin is a Plugin to Vite 6's types and the newest Vite's (checked when the tests compile: npm run lint)", () => {
  const plugins: [Plugin, LatestVitePlugin] = [ggrok(), ggrok({ subdomain: 'typed' })];
  expect(plugins.map((p) => [p.name, p.apply])).toEqual([
    ['ggrok', 'serve'],
    ['ggrok', 'serve'],
  ]);
});

test(
  'with the real `vite` command and a vite.config.js: token and relay from the environment, the URL printed under ' +
    'Local, the page served, and SIGTERM closing the tunnel cleanly',
  async () => {
    const dir = tempProject(cleanup, {
      ...VITE_HMR_APP,
      // As in the README, but importing the built plugin by path (this project has no node_modules).
      'vite.config.mjs': [
        `import { ggrok } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'cli', 'vite.js')).href)};`,
        "export default { plugins: [ggrok({ subdomain: 'clivite', insecure: true })] };",
        '',
      ].join('\n'),
    });
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        path.join(ROOT, 'node_modules', 'vite6', 'bin', 'vite.js'),
        ...['--port', String(port), '--strictPort', '--host', '127.0.0.1', '--clearScreen', 'false'],
      ],
      {
        cwd: dir,
        env: {
          ...process.env,
          GGROK_TOKEN: TOKEN,
          GGROK_SERVER: `https://127.0.0.1:${relay.port}`,
          GGROK_CONFIG: undefined,
          NO_COLOR: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const exited = once(child, 'exit');
    cleanup.add(() => void (child.exitCode === null && child.kill('SIGKILL')));
    const url = `https://clivite.${DOMAIN}:${relay.port}`;
    await waitFor(() => output.includes('Tunnel:'), `the tunnel line; output so far:\n${output}`, START_MS);
    const lines = output.split('\n');
    const local = lines.findIndex((l) => /Local:\s+http:\/\/127\.0\.0\.1:\d+\//.test(l));
    const printed = lines.findIndex((l) => l.includes('Tunnel:'));
    expect(local).toBeGreaterThanOrEqual(0);
    expect(printed).toBeGreaterThan(local);
    expect(lines[printed]!.trim()).toBe(`\u279c  Tunnel:  ${url}/`);
    expect(await statusThroughRelay(url)).toBe(200);
    child.kill('SIGTERM');
    await exited;
    const disconnect = (): RelayEvent | undefined =>
      relay.events.find((e) => e.event === 'disconnect' && e.name === 'clivite');
    await waitFor(() => disconnect() !== undefined, 'the relay to log the disconnect');
    // 1000 with the client's reason: the plugin closed the tunnel; a process that just died would give 1006.
    expect(disconnect()).toMatchObject({ code: 1000, reason: 'client closed' });
    expect(relay.relay.counts().tunnels).toBe(0);
  },
  START_MS * 2,
);
