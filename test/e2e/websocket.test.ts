// WebSockets through the tunnel: real `ws` clients on the public side, real `ws` (or raw) servers on the local side.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, expect, test } from 'vitest';
import WebSocket, { WebSocketServer, type ClientOptions, type RawData } from 'ws';
import {
  Cleanup,
  rawExchange,
  reply,
  startClient,
  startRelay,
  startTunnel,
  waitFor,
  type Tunnel,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A local WebSocket server that echoes every message with its type; remembers its sockets and upgrade requests. */
function echoServer(t: Tunnel, options: ConstructorParameters<typeof WebSocketServer>[0] = {}) {
  const wss = new WebSocketServer({ noServer: true, ...options });
  const sockets: Duplex[] = [];
  const upgrades: IncomingMessage[] = [];
  const clients: WebSocket[] = [];
  t.local.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrades.push(req);
    sockets.push(socket);
    socket.on('error', () => {});
    wss.handleUpgrade(req, socket, head, (ws) => {
      clients.push(ws);
      ws.on('error', () => {});
      ws.on('message', (data: RawData, isBinary: boolean) => ws.send(toBuffer(data), { binary: isBinary }));
      wss.emit('connection', ws, req);
    });
  });
  cleanup.add(() => {
    for (const ws of clients) ws.terminate();
    for (const s of sockets) s.destroy();
    wss.close();
  });
  return { wss, sockets, upgrades, clients };
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** A public `ws` client connecting through the relay with the tunnel's Host header. */
function connect(
  port: number,
  host: string,
  path = '/ws',
  protocols?: string[],
  options: ClientOptions = {},
): WebSocket {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocols, {
    ...options,
    headers: { Host: host, ...options.headers },
  });
  ws.on('error', () => {}); // tests assert on open/close/unexpected-response instead
  cleanup.add(() => ws.terminate());
  return ws;
}

async function opened(ws: WebSocket, timeoutMs = 15_000): Promise<void> {
  if (ws.readyState === WebSocket.OPEN) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('WebSocket did not open in time')), timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`unexpected response ${res.statusCode}`));
    });
  });
}

/** Collects the next `count` messages of a socket, in arrival order. */
function collect(
  ws: WebSocket,
  count: number,
  timeoutMs = 20_000,
): Promise<{ data: Buffer; isBinary: boolean }[]> {
  return new Promise((resolve, reject) => {
    const got: { data: Buffer; isBinary: boolean }[] = [];
    const timer = setTimeout(() => {
      ws.off('message', onMessage);
      reject(new Error(`got ${got.length} of ${count} messages`));
    }, timeoutMs);
    const onMessage = (data: RawData, isBinary: boolean): void => {
      got.push({ data: toBuffer(data), isBinary });
      if (got.length === count) {
        clearTimeout(timer);
        ws.off('message', onMessage);
        resolve(got);
      }
    };
    ws.on('message', onMessage);
  });
}

function closed(ws: WebSocket, timeoutMs = 15_000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return reject(new Error('already closed before waiting'));
    const timer = setTimeout(() => reject(new Error('WebSocket did not close in time')), timeoutMs);
    ws.once('close', (code: number, reason: Buffer) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

/** Resolves with the status, headers and body of a refused handshake. */
function refused(
  ws: WebSocket,
  timeoutMs = 15_000,
): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no unexpected-response in time')), timeoutMs);
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        });
      });
    });
  });
}

function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
}

/** An unmasked (server-to-client) text frame with a payload under 126 bytes. */
function serverTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

/** A masked (client-to-server) text frame with a payload under 126 bytes. */
function clientTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

const notFound = (_req: IncomingMessage, res: import('node:http').ServerResponse): void =>
  reply(res, 404, 'no');

test('text and binary messages echo intact and in order (1000 each, interleaved)', async () => {
  const t = await startTunnel(cleanup, notFound);
  echoServer(t);
  const ws = connect(t.relay.port, t.host);
  await opened(ws);
  const replies = collect(ws, 2000, 30_000);
  const expected: { data: Buffer; isBinary: boolean }[] = [];
  for (let i = 0; i < 1000; i++) {
    const text = Buffer.from(`text message #${i} ✓`);
    const bin = Buffer.alloc(8 + (i % 50));
    bin.writeUInt32BE(i, 0);
    bin.fill(i & 0xff, 4);
    ws.send(text.toString());
    ws.send(bin, { binary: true });
    expected.push({ data: text, isBinary: false }, { data: bin, isBinary: true });
  }
  const got = await replies;
  expect(got.map((m) => m.isBinary)).toEqual(expected.map((m) => m.isBinary));
  expect(got.map((m) => m.data.toString('hex'))).toEqual(expected.map((m) => m.data.toString('hex')));
});

test('a frame the local server sends in the same write as its 101 reaches the public client', async () => {
  const t = await startTunnel(cleanup, notFound);
  const sockets: Duplex[] = [];
  cleanup.add(() => sockets.forEach((s) => s.destroy()));
  t.local.server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    sockets.push(socket);
    socket.on('error', () => {});
    const head =
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(String(req.headers['sec-websocket-key']))}\r\n\r\n`;
    socket.write(Buffer.concat([Buffer.from(head, 'latin1'), serverTextFrame('hello from the 101 packet')]));
  });
  const ws = connect(t.relay.port, t.host);
  const first = collect(ws, 1);
  await opened(ws);
  const [message] = await first;
  expect(message?.isBinary).toBe(false);
  expect(message?.data.toString()).toBe('hello from the 101 packet');
});

test('bytes the public client sends in the same packet as its upgrade request reach the local server', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const seen: string[] = [];
  server.wss.on('connection', (ws: WebSocket) =>
    ws.on('message', (d: RawData) => seen.push(toBuffer(d).toString())),
  );
  const key = randomBytes(16).toString('base64');
  const request =
    `GET /early HTTP/1.1\r\nHost: ${t.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  const text = await rawExchange(
    t.relay.port,
    Buffer.concat([Buffer.from(request, 'latin1'), clientTextFrame('early bird')]),
    (s) => s.includes('\r\n\r\n') && s.slice(s.indexOf('\r\n\r\n')).includes('early bird'),
    15_000,
  );
  expect(text).toMatch(/^HTTP\/1\.1 101 /);
  expect(text).toContain(`Sec-WebSocket-Accept: ${acceptKey(key)}`);
  // The echo is an unmasked text frame right after the head.
  expect(text.slice(text.indexOf('\r\n\r\n') + 4)).toBe(serverTextFrame('early bird').toString('latin1'));
  await waitFor(() => seen.length > 0, 'the local server to receive the early frame');
  expect(seen).toEqual(['early bird']);
  expect(server.upgrades[0]?.url).toBe('/early');
});

test('subprotocols pass both ways and the chosen one is visible to the client', async () => {
  const t = await startTunnel(cleanup, notFound);
  const offered: string[][] = [];
  const server = echoServer(t, {
    handleProtocols: (protocols: Set<string>) => {
      offered.push([...protocols]);
      return protocols.has('chat.v2') ? 'chat.v2' : false;
    },
  });
  const ws = connect(t.relay.port, t.host, '/chat', ['chat.v1', 'chat.v2']);
  await opened(ws);
  expect(ws.protocol).toBe('chat.v2');
  expect(offered).toEqual([['chat.v1', 'chat.v2']]);
  expect(server.upgrades[0]?.headers['sec-websocket-protocol']?.split(/\s*,\s*/)).toEqual([
    'chat.v1',
    'chat.v2',
  ]);
  expect(server.clients[0]?.protocol).toBe('chat.v2');
  const reply1 = collect(ws, 1);
  ws.send('over chat.v2');
  expect((await reply1)[0]?.data.toString()).toBe('over chat.v2');
});

test('permessage-deflate is negotiated end to end and compressed frames cross the tunnel as they are', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t, { perMessageDeflate: { threshold: 0 } });
  const ws = connect(t.relay.port, t.host, '/deflate', undefined, { perMessageDeflate: { threshold: 0 } });
  await opened(ws);
  expect(ws.extensions).toContain('permessage-deflate');
  expect(server.upgrades[0]?.headers['sec-websocket-extensions']).toContain('permessage-deflate');
  expect(server.clients[0]?.extensions).toContain('permessage-deflate');
  const big = 'all work and no play makes jack a dull boy. '.repeat(24_000); // ~1 MiB, very compressible
  const replies = collect(ws, 3);
  ws.send('small');
  ws.send(big);
  ws.send(Buffer.from([0, 1, 2, 3, 255]), { binary: true });
  const got = await replies;
  expect(got[0]?.data.toString()).toBe('small');
  expect(got[1]?.data.toString()).toBe(big);
  expect(got[2]?.data.toString('hex')).toBe('00010203ff');
  // The local server's socket carried the compressed bytes: nobody inflated them on the way.
  const localSocket = server.sockets[0] as net.Socket;
  expect(localSocket.bytesRead).toBeGreaterThan(0);
  expect(localSocket.bytesRead).toBeLessThan(big.length / 10);
});

test('a 16 MiB binary message is echoed intact', async () => {
  const t = await startTunnel(cleanup, notFound);
  echoServer(t);
  const ws = connect(t.relay.port, t.host, '/big');
  await opened(ws);
  const payload = randomBytes(16 * 1024 * 1024);
  const replies = collect(ws, 1, 25_000);
  ws.send(payload, { binary: true });
  const [echo] = await replies;
  expect(echo?.isBinary).toBe(true);
  expect(echo?.data.length).toBe(payload.length);
  expect(createHash('sha256').update(echo!.data).digest('hex')).toBe(
    createHash('sha256').update(payload).digest('hex'),
  );
});

test('close codes and reasons propagate when the public client closes', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const serverClose = new Promise<{ code: number; reason: string }>((resolve) =>
    server.wss.on('connection', (ws: WebSocket) =>
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    ),
  );
  const ws = connect(t.relay.port, t.host);
  await opened(ws);
  const clientClose = closed(ws);
  ws.close(4321, 'bye');
  expect(await serverClose).toEqual({ code: 4321, reason: 'bye' });
  expect(await clientClose).toEqual({ code: 4321, reason: 'bye' });
});

test('close codes and reasons propagate when the local server closes', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const serverClose = new Promise<{ code: number; reason: string }>((resolve) =>
    server.wss.on('connection', (ws: WebSocket) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      ws.on('message', () => ws.close(4322, 'server says bye'));
    }),
  );
  const ws = connect(t.relay.port, t.host);
  await opened(ws);
  const clientClose = closed(ws);
  ws.send('please close');
  expect(await clientClose).toEqual({ code: 4322, reason: 'server says bye' });
  expect(await serverClose).toEqual({ code: 4322, reason: 'server says bye' });
});

test('a refused upgrade (403 with a body) reaches the client as it is', async () => {
  const t = await startTunnel(cleanup, notFound);
  const body = 'no websockets for you';
  t.local.server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    socket.end(
      `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Refused-By: local\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  const res = await refused(connect(t.relay.port, t.host, '/private'));
  expect(res.status).toBe(403);
  expect(res.headers['x-refused-by']).toBe('local');
  expect(res.body).toBe(body);
});

test('an app without upgrade support answers the upgrade as a request; its chunked refusal arrives whole', async () => {
  const t = await startTunnel(cleanup, (req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', 'X-Path': req.url ?? '' });
    res.write('this app ');
    setTimeout(() => res.end('speaks only http'), 20);
  });
  const res = await refused(connect(t.relay.port, t.host, '/app'));
  expect(res.status).toBe(426);
  expect(res.headers['x-path']).toBe('/app');
  expect(res.body).toBe('this app speaks only http');
});

test('300 concurrent channels each get their own messages back, with no crosstalk', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const CHANNELS = 300;
  const MESSAGES = 5;
  const sockets = Array.from({ length: CHANNELS }, (_, i) => connect(t.relay.port, t.host, `/chan/${i}`));
  await Promise.all(sockets.map((ws) => opened(ws, 30_000)));
  expect(server.clients.length).toBe(CHANNELS);
  const results = await Promise.all(
    sockets.map(async (ws, i) => {
      const replies = collect(ws, MESSAGES, 25_000);
      for (let j = 0; j < MESSAGES; j++) ws.send(`channel ${i} message ${j} ${'x'.repeat(i % 97)}`);
      return (await replies).map((m) => m.data.toString());
    }),
  );
  results.forEach((got, i) => {
    expect(got).toEqual(
      Array.from({ length: MESSAGES }, (_, j) => `channel ${i} message ${j} ${'x'.repeat(i % 97)}`),
    );
  });
  // Every local connection answered the path it was opened with.
  expect(new Set(server.upgrades.map((r) => r.url)).size).toBe(CHANNELS);
});

test('plain HTTP requests succeed while channels are open, and the channels keep working', async () => {
  const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `plain ${req.url}`));
  echoServer(t);
  const sockets = Array.from({ length: 20 }, (_, i) => connect(t.relay.port, t.host, `/open/${i}`));
  await Promise.all(sockets.map((ws) => opened(ws)));
  const responses = await Promise.all(
    Array.from({ length: 30 }, (_, i) => t.request({ path: `/page/${i}` })),
  );
  responses.forEach((res, i) => {
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(`plain /page/${i}`);
  });
  const echoes = await Promise.all(
    sockets.map(async (ws, i) => {
      const r = collect(ws, 1);
      ws.send(`still here ${i}`);
      return (await r)[0]?.data.toString();
    }),
  );
  expect(echoes).toEqual(sockets.map((_, i) => `still here ${i}`));
});

test('the local server dying closes the public socket', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const ws = connect(t.relay.port, t.host);
  await opened(ws);
  await waitFor(() => server.clients.length === 1, 'the local connection');
  const clientClose = closed(ws);
  server.clients[0]!.terminate(); // destroys the local socket without a closing handshake
  const { code } = await clientClose;
  expect(code).toBe(1006); // abnormal: no close frame was ever sent
  expect(ws.readyState).toBe(WebSocket.CLOSED);
});

test('the public client disappearing closes the local server socket', async () => {
  const t = await startTunnel(cleanup, notFound);
  const server = echoServer(t);
  const ws = connect(t.relay.port, t.host);
  await opened(ws);
  await waitFor(() => server.clients.length === 1, 'the local connection');
  const local = server.clients[0]!;
  const localClose = new Promise<number>((resolve) => local.once('close', (code: number) => resolve(code)));
  const localSocketClose = once(server.sockets[0]!, 'close');
  ws.terminate();
  await Promise.race([
    Promise.all([localClose, localSocketClose]),
    new Promise((_, reject) => setTimeout(() => reject(new Error('the local socket stayed open')), 15_000)),
  ]);
  expect(await localClose).toBe(1006);
  expect(local.readyState).toBe(WebSocket.CLOSED);
});

test('the public client disappearing before the local 101 still closes the local connection', async () => {
  const t = await startTunnel(cleanup, notFound);
  const wss = new WebSocketServer({ noServer: true });
  const sockets: Duplex[] = [];
  let accepted = 0;
  cleanup.add(() => sockets.forEach((s) => s.destroy()));
  t.local.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.push(socket);
    socket.on('error', () => {});
    // A slow handshake (say, an auth lookup): the public client is gone by the time it completes.
    setTimeout(
      () => wss.handleUpgrade(req, socket, head, (ws) => (accepted++, ws.on('error', () => {}))),
      300,
    );
  });
  const ws = connect(t.relay.port, t.host, '/slow');
  await waitFor(() => sockets.length === 1, 'the upgrade to reach the local server', 15_000);
  const localClosed = once(sockets[0]!, 'close');
  ws.terminate();
  await Promise.race([
    localClosed,
    new Promise((_, reject) => setTimeout(() => reject(new Error('the local socket stayed open')), 15_000)),
  ]);
  expect(accepted).toBe(1); // it did complete its handshake, then learned the client was gone
});

test('a local server that drops the connection without answering the upgrade gives a 502', async () => {
  const t = await startTunnel(cleanup, notFound);
  t.local.server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => socket.destroy());
  const res = await refused(connect(t.relay.port, t.host, '/drop'));
  expect(res.status).toBe(502);
  expect(res.headers['x-ggrok-error']).toBe('local_error');
});

/** Opens a raw public socket (half-open allowed) and sends an upgrade to a made-up protocol; resolves after the 101 head. */
async function rawUpgrade(
  t: Tunnel,
  path: string,
): Promise<{ socket: net.Socket; afterHead: () => Buffer; ended: Promise<void> }> {
  const socket = net.connect({ port: t.relay.port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  cleanup.add(() => socket.destroy());
  await once(socket, 'connect');
  let buf = Buffer.alloc(0);
  socket.on('data', (c: Buffer) => (buf = Buffer.concat([buf, c])));
  const ended = once(socket, 'end').then(() => undefined);
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: Upgrade\r\nUpgrade: byte-echo\r\n\r\n`,
  );
  await waitFor(() => buf.includes('\r\n\r\n'), 'the 101 head', 15_000);
  const headEnd = buf.indexOf('\r\n\r\n') + 4;
  expect(buf.subarray(0, headEnd).toString('latin1')).toMatch(
    /^HTTP\/1\.1 101 [^]*\r\nUpgrade: byte-echo\r\n/i,
  );
  return { socket, afterHead: () => buf.subarray(headEnd), ended };
}

/** Local raw upgrade handler: answers 101 and hands the socket to `serve`. */
function rawLocal(t: Tunnel, serve: (socket: net.Socket) => void): void {
  const sockets: net.Socket[] = [];
  cleanup.add(() => sockets.forEach((s) => s.destroy()));
  t.local.server.on('upgrade', (_req: IncomingMessage, socket: net.Socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: byte-echo\r\n\r\n');
    serve(socket);
  });
}

test('End is a half-close: the local side still answers after the public client ended its side', async () => {
  const t = await startTunnel(cleanup, notFound);
  rawLocal(t, (socket) => {
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('end', () => socket.end(`you said: ${Buffer.concat(got).toString()}`));
  });
  const pub = await rawUpgrade(t, '/half');
  pub.socket.write('hello ');
  pub.socket.end('world');
  await Promise.race([
    pub.ended,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no end from the relay')), 15_000)),
  ]);
  expect(pub.afterHead().toString()).toBe('you said: hello world');
});

// Catches the relay resetting a channel on the public socket's 'close' while its queued bytes and End are still
// waiting for window (relay/public-request.ts forwardUpgrade): the local side then sees a clean but truncated end.
test('End is a half-close: the public client may still upload everything after the local side ended', async () => {
  const t = await startTunnel(cleanup, notFound);
  const upload = randomBytes(4 * 1024 * 1024);
  let received = 0;
  const hash = createHash('sha256');
  const localDone = new Promise<string>((resolve) => {
    rawLocal(t, (socket) => {
      socket.end('send me your file'); // done talking; keep reading
      socket.on('data', (c: Buffer) => {
        received += c.length;
        hash.update(c);
      });
      socket.on('end', () => resolve('end'));
      socket.on('close', () => resolve('close'));
    });
  });
  const pub = await rawUpgrade(t, '/upload');
  await Promise.race([
    pub.ended,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no end from the relay')), 15_000)),
  ]);
  expect(pub.afterHead().toString()).toBe('send me your file');
  pub.socket.end(upload);
  const how = await Promise.race([
    localDone,
    new Promise<string>((_, reject) => setTimeout(() => reject(new Error('upload never finished')), 20_000)),
  ]);
  expect({ how, received }).toEqual({ how: 'end', received: upload.length });
  expect(hash.digest('hex')).toBe(createHash('sha256').update(upload).digest('hex'));
});

test('an upgrade to a local port where nothing listens gets a 502', async () => {
  // Find a port that was just free, and leave it closed.
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const deadPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const relay = await startRelay(cleanup);
  const client = await startClient(cleanup, relay.url, `127.0.0.1:${deadPort}`, { subdomain: 'nobody' });
  const res = await refused(connect(relay.port, new URL(client.url).host, '/ws'));
  expect(res.status).toBe(502);
  expect(res.headers['x-ggrok-error']).toBe('local_unreachable');
  expect(res.body).toContain(String(deadPort));
});
