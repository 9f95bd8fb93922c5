// Request and response framing through the tunnel: what a Connection header names, duplicate Host headers, bodies
// that disagree with their length, trailers. The local service must parse exactly the requests the relay accepted.
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { ResponseParser } from '../../cli/http1-response.js';
import { decodeMessage, encodeFrame } from '../../protocol/codec.js';
import { DEFAULT_FLOW, FrameType, PROTOCOL_VERSION, type Frame } from '../../protocol/frames.js';
import {
  Cleanup,
  rawExchange,
  startTunnel,
  TOKEN,
  waitFor,
  type SeenRequest as Seen,
  type Tunnel,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A keep-alive local service that records every request and answers with the request's X-Tag. */
async function recordingTunnel(c: Cleanup, seen: Seen[]): Promise<Tunnel> {
  return startTunnel(c, (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, body });
      const tag = req.headers['x-tag'];
      const delay = req.url === '/slow' ? 300 : 0;
      setTimeout(() => {
        res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Tag': String(tag ?? 'none') });
        res.end(`${req.method} ${req.url} ${body.length}`);
      }, delay);
    });
  });
}

/** The raw request bytes for one visitor request. */
function raw(host: string, method: string, path: string, headers: string[], body = ''): string {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
  for (let i = 0; i < headers.length; i += 2) lines.push(`${headers[i]}: ${headers[i + 1]}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** Responses read off one visitor connection, parsed in order for the given request methods. */
function readResponses(
  socket: net.Socket,
  methods: string[],
): Promise<{ status: number; headers: string[]; body: string }[]> {
  const out: { status: number; headers: string[]; body: string }[] = [];
  let current: { status: number; headers: string[]; body: string } | undefined;
  const parser: ResponseParser = new ResponseParser({
    onHead: (status, _reason, headers, info) => {
      if (!info) current = { status, headers, body: '' };
    },
    onBody: (chunk) => {
      if (current) current.body += chunk.toString('latin1');
    },
    onDone: () => {
      out.push(current!);
      current = undefined;
      if (out.length < methods.length) parser.expect(methods[out.length]!, false);
    },
    onUpgrade: () => {},
  });
  parser.expect(methods[0]!, false);
  return new Promise((resolve) => {
    socket.on('data', (data: Buffer) => {
      try {
        parser.execute(data);
      } catch {
        socket.destroy();
      }
      if (out.length === methods.length) socket.destroy();
    });
    socket.on('close', () => resolve(out));
    socket.on('error', () => {});
  });
}

async function visit(port: number, data: string, methods: string[]) {
  const socket = net.connect(port, '127.0.0.1');
  socket.setTimeout(10_000, () => socket.destroy());
  await once(socket, 'connect');
  const responses = readResponses(socket, methods);
  socket.write(data, 'latin1');
  return responses;
}

const header = (h: string[], name: string): string | undefined => {
  for (let i = 0; i < h.length; i += 2) if (h[i]!.toLowerCase() === name) return h[i + 1];
  return undefined;
};

describe('Connection may not remove framing or routing fields', () => {
  test('Connection: Content-Length does not turn the body into a smuggled request', async () => {
    const seen: Seen[] = [];
    const t = await recordingTunnel(cleanup, seen);
    const smuggled = 'GET /SMUGGLED HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n';
    const text = await rawExchange(
      t.relay.port,
      raw(
        t.host,
        'POST',
        '/a',
        ['Connection', 'Content-Length', 'Content-Length', String(smuggled.length), 'X-Tag', 'a'],
        smuggled,
      ),
      (s) => s.includes(`POST /a ${smuggled.length}`),
    );
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    // The same pooled local connection serves the next visitor.
    const after = await t.request({ path: '/after' });
    expect(after.body.toString()).toBe('GET /after 0');
    expect(seen.map((s) => [s.method, s.url])).toEqual([
      ['POST', '/a'],
      ['GET', '/after'],
    ]);
    expect(seen[0]!.body.toString('latin1')).toBe(smuggled);
  });

  test("an unfinished request in a body cannot capture the next visitor's request", async () => {
    const seen: Seen[] = [];
    const t = await recordingTunnel(cleanup, seen);
    const trap = `POST /capture HTTP/1.1\r\nHost: x\r\nContent-Length: 160\r\n\r\n`;
    await rawExchange(
      t.relay.port,
      raw(
        t.host,
        'POST',
        '/slow',
        ['Connection', 'content-length', 'Content-Length', String(trap.length)],
        trap,
      ),
      (s) => s.includes('POST /slow'),
    );
    const victim = await t.request({
      path: '/private',
      headers: { Host: t.host, Cookie: 'session=victim-secret', Authorization: 'Bearer victim' },
    });
    expect([victim.status, victim.body.toString()]).toEqual([200, 'GET /private 0']);
    expect(seen.map((s) => s.url)).toEqual(['/slow', '/private']);
    expect(header(seen[1]!.rawHeaders, 'cookie')).toBe('session=victim-secret');
    expect(seen[0]!.body.toString('latin1')).toBe(trap);
  });

  test('Connection: Host, Authorization or X-Forwarded-For leave those fields in place', async () => {
    const seen: Seen[] = [];
    const t = await recordingTunnel(cleanup, seen);
    const res = await t.request({
      headers: {
        Host: t.host,
        Connection: 'Host, Authorization, X-Forwarded-For, X-Hop',
        Authorization: 'Bearer app-token',
        'X-Hop': 'dropped',
      },
    });
    expect(res.status).toBe(200);
    const h = seen[0]!.rawHeaders;
    expect(header(h, 'host')).toBe(t.host);
    expect(header(h, 'authorization')).toBe('Bearer app-token');
    expect(header(h, 'x-forwarded-for')).toBe('127.0.0.1');
    expect(header(h, 'x-hop')).toBeUndefined();
    expect(header(h, 'connection')).toBeUndefined();
  });

  test('two Host headers, an unknown transfer coding and an upgrade with a body are refused', async () => {
    const seen: Seen[] = [];
    const t = await recordingTunnel(cleanup, seen);
    const twoHosts = await rawExchange(
      t.relay.port,
      `GET / HTTP/1.1\r\nHost: ${t.host}\r\nHost: other.example\r\n\r\n`,
    );
    expect(twoHosts).toMatch(/^HTTP\/1\.1 400 /);
    const gzip = await rawExchange(
      t.relay.port,
      raw(t.host, 'POST', '/', ['Transfer-Encoding', 'gzip, chunked'], '3\r\nabc\r\n0\r\n\r\n'),
    );
    expect(gzip).toMatch(/^HTTP\/1\.1 501 /);
    const upgradeBody = await rawExchange(
      t.relay.port,
      raw(
        t.host,
        'GET',
        '/',
        ['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Content-Length', '5'],
        'GET /SMUGGLED HTTP/1.1\r\n\r\n',
      ),
    );
    expect(upgradeBody).toMatch(/^HTTP\/1\.1 400 /);
    expect(seen).toEqual([]);
  });

  test('trailers that could reframe or reroute are dropped both ways; others pass', async () => {
    let got: string[] = [];
    const t = await startTunnel(cleanup, (req, res) => {
      req.resume();
      req.on('end', () => {
        got = req.rawTrailers;
        res.writeHead(200, { 'Transfer-Encoding': 'chunked', Trailer: 'X-Checksum' });
        res.write('body');
        res.addTrailers([
          ['X-Checksum', 'abc'],
          ['Content-Length', '999'],
          ['Set-Cookie', 'evil=1'],
        ]);
        res.end();
      });
    });
    const text = await rawExchange(
      t.relay.port,
      raw(
        t.host,
        'POST',
        '/',
        ['Transfer-Encoding', 'chunked'],
        // (Node's own parser already refuses Content-Length in request trailers with a 400.)
        '4\r\nbody\r\n0\r\nX-Sum: 1\r\nHost: evil.example\r\nAuthorization: Basic eA==\r\n\r\n',
      ),
      (s) => s.endsWith('\r\n\r\n') && s.includes('X-Checksum'),
    );
    expect(got).toEqual(['X-Sum', '1']);
    expect(text).toContain('X-Checksum: abc');
    expect(text).not.toContain('999');
    expect(text).not.toContain('evil=1');
  });
});

/** A control socket speaking the protocol by hand: a client that answers public requests however a test wants. */
async function hostileClient(port: number, name: string) {
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
      token: TOKEN,
      name,
      agent: 'hostile-test',
      clientId: 'hostile',
      flow: DEFAULT_FLOW,
    }),
  );
  await waitFor(() => frames.length > 0, 'the welcome');
  expect(frames[0]).toMatchObject({ type: FrameType.Welcome });
  return { ws, frames };
}

describe('a response whose body disagrees with its Content-Length is cut, never passed on', () => {
  test.each([
    ['longer', 'abcHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged'],
    ['shorter', 'ab'],
  ])('a body %s than declared', async (_what, body) => {
    const t = await startTunnel(cleanup, (_req, res) => res.end('real'));
    const { ws, frames } = await hostileClient(t.relay.port, 'liar');
    const host = t.host.replace(/^demo\./, 'liar.');
    const socket = net.connect(t.relay.port, '127.0.0.1');
    await once(socket, 'connect');
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => {});
    socket.write(`GET /one HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /two HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    await waitFor(() => frames.some((f) => f.type === FrameType.Request), 'the request');
    const request = frames.find((f) => f.type === FrameType.Request)!;
    ws.send(
      encodeFrame({
        type: FrameType.Response,
        id: (request as { id: number }).id,
        status: 200,
        reason: 'OK',
        headers: ['Content-Length', '3'],
        body: Buffer.from(body),
        end: true,
      }),
    );
    await once(socket, 'close');
    expect(text).not.toContain('forged');
    expect(text.match(/HTTP\/1\.1 /g)?.length ?? 0).toBeLessThanOrEqual(1);
    expect(text.length).toBeLessThan(text.indexOf('\r\n\r\n') + 4 + 3 + 1);
  });
});

describe('differential: the local service parses exactly the requests the relay accepted', () => {
  const seen: Seen[] = [];
  const shared = new Cleanup();
  let t: Tunnel;
  beforeAll(async () => {
    t = await recordingTunnel(shared, seen);
  });
  afterAll(() => shared.run());

  const NAMES = [
    'X-A',
    'x-a',
    'Accept',
    'Cookie',
    'X-Forwarded-For',
    'Authorization',
    'Content-Type',
    'X-Long',
  ];
  const CONNECTION_TOKENS = [
    'Content-Length',
    'content-length',
    'Host',
    'Transfer-Encoding',
    'TE',
    'X-A',
    'keep-alive',
    'Authorization',
    'Upgrade',
    'X-Forwarded-For',
    'Cookie',
  ];
  const printable = fc.stringMatching(/^[\x21-\x7e][\x20-\x7e]{0,20}$/);
  const bodyText = fc.oneof(
    fc.constant(''),
    fc.constant('GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n'),
    fc.constant('POST /trap HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n'),
    fc.constant('0\r\n\r\n'),
    fc.string({ maxLength: 64 }).map((s) => s.replace(/[^\x20-\x7e\r\n]/g, 'x')),
  );
  const request = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
    path: fc.stringMatching(/^\/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,20}(\?[A-Za-z0-9=&%]{0,12})?$/),
    headers: fc.array(fc.tuple(fc.constantFrom(...NAMES), printable), { maxLength: 6 }),
    connection: fc.option(fc.subarray(CONNECTION_TOKENS, { minLength: 1 }), { nil: undefined }),
    framing: fc.constantFrom('none', 'length', 'chunked'),
    body: bodyText,
    chunkAt: fc.nat(),
  });

  test('generated requests, pipelined on one connection', async () => {
    let tag = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 4 }), async (requests) => {
        const from = seen.length;
        const sent: { method: string; path: string; body: string; tag: string }[] = [];
        let data = '';
        for (const r of requests) {
          const id = `t${++tag}`;
          const headers: string[] = ['X-Tag', id];
          for (const [name, value] of r.headers) headers.push(name, value);
          if (r.connection) headers.push('Connection', r.connection.join(', '));
          let body = '';
          if (r.framing === 'length') {
            headers.push('Content-Length', String(Buffer.byteLength(r.body, 'latin1')));
            body = r.body;
          } else if (r.framing === 'chunked' && r.body.length > 0) {
            headers.push('Transfer-Encoding', 'chunked');
            const cut = r.chunkAt % r.body.length;
            const parts = [r.body.slice(0, cut), r.body.slice(cut)].filter((p) => p.length > 0);
            body = `${parts.map((p) => `${p.length.toString(16)}\r\n${p}\r\n`).join('')}0\r\n\r\n`;
          }
          const kept = r.framing === 'none' || (r.framing === 'chunked' && r.body.length === 0) ? '' : r.body;
          sent.push({ method: r.method, path: r.path, body: kept, tag: id });
          data += raw(t.host, r.method, r.path, headers, body);
        }
        const responses = await visit(
          t.relay.port,
          data,
          sent.map((s) => s.method),
        );
        // Every response answers the request in its position; the local service's answers carry its tag.
        const accepted: typeof sent = [];
        responses.forEach((res, i) => {
          if (res.status === 200) {
            expect(header(res.headers, 'x-tag')).toBe(sent[i]!.tag);
            accepted.push(sent[i]!);
          } else {
            expect(header(res.headers, 'x-ggrok-error')).toBeDefined();
          }
        });
        // Nothing reached the local service that the relay did not accept, and everything arrived intact.
        await waitFor(() => seen.length - from >= accepted.length, 'the local service to see every request');
        const parsed = seen.slice(from);
        expect(
          parsed.map((s) => [s.method, s.url, s.body.toString('latin1'), header(s.rawHeaders, 'x-tag')]),
        ).toEqual(accepted.map((s) => [s.method, s.path, s.body, s.tag]));
        for (const s of parsed) expect(header(s.rawHeaders, 'host')).toBe(t.host);
      }),
      { numRuns: 60 },
    );
    // The pooled local connections are still in step: a plain request afterwards is answered by its own response.
    const last = await t.request({ path: '/final', headers: { Host: t.host, 'X-Tag': 'final' } });
    expect([last.body.toString(), last.headers['x-tag']]).toEqual(['GET /final 0', 'final']);
  });
});
