// fly.toml: always-on machines serving the relay's port, rolled one batch at a time, stopped with SIGTERM and 30 s, health-checked.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { createRelay } from '../../relay/index.js';
import { Cleanup, rawRequest, ROOT, startRelay, TOKEN } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

type TomlValue = string | number | boolean | string[] | TomlTable | TomlTable[];
interface TomlTable {
  [key: string]: TomlValue;
}

/**
 * Parses the subset of TOML that fly.toml uses: [tables], [[arrays of tables]], and `key = value` with strings,
 * integers, booleans and one-line string arrays. Anything else throws, so a malformed line cannot pass unnoticed.
 */
function parseFlyToml(text: string): TomlTable {
  const root: TomlTable = {};
  let current = root;
  const descend = (keys: string[], line: number): TomlTable => {
    let t = root;
    for (const k of keys) {
      const next = t[k] ?? (t[k] = {});
      if (Array.isArray(next)) {
        const last = next.at(-1);
        if (typeof last !== 'object') throw new Error(`line ${line}: ${k} is not a table`);
        t = last;
      } else if (typeof next === 'object') t = next;
      else throw new Error(`line ${line}: ${k} is not a table`);
    }
    return t;
  };
  const parseValue = (raw: string, line: number): TomlValue => {
    if (/^"[^"\\]*"$/.test(raw) || /^'[^']*'$/.test(raw)) return raw.slice(1, -1);
    if (/^[+-]?\d+$/.test(raw)) return Number(raw);
    if (raw === 'true' || raw === 'false') return raw === 'true';
    const arr = /^\[(.*)\]$/.exec(raw);
    if (arr) {
      const items = arr[1]!
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      return items.map((item) => {
        const v = parseValue(item, line);
        if (typeof v !== 'string') throw new Error(`line ${line}: only string arrays are supported`);
        return v;
      });
    }
    throw new Error(`line ${line}: cannot parse value ${raw}`);
  };
  text.split('\n').forEach((rawLine, i) => {
    const line = i + 1;
    // Strip comments outside strings (fly.toml values here hold no '#').
    const l = rawLine.replace(/#.*$/, '').trim();
    if (!l) return;
    let m: RegExpExecArray | null;
    if ((m = /^\[\[([\w.-]+)\]\]$/.exec(l))) {
      const keys = m[1]!.split('.');
      const parent = descend(keys.slice(0, -1), line);
      const name = keys.at(-1)!;
      const list = parent[name] ?? (parent[name] = []);
      if (!Array.isArray(list) || list.some((x) => typeof x !== 'object'))
        throw new Error(`line ${line}: ${name} is not an array of tables`);
      const table: TomlTable = {};
      (list as TomlTable[]).push(table);
      current = table;
    } else if ((m = /^\[([\w.-]+)\]$/.exec(l))) {
      current = descend(m[1]!.split('.'), line);
    } else if ((m = /^([\w-]+)\s*=\s*(.+)$/.exec(l))) {
      const key = m[1]!;
      if (key in current) throw new Error(`line ${line}: duplicate key ${key}`);
      current[key] = parseValue(m[2]!.trim(), line);
    } else throw new Error(`line ${line}: cannot parse ${JSON.stringify(rawLine)}`);
  });
  return root;
}

const table = (v: TomlValue | undefined): TomlTable => {
  if (typeof v !== 'object' || Array.isArray(v))
    throw new Error(`expected a table, got ${JSON.stringify(v)}`);
  return v;
};

const num = (v: TomlValue | undefined): number => {
  if (typeof v !== 'number') throw new Error(`expected a number, got ${JSON.stringify(v)}`);
  return v;
};
const str = (v: TomlValue | undefined): string => {
  if (typeof v !== 'string') throw new Error(`expected a string, got ${JSON.stringify(v)}`);
  return v;
};

const fly = parseFlyToml(readFileSync(path.join(ROOT, 'fly.toml'), 'utf8'));
const service = table(fly.http_service);
const internalPort = num(service.internal_port);

describe('fly.toml', () => {
  test('the parser refuses what it does not understand', () => {
    expect(() => parseFlyToml('a = 1\na = 2')).toThrow(/duplicate/);
    expect(() => parseFlyToml('kill_timeout = 30s')).toThrow(/cannot parse value/);
    expect(() => parseFlyToml('[http_service\nx = 1')).toThrow(/cannot parse/);
    expect(parseFlyToml('[a]\n[[a.b]]\nc = "d" # note\n[[a.b]]\nc = \'e\'')).toEqual({
      a: { b: [{ c: 'd' }, { c: 'e' }] },
    });
  });

  test('names an app and builds deploy/Dockerfile', () => {
    expect(typeof fly.app).toBe('string');
    expect(table(fly.build).dockerfile).toBe('deploy/Dockerfile');
    const dockerfile = readFileSync(path.join(ROOT, 'deploy', 'Dockerfile'), 'utf8');
    // The image listens where Fly's proxy sends traffic.
    expect(dockerfile).toMatch(new RegExp(`^EXPOSE ${internalPort}\\s*$`, 'm'));
  });

  test('the service targets the port the relay listens on', () => {
    const env = table(fly.env);
    expect(internalPort).toBeGreaterThan(0);
    expect(env.PORT).toBe(String(internalPort));
    expect(service.force_https).toBe(true);
  });

  test('machines stay up: a relay holds its clients sockets', () => {
    expect(['off', false]).toContain(service.auto_stop_machines);
    expect(service.auto_start_machines).toBe(true);
    expect(service.min_machines_running).toBeGreaterThanOrEqual(1);
    const concurrency = table(service.concurrency);
    expect(concurrency.type).toBe('connections');
    expect(concurrency.soft_limit).toBeGreaterThanOrEqual(1000);
    expect(concurrency.hard_limit).toBeGreaterThanOrEqual(concurrency.soft_limit as number);
  });

  test('stops with SIGTERM and 30 s, more than the relay needs to drain', () => {
    expect(fly.kill_signal).toBe('SIGTERM');
    expect(fly.kill_timeout).toBe(30);
  });

  test('deploys roll machines a few at a time, and Redis comes from a secret, not the file', () => {
    expect(table(fly.deploy).strategy).toBe('rolling');
    const env = table(fly.env);
    // A Redis URL carries its password: `fly secrets set REDIS_URL=…`, never [env].
    for (const name of ['REDIS_URL', 'GGROK_REDIS_URL']) expect([name, env[name]]).toEqual([name, undefined]);
    const readme = readFileSync(path.join(ROOT, 'deploy', 'README.md'), 'utf8');
    expect(readme).toContain('fly redis create');
    expect(readme).toMatch(/fly secrets set REDIS_URL=/);
  });

  test("nothing pins the relay to one address: peers reach it over Fly's private network, which is IPv6", async () => {
    // The default peer URL (http://<machine>.vm.<app>.internal:<PORT>) must reach the relay: no fixed host or peer URL.
    const env = table(fly.env);
    for (const name of ['GGROK_HOST', 'GGROK_PEER_URL', 'GGROK_INSTANCE_ID'])
      expect([name, env[name]]).toEqual([name, undefined]);
    const dockerfile = readFileSync(path.join(ROOT, 'deploy', 'Dockerfile'), 'utf8');
    expect(dockerfile).not.toMatch(/GGROK_HOST|GGROK_PEER_URL/);
    // And a relay without a host answers on IPv6 as well as IPv4, as the image runs it.
    const relay = createRelay({ tokens: [TOKEN], domain: 'example.test', log: () => {} });
    const port = await relay.listen(0);
    cleanup.add(() => relay.close(0));
    for (const host of ['::1', '127.0.0.1']) {
      const req = http.get({ host, port, path: '/_ggrok/health', headers: { Host: 'relay.internal' } });
      const [res] = (await once(req, 'response')) as [http.IncomingMessage];
      res.resume();
      expect([host, res.statusCode]).toEqual([host, 200]);
    }
  });

  test('health-checks /_ggrok/health, and the relay answers it in both modes', async () => {
    const checks = service.checks;
    expect(Array.isArray(checks)).toBe(true);
    const health = (checks as TomlTable[]).find((c) => c.path === '/_ggrok/health');
    expect(health).toBeDefined();
    expect(str(health!.method).toUpperCase()).toBe('GET');
    for (const domain of [undefined, 'example.test']) {
      const relay = await startRelay(cleanup, { domain });
      // Fly's checker addresses the machine directly, not through a tunnel name.
      const res = await rawRequest({
        port: relay.port,
        path: str(health!.path),
        headers: { Host: `172.19.0.2:${internalPort}` },
      });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body.toString())).toMatchObject({
        ok: true,
        mode: domain ? 'domain' : 'own-host',
      });
    }
  });
});
