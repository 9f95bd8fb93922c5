// The built `ggrok` binary as users run it: real processes, exit codes, and what they print.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { once } from 'node:events';
import WebSocket from 'ws';
import { decodeFrame, encodeFrame } from '../../protocol/codec.js';
import { DEFAULT_FLOW, FrameType, PROTOCOL_VERSION, type Frame } from '../../protocol/frames.js';
import { VERSION } from '../../protocol/version.js';
import {
  Cleanup,
  rawRequest,
  reply,
  ROOT,
  runCli,
  startLocal,
  waitFor,
  type CliProcess,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Starts `ggrok relay` on a free port and returns it with its port and printed token. */
async function startRelayProcess(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<{ p: CliProcess; port: number; token?: string }> {
  const p = runCli(cleanup, ['relay', '--port', '0', '--host', '127.0.0.1', ...args], env);
  const port = Number((await p.waitForOutput(/listening on [^\s]+:(\d+)/))[1]);
  await p.waitForOutput(/^connect: /m); // the last start-up line: the token line, if any, came before it
  const token = p.stdout().match(/token: (\S+)/)?.[1];
  return { p, port, token };
}

async function expectUsageError(
  args: string[],
  pattern: RegExp,
  env: Record<string, string> = {},
): Promise<void> {
  const p = runCli(cleanup, args, env);
  expect(await p.exited).toBe(2);
  expect(p.stderr()).toMatch(pattern);
  expect(p.stderr()).not.toMatch(/\n\s+at /); // no stack trace
}

describe('usage', () => {
  test('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(VERSION).toBe(pkg.version);
    const p = runCli(cleanup, ['--version']);
    expect(await p.exited).toBe(0);
    expect(p.stdout().trim()).toBe(pkg.version);
  });

  test('--help lists the commands and their flags', async () => {
    const p = runCli(cleanup, ['--help']);
    expect(await p.exited).toBe(0);
    expect(p.stdout()).toMatch(/http \[options\] <target>/);
    expect(p.stdout()).toMatch(/relay \[options\]/);
    const h = runCli(cleanup, ['http', '--help']);
    expect(await h.exited).toBe(0);
    for (const flag of ['--server', '--token', '--subdomain', 'GGROK_SERVER', 'GGROK_TOKEN'])
      expect(h.stdout()).toContain(flag);
    const r = runCli(cleanup, ['relay', '--help']);
    expect(await r.exited).toBe(0);
    for (const flag of ['--port', '--host', '--domain', '--token', 'PORT', 'GGROK_DOMAIN', 'GGROK_TOKEN'])
      expect(r.stdout()).toContain(flag);
  });

  test('usage errors exit 2 with one line and no stack trace', async () => {
    await expectUsageError(['http'], /missing required argument 'target'/);
    await expectUsageError(
      ['http', 'notaport', '--token', 't'],
      /"notaport" is not a port, host:port or URL/,
    );
    await expectUsageError(['http', '70000', '--token', 't'], /port must be 1-65535/);
    await expectUsageError(['http', 'ftp://localhost:21', '--token', 't'], /only http:\/\/ and https:\/\//);
    await expectUsageError(['http', '3000'], /no token/);
    await expectUsageError(['http', '3000', '--token', 't', '--nope'], /unknown option '--nope'/);
    await expectUsageError(['bogus'], /unknown command 'bogus'/);
    // --inbox takes an optional pattern, so before the port it would swallow it: say where the port goes.
    await expectUsageError(
      ['http', '--inbox', '3000', '--token', 't'],
      /"3000" is not a path pattern .* ggrok http 3000 --inbox/,
    );
    await expectUsageError(['relay', '--port', 'abc'], /port/);
    await expectUsageError(['relay', '--stream-window', '64'], /--stream-window must be at least 128 KiB/);
    await expectUsageError(['relay', '--stream-window', '512', '--conn-window', '256'], /--conn-window/);
  });
});

describe('relay and http processes', () => {
  test('a relay without a token generates one; ggrok http with it serves a local port until SIGINT', async () => {
    const relay = await startRelayProcess(['--domain', 'localhost']);
    expect(relay.token).toMatch(/^[\w-]{20,}$/);
    const local = await startLocal(cleanup, (req, res) => reply(res, 200, `hello ${req.url}`));
    const client = runCli(
      cleanup,
      ['http', String(local.port), '--server', `http://127.0.0.1:${relay.port}`, '--subdomain', 'cli'],
      {
        GGROK_TOKEN: relay.token!,
      },
    );
    const url = (await client.waitForOutput(/Forwarding\s+(\S+)/))[1];
    expect(url).toBe(`http://cli.localhost:${relay.port}`);
    const res = await rawRequest({
      port: relay.port,
      path: '/p?q=1',
      headers: { Host: `cli.localhost:${relay.port}` },
    });
    expect(res.body.toString()).toBe('hello /p?q=1');
    await client.waitForOutput(/GET\s+\/p\?q=1\s+200/);
    client.child.kill('SIGINT');
    expect(await client.exited).toBe(0);
    relay.p.child.kill('SIGTERM');
    expect(await relay.p.exited).toBe(0);
    expect(relay.p.stdout()).toMatch(/connect name=cli/);
    expect(relay.p.stdout()).toMatch(/disconnect name=cli/);
  });

  test('GGROK_* and PORT environment variables configure both commands', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const relay = runCli(cleanup, ['relay', '--host', '127.0.0.1'], {
      PORT: String(port),
      GGROK_DOMAIN: 'example.test',
      GGROK_TOKEN: 'a,b',
    });
    await relay.waitForOutput(/listening on 127\.0\.0\.1:(\d+)/);
    expect(relay.stdout()).not.toMatch(/token: /); // configured tokens are never printed
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'env ok'));
    const client = runCli(cleanup, ['http', `127.0.0.1:${local.port}`], {
      GGROK_SERVER: `http://127.0.0.1:${port}`,
      GGROK_TOKEN: 'b',
      GGROK_SUBDOMAIN: 'envy',
    });
    expect((await client.waitForOutput(/Forwarding\s+(\S+)/))[1]).toBe(`http://envy.example.test:${port}`);
    const res = await rawRequest({ port, headers: { Host: 'envy.example.test' } });
    expect(res.body.toString()).toBe('env ok');
  });

  test('--stream-window and --conn-window set the flow-control windows the relay announces', async () => {
    const relay = runCli(cleanup, [
      'relay',
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--token',
      't',
      '--stream-window',
      '4096',
      '--conn-window',
      '32768',
    ]);
    const port = Number((await relay.waitForOutput(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/_ggrok/connect`);
    cleanup.add(() => ws.terminate());
    await once(ws, 'open');
    const hello: Frame = {
      type: FrameType.Hello,
      version: PROTOCOL_VERSION,
      token: 't',
      name: 'win',
      agent: 'test',
      clientId: 'c1',
      flow: DEFAULT_FLOW,
    };
    ws.send(encodeFrame(hello));
    const [data] = (await once(ws, 'message')) as [Buffer];
    expect(decodeFrame(data)).toMatchObject({
      type: FrameType.Welcome,
      flow: { streamWindow: 4 * 1024 * 1024, connWindow: 32 * 1024 * 1024, maxData: DEFAULT_FLOW.maxData },
    });
  });

  test('--tokens-file adds tokens (comments and blank lines ignored); a missing file is a clear error', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-tokens-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tokens');
    writeFileSync(file, '# team tokens\nalpha-token\n\n  beta-token  # laptop\n');
    const relay = await startRelayProcess(['--tokens-file', file, '--domain', 'localhost']);
    expect(relay.token).toBeUndefined(); // configured tokens are never printed
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'from file'));
    const client = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      `http://127.0.0.1:${relay.port}`,
      '--token',
      'beta-token',
      '--subdomain',
      'beta',
    ]);
    await client.waitForOutput(/Forwarding/);
    const res = await rawRequest({ port: relay.port, headers: { Host: `beta.localhost:${relay.port}` } });
    expect(res.body.toString()).toBe('from file');
    const missing = runCli(cleanup, ['relay', '--port', '0', '--tokens-file', path.join(dir, 'nope')]);
    expect(await missing.exited).toBe(2);
    expect(missing.stderr()).toMatch(/cannot read --tokens-file .*ENOENT/);
  });

  test('a rejected token exits 1 with a message saying so', async () => {
    const relay = await startRelayProcess(['--token', 'right']);
    const client = runCli(cleanup, [
      'http',
      '3000',
      '--server',
      `http://127.0.0.1:${relay.port}`,
      '--token',
      'wrong',
    ]);
    expect(await client.exited).toBe(1);
    expect(client.stderr()).toMatch(/rejected the token/);
    expect(client.stderr()).not.toMatch(/\n\s+at /);
  });

  test('own-host mode: a second client exits 1 saying the relay is in use', async () => {
    const relay = await startRelayProcess(['--token', 't']);
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'first'));
    const first = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      `http://127.0.0.1:${relay.port}`,
      '--token',
      't',
    ]);
    expect((await first.waitForOutput(/Forwarding\s+(\S+)/))[1]).toBe(`http://127.0.0.1:${relay.port}`);
    const second = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      `http://127.0.0.1:${relay.port}`,
      '--token',
      't',
    ]);
    expect(await second.exited).toBe(1);
    expect(second.stderr()).toMatch(/already serves a tunnel/);
    const res = await rawRequest({ port: relay.port, headers: { Host: 'anything.example' } });
    expect(res.body.toString()).toBe('first');
  });

  test('an unreachable relay is retried with a clear line instead of exiting', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const client = runCli(cleanup, ['http', '3000', '--server', `http://127.0.0.1:${port}`, '--token', 't']);
    await client.waitForOutput(
      /reconnecting… cannot reach the relay at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); next try in/,
    );
    await client.waitForOutput(/reconnecting…[^\n]*\n[^\n]*reconnecting…/); // a second attempt happened
    expect(client.child.exitCode).toBeNull();
  });

  test('a relay whose port is taken exits 1 naming the port', async () => {
    const relay = await startRelayProcess();
    const second = runCli(cleanup, ['relay', '--port', String(relay.port), '--host', '127.0.0.1']);
    expect(await second.exited).toBe(1);
    expect(second.stderr()).toContain(`port ${relay.port} is already in use`);
  });

  test('config add-token + start --all: tunnels from the config file over one connection', async () => {
    const relay = await startRelayProcess(['--token', 'cfg-token', '--domain', 'localhost']);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-cfg-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'ggrok.yml');
    const web = await startLocal(cleanup, (req, res) => reply(res, 200, `web ${req.url}`));
    const api = await startLocal(cleanup, (req, res) =>
      reply(res, 200, `api ${String(req.headers['x-from'])}`),
    );
    writeFileSync(
      file,
      `server: http://127.0.0.1:${relay.port}\ntunnels:\n  web: ${web.port}\n  backend:\n    addr: ${api.port}\n    subdomain: backend\n    request_header: { add: ["X-From: config"] }\n`,
    );
    const add = runCli(cleanup, ['config', 'add-token', 'cfg-token', '--config', file]);
    expect(await add.exited).toBe(0);
    expect(add.stdout()).toContain(`Token saved to ${file}`);
    const check = runCli(cleanup, ['config', 'check', '--config', file]);
    expect(await check.exited).toBe(0);
    expect(check.stdout()).toMatch(/tunnel web: \d+\ntunnel backend: \d+ as backend/);
    const start = runCli(cleanup, ['start', '--all', '--config', file]);
    await start.waitForOutput(/Forwarding[^\n]*\n[^\n]*Forwarding\s+(\S+)/);
    const urls = [...start.stdout().matchAll(/Forwarding\s+(\S+)/g)].map((m) => m[1]);
    expect(urls[1]).toBe(`http://backend.localhost:${relay.port}`);
    const webHost = new URL(urls[0]!).host;
    expect(
      (await rawRequest({ port: relay.port, path: '/w', headers: { Host: webHost } })).body.toString(),
    ).toBe('web /w');
    expect(
      (
        await rawRequest({ port: relay.port, headers: { Host: `backend.localhost:${relay.port}` } })
      ).body.toString(),
    ).toBe('api config');
    // One control connection carried both: the relay logged two connects from one peer.
    expect(relay.p.stdout().match(/connect name=/g)).toHaveLength(2);
  });

  test('start: unknown names, no tunnels and a broken file are usage errors naming the problem', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-cfg-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'ggrok.yml');
    await expectUsageError(['start', '--all', '--config', file], /no tunnels in/);
    writeFileSync(file, 'token: t\ntunnels:\n  web: 3000\n');
    await expectUsageError(['start', 'nope', '--config', file], /no tunnel "nope" .*\(have: web\)/);
    await expectUsageError(['start', '--config', file], /name the tunnels to start \(web\) or pass --all/);
    writeFileSync(file, 'tunnels:\n  web:\n    port: 3000\n');
    await expectUsageError(['start', '--all', '--config', file], /ggrok\.yml:3: unknown key "port"/);
  });

  test('--inspect serves the inspector: the header names it and requests appear in it', async () => {
    const relay = await startRelayProcess(['--token', 't', '--domain', 'localhost']);
    const local = await startLocal(cleanup, (_req, res) =>
      reply(res, 200, '{"hello":"inspector"}', { 'Content-Type': 'application/json' }),
    );
    const port = await freePort();
    const client = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      `http://127.0.0.1:${relay.port}`,
      '--token',
      't',
      '--subdomain',
      'insp',
      '--inspect',
      `127.0.0.1:${port}`,
    ]);
    expect((await client.waitForOutput(/Inspector\s+(\S+)/))[1]).toBe(`http://127.0.0.1:${port}`);
    await rawRequest({
      port: relay.port,
      path: '/seen?x=1',
      headers: { Host: `insp.localhost:${relay.port}` },
    });
    let list: { target: string; status?: number }[] = [];
    await waitFor(async () => {
      const res = await rawRequest({ port, path: '/api/exchanges', headers: { Host: `127.0.0.1:${port}` } });
      list = (JSON.parse(res.body.toString()) as { exchanges: typeof list }).exchanges;
      return list.some((x) => x.target === '/seen?x=1' && x.status === 200);
    }, 'the request to show in the inspector');
    // A port the user chose that is taken is an error, not a silent move.
    const second = runCli(cleanup, ['http', '3000', '--token', 't', '--inspect', `127.0.0.1:${port}`]);
    expect(await second.exited).toBe(2);
    expect(second.stderr()).toMatch(/--inspect 127\.0\.0\.1:\d+/);
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}
