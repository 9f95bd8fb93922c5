// connect() and `ggrok http` are one thing: the same cases run through both, the API's options written as the flags'
// names in camelCase, and visitors, the local service and the request events see the same behaviour.
import { afterEach, describe, expect, test } from 'vitest';
import { connect, GgrokError, type ConnectOptions } from '../../cli/index.js';
import {
  Cleanup,
  rawRequest,
  reply,
  runCli,
  startLocal,
  startRelay,
  TOKEN,
  type LocalServer,
  type RawRequestOptions,
  type RawResponse,
  type TestRelay,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** The API's options as `ggrok http` flags, by the rule the issue states: the flag is the option in kebab-case. */
function asFlags(options: ConnectOptions): string[] {
  const argv: string[] = [];
  for (const [name, value] of Object.entries(options)) {
    const flag = `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (value === true) argv.push(flag);
    else if (typeof value === 'string') argv.push(flag, value);
    else if (Array.isArray(value)) for (const v of value as string[]) argv.push(flag, v);
    else throw new Error(`no flag form for ${name}=${String(value)}`);
  }
  return argv;
}

/** A request event, as both report it. */
interface Seen {
  method: string;
  target: string;
  status: number;
}

/** One way to open a tunnel: the CLI in a child process or connect() in this one. */
interface Way {
  open(
    relay: TestRelay,
    local: LocalServer,
    options: ConnectOptions,
  ): Promise<{ host: string; seen: Seen[] }>;
  /** How the way reports a bad option: the message, with the option's name as that way spells it. */
  refusal(relay: TestRelay, options: ConnectOptions): Promise<string>;
}

const WAYS: Record<'cli' | 'api', Way> = {
  cli: {
    async open(relay, local, options) {
      const cli = runCli(cleanup, [
        ...['http', String(local.port), '--server', relay.url, '--token', TOKEN, '--log-format', 'json'],
        ...asFlags(options),
      ]);
      const url = (await cli.waitForOutput(/"event":"online".*?"url":"([^"]+)"/))[1]!;
      const seen = (): Seen[] =>
        cli
          .stdout()
          .split('\n')
          .filter((line) => line.includes('"event":"request"'))
          .map((line) => JSON.parse(line) as Seen);
      return {
        host: new URL(url).host,
        get seen() {
          return seen();
        },
      };
    },
    async refusal(relay, options) {
      const cli = runCli(cleanup, [
        ...['http', '3000', '--server', relay.url, '--token', TOKEN],
        ...asFlags(options),
      ]);
      expect(await cli.exited).toBe(2);
      return cli.stderr().trim();
    },
  },
  api: {
    async open(relay, local, options) {
      const tunnel = await connect({ port: local.port, server: relay.url, token: TOKEN, ...options });
      cleanup.add(() => tunnel.close({ drainMs: 0 }));
      const seen: Seen[] = [];
      tunnel.on('request', (x) => seen.push(x));
      return { host: new URL(tunnel.url).host, seen };
    },
    async refusal(relay, options) {
      try {
        await connect({ port: 3000, server: relay.url, token: TOKEN, ...options });
      } catch (err) {
        expect(err).toBeInstanceOf(GgrokError);
        expect((err as GgrokError).code).toBe('bad_config');
        return `error: ${(err as Error).message}`;
      }
      throw new Error('connect() accepted a bad option');
    },
  },
};

const basic = (user: string, pass: string): string =>
  `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

/** A relay, a local service and a tunnel opened `way`; requests go to the tunnel's host. */
async function setUp(
  way: Way,
  options: ConnectOptions,
  handler: Parameters<typeof startLocal>[1],
): Promise<{
  request: (o?: RawRequestOptions) => Promise<RawResponse>;
  host: string;
  local: LocalServer;
  seen: () => Seen[];
}> {
  const relay = await startRelay(cleanup);
  const local = await startLocal(cleanup, handler);
  const opened = await way.open(relay, local, options);
  return {
    host: opened.host,
    local,
    seen: () => opened.seen.map(({ method, target, status }) => ({ method, target, status })),
    request: (o = {}) => rawRequest({ port: relay.port, ...o, headers: o.headers ?? { Host: opened.host } }),
  };
}

describe.each(Object.entries(WAYS))('through %s', (_name, way) => {
  test('basicAuth: 401 with WWW-Authenticate, credentials checked and consumed by the relay', async () => {
    const t = await setUp(way, { subdomain: 'auth', basicAuth: ['alice:s3cret', 'bob:pw'] }, (req, res) =>
      reply(res, 200, `auth=${req.headers.authorization ?? 'none'}`),
    );
    const none = await t.request();
    expect([none.status, none.headers['www-authenticate']]).toEqual([
      401,
      'Basic realm="ggrok", charset="UTF-8"',
    ]);
    const wrong = await t.request({ headers: { Host: t.host, Authorization: basic('alice', 'nope') } });
    expect(wrong.status).toBe(401);
    for (const [user, pass] of [
      ['alice', 's3cret'],
      ['bob', 'pw'],
    ] as const) {
      const ok = await t.request({ headers: { Host: t.host, Authorization: basic(user, pass) } });
      expect([ok.status, ok.body.toString()]).toEqual([200, 'auth=none']);
    }
    expect((await t.request({ method: 'OPTIONS' })).status).toBe(401);
    expect(t.local.requests).toHaveLength(2);
    await expect.poll(t.seen).toEqual([
      { method: 'GET', target: '/', status: 200 },
      { method: 'GET', target: '/', status: 200 },
    ]);
  });

  test('optionsWithoutAuth lets CORS preflights through; a list option takes one string', async () => {
    const t = await setUp(way, { basicAuth: 'a:b', optionsWithoutAuth: true }, (_req, res) =>
      reply(res, 204, ''),
    );
    expect((await t.request({ method: 'OPTIONS' })).status).toBe(204);
    expect((await t.request({ method: 'GET' })).status).toBe(401);
  });

  test('allowIp: other addresses get 403 ip_not_allowed, listed ones get through', async () => {
    const denied = await setUp(way, { allowIp: ['10.0.0.0/8', '2001:db8::/32'] }, (_req, res) =>
      reply(res, 200, 'in'),
    );
    const no = await denied.request({ path: '/x' });
    expect([no.status, no.headers['x-ggrok-error']]).toEqual([403, 'ip_not_allowed']);
    expect(no.body.toString()).toContain('127.0.0.1');
    expect(denied.local.requests).toHaveLength(0);
    const allowed = await setUp(way, { allowIp: '127.0.0.0/8' }, (_req, res) => reply(res, 200, 'in'));
    const yes = await allowed.request({ path: '/y' });
    expect([yes.status, yes.body.toString()]).toEqual([200, 'in']);
    await expect.poll(allowed.seen).toEqual([{ method: 'GET', target: '/y', status: 200 }]);
  });

  test('hostHeader rewrite and header rules apply on the way in and out', async () => {
    const t = await setUp(
      way,
      {
        hostHeader: 'rewrite',
        requestHeaderAdd: 'X-Added: yes',
        requestHeaderRemove: 'Cookie',
        responseHeaderAdd: ['X-Frame-Options: DENY', 'X-Two: 2'],
        responseHeaderRemove: 'x-powered-by',
      },
      (req, res) => {
        res.setHeader('X-Powered-By', 'secret-stack');
        reply(
          res,
          200,
          JSON.stringify({
            host: req.headers.host,
            forwardedHost: req.headers['x-forwarded-host'],
            added: req.headers['x-added'],
            cookie: req.headers.cookie ?? null,
          }),
        );
      },
    );
    const res = await t.request({ path: '/h', headers: { Host: t.host, Cookie: 'session=1' } });
    expect(JSON.parse(res.body.toString())).toEqual({
      host: `localhost:${t.local.port}`,
      forwardedHost: t.host,
      added: 'yes',
      cookie: null,
    });
    expect([res.headers['x-frame-options'], res.headers['x-two']]).toEqual(['DENY', '2']);
    expect(res.headers['x-powered-by']).toBeUndefined();
    await expect.poll(t.seen).toEqual([{ method: 'GET', target: '/h', status: 200 }]);
  });

  test('bad values are refused before connecting, with the same message naming the option', async () => {
    const relay = await startRelay(cleanup);
    const name = _name === 'cli' ? (flag: string) => flag : (flag: string) => camel(flag);
    expect(await way.refusal(relay, { basicAuth: 'alice' })).toBe(
      `error: ${name('--basic-auth')} "alice:…" must be user:password`,
    );
    expect(await way.refusal(relay, { allowIp: ['127.0.0.1', 'nowhere'] })).toBe(
      `error: ${name('--allow-ip')} "nowhere" is not an address or CIDR range`,
    );
    expect(await way.refusal(relay, { requestHeaderAdd: 'no colon' })).toBe(
      `error: ${name('--request-header-add')} "no colon" is not a header; use "Name: value"`,
    );
    expect(relay.relay.tunnelCount).toBe(0);
  });
});

/** `--allow-ip` -> `allowIp`. */
function camel(flag: string): string {
  return flag.slice(2).replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

test('connect() refuses what a JavaScript caller may pass wrong: unknown names and wrong types', async () => {
  const codeAndMessage = (options: Record<string, unknown>): Promise<string> =>
    connect({ port: 3000, token: TOKEN, ...(options as ConnectOptions) }).then(
      () => 'resolved',
      (err: GgrokError) => `${err.code}: ${err.message}`,
    );
  expect(await codeAndMessage({ basicAuthh: 'a:b' })).toMatch(
    /^bad_config: unknown option "basicAuthh" \(expected server, token/,
  );
  expect(await codeAndMessage({ logFormat: 'json' })).toMatch(/^bad_config: unknown option "logFormat"/);
  expect(await codeAndMessage({ allowIp: [1] })).toBe('bad_config: allowIp must be a list of strings');
  expect(await codeAndMessage({ optionsWithoutAuth: 'yes' })).toBe(
    'bad_config: optionsWithoutAuth must be true or false',
  );
  expect(await codeAndMessage({ subdomain: 7 })).toBe('bad_config: subdomain must be a string');
});
