// Caddy's on-demand TLS question, end to end (the ask URL in deploy/Caddyfile, asked of a real relay), and the compose file's two relays behind Caddy.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
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
import { relayReads } from './relay-env.js';

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

interface CaddyBlock {
  /** `` for the global options, `(name)` for a snippet, else the site addresses. */
  head: string;
  /** The lines inside, nested blocks included. */
  lines: string[];
}

/** Splits the Caddyfile into its top-level blocks; throws on anything outside a block or an unclosed brace. */
function caddyBlocks(): CaddyBlock[] {
  const blocks: CaddyBlock[] = [];
  let depth = 0;
  for (const line of caddyLines) {
    if (depth === 0) {
      if (!line.endsWith('{')) throw new Error(`Caddyfile line outside a block: ${line}`);
      blocks.push({ head: line.slice(0, -1).trim(), lines: [] });
      depth = 1;
      continue;
    }
    if (line === '}' && --depth === 0) continue;
    blocks.at(-1)!.lines.push(line);
    if (line.endsWith('{')) depth++;
  }
  if (depth !== 0) throw new Error('Caddyfile: unclosed block');
  return blocks;
}

/** A block's lines with each `import <snippet>` replaced by the snippet's lines. */
function expand(block: CaddyBlock, blocks: CaddyBlock[]): string[] {
  return block.lines.flatMap((line) => {
    const m = /^import\s+(\S+)$/.exec(line);
    if (!m) return [line];
    const snippet = blocks.find((b) => b.head === `(${m[1]})`);
    if (!snippet) throw new Error(`Caddyfile imports an unknown snippet: ${line}`);
    return expand(snippet, blocks);
  });
}

/** The upstreams of every `reverse_proxy` line in `lines`. */
const upstreamsOf = (lines: string[]): string[][] =>
  lines
    .filter((l) => /^reverse_proxy\s/.test(l))
    .map((l) =>
      l
        .replace(/\s*\{$/, '')
        .split(/\s+/)
        .slice(1),
    );

interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition?: string }>;
  command?: string[];
  healthcheck?: { test?: string[] };
  ports?: string[];
  expose?: string[];
  volumes?: string[];
  stop_grace_period?: string;
}
const services = (parseYaml(compose, { merge: true }) as { services: Record<string, ComposeService> })
  .services;
/** The services that run the relay image, by name. */
const relays = Object.entries(services).filter(([, svc]) => svc.build?.dockerfile === 'deploy/Dockerfile');
const relayPort = (): string => {
  const ports = new Set(relays.map(([, svc]) => svc.environment?.PORT));
  expect(ports.size).toBe(1);
  const [port] = ports;
  expect(port).toMatch(/^\d+$/);
  return port!;
};
/** `<service>:<PORT>` of every relay: what Caddy must balance over. */
const relayAddresses = (): string[] => relays.map(([name]) => `${name}:${relayPort()}`).sort();

describe('deploy/docker-compose.yml', () => {
  test('two relays share one Redis, each with its own instance id and a peer URL naming itself', () => {
    expect(relays.map(([name]) => name)).toEqual(['relay-1', 'relay-2']);
    const port = relayPort();
    const redisUrls = new Set(relays.map(([, svc]) => svc.environment?.GGROK_REDIS_URL));
    expect(redisUrls.size).toBe(1);
    const redisUrl = new URL([...redisUrls][0]!);
    expect(redisUrl.protocol).toBe('redis:');
    const redis = services[redisUrl.hostname];
    expect(redis?.image).toMatch(/^redis:\d/);
    expect(redisUrl.port || '6379').toBe('6379');
    expect(new Set(relays.map(([, svc]) => svc.environment?.GGROK_INSTANCE_ID)).size).toBe(relays.length);
    for (const [name, svc] of relays) {
      expect(svc.environment?.GGROK_PEER_URL).toBe(`http://${name}:${port}`);
      expect(svc.depends_on?.[redisUrl.hostname]?.condition).toBe('service_healthy');
      expect(svc.stop_grace_period).toBe('30s'); // the relay drains for 25 s
      expect(svc.ports).toBeUndefined(); // only Caddy is published
    }
    // Redis: healthy means it answers PING; held names persist; nothing is evicted.
    expect(redis!.healthcheck?.test).toContain('ping');
    const command = redis!.command ?? [];
    expect(command[command.indexOf('--appendonly') + 1]).toBe('yes');
    if (command.includes('--maxmemory-policy'))
      expect(command[command.indexOf('--maxmemory-policy') + 1]).toBe('noeviction');
    expect(redis!.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
  });

  test('the relays trust Caddy, require domain and token, and set only variables the relay reads', () => {
    const reads = relayReads();
    for (const [name, svc] of relays) {
      const env = svc.environment ?? {};
      expect([name, env.GGROK_TRUST_PROXY]).toEqual([name, '1']);
      expect(env.GGROK_TOKEN).toMatch(/^\$\{GGROK_TOKEN:\?/);
      expect(env.GGROK_DOMAIN).toMatch(/^\$\{GGROK_DOMAIN:\?/);
      for (const key of Object.keys(env)) expect([name, key, reads(key)]).toEqual([name, key, true]);
    }
    const caddy = services.caddy!;
    expect(caddy.environment?.GGROK_DOMAIN).toMatch(/^\$\{GGROK_DOMAIN:\?/);
    expect(caddy.volumes).toContain('./Caddyfile:/etc/caddy/Caddyfile:ro');
    for (const [name] of relays)
      expect([name, caddy.depends_on?.[name]?.condition]).toEqual([name, 'service_healthy']);
  });
});

describe('deploy/Caddyfile', () => {
  test('every site is on-demand TLS over all the relays, picked at random, without buffering', () => {
    const blocks = caddyBlocks();
    const site = blocks.find((b) => b.head.includes('{$GGROK_DOMAIN}'));
    expect(site?.head).toBe('{$GGROK_DOMAIN}, *.{$GGROK_DOMAIN}');
    const lines = expand(site!, blocks);
    expect(lines).toContain('on_demand');
    expect(upstreamsOf(lines).map((u) => [...u].sort())).toEqual([relayAddresses()]);
    expect(lines).toContain('flush_interval -1');
    expect(lines).toContain('lb_policy random');
    // A relay that is restarting refuses connections; Caddy tries the other one instead of failing the request.
    expect(lines.some((l) => /^lb_try_duration\s+\d+s$/.test(l))).toBe(true);
    expect(lines).toContain('health_uri /_ggrok/health');
    // Whatever proxies anywhere in the file goes to exactly the relays.
    for (const upstreams of upstreamsOf(blocks.flatMap((b) => b.lines)))
      expect([...upstreams].sort()).toEqual(relayAddresses());
  });

  test('Caddy asks through an internal site that reaches every relay and is published nowhere', () => {
    const ask = askUrl();
    expect(ask.pathname).toBe('/_ggrok/ask');
    expect(ask.search).toBe(''); // Caddy appends ?domain= itself
    expect(ask.protocol).toBe('http:');
    expect(ask.hostname).toBe('127.0.0.1');
    const blocks = caddyBlocks();
    expect(blocks[0]!.head).toBe(''); // the global options, where on_demand_tls lives
    const internal = blocks.find((b) => b.head === `http://${ask.host}`);
    expect(internal).toBeDefined();
    const lines = expand(internal!, blocks);
    expect(lines).toContain('bind 127.0.0.1');
    expect(upstreamsOf(lines).map((u) => [...u].sort())).toEqual([relayAddresses()]);
    expect(services.caddy!.ports?.some((p) => p.split(':').includes(ask.port))).toBe(false);
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
