// Caddy's on-demand TLS question, end to end: the ask URL in deploy/Caddyfile, asked of a real relay.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import {
  Cleanup,
  rawRequest,
  reply,
  ROOT,
  startClient,
  startLocal,
  startRelay,
  waitFor,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const caddyfile = readFileSync(path.join(ROOT, 'deploy', 'Caddyfile'), 'utf8');
const compose = readFileSync(path.join(ROOT, 'deploy', 'docker-compose.yml'), 'utf8');
/** Caddyfile lines without comments. */
const caddyLines = caddyfile
  .split('\n')
  .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
  .filter(Boolean);

/** The URL Caddy calls before issuing a certificate, as written in deploy/Caddyfile. */
function askUrl(): URL {
  const asks = caddyLines.filter((l) => /^ask\s/.test(l));
  expect(asks).toHaveLength(1);
  return new URL(asks[0]!.split(/\s+/)[1]!);
}

describe('deploy/Caddyfile and docker-compose.yml', () => {
  test('Caddy asks the relay service at the relay path and port compose gives it', () => {
    const ask = askUrl();
    expect(ask.pathname).toBe('/_ggrok/ask');
    expect(ask.search).toBe(''); // Caddy appends ?domain= itself
    // The compose service is called relay and listens on the PORT compose sets.
    expect(compose).toMatch(/^ {2}relay:\s*$/m);
    const port = /^\s+PORT:\s*['"]?(\d+)['"]?\s*$/m.exec(compose)?.[1];
    expect(ask.host).toBe(`relay:${port}`);
  });

  test('every site is on-demand TLS and proxies to the same relay without buffering', () => {
    const ask = askUrl();
    expect(caddyLines).toContain('on_demand');
    const site = caddyLines.find((l) => l.endsWith('{') && l.includes('{$GGROK_DOMAIN}'));
    expect(site).toBeDefined();
    expect(site).toContain('*.{$GGROK_DOMAIN}');
    const proxies = caddyLines.filter((l) => l.startsWith('reverse_proxy '));
    expect(proxies.length).toBeGreaterThan(0);
    for (const p of proxies) expect(p.split(/\s+/)[1]).toBe(ask.host);
    expect(caddyLines).toContain('flush_interval -1');
  });

  test('compose trusts Caddy, requires domain and token, and gives Caddy the domain', () => {
    expect(compose).toMatch(/^\s+GGROK_TRUST_PROXY:\s*['"]?1['"]?\s*$/m);
    expect(compose).toMatch(/^\s+GGROK_TOKEN:\s*\$\{GGROK_TOKEN:\?/m);
    expect(compose.match(/^\s+GGROK_DOMAIN:\s*\$\{GGROK_DOMAIN:\?/gm)).toHaveLength(2);
    expect(compose).toContain('./Caddyfile:/etc/caddy/Caddyfile');
    expect(compose).toMatch(/dockerfile:\s*deploy\/Dockerfile/);
  });
});

describe('GET /_ggrok/ask', () => {
  /** Asks exactly as Caddy does: GET <ask URL>?domain=<name>, with the ask URL's Host. */
  async function ask(port: number, domain: string | undefined): Promise<number> {
    const url = askUrl();
    const query = domain === undefined ? '' : `?domain=${encodeURIComponent(domain)}`;
    const res = await rawRequest({ port, path: `${url.pathname}${query}`, headers: { Host: url.host } });
    return res.status;
  }

  test('allows the relay domain and live or held tunnel names, nothing else', async () => {
    const relay = await startRelay(cleanup, { domain: 'example.test' });
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));

    expect(await ask(relay.port, 'example.test')).toBe(200);
    expect(await ask(relay.port, 'EXAMPLE.TEST.')).toBe(200);
    expect(await ask(relay.port, 'myapp.example.test')).toBe(404); // not connected yet

    const client = await startClient(cleanup, relay.url, local.port, { subdomain: 'myapp' });
    expect(client.name).toBe('myapp');
    expect(await ask(relay.port, 'myapp.example.test')).toBe(200);
    expect(await ask(relay.port, 'MyApp.Example.Test')).toBe(200);

    for (const refused of [
      'unknown.example.test',
      'a.b.example.test',
      'a.myapp.example.test',
      'evil.com',
      'myapp.example.test.evil.com',
      'notexample.test',
      'myappexample.test',
      '.example.test',
      '',
    ])
      expect([refused, await ask(relay.port, refused)]).toEqual([refused, 404]);
    expect(await ask(relay.port, undefined)).toBe(404);

    // After the client drops, its name is held for it to come back: the certificate must stay obtainable.
    await client.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to disconnect');
    expect(await ask(relay.port, 'myapp.example.test')).toBe(200);
    expect(await ask(relay.port, 'other.example.test')).toBe(404);
  });

  test('an own-host relay (no domain) allows no certificate at all', async () => {
    const relay = await startRelay(cleanup, { domain: undefined });
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));
    await startClient(cleanup, relay.url, local.port);
    expect(relay.relay.mode).toBe('own-host');
    expect(await ask(relay.port, 'myapp.herokuapp.com')).toBe(404);
    expect(await ask(relay.port, '127.0.0.1')).toBe(404);
  });
});
