// Observability end to end: Prometheus metrics, the status page, Stats frames, structured logs and webhooks.
import { createHash, createHmac } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { decodeMessage, encodeFrame } from '../../protocol/codec.js';
import {
  DEFAULT_FLOW,
  FrameType,
  PROTOCOL_VERSION,
  type FlowSettings,
  type Frame,
  type StatsFrame,
} from '../../protocol/frames.js';
import {
  Cleanup,
  rawRequest,
  reply,
  runCli,
  sleep,
  startClient,
  startLocal,
  startRelay,
  startTunnel,
  TOKEN,
  waitFor,
  type RawResponse,
  type TestRelay,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

// ---- a tiny Prometheus text-format parser ----

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format; fails the test on any line it cannot read. */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `unparseable metrics line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const l of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m![1]!, labels, value: Number(m![3]) });
  }
  return samples;
}

/** Sum of the samples called `name` whose labels include `labels`; undefined when none matches. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return matching.length === 0 ? undefined : matching.reduce((n, s) => n + s.value, 0);
}

function relayHost(r: TestRelay): string {
  return `127.0.0.1:${r.port}`;
}

async function scrape(r: TestRelay, token = TOKEN): Promise<Sample[]> {
  const res = await rawRequest({
    port: r.port,
    path: '/_ggrok/metrics',
    headers: { Host: relayHost(r), Authorization: `Bearer ${token}` },
  });
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain/);
  return parseMetrics(res.body.toString());
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A raw control socket that completes the handshake with a chosen agent string. */
async function rawControl(
  port: number,
  hello: { name: string; agent: string; token?: string; flow?: FlowSettings },
): Promise<{ ws: WebSocket; frames: Frame[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/_ggrok/connect`, { perMessageDeflate: false });
  cleanup.add(() => ws.terminate());
  ws.on('error', () => {});
  const frames: Frame[] = [];
  ws.on('message', (data: Buffer) => frames.push(...decodeMessage(data)));
  await once(ws, 'open');
  ws.send(
    encodeFrame({
      type: FrameType.Hello,
      version: PROTOCOL_VERSION,
      token: hello.token ?? TOKEN,
      name: hello.name,
      agent: hello.agent,
      clientId: 'observability-test',
      flow: hello.flow ?? DEFAULT_FLOW,
    }),
  );
  await waitFor(() => frames.length > 0, 'the handshake answer');
  return { ws, frames };
}

describe('metrics', () => {
  test('counters match known traffic: statuses by class, body bytes, durations, gauges', async () => {
    const t = await startTunnel(cleanup, (req, res) => {
      void readBody(req).then(() => {
        if (req.url?.startsWith('/missing')) return reply(res, 404, 'not here'); // 8 bytes
        reply(res, 200, 'x'.repeat(1000));
      });
    });
    const before = await scrape(t.relay);
    expect(value(before, 'ggrok_requests_total', { status_class: '2xx' })).toBe(0);
    for (let i = 0; i < 7; i++) {
      const post = i < 3;
      const res = await t.request({
        method: post ? 'POST' : 'GET',
        path: `/ok/${i}`,
        body: post ? 'b'.repeat(500) : undefined,
      });
      expect(res.status).toBe(200);
    }
    for (let i = 0; i < 2; i++) expect((await t.request({ path: `/missing/${i}` })).status).toBe(404);
    const nowhere = await rawRequest({ port: t.relay.port, headers: { Host: 'nobody.localhost' } });
    expect(nowhere.status).toBe(404);
    expect(nowhere.headers['x-ggrok-error']).toBe('tunnel_not_found');

    let m: Sample[] = [];
    await waitFor(async () => {
      m = await scrape(t.relay);
      return value(m, 'ggrok_request_duration_seconds_count') === 10;
    }, 'ten requests in the metrics');
    expect(value(m, 'ggrok_requests_total', { status_class: '2xx' })).toBe(7);
    expect(value(m, 'ggrok_requests_total', { status_class: '4xx' })).toBe(3);
    expect(value(m, 'ggrok_requests_total')).toBe(10); // scrapes are not counted
    expect(value(m, 'ggrok_bytes_total', { direction: 'in' })).toBe(3 * 500);
    expect(value(m, 'ggrok_bytes_total', { direction: 'out' })).toBe(7 * 1000 + 2 * 8);
    expect(value(m, 'ggrok_request_duration_seconds_bucket', { le: '+Inf' })).toBe(10);
    expect(value(m, 'ggrok_request_duration_seconds_sum')).toBeGreaterThan(0);
    expect(value(m, 'ggrok_tunnels_connected')).toBe(1);
    expect(value(m, 'ggrok_control_sockets_open')).toBe(1);
    expect(value(m, 'ggrok_streams_open', { kind: 'request' })).toBe(0);
    expect(value(m, 'ggrok_streams_open', { kind: 'channel' })).toBe(0);
    expect(value(m, 'ggrok_refusals_total', { reason: 'bad_token' })).toBe(0);
    expect(value(m, 'ggrok_reconnects_total')).toBe(0);
    expect(value(m, 'ggrok_flow_control_stalls_total', { scope: 'stream' })).toBe(0);
    // Process metrics from prom-client's defaults.
    expect(value(m, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(m, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    // No per-tunnel series without --metrics-per-tunnel.
    expect(m.some((s) => 'tunnel' in s.labels || s.name.startsWith('ggrok_tunnel_'))).toBe(false);
  });

  test('refusals, reconnects, protocol errors and flow-control stalls are counted', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'), {
      client: { access: { basicAuth: ['user:pass'], allowIp: [], optionsWithoutAuth: false } },
    });
    expect((await t.request()).status).toBe(401); // auth_required
    await expect(startClient(cleanup, t.relay.url, t.local.port, { token: 'wrong' })).rejects.toMatchObject({
      code: 'bad_token',
    });
    await expect(startClient(cleanup, t.relay.url, t.local.port, { subdomain: 'www' })).rejects.toMatchObject(
      {
        code: 'name_reserved',
      },
    );

    // The control socket drops; the client comes back under its held name: one reconnect.
    expect(t.relay.relay.dropTunnel('demo')).toBe(true);
    await waitFor(() => t.relay.events.filter((e) => e.event === 'connect').length === 2, 'the reconnect');
    expect(t.relay.events.filter((e) => e.event === 'connect')[1]).toMatchObject({ reconnect: true });

    // A raw client that never grants credit: a request body larger than the stream window stalls the
    // relay's writer. Then it breaks the protocol: one fatal protocol error, and the visitor gets a 502.
    const flow = { streamWindow: 64 * 1024, connWindow: 1024 * 1024, maxData: 16 * 1024 };
    const mute = await rawControl(t.relay.port, { name: 'mute', agent: 'test', flow });
    expect(mute.frames[0]?.type).toBe(FrameType.Welcome);
    const body = Buffer.alloc(4 * flow.streamWindow);
    const post = http.request({
      host: '127.0.0.1',
      port: t.relay.port,
      method: 'POST',
      headers: { Host: `mute.localhost:${t.relay.port}`, 'Content-Length': String(body.length) },
      agent: false,
    });
    post.on('error', () => {});
    post.end(body);
    await waitFor(
      async () => value(await scrape(t.relay), 'ggrok_flow_control_stalls_total', { scope: 'stream' })! > 0,
      'a stream stall',
    );
    mute.ws.send('text is not allowed');
    await once(mute.ws, 'close');
    const [answer] = (await once(post, 'response')) as [IncomingMessage];
    expect(answer.statusCode).toBe(502);
    answer.resume();

    let m: Sample[] = [];
    await waitFor(async () => {
      m = await scrape(t.relay);
      return value(m, 'ggrok_requests_total', { status_class: '5xx' }) === 1;
    }, 'the 502 in the metrics');
    expect(value(m, 'ggrok_refusals_total', { reason: 'auth_required' })).toBe(1);
    expect(value(m, 'ggrok_refusals_total', { reason: 'bad_token' })).toBe(1);
    expect(value(m, 'ggrok_refusals_total', { reason: 'name_reserved' })).toBe(1);
    expect(value(m, 'ggrok_refusals_total', { reason: 'rate_limited' })).toBe(0);
    expect(value(m, 'ggrok_reconnects_total')).toBe(1);
    expect(value(m, 'ggrok_protocol_errors_total', { code: 'protocol_error', fatal: 'true' })).toBe(1);
    expect(value(m, 'ggrok_requests_total', { status_class: '4xx' })).toBe(1);
    expect(value(m, 'ggrok_bytes_total', { direction: 'in' })).toBeGreaterThanOrEqual(flow.streamWindow);
  });

  test('401 without a token or with a wrong one; a metrics token, when set, is the only one accepted', async () => {
    const r = await startRelay(cleanup);
    const get = (headers: Record<string, string>, path = '/_ggrok/metrics'): Promise<RawResponse> =>
      rawRequest({ port: r.port, path, headers: { Host: relayHost(r), ...headers } });
    const none = await get({});
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(none.body.toString()).not.toMatch(/ggrok_/);
    expect((await get({ Authorization: 'Bearer wrong' })).status).toBe(401);
    expect(
      (await get({ Authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` })).status,
    ).toBe(401);
    expect((await get({}, `/_ggrok/metrics?token=${TOKEN}`)).status).toBe(401); // header only for metrics
    expect((await get({ Authorization: `Bearer ${TOKEN}` })).status).toBe(200);

    const m = await startRelay(cleanup, { metricsToken: 'scraper-secret' });
    const getM = (token: string): Promise<RawResponse> =>
      rawRequest({
        port: m.port,
        path: '/_ggrok/metrics',
        headers: { Host: relayHost(m), Authorization: `Bearer ${token}` },
      });
    expect((await getM(TOKEN)).status).toBe(401);
    expect((await getM('scraper-secret')).status).toBe(200);
  });

  test('per-tunnel series appear only with metricsPerTunnel, and count that tunnel only', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'hello'), {
      relay: { metricsPerTunnel: true },
    });
    const other = await startClient(cleanup, t.relay.url, t.local.port, { subdomain: 'other' });
    for (let i = 0; i < 3; i++) await t.request();
    await rawRequest({ port: t.relay.port, headers: { Host: new URL(other.url).host } });
    let m: Sample[] = [];
    await waitFor(async () => {
      m = await scrape(t.relay, `${TOKEN}`);
      return value(m, 'ggrok_requests_total', { status_class: '2xx' }) === 4;
    }, 'four requests');
    expect(value(m, 'ggrok_tunnel_requests_total', { tunnel: 'demo', status_class: '2xx' })).toBe(3);
    expect(value(m, 'ggrok_tunnel_requests_total', { tunnel: 'other', status_class: '2xx' })).toBe(1);
    expect(value(m, 'ggrok_tunnel_bytes_total', { tunnel: 'demo', direction: 'out' })).toBe(15);
    expect(value(m, 'ggrok_tunnel_bytes_total', { tunnel: 'other', direction: 'out' })).toBe(5);
    // The relay-wide series keep their labels either way.
    expect(m.filter((s) => s.name === 'ggrok_requests_total').every((s) => !('tunnel' in s.labels))).toBe(
      true,
    );
  });

  test('several relays in one process keep separate registries', async () => {
    const a = await startRelay(cleanup);
    const b = await startRelay(cleanup);
    await rawRequest({ port: a.port, headers: { Host: 'x.localhost' } });
    expect(value(await scrape(a), 'ggrok_requests_total', { status_class: '4xx' })).toBe(1);
    expect(value(await scrape(b), 'ggrok_requests_total', { status_class: '4xx' })).toBe(0);
  });
});

describe('status page', () => {
  const ALICE_TOKEN = 'alice-secret-0123456789';

  test('JSON lists each tunnel with its counters and token label; the token never appears', async () => {
    const t = await startTunnel(
      cleanup,
      (req, res) => void readBody(req).then((b) => reply(res, 200, `got ${b.length}`)),
      { relay: { tokens: [`alice=${ALICE_TOKEN}`, TOKEN] }, client: { token: ALICE_TOKEN } },
    );
    const plain = await startClient(cleanup, t.relay.url, t.local.port, { subdomain: 'plain' });
    await t.request({ method: 'POST', body: 'abcdef' }); // "got 6"
    await t.request({ method: 'POST', body: 'abc' }); // "got 3"
    const get = (path: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
      rawRequest({ port: t.relay.port, path, headers: { Host: relayHost(t.relay), ...headers } });

    let status: { tunnels: Record<string, unknown>[] } = { tunnels: [] };
    await waitFor(async () => {
      const res = await get('/_ggrok/status?format=json', { Authorization: `Bearer ${ALICE_TOKEN}` });
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect(res.body.toString()).not.toContain(ALICE_TOKEN);
      expect(res.body.toString()).not.toContain(TOKEN);
      status = JSON.parse(res.body.toString()) as typeof status;
      return status.tunnels.find((x) => x.name === 'demo')?.requests === 2;
    }, 'two requests on the status page');
    const demo = status.tunnels.find((x) => x.name === 'demo')!;
    expect(demo).toMatchObject({
      url: t.client.url,
      owner: 'alice',
      requests: 2,
      bytesIn: 9,
      bytesOut: 10,
      channels: 0,
      activeRequests: 0,
    });
    expect(demo.agent).toMatch(/^ggrok\//);
    expect(typeof demo.lastActivityAt).toBe('string');
    const plainRow = status.tunnels.find((x) => x.name === 'plain')!;
    expect(plainRow).toMatchObject({ url: plain.url, requests: 0, lastActivityAt: null });
    expect(plainRow.owner).toBe(`token#${createHash('sha256').update(TOKEN).digest('hex').slice(0, 6)}`);

    // Accept: application/json works too, and ?token= for browsers; the page never echoes the token.
    const viaAccept = await get('/_ggrok/status', {
      Authorization: `Bearer ${TOKEN}`,
      Accept: 'application/json',
    });
    expect(JSON.parse(viaAccept.body.toString())).toHaveProperty('tunnels');
    const html = await get(`/_ggrok/status?token=${encodeURIComponent(ALICE_TOKEN)}`);
    expect(html.status).toBe(200);
    expect(html.headers['content-type']).toMatch(/text\/html/);
    expect(html.headers['referrer-policy']).toBe('no-referrer');
    const page = html.body.toString();
    expect(page).toContain('<td>demo</td>');
    expect(page).toContain('<td>alice</td>');
    expect(page).not.toContain(ALICE_TOKEN);
    expect(page).not.toContain(TOKEN);
  });

  test('without a valid token: a login-free 401 page (or JSON); HTML escapes what clients send', async () => {
    const r = await startRelay(cleanup);
    const evil = `<img src=x onerror="alert(1)">&'`;
    const raw = await rawControl(r.port, { name: 'evil', agent: evil });
    expect(raw.frames[0]?.type).toBe(FrameType.Welcome);
    const get = (path: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
      rawRequest({ port: r.port, path, headers: { Host: relayHost(r), ...headers } });

    const denied = await get('/_ggrok/status');
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toBeUndefined(); // no browser login prompt
    expect(denied.body.toString()).toMatch(/\?token=/);
    expect(denied.body.toString()).not.toContain('evil');
    expect((await get('/_ggrok/status?token=wrong')).status).toBe(401);
    const deniedJson = await get('/_ggrok/status', { Accept: 'application/json' });
    expect(deniedJson.status).toBe(401);
    expect(JSON.parse(deniedJson.body.toString())).toEqual({ error: 'unauthorized' });

    const page = (await get(`/_ggrok/status?token=${TOKEN}`)).body.toString();
    expect(page).toContain('&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;');
    expect(page).not.toContain('<img');
    expect(page).not.toMatch(/<script/i);
  });
});

describe('Stats frames', () => {
  test("the client's session receives its tunnel's counters, only when they changed", async () => {
    const t = await startTunnel(
      cleanup,
      (req, res) => void readBody(req).then((b) => reply(res, 200, 'y'.repeat(b.length * 2))),
      { relay: { statsIntervalMs: 50 } },
    );
    // What the client's session received, as the client reports it (the frame's counters, named by tunnel).
    const received: (Omit<StatsFrame, 'type' | 'tunnel'> & { type: number; tunnel: number })[] = [];
    t.client.on('stats', ({ name, ...counters }) =>
      received.push({ type: FrameType.Stats, tunnel: name === t.client.name ? 0 : -1, ...counters }),
    );
    await sleep(300);
    expect(received).toEqual([]); // nothing happened yet: nothing sent
    for (let i = 0; i < 4; i++) await t.request({ method: 'POST', body: 'z'.repeat(100) });
    await waitFor(() => received.at(-1)?.requests === 4, 'a Stats frame with four requests');
    const last = received.at(-1)!;
    expect(last).toMatchObject({
      type: FrameType.Stats,
      requests: 4,
      bytesIn: 400,
      bytesOut: 800,
      channels: 0,
      tunnel: 0,
    });
    expect(Math.abs(last.lastActivityMs - Date.now())).toBeLessThan(10_000);
    const count = received.length;
    await sleep(300);
    expect(received.length).toBe(count); // no change, no frame
  });

  test('a Stats frame sent to the relay closes that control connection as a protocol error', async () => {
    const r = await startRelay(cleanup);
    const raw = await rawControl(r.port, { name: 'sender', agent: 'test' });
    raw.ws.send(
      encodeFrame({
        type: FrameType.Stats,
        requests: 1,
        bytesIn: 0,
        bytesOut: 0,
        channels: 0,
        lastActivityMs: 0,
        tunnel: 0,
        refused: 0,
      }),
    );
    const [code] = (await once(raw.ws, 'close')) as [number];
    expect(code).toBe(4000);
    await waitFor(
      () => r.events.some((e) => e.event === 'protocol_error' && e.fatal === true),
      'the error event',
    );
  });
});

describe('webhooks', () => {
  test('connect and disconnect are POSTed as JSON with an HMAC signature', async () => {
    const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];
    const hook = await startLocal(cleanup, (req, res) => {
      void readBody(req).then((b) => {
        received.push({ headers: req.headers, body: b.toString() });
        reply(res, 204, '');
      });
    });
    const secret = 'hook-secret';
    const r = await startRelay(cleanup, { webhook: { url: `http://127.0.0.1:${hook.port}/hook`, secret } });
    const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const client = await startClient(cleanup, r.url, local.port, { subdomain: 'hooked' });
    await waitFor(() => received.length === 1, 'the connect hook');
    await client.close();
    await waitFor(() => received.length === 2, 'the disconnect hook');
    for (const { headers, body } of received) {
      expect(headers['content-type']).toBe('application/json');
      const expected = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
      expect(headers['x-ggrok-signature']).toBe(expected);
      expect(body).not.toContain(TOKEN);
    }
    const [connect, disconnect] = received.map((x) => JSON.parse(x.body) as Record<string, unknown>);
    expect(connect).toMatchObject({ event: 'connect', name: 'hooked', url: client.url });
    expect(new Date(connect!.at as string).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(connect).not.toHaveProperty('reason');
    expect(disconnect).toMatchObject({ event: 'disconnect', name: 'hooked', url: client.url });
    expect(disconnect!.reason).toEqual(expect.any(String));
    expect(received[1]!.headers['x-ggrok-event']).toBe('disconnect');
  });

  test('a hook that never answers, or a closed port, delays neither connects nor requests', async () => {
    // Order and content, not a stopwatch: with a receiver that never answers and a delivery deadline far longer
    // than the test, every connect and request below completes while the deliveries are still in flight. Had a
    // connect waited for its hook, it could not complete before that deadline (the 20 s guard just fails faster).
    const silentSockets = new Set<net.Socket>();
    const silent = net.createServer((s) => silentSockets.add(s));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    cleanup.add(() => {
      for (const s of silentSockets) s.destroy();
      return new Promise((r) => silent.close(r));
    });
    // A port with nothing listening: every delivery fails at once.
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));

    const hookEvents = (r: TestRelay) => r.events.filter((e) => e.event.startsWith('webhook_'));
    const threeTunnels = async (r: TestRelay): Promise<void> => {
      const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'fast'));
      for (let i = 0; i < 3; i++) {
        const client = await startClient(cleanup, r.url, local.port, { subdomain: `quick${i}` });
        const res = await rawRequest({ port: r.port, headers: { Host: new URL(client.url).host } });
        expect(res.body.toString()).toBe('fast');
        await client.close();
      }
    };
    const guard = async (work: Promise<void>, what: string): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} waited for the webhook`)), 20_000);
      });
      try {
        await Promise.race([work, late]);
      } finally {
        clearTimeout(timer);
      }
    };

    const slow = await startRelay(cleanup, {
      webhook: {
        url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}/`,
        secret: 's',
        timeoutMs: 600_000,
      },
    });
    await guard(threeTunnels(slow), 'connecting to a relay with a silent hook');
    await waitFor(() => silentSockets.size > 0, 'the deliveries to reach the silent receiver');
    expect(hookEvents(slow)).toEqual([]); // none answered, failed or was dropped: all still in flight

    const refused = await startRelay(cleanup, {
      webhook: { url: `http://127.0.0.1:${closedPort}/`, secret: 's' },
    });
    await guard(threeTunnels(refused), 'connecting to a relay whose hook refuses connections');
    // Three connects and three disconnects, each delivery refused and logged; the tunnels worked all the same.
    await waitFor(() => hookEvents(refused).length === 6, 'six failed deliveries');
    expect(hookEvents(refused).map((e) => [e.event, e.error])).toEqual(
      Array(6).fill(['webhook_failed', 'ECONNREFUSED']),
    );
  });
});

/** Parses one logfmt line into fields; fails the test when the line is not logfmt. */
function parseLogfmt(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  const re = /([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)/y;
  let at = 0;
  while (at < line.length) {
    re.lastIndex = at;
    const m = re.exec(line);
    expect(m, `not logfmt at ${at}: ${line}`).not.toBeNull();
    fields[m![1]!] = m![2]!.startsWith('"') ? (JSON.parse(m![2]!) as string) : m![2]!;
    at = re.lastIndex;
  }
  return fields;
}

describe('relay logs', () => {
  for (const format of ['json', 'logfmt'] as const)
    test(`--log-format ${format}: one parseable line per event, no secrets, access log without queries`, async () => {
      const secretToken = 'alice-top-secret-token-42';
      const password = 'hunter2-password';
      const relay = runCli(cleanup, [
        'relay',
        '--port',
        '0',
        '--host',
        '127.0.0.1',
        '--domain',
        'localhost',
        '--token',
        `alice=${secretToken}`,
        '--log-format',
        format,
        '--access-log',
      ]);
      const port = Number((await relay.waitForOutput(/"?port"?[=:](\d+)/))[1]);
      const server = `http://127.0.0.1:${port}`;
      const local = await startLocal(cleanup, (_req, res) => reply(res, 200, 'logged'));
      await expect(
        startClient(cleanup, server, local.port, { token: 'wrong-token-value-99' }),
      ).rejects.toMatchObject({ code: 'bad_token' });
      const client = await startClient(cleanup, server, local.port, {
        token: secretToken,
        subdomain: 'logs',
        access: { basicAuth: [`user:${password}`], allowIp: [], optionsWithoutAuth: false },
      });
      const credentials = Buffer.from(`user:${password}`).toString('base64');
      const res = await rawRequest({
        port,
        path: '/page?apikey=query-secret-value',
        headers: { Host: `logs.localhost:${port}`, Authorization: `Basic ${credentials}` },
      });
      expect(res.body.toString()).toBe('logged');
      await relay.waitForOutput(/event"?[:=]"?request\b/);
      await client.close();
      await relay.waitForOutput(/event"?[:=]"?disconnect\b/);
      relay.child.kill('SIGTERM');
      expect(await relay.exited).toBe(0);

      const output = relay.stdout() + relay.stderr();
      for (const secret of [secretToken, 'wrong-token-value-99', password, credentials, 'query-secret-value'])
        expect(output).not.toContain(secret);
      const lines = output.split('\n').filter((l) => l !== '');
      const events = lines.map((line) => {
        if (format === 'json') {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          expect(typeof parsed.time).toBe('string');
          return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
        }
        return parseLogfmt(line);
      });
      const names = events.map((e) => e.event);
      for (const name of ['listening', 'refused', 'connect', 'request', 'disconnect', 'stopping', 'shutdown'])
        expect(names).toContain(name);
      expect(events.find((e) => e.event === 'refused')).toMatchObject({ reason: 'bad_token' });
      expect(events.find((e) => e.event === 'connect')).toMatchObject({ name: 'logs', owner: 'alice' });
      expect(events.find((e) => e.event === 'request')).toMatchObject({
        method: 'GET',
        host: `logs.localhost:${port}`,
        path: '/page',
        status: '200',
        bytesOut: '6',
        tunnel: 'logs',
      });
    });
});
