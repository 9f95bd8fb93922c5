// The inspector with real sockets: a relay, a tunnel client feeding the observer hook, local servers, the HTTP API.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, expect, test } from 'vitest';
import WebSocket, { WebSocketServer, type RawData } from 'ws';
import { startInspector, type Inspector, type InspectorOptions } from '../../cli/inspector/index.js';
import { parseTarget } from '../../cli/target.js';
import { Cleanup, rawExchange, rawRequest, startTunnel, waitFor, type Tunnel } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

interface Summary {
  id: number;
  rev: number;
  tunnel: string;
  method: string;
  target: string;
  status?: number;
  durationMs?: number;
  requestSize: number;
  responseSize: number;
  done: boolean;
  upgrade: boolean;
  replayOf?: number;
  error?: string;
  messages?: number;
  events?: number;
}

interface BodyView {
  kind: string;
  size: number;
  captured: number;
  truncated: boolean;
  text?: string;
  base64?: string;
  summary?: string;
  contentType?: string;
}

interface WsMessageView {
  direction: 'in' | 'out';
  type: string;
  size: number;
  text?: string;
  base64?: string;
  closeCode?: number;
  compressed: boolean;
  truncated: boolean;
}

interface Details extends Summary {
  url: string;
  request: { headers: [string, string][]; body: BodyView };
  response: { status: number; reason: string; headers: [string, string][]; body: BodyView } | null;
  websocket?: {
    protocol: string;
    error?: string;
    deflate: boolean;
    total: number;
    messages: WsMessageView[];
  };
  sse?: { total: number; events: { event?: string; id?: string; data: string; truncated: boolean }[] };
}

interface Setup {
  inspector: Inspector;
  t: Tunnel;
  /** Every request the local server got, with its body. */
  seen: Seen[];
  get: <T>(path: string) => Promise<T>;
  post: (path: string, body: unknown) => Promise<{ status: number; json: { id?: number; error?: string } }>;
  /** Waits until the newest exchange with this target is done, and returns its details. */
  done: (target: string) => Promise<Details>;
}

/** A relay, a local server (recording bodies), a client whose observer is the inspector's, and API helpers. */
async function setup(
  respond: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void,
  options: InspectorOptions = {},
): Promise<Setup> {
  const inspector = await startInspector({ port: 0, ...options });
  cleanup.add(() => inspector.close());
  const seen: Seen[] = [];
  const handler: RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
      });
      respond(req, body, res);
    });
  };
  const t = await startTunnel(cleanup, handler, { client: { observe: inspector.observe } });
  inspector.setTunnels([
    { name: t.client.name, url: t.client.url, target: parseTarget(String(t.local.port)) },
  ]);
  const get = async <T>(path: string): Promise<T> => {
    const res = await fetch(inspector.url + path);
    expect(res.status, `GET ${path}`).toBe(200);
    return (await res.json()) as T;
  };
  const post = async (path: string, body: unknown) => {
    const res = await fetch(inspector.url + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as { id?: number; error?: string } };
  };
  const done = async (target: string): Promise<Details> => {
    let found: Summary | undefined;
    await waitFor(
      async () => {
        const { exchanges } = await get<{ exchanges: Summary[] }>('/api/exchanges');
        found = exchanges.find((x) => x.target === target && x.done);
        return found !== undefined;
      },
      `exchange ${target} to be recorded`,
      15_000,
    );
    return get<Details>(`/api/exchanges/${found!.id}`);
  };
  return { inspector, t, seen, get, post, done };
}

function header(pairs: [string, string][] | undefined, name: string): string | undefined {
  return pairs?.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const PNG_HEAD = Buffer.concat([
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]),
  Buffer.from('IHDR'),
  Buffer.from([0, 0, 2, 128, 0, 0, 1, 224]),
]);

test('a request through the tunnel is listed with its headers, JSON bodies pretty-printed both ways', async () => {
  const s = await setup((_req, _body, res) => json(res, 201, { id: 7, ok: true }));
  const reqBody = '{"name":"widget","tags":["a","b"]}';
  const res = await s.t.request({
    method: 'POST',
    path: '/api/items?x=1',
    headers: { Host: s.t.host, 'Content-Type': 'application/json', 'X-Test': 'abc' },
    body: reqBody,
  });
  expect(res.status).toBe(201);

  const d = await s.done('/api/items?x=1');
  expect(d).toMatchObject({
    tunnel: 'demo',
    method: 'POST',
    status: 201,
    requestSize: reqBody.length,
    responseSize: 18,
    upgrade: false,
    url: `${s.t.client.url}/api/items?x=1`,
  });
  expect(d.durationMs).toBeGreaterThanOrEqual(0);
  // Headers as the local service got them: the visitor's, plus the relay's X-Forwarded-*.
  expect(header(d.request.headers, 'x-test')).toBe('abc');
  expect(header(d.request.headers, 'host')).toBe(s.t.host);
  expect(header(d.request.headers, 'x-forwarded-for')).toBe('127.0.0.1');
  expect(d.request.body).toMatchObject({
    kind: 'json',
    size: reqBody.length,
    truncated: false,
    text: '{\n  "name": "widget",\n  "tags": [\n    "a",\n    "b"\n  ]\n}',
  });
  expect(d.response).toMatchObject({ status: 201, reason: 'Created' });
  expect(header(d.response!.headers, 'content-type')).toBe('application/json');
  expect(d.response!.body).toMatchObject({ kind: 'json', text: '{\n  "id": 7,\n  "ok": true\n}' });
  const list = await s.get<{ exchanges: Summary[] }>('/api/exchanges');
  expect(list.exchanges.map((x) => x.target)).toEqual(['/api/items?x=1']);
});

test('the live event stream announces an exchange when it starts and when it ends', async () => {
  let release: () => void = () => {};
  const s = await setup((_req, _body, res) => {
    release = () => json(res, 200, { late: true });
  });
  const events: Summary[] = [];
  const req = http.get(`${s.inspector.url}/api/events`);
  cleanup.add(() => req.destroy());
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
  let buffer = '';
  res.on('data', (c: Buffer) => {
    buffer += c.toString();
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (/^event: exchange$/m.test(block) && data) events.push(JSON.parse(data) as Summary);
    }
  });
  const pending = s.t.request({ path: '/slow' });
  await waitFor(() => events.some((e) => e.target === '/slow' && !e.done), 'a start event');
  release();
  expect((await pending).status).toBe(200);
  await waitFor(() => events.some((e) => e.target === '/slow' && e.done && e.status === 200), 'an end event');
});

test('binary bodies are summarised, and bodies past maxBodyBytes are cut (the tunnel still carries all of them)', async () => {
  const png = Buffer.concat([PNG_HEAD, Buffer.alloc(5000, 0xab)]);
  const s = await setup(
    (req, _body, res) => {
      if (req.url === '/image.png') {
        res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': png.length });
        res.end(png);
      } else json(res, 200, { ok: true });
    },
    { maxBodyBytes: 1024 },
  );
  const img = await s.t.request({ path: '/image.png' });
  expect(img.body.equals(png)).toBe(true);
  const d = await s.done('/image.png');
  expect(d.response!.body).toMatchObject({
    kind: 'binary',
    size: png.length,
    captured: 1024,
    truncated: true,
    summary: 'PNG image 640×480, 4.9 KiB',
  });
  expect(Buffer.from(d.response!.body.base64!, 'base64').equals(png.subarray(0, 1024))).toBe(true);

  const upload = 'z'.repeat(3000);
  await s.t.request({
    method: 'POST',
    path: '/upload',
    headers: { Host: s.t.host, 'Content-Type': 'text/plain' },
    body: upload,
  });
  expect(s.seen.find((x) => x.url === '/upload')!.body.toString()).toBe(upload);
  const u = await s.done('/upload');
  expect(u.request.body).toMatchObject({
    kind: 'text',
    size: 3000,
    captured: 1024,
    truncated: true,
    text: 'z'.repeat(1024),
  });

  // A cut body cannot be replayed as it was; with a body given it can.
  const refused = await s.post(`/api/exchanges/${u.id}/replay`, {});
  expect(refused.status).toBe(409);
  expect(refused.json.error).toMatch(/cut at 1024 of 3000 bytes/);
  const given = await s.post(`/api/exchanges/${u.id}/replay`, { body: 'short' });
  expect(given.status).toBe(200);
  await waitFor(() => s.seen.filter((x) => x.url === '/upload').length === 2, 'the replay');
  expect(s.seen.filter((x) => x.url === '/upload')[1]!.body.toString()).toBe('short');
});

test('the store stays within maxExchanges and maxTotalBytes, evicting the oldest', async () => {
  const s = await setup(
    (req, _body, res) => {
      const size = Number(new URL(req.url!, 'http://x').searchParams.get('size') ?? 10);
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': size });
      res.end('b'.repeat(size));
    },
    { maxExchanges: 3, maxTotalBytes: 20_000, maxBodyBytes: 8000 },
  );
  for (let i = 0; i < 5; i++) await s.t.request({ path: `/n${i}` });
  await s.done('/n4');
  const list = await s.get<{ exchanges: Summary[] }>('/api/exchanges');
  expect(list.exchanges.map((x) => x.target)).toEqual(['/n4', '/n3', '/n2']);
  const gone = await fetch(`${s.inspector.url}/api/exchanges/${list.exchanges[2]!.id - 1}`);
  expect(gone.status).toBe(404);

  // Bytes: each response keeps 7 000 bytes; three would exceed 20 000, so only two stay.
  for (let i = 0; i < 3; i++) await s.t.request({ path: `/big${i}?size=7000` });
  await s.done('/big2?size=7000');
  const after = await s.get<{ exchanges: Summary[] }>('/api/exchanges');
  expect(after.exchanges.map((x) => x.target)).toEqual(['/big2?size=7000', '/big1?size=7000']);
});

/** A local WebSocket echo server on the tunnel's local server. */
function echoServer(t: Tunnel, options: ConstructorParameters<typeof WebSocketServer>[0] = {}): void {
  const wss = new WebSocketServer({ noServer: true, ...options });
  const sockets: Duplex[] = [];
  t.local.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.push(socket);
    socket.on('error', () => {});
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      ws.on('message', (data: RawData, isBinary: boolean) =>
        ws.send(Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]), { binary: isBinary }),
      );
    });
  });
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    wss.close();
  });
}

async function openWs(t: Tunnel, path: string, perMessageDeflate: boolean): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${t.relay.port}${path}`, {
    headers: { Host: t.host },
    perMessageDeflate,
  });
  ws.on('error', () => {});
  cleanup.add(() => ws.terminate());
  await once(ws, 'open');
  return ws;
}

function collect(ws: WebSocket): string[] {
  const got: string[] = [];
  ws.on('message', (data: Buffer, isBinary: boolean) =>
    got.push(isBinary ? `bin:${[...data].join(',')}` : data.toString()),
  );
  return got;
}

test('WebSocket messages are parsed both ways: text, binary, fragmented, ping/pong, close', async () => {
  const s = await setup((_req, _body, res) => json(res, 404, {}));
  echoServer(s.t, { perMessageDeflate: false });
  const ws = await openWs(s.t, '/ws', false);
  const got = collect(ws);
  ws.send('hello');
  ws.send(Buffer.from([1, 2, 3, 250]), { binary: true });
  ws.send('frag-', { fin: false });
  ws.send('mented', { fin: true });
  ws.ping('are you there');
  await waitFor(() => got.length === 3, 'three echoes');
  expect(got).toEqual(['hello', 'bin:1,2,3,250', 'frag-mented']);
  ws.close(1000, 'bye');
  await once(ws, 'close');

  const d = await s.done('/ws');
  expect(d).toMatchObject({ upgrade: true, status: 101 });
  expect(d.websocket).toMatchObject({ protocol: 'websocket', deflate: false, total: 10 });
  const view = (m: WsMessageView): string =>
    `${m.type}:${m.type === 'close' ? `${m.closeCode} ${m.text}` : (m.text ?? m.base64)}`;
  const byDirection = (dir: 'in' | 'out') =>
    d.websocket!.messages.filter((m) => m.direction === dir).map(view);
  expect(byDirection('in')).toEqual([
    'text:hello',
    `binary:${Buffer.from([1, 2, 3, 250]).toString('base64')}`,
    'text:frag-mented',
    'ping:are you there',
    'close:1000 bye',
  ]);
  expect(byDirection('out')).toEqual([
    'text:hello',
    `binary:${Buffer.from([1, 2, 3, 250]).toString('base64')}`,
    'text:frag-mented',
    'pong:are you there',
    'close:1000 bye',
  ]);
  // An upgrade cannot be replayed.
  expect((await s.post(`/api/exchanges/${d.id}/replay`, {})).status).toBe(409);
});

test('permessage-deflate WebSocket messages are shown inflated (context takeover one way, none the other)', async () => {
  const s = await setup((_req, _body, res) => json(res, 404, {}));
  echoServer(s.t, { perMessageDeflate: { threshold: 0, serverNoContextTakeover: true } });
  const ws = await openWs(s.t, '/deflate', true);
  const got = collect(ws);
  const long = 'abc'.repeat(40_000);
  ws.send('compressed hello');
  ws.send('compressed hello again');
  ws.send(long);
  await waitFor(() => got.length === 3, 'three echoes');
  expect(got[2]).toBe(long);
  ws.close(1000);
  await once(ws, 'close');
  const d = await s.done('/deflate');
  expect(d.websocket!.deflate).toBe(true);
  await waitFor(
    async () => (await s.get<Details>(`/api/exchanges/${d.id}`)).websocket!.total === 8,
    'every message',
  );
  const w = (await s.get<Details>(`/api/exchanges/${d.id}`)).websocket!;
  for (const dir of ['in', 'out'] as const) {
    const texts = w.messages.filter((m) => m.direction === dir && m.type === 'text');
    expect(texts.map((m) => [m.compressed, m.size, m.truncated])).toEqual([
      [true, 16, false],
      [true, 22, false],
      [true, 120_000, true],
    ]);
    expect(texts.map((m) => m.text!.slice(0, 22))).toEqual([
      'compressed hello',
      'compressed hello again',
      'abc'.repeat(8).slice(0, 22),
    ]);
    expect(texts[2]!.text!.length).toBe(64 * 1024);
  }
});

test('an upgraded channel that is not WebSocket frames is marked so and still carried untouched', async () => {
  const s = await setup((_req, _body, res) => json(res, 200, { after: true }));
  s.t.local.server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.write('this is not a frame\n');
    socket.on('data', (c: Buffer) => socket.write(`echo ${c.toString()}`));
    cleanup.add(() => socket.destroy());
  });
  const text = await rawExchange(
    s.t.relay.port,
    `GET /raw HTTP/1.1\r\nHost: ${s.t.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    (got) => got.includes('this is not a frame'),
  );
  expect(text).toMatch(/^HTTP\/1\.1 101/);
  await waitFor(async () => {
    const { exchanges } = await s.get<{ exchanges: Summary[] }>('/api/exchanges');
    const x = exchanges.find((e) => e.target === '/raw');
    if (!x) return false;
    const d = await s.get<Details>(`/api/exchanges/${x.id}`);
    return (
      d.websocket?.protocol === 'other' &&
      /^not WebSocket frames \(server: reserved opcode 4\)$/.test(d.websocket.error ?? '')
    );
  }, 'the channel to be marked as not WebSocket');
  expect((await s.t.request({ path: '/after' })).status).toBe(200);
});

test('server-sent events are parsed from a text/event-stream response', async () => {
  const s = await setup((_req, _body, res) => {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' });
    res.write(': hello\n\nevent: tick\nid: 1\ndata: one\n\n');
    setTimeout(() => {
      res.write('data: line1\r\n');
      res.write('data: line2\r\n\r\n');
      res.end('id: 3\ndata: {"n":3}\n\n');
    }, 50);
  });
  const res = await s.t.request({ path: '/events' });
  expect(res.body.toString()).toContain('data: line2');
  const d = await s.done('/events');
  expect(d.events).toBe(3);
  expect(d.sse!.events.map((e) => [e.event, e.id, e.data])).toEqual([
    ['tick', '1', 'one'],
    [undefined, undefined, 'line1\nline2'],
    [undefined, '3', '{"n":3}'],
  ]);
  expect(d.response!.body.kind).toBe('text');
});

test('replay sends the request again to the local server, as it was and edited, and records each one', async () => {
  const s = await setup((req, body, res) =>
    json(res, 200, { method: req.method, url: req.url, got: body.toString() }),
  );
  await s.t.request({
    method: 'POST',
    path: '/submit?x=1',
    headers: { Host: s.t.host, 'Content-Type': 'application/x-www-form-urlencoded', 'X-Custom': 'yes' },
    body: 'a=1&b=two',
  });
  const original = await s.done('/submit?x=1');
  expect(s.seen).toHaveLength(1);

  const again = await s.post(`/api/exchanges/${original.id}/replay`, {});
  expect(again.status).toBe(200);
  expect(again.json.id).toBeGreaterThan(original.id);
  await waitFor(() => s.seen.length === 2, 'the local server to get the replay');
  const replayed = s.seen[1]!;
  expect([replayed.method, replayed.url, replayed.body.toString()]).toEqual([
    'POST',
    '/submit?x=1',
    'a=1&b=two',
  ]);
  expect(replayed.headers['x-custom']).toBe('yes');
  expect(replayed.headers.host).toBe(s.t.host);
  expect(replayed.headers['content-length']).toBe('9');
  await waitFor(
    async () => (await s.get<Details>(`/api/exchanges/${again.json.id}`)).done,
    'the replay to finish',
  );
  const r = await s.get<Details>(`/api/exchanges/${again.json.id}`);
  expect(r).toMatchObject({ replayOf: original.id, status: 200, method: 'POST', target: '/submit?x=1' });
  expect(JSON.parse(r.response!.body.text!)).toEqual({
    method: 'POST',
    url: '/submit?x=1',
    got: 'a=1&b=two',
  });

  const edited = await s.post(`/api/exchanges/${original.id}/replay`, {
    method: 'PUT',
    target: '/edited?z=9',
    headers: [
      ['Host', 'edited.example'],
      ['X-Custom', 'edited'],
      ['Content-Type', 'text/plain'],
      ['Content-Length', '999'],
    ],
    body: 'new body',
  });
  expect(edited.status).toBe(200);
  await waitFor(() => s.seen.length === 3, 'the edited replay');
  const e = s.seen[2]!;
  expect([e.method, e.url, e.body.toString(), e.headers['x-custom'], e.headers['content-type']]).toEqual([
    'PUT',
    '/edited?z=9',
    'new body',
    'edited',
    'text/plain',
  ]);
  expect(e.headers['content-length']).toBe('8'); // framing is the replay's own
  expect(e.headers.host).toBe('edited.example');
  await waitFor(
    async () => (await s.get<Details>(`/api/exchanges/${edited.json.id}`)).done,
    'the edited replay to finish',
  );

  const binary = await s.post(`/api/exchanges/${original.id}/replay`, {
    bodyBase64: Buffer.from([0, 255, 1]).toString('base64'),
  });
  expect(binary.status).toBe(200);
  await waitFor(() => s.seen.length === 4, 'the binary replay');
  expect([...s.seen[3]!.body]).toEqual([0, 255, 1]);

  // Bad input never reaches the local server.
  expect((await s.post('/api/exchanges/99999/replay', {})).status).toBe(404);
  expect((await s.post(`/api/exchanges/${original.id}/replay`, { method: 'BAD METHOD' })).status).toBe(400);
  expect((await s.post(`/api/exchanges/${original.id}/replay`, { target: 'no-slash' })).status).toBe(400);
  expect(
    (await s.post(`/api/exchanges/${original.id}/replay`, { headers: [['X', 'a\r\nInjected: 1']] })).status,
  ).toBe(400);
  expect(
    (await s.post(`/api/exchanges/${original.id}/replay`, { body: 'a', bodyBase64: 'YQ==' })).status,
  ).toBe(400);
  expect(s.seen).toHaveLength(4);
  const list = await s.get<{ exchanges: Summary[] }>('/api/exchanges');
  expect(list.exchanges.filter((x) => x.replayOf === original.id)).toHaveLength(3);
});

const CURL = '/usr/bin/curl';

function bash(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', command], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('Copy as curl: a shell-safe command for the public URL that really sends the same request', async () => {
  const s = await setup((req, body, res) => json(res, 200, { got: body.length, url: req.url }));
  const tricky = `{"msg":"it's $(echo pwned) \`id\` \\"q\\""}`;
  await s.t.request({
    method: 'POST',
    path: '/curl?q=a%20b',
    headers: {
      Host: s.t.host,
      'Content-Type': 'application/json',
      'X-Quote': `it's "quoted" $HOME`,
      'Accept-Encoding': 'gzip',
    },
    body: tricky,
  });
  const d = await s.done('/curl?q=a%20b');
  const res = await fetch(`${s.inspector.url}/api/exchanges/${d.id}/curl`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
  const cmd = await res.text();
  expect(cmd).toContain(`curl '${s.t.client.url}/curl?q=a%20b'`);
  expect(cmd).toContain(`-H 'X-Quote: it'\\''s "quoted" $HOME'`);
  expect(cmd).toContain('--compressed');
  expect(cmd).toContain('--data-raw');
  expect(cmd).not.toMatch(/X-Forwarded|Content-Length|-H 'Host/i);

  // A binary body goes through base64 -d.
  const bytes = Buffer.from([0, 1, 2, 39, 255, 10, 13]);
  await s.t.request({
    method: 'PUT',
    path: '/bin',
    headers: { Host: s.t.host, 'Content-Type': 'application/octet-stream' },
    body: bytes,
  });
  const b = await s.done('/bin');
  const binCmd = await (await fetch(`${s.inspector.url}/api/exchanges/${b.id}/curl`)).text();
  expect(binCmd).toMatch(/^printf %s '?[A-Za-z0-9+/=]+'? \| base64 -d \| curl -X PUT /);

  if (!existsSync(CURL)) {
    console.warn(`skipping the run of the generated curl commands: ${CURL} is not installed`);
    return;
  }
  const run = await bash(cmd);
  expect(run.code, run.stderr).toBe(0);
  expect(JSON.parse(run.stdout)).toEqual({ got: Buffer.byteLength(tricky), url: '/curl?q=a%20b' });
  const again = s.seen[2]!;
  expect(again.body.toString()).toBe(tricky);
  expect(again.headers['x-quote']).toBe(`it's "quoted" $HOME`);
  expect(again.headers['content-type']).toBe('application/json');
  const runBin = await bash(binCmd);
  expect(runBin.code, runBin.stderr).toBe(0);
  expect([...s.seen[3]!.body]).toEqual([...bytes]);
  expect(s.seen[3]!.method).toBe('PUT');
});

interface HarEntry {
  startedDateTime: string;
  time: unknown;
  request: { url: string; queryString: unknown; cookies: unknown; postData?: unknown };
  response: { cookies: unknown; content: { size: unknown; mimeType: unknown; text?: string } };
  cache: unknown;
  timings: Record<string, number>;
}

test('the session exports as HAR 1.2 with every required field', async () => {
  const png = Buffer.concat([PNG_HEAD, Buffer.alloc(100)]);
  const s = await setup((req, _body, res) => {
    if (req.url === '/img') {
      res.writeHead(200, { 'Content-Type': 'image/png', 'Set-Cookie': 'sid=abc; Path=/' });
      res.end(png);
    } else json(res, 200, { ok: 1 });
  });
  await s.t.request({
    method: 'POST',
    path: '/form?a=1&b=x%20y',
    headers: { Host: s.t.host, 'Content-Type': 'application/json', Cookie: 'c1=v1; c2=v2' },
    body: '{"k":1}',
  });
  await s.t.request({ path: '/img' });
  await s.done('/img');
  const res = await fetch(`${s.inspector.url}/api/har`);
  expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="ggrok-.*\.har"$/);
  const har = (await res.json()) as {
    log: { version: string; creator: { name: string; version: unknown }; entries: HarEntry[] };
  };
  expect(har.log.version).toBe('1.2');
  expect(har.log.creator).toMatchObject({ name: 'ggrok' });
  expect(typeof har.log.creator.version).toBe('string');
  const entries = har.log.entries;
  expect(entries.map((e) => new URL(e.request.url).pathname)).toEqual(['/form', '/img']);
  for (const e of entries) {
    expect(new Date(e.startedDateTime).toISOString()).toBe(e.startedDateTime);
    expect(typeof e.time).toBe('number');
    for (const key of [
      'method',
      'url',
      'httpVersion',
      'cookies',
      'headers',
      'queryString',
      'headersSize',
      'bodySize',
    ])
      expect(e.request, `request.${key}`).toHaveProperty(key);
    for (const key of [
      'status',
      'statusText',
      'httpVersion',
      'cookies',
      'headers',
      'content',
      'redirectURL',
      'headersSize',
      'bodySize',
    ])
      expect(e.response, `response.${key}`).toHaveProperty(key);
    expect(typeof e.response.content.size).toBe('number');
    expect(typeof e.response.content.mimeType).toBe('string');
    expect(e.cache).toEqual({});
    for (const key of ['send', 'wait', 'receive']) expect(e.timings[key]).toBeGreaterThanOrEqual(0);
  }
  const [form, img] = entries;
  expect(form!.request.url).toBe(`${s.t.client.url}/form?a=1&b=x%20y`);
  expect(form!.request.queryString).toEqual([
    { name: 'a', value: '1' },
    { name: 'b', value: 'x y' },
  ]);
  expect(form!.request.cookies).toEqual([
    { name: 'c1', value: 'v1' },
    { name: 'c2', value: 'v2' },
  ]);
  expect(form!.request.postData).toMatchObject({ mimeType: 'application/json', text: '{\n  "k": 1\n}' });
  expect(form!.response.content).toMatchObject({ mimeType: 'application/json', text: '{\n  "ok": 1\n}' });
  expect(img!.response.cookies).toEqual([{ name: 'sid', value: 'abc' }]);
  expect(img!.response.content).toMatchObject({
    mimeType: 'image/png',
    encoding: 'base64',
    size: png.length,
  });
  expect(Buffer.from(img!.response.content.text!, 'base64').equals(png)).toBe(true);
});

test('foreign Host headers (DNS rebinding), non-JSON POSTs and cross-origin POSTs are refused', async () => {
  const s = await setup((_req, _body, res) => json(res, 200, {}));
  await s.t.request({ path: '/x' });
  const x = await s.done('/x');
  const port = Number(new URL(s.inspector.url).port);
  const status = async (
    headers: Record<string, string>,
    method = 'GET',
    path = '/api/exchanges',
    body?: string,
  ) => (await rawRequest({ port, method, path, headers, body })).status;
  expect(await status({ Host: `evil.example:${port}` })).toBe(403);
  expect(await status({ Host: `evil.example:${port}` }, 'GET', '/')).toBe(403);
  expect(await status({ Host: `127.0.0.1:${port + 1}` })).toBe(403);
  expect(await status({ Host: `localhost:${port}` })).toBe(200);
  expect(await status({ Host: `127.0.0.1:${port}` })).toBe(200);
  expect(await status({ Host: `[::1]:${port}` })).toBe(200);
  const replay = `/api/exchanges/${x.id}/replay`;
  expect(
    await status({ Host: `127.0.0.1:${port}`, 'Content-Type': 'text/plain' }, 'POST', replay, '{}'),
  ).toBe(415);
  expect(await status({ Host: `127.0.0.1:${port}` }, 'POST', replay, '{}')).toBe(415);
  expect(
    await status(
      { Host: `127.0.0.1:${port}`, 'Content-Type': 'application/json', Origin: 'http://evil.example' },
      'POST',
      replay,
      '{}',
    ),
  ).toBe(403);
  expect(
    await status({ Host: `evil.example:${port}`, 'Content-Type': 'application/json' }, 'POST', replay, '{}'),
  ).toBe(403);
  expect(s.seen).toHaveLength(1); // none of them replayed anything
  expect(
    await status(
      { Host: `127.0.0.1:${port}`, 'Content-Type': 'application/json', Origin: s.inspector.url },
      'POST',
      replay,
      '{}',
    ),
  ).toBe(200);
  await waitFor(() => s.seen.length === 2, 'the allowed replay');

  // The page itself: inline script and style allowed by a per-response nonce, nothing else.
  const page = await rawRequest({ port, path: '/', headers: { Host: `127.0.0.1:${port}` } });
  expect(page.status).toBe(200);
  const csp = String(page.headers['content-security-policy']);
  const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
  expect(nonce).toBeTruthy();
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(page.body.toString()).toContain(`<script nonce="${nonce}">`);
  expect(page.body.toString()).not.toMatch(/<(script|link)[^>]+(src|href)="https?:/);
});

/** Listens on 127.0.0.1:port; resolves false when the port is taken. */
function occupy(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => {
      cleanup.add(() => new Promise((r) => server.close(r)));
      resolve(server);
    });
  });
}

test('when the port is taken the next ones are tried; when all 21 are taken it says so', async () => {
  const blocker = await occupy(0);
  const base = (blocker!.address() as AddressInfo).port;
  const inspector = await startInspector({ port: base });
  cleanup.add(() => inspector.close());
  const port = Number(new URL(inspector.url).port);
  expect(port).toBeGreaterThan(base);
  expect(port).toBeLessThanOrEqual(base + 20);
  expect(inspector.url).toBe(`http://127.0.0.1:${port}`);
  expect((await fetch(`${inspector.url}/api/exchanges`)).status).toBe(200);
  // A port the user chose explicitly (portAttempts 0) is not silently replaced.
  await expect(startInspector({ port: base, portAttempts: 0 })).rejects.toMatchObject({
    code: 'inspector_port_in_use',
    message: expect.stringContaining(`port ${base} on 127.0.0.1 is taken`),
  });

  // Find 21 consecutive free ports and take them all.
  let start = 0;
  for (let attempt = 0; attempt < 20 && start === 0; attempt++) {
    const candidate = 20_000 + Math.floor(Math.random() * 40_000);
    const held: net.Server[] = [];
    for (let p = candidate; p <= candidate + 20; p++) {
      const s = await occupy(p);
      if (!s) break;
      held.push(s);
    }
    if (held.length === 21) start = candidate;
    else for (const s of held) s.close();
  }
  expect(start, 'could not find 21 free consecutive ports').toBeGreaterThan(0);
  await expect(startInspector({ port: start })).rejects.toMatchObject({ code: 'inspector_port_in_use' });
});
