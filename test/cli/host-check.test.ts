// Recognising dev servers' host-check refusals, wording their fixes, and the Origin rewrite that goes with --host-header.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { FrameType, BodyKind, type HeaderList, type RequestFrame } from '../../protocol/frames.js';
import { getHeader } from '../../protocol/headers.js';
import {
  bothObservers,
  DevServer,
  hintFor,
  HOST_CHECK_PREFIX_BYTES,
  HostCheckWatch,
  mayBeRefusal,
  recogniseRefusal,
  recogniseUpgradeFailure,
  rewriteSameOrigin,
  type HostCheckHint,
} from '../../cli/host-check.js';
import type { Exchange, ExchangeObserver } from '../../cli/local-request.js';
import type { LocalTarget } from '../../cli/target.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'host-check');
/**
 * Bodies captured from the real servers (curl with Host: <name>.relay.test:18080): Vite 6.4.6 and webpack-dev-server
 * 5.2.7 from this repository's devDependencies, ng serve of Angular CLI 21 (@angular/build 21.2.30), Django 3.2.25 (Debian's python3-django, DEBUG = True). The Django
 * pages are cut to what recognition reads: the HTML to HOST_CHECK_PREFIX_BYTES, the text form to its first lines.
 */
const captured = (name: string): Buffer => readFileSync(path.join(FIXTURES, name));

/**
 * Rails is not installed here: these are rendered by hand from rails/rails' templates (rescues/layout.erb with
 * rescues/blocked_host.html.erb, and blocked_host.text.erb), not captured. The layout's 5.5 KiB of CSS comes first.
 */
const RAILS_HTML = Buffer.from(
  `<!DOCTYPE html>\n<html lang="en">\n<head>\n  <meta charset="utf-8" />\n  <title>Action Controller: Exception caught</title>\n  <style>\n${'    body { background-color: #FAFAFA; color: #333; }\n'.repeat(120)}  </style>\n</head>\n<body>\n<header>\n  <h1>Blocked hosts: demo.relay.example</h1>\n</header>\n<main role="main" id="container">\n  <h2>To allow requests to these hosts, make sure they are valid hostnames (containing only numbers, letters, dashes and dots), then add the following to your environment configuration:</h2>\n  <pre>\n    config.hosts &lt;&lt; "demo.relay.example"\n  </pre>\n</main>\n</body>\n</html>\n`,
);
const RAILS_TEXT = Buffer.from(
  'Blocked hosts: demo.relay.example\n\nTo allow requests to these hosts, make sure they are valid hostnames (containing only numbers, letters, dashes and dots), then add the following to your environment configuration:\n\n  config.hosts << "demo.relay.example"\n\nFor more details on host authorization view: https://guides.rubyonrails.org/configuring.html#actiondispatch-hostauthorization\n',
);

/** The tunnel's public URL as the relay announced it. */
const URL_ = 'https://demo.relay.example';
const SUMMARY: Exchange = {
  method: 'GET',
  target: '/',
  status: 403,
  durationMs: 1,
  bytes: 0,
  upgrade: false,
};
const TARGET: LocalTarget = { protocol: 'http:', host: 'localhost', port: 5173, insecure: false };

describe('recogniseRefusal', () => {
  test.each([
    ['Vite 6 (captured)', 403, '/', captured('vite-6.4.6.txt'), DevServer.Vite],
    [
      'ng serve, @angular/build 21.2.30 (captured)',
      403,
      '/',
      captured('angular-build-21.2.30.html'),
      DevServer.Angular,
    ],
    [
      'webpack-dev-server 5 (captured)',
      403,
      '/main.js',
      captured('webpack-dev-server-5.2.7.txt'),
      DevServer.Webpack,
    ],
    ['Django 3.2 DEBUG page (captured)', 400, '/', captured('django-3.2.25.html'), DevServer.Django],
    ['Django 3.2 text form (captured)', 400, '/', captured('django-3.2.25.txt'), DevServer.Django],
    ['Rails 6.1+ HTML (from its templates)', 403, '/', RAILS_HTML, DevServer.Rails],
    ['Rails 6.1+ text (from its templates)', 403, '/', RAILS_TEXT, DevServer.Rails],
    [
      'Next.js dev with allowedDevOrigins',
      403,
      '/_next/static/chunks/main.js',
      Buffer.from('Unauthorized'),
      DevServer.Next,
    ],
  ])('%s', (_name, status, target, body, server) => {
    expect(recogniseRefusal({ status, target, body })?.server).toBe(server);
  });

  test('the captured Django page names the refusal only after 4 KiB, and Rails its host after 5 KiB', () => {
    // Why HOST_CHECK_PREFIX_BYTES is 16 KiB and not 4.
    expect(captured('django-3.2.25.html').indexOf('Invalid HTTP_HOST header')).toBeGreaterThan(4096);
    expect(RAILS_HTML.indexOf('Blocked hosts')).toBeGreaterThan(5 * 1024);
    expect(RAILS_HTML.indexOf('Blocked hosts')).toBeLessThan(HOST_CHECK_PREFIX_BYTES);
  });

  test("Vite preview's refusal names preview.allowedHosts", () => {
    const body = Buffer.from(
      'Blocked request. This host ("x.relay.example") is not allowed.\nTo allow this host, add "x.relay.example" to `preview.allowedHosts` in vite.config.js.',
    );
    expect(recogniseRefusal({ status: 403, target: '/', body })).toEqual({ server: 'vite', preview: true });
  });

  test.each([
    ['plain 403', 403, '/', 'Forbidden'],
    ['plain 400', 400, '/', 'Bad Request'],
    ['an empty 403 (Rails without detailed exceptions)', 403, '/', ''],
    [
      'Django without DEBUG',
      400,
      '/',
      '<!doctype html>\n<html lang="en">\n<head><title>Bad Request (400)</title></head>\n<body><h1>Bad Request (400)</h1><p></p></body>\n</html>\n',
    ],
    ['an app that talks about hosts', 403, '/', 'This host is not allowed to use the admin area.'],
    ['an app that talks about Host headers', 400, '/', 'Invalid Host header value: must be a DNS name'],
    ['a blocked request of another kind', 403, '/', 'Blocked request: rate limit exceeded for this host'],
    ['"Invalid Host header" with a 400', 400, '/', 'Invalid Host header'],
    ['a 403 "Unauthorized" outside /_next', 403, '/api/me', 'Unauthorized'],
    ['an app mentioning ALLOWED_HOSTS', 400, '/', 'Invalid HTTP_HOST header: add it to ALLOWED_HOSTS'],
    ['an app listing blocked hosts', 403, '/', 'Blocked hosts: evil.example, spam.example'],
    ["Vite's words with a 400", 400, '/', 'Blocked request. This host ("x") is not allowed.'],
  ])('no match: %s', (_name, status, target, body) => {
    expect(recogniseRefusal({ status, target, body: Buffer.from(body) })).toBeUndefined();
  });
});

describe('recogniseUpgradeFailure', () => {
  const failed = (error: string): Exchange => ({ ...SUMMARY, status: 502, upgrade: true, error });
  // What the client reported for Next.js 16.4.6's refused /_next/hmr socket (seen by hand, next dev through a tunnel).
  const seen =
    'invalid response from http://localhost:8767: the local service closed the connection mid-response';

  test('Next.js dev\'s bare "Unauthorized" on its hot-reload socket', () => {
    expect(recogniseUpgradeFailure('/_next/hmr?id=a4U5bIvXb5Z_E-Wz6iTP3', failed(seen))).toBe(true);
    expect(recogniseUpgradeFailure('/_next/webpack-hmr', failed(seen))).toBe(true);
  });

  test('other failed upgrades are not Next.js refusing', () => {
    expect(recogniseUpgradeFailure('/ws', failed(seen))).toBe(false);
    expect(recogniseUpgradeFailure('/_next/hmr', failed('ECONNREFUSED 127.0.0.1:3000'))).toBe(false);
    expect(recogniseUpgradeFailure('/_next/hmr', { ...SUMMARY, status: 101, upgrade: true })).toBe(false);
    expect(recogniseUpgradeFailure('/_next/hmrx', failed(seen))).toBe(false);
  });
});

describe('mayBeRefusal', () => {
  test('only 400 and 403 bodies that are not compressed are kept', () => {
    expect(mayBeRefusal(403, [])).toBe(true);
    expect(mayBeRefusal(400, ['Content-Type', 'text/html'])).toBe(true);
    expect(mayBeRefusal(400, ['Content-Encoding', 'identity'])).toBe(true);
    expect(mayBeRefusal(403, ['Content-Encoding', 'gzip'])).toBe(false);
    for (const status of [200, 301, 401, 404, 500]) expect(mayBeRefusal(status, [])).toBe(false);
  });
});

describe('hintFor', () => {
  const request = { method: 'GET', target: '/', status: 403, publicHost: 'demo.relay.example' };

  test('Vite: --host-header rewrite first (with what it changes), then allowedHosts with the relay domain', () => {
    const hint = hintFor({ server: 'vite' }, request, { tunnel: 'demo', url: URL_, target: TARGET });
    expect(hint).toMatchObject({
      tunnel: 'demo',
      server: 'vite',
      serverName: 'Vite',
      host: 'demo.relay.example',
    });
    expect(hint.why).toContain('server.allowedHosts');
    expect(hint.fixes).toHaveLength(2);
    expect(hint.fixes[0]).toContain('--host-header rewrite');
    expect(hint.fixes[0]).toContain('Host: localhost:5173');
    expect(hint.fixes[0]).toContain('X-Forwarded-Host still carries demo.relay.example');
    expect(hint.fixes[1]).toContain("server: { allowedHosts: ['.relay.example'] }");
  });

  test('with --host-header rewrite already on, only the framework setting is offered', () => {
    const hint = hintFor({ server: 'vite' }, request, {
      tunnel: 'demo',
      url: URL_,
      target: TARGET,
      hostHeader: 'rewrite',
    });
    expect(hint.fixes).toEqual([
      "in vite.config.js set server: { allowedHosts: ['.relay.example'] } and restart Vite",
    ]);
  });

  test('a relay serving one tunnel at its own name gets the exact host, not its parent domain', () => {
    const hint = hintFor(
      { server: 'django' },
      { ...request, status: 400, publicHost: 'myrelay.herokuapp.com' },
      {
        tunnel: 'default',
        url: 'https://myrelay.herokuapp.com',
        target: { ...TARGET, host: '127.0.0.1', port: 8000 },
      },
    );
    expect(hint.fixes[1]).toBe(
      "in settings.py set ALLOWED_HOSTS = ['myrelay.herokuapp.com', 'localhost', '127.0.0.1']",
    );
    expect(hint.fixes[0]).toContain('Host: 127.0.0.1:8000');
  });

  test('each framework names its own setting with the tunnel domain filled in', () => {
    const words = (server: HostCheckHint['server']): string =>
      hintFor(
        { server },
        { ...request, publicHost: 'demo.relay.example:8443' },
        { tunnel: 'demo', url: URL_, target: TARGET },
      ).fixes.join('\n');
    expect(words('angular')).toContain('"allowedHosts": [".relay.example"]');
    expect(words('webpack-dev-server')).toContain("devServer: { allowedHosts: ['.relay.example'] }");
    expect(words('next')).toContain("allowedDevOrigins: ['*.relay.example']");
    expect(words('django')).toContain("ALLOWED_HOSTS = ['.relay.example', 'localhost', '127.0.0.1']");
    expect(words('rails')).toContain('config.hosts << ".relay.example"');
  });

  test("the host named is the tunnel's own, not one a visitor chose", () => {
    const hint = hintFor(
      { server: 'django' },
      { ...request, status: 400, publicHost: 'attacker.example' },
      { tunnel: 'demo', url: URL_, target: TARGET },
    );
    expect(hint.host).toBe('demo.relay.example');
    expect(hint.fixes.join('\n')).not.toContain('attacker');
    expect(hint.fixes[1]).toContain("ALLOWED_HOSTS = ['.relay.example', 'localhost', '127.0.0.1']");
  });

  test('Rails: rewriting Host alone is not offered, since Rails checks X-Forwarded-Host too', () => {
    const hint = hintFor({ server: 'rails' }, request, { tunnel: 'demo', url: URL_, target: TARGET });
    expect(hint.fixes[0]).toContain('config.hosts');
    expect(hint.fixes[1]).toBe(
      'restart ggrok with --host-header rewrite --request-header-remove X-Forwarded-Host',
    );
  });
});

function head(target = '/', host = 'demo.relay.example'): RequestFrame {
  return {
    type: FrameType.Request,
    id: 1,
    method: 'GET',
    target,
    headers: ['Host', host, 'X-Forwarded-Host', host],
    body: BodyKind.None,
    upgrade: false,
    tunnel: 0,
  };
}

/** Feeds one response through an observer the way the forwarder does. */
function feed(
  o: ExchangeObserver | undefined,
  status: number,
  chunks: Buffer[],
  headers: HeaderList = [],
): void {
  o?.response?.(status, '', headers);
  for (const c of chunks) o?.responseData?.(c);
  o?.end?.(SUMMARY);
}

describe('HostCheckWatch', () => {
  const vite = captured('vite-6.4.6.txt');

  function watcher(): { watch: HostCheckWatch; hints: HostCheckHint[] } {
    const hints: HostCheckHint[] = [];
    const watch = new HostCheckWatch(
      () => ({ tunnel: 'demo', url: URL_, target: TARGET }),
      (h) => hints.push(h),
    );
    return { watch, hints };
  }

  test('reports once per tunnel, after the exchange, from a body split across chunks', async () => {
    const { watch, hints } = watcher();
    feed(watch.observe(head()), 403, [vite.subarray(0, 10), vite.subarray(10, 40), vite.subarray(40)]);
    expect(hints).toHaveLength(0); // reported after the exchange's own line
    await Promise.resolve();
    expect(hints).toHaveLength(1);
    expect(hints[0]).toMatchObject({
      server: 'vite',
      method: 'GET',
      target: '/',
      status: 403,
      host: 'demo.relay.example',
    });
    feed(watch.observe(head('/again')), 403, [vite]);
    expect(watch.observe(head())).toBeUndefined(); // nothing watched any more
    await Promise.resolve();
    expect(hints).toHaveLength(1);
  });

  test('Next.js refusing its hot-reload socket is reported, with allowedDevOrigins first', async () => {
    const { watch, hints } = watcher();
    const o = watch.observe({ ...head('/_next/hmr?id=x'), upgrade: true })!;
    o.end!({
      ...SUMMARY,
      status: 502,
      upgrade: true,
      error:
        'invalid response from http://localhost:5173: the local service closed the connection mid-response',
    });
    await Promise.resolve();
    expect(hints).toHaveLength(1);
    expect(hints[0]).toMatchObject({ server: 'next', status: 502, target: '/_next/hmr?id=x' });
    expect(hints[0]!.why).toContain('hot-reload socket');
    expect(hints[0]!.fixes[0]).toContain("allowedDevOrigins: ['*.relay.example']");
    expect(hints[0]!.fixes[1]).toContain('--host-header rewrite');
  });

  test('ordinary responses are not kept and give no hint', async () => {
    const { watch, hints } = watcher();
    feed(watch.observe(head()), 200, [Buffer.from('Blocked request. This host ("x") is not allowed.')]);
    feed(watch.observe(head()), 403, [Buffer.from('Forbidden: this host is not allowed here')]);
    feed(watch.observe(head()), 403, [Buffer.from(vite)], ['Content-Encoding', 'br']);
    await Promise.resolve();
    expect(hints).toHaveLength(0);
  });

  test('a long body is decided on its first HOST_CHECK_PREFIX_BYTES, without waiting for the end', async () => {
    const { watch, hints } = watcher();
    const o = watch.observe(head())!;
    const django = captured('django-3.2.25.html');
    o.response!(400, 'Bad Request', ['Content-Type', 'text/html']);
    o.responseData!(django);
    o.responseData!(Buffer.alloc(HOST_CHECK_PREFIX_BYTES)); // past the prefix: decided here
    await Promise.resolve();
    expect(hints.map((h) => h.server)).toEqual(['django']);
    o.responseData!(Buffer.alloc(10)); // later bytes cost nothing
    o.end!(SUMMARY);
  });

  test('the copy it keeps is its own (the tunnel reuses its buffers)', async () => {
    const { watch, hints } = watcher();
    const o = watch.observe(head())!;
    const chunk = Buffer.from(vite);
    o.response!(403, 'Forbidden', []);
    o.responseData!(chunk);
    chunk.fill(0); // the tunnel's buffer changes after the call
    o.end!(SUMMARY);
    await Promise.resolve();
    expect(hints.map((h) => h.server)).toEqual(['vite']);
  });
});

describe('bothObservers', () => {
  test('feeds both, offers only the methods one of them has, and passes a lone observer through', () => {
    const seen: string[] = [];
    const a: ExchangeObserver = { response: (s) => seen.push(`a${s}`), end: () => seen.push('a-end') };
    const b: ExchangeObserver = {
      response: (s) => seen.push(`b${s}`),
      channelData: (d) => seen.push(`b-${d}`),
    };
    expect(bothObservers(a, undefined)).toBe(a);
    expect(bothObservers(undefined, b)).toBe(b);
    expect(bothObservers(undefined, undefined)).toBeUndefined();
    const both = bothObservers(a, b)!;
    expect('requestData' in both).toBe(false);
    expect('responseData' in both).toBe(false);
    both.response!(403, '', []);
    both.channelData!('out', Buffer.alloc(1));
    both.end!(SUMMARY);
    expect(seen).toEqual(['a403', 'b403', 'b-out', 'a-end']);
  });
});

describe('rewriteSameOrigin', () => {
  const rewritten = (origin: string | undefined, publicHost = 'demo.relay.example'): string | undefined => {
    const headers: HeaderList = [
      'Host',
      'localhost:5173',
      ...(origin === undefined ? [] : ['Origin', origin]),
    ];
    rewriteSameOrigin(headers, publicHost, 'localhost:5173', TARGET);
    return getHeader(headers, 'origin');
  };

  test("the tunnel's own Origin names the target; any other Origin is left alone", () => {
    expect(rewritten('https://demo.relay.example')).toBe('http://localhost:5173');
    expect(rewritten('http://DEMO.relay.example')).toBe('http://localhost:5173');
    expect(rewritten('http://demo.relay.example:8080', 'demo.relay.example:8080')).toBe(
      'http://localhost:5173',
    );
    expect(rewritten('https://demo.relay.example', 'demo.relay.example:443')).toBe('http://localhost:5173');
    expect(rewritten('https://evil.example')).toBe('https://evil.example');
    expect(rewritten('https://demo.relay.example.evil.example')).toBe(
      'https://demo.relay.example.evil.example',
    );
    expect(rewritten('http://demo.relay.example:9999', 'demo.relay.example:8080')).toBe(
      'http://demo.relay.example:9999',
    );
    expect(rewritten('null')).toBe('null');
    expect(rewritten(undefined)).toBeUndefined();
  });
});
