// The client's own HTTP/1.1 client against raw local servers that write exact bytes: malformed responses,
// close-delimited bodies, keep-alive reuse and idle close, upgrades split across writes, byte-at-a-time responses.
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Cleanup, startRawServer, rawRequest, sleep, startClient, startRelay, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** One connection the raw local server accepted. */
interface LocalConn {
  socket: net.Socket;
  /** Request heads seen on it, in order (bodiless requests only). */
  heads: string[];
  /** When the client closed or reset the connection (ms since epoch), once it has. */
  endedAt?: number;
}

/** Called for each request head; `index` numbers the connection. Writes the exact response bytes itself. */
type Answer = (conn: LocalConn, head: string, index: number) => void | Promise<void>;

/** A raw `net` local server on 127.0.0.1 port 0 that splits bodiless requests at CRLF CRLF and answers each. */
async function rawLocal(answer: Answer): Promise<{ port: number; conns: LocalConn[] }> {
  const conns: LocalConn[] = [];
  const port = await startRawServer(
    cleanup,
    (socket) => {
      const conn: LocalConn = { socket, heads: [] };
      const index = conns.push(conn) - 1;
      socket.on('end', () => {
        conn.endedAt ??= Date.now();
        socket.end();
      });
      socket.on('close', () => (conn.endedAt ??= Date.now()));
      let buf = '';
      let chain = Promise.resolve();
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        let end: number;
        while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          conn.heads.push(head);
          chain = chain.then(() => answer(conn, head, index));
        }
      });
    },
    { allowHalfOpen: true },
  );
  return { port, conns };
}

/** A relay and a client exposing `port`; returns the public port and the tunnel's Host header. */
async function tunnelTo(port: number): Promise<{ relayPort: number; host: string }> {
  const relay = await startRelay(cleanup);
  const client = await startClient(cleanup, relay.url, port, { subdomain: 'demo' });
  return { relayPort: relay.port, host: new URL(client.url).host };
}

/** A raw local server answering "conn <index>" that, while `barrier.on`, holds answers until `size` requests wait. */
async function barrierLocal(size: number) {
  const barrier = { on: true, waiting: [] as Array<() => void> };
  const local = await rawLocal(async (conn, _head, index) => {
    if (barrier.on)
      await new Promise<void>((release) => {
        barrier.waiting.push(release);
        if (barrier.waiting.length === size) for (const r of barrier.waiting.splice(0)) r();
      });
    const text = `conn ${index}`;
    conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${text.length}\r\n\r\n${text}`, 'latin1');
  });
  return { local, barrier };
}

/** `n` GETs sent at once through the tunnel, each on its own public connection; their statuses. */
function getsAtOnce(n: number, relayPort: number, host: string): Promise<number[]> {
  return Promise.all(
    Array.from(
      { length: n },
      async () => (await rawRequest({ port: relayPort, headers: { Host: host } })).status,
    ),
  );
}

/** Writes `data` one byte per write, with a short pause between writes so each is its own segment. */
async function dribble(socket: net.Socket, data: string): Promise<void> {
  for (const byte of Buffer.from(data, 'latin1')) {
    if (socket.destroyed) return;
    socket.write(Buffer.from([byte]));
    await sleep(1);
  }
}

test('a malformed response head gives the public client a 502 that says "invalid response"', async () => {
  const responses = [
    'HTTP/1.1 200 OK\r\nBad Header Line\r\nContent-Length: 2\r\n\r\nok',
    'SSH-2.0-OpenSSH_9.6\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok',
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
  ];
  const local = await rawLocal((conn, head) => {
    const i = Number(/^GET \/(\d+)/.exec(head)![1]);
    conn.socket.write(responses[i]!, 'latin1');
  });
  const { relayPort, host } = await tunnelTo(local.port);
  for (let i = 0; i < responses.length; i++) {
    const res = await rawRequest({ port: relayPort, path: `/${i}`, headers: { Host: host } });
    expect(res.status, responses[i]).toBe(502);
    expect(res.headers['x-ggrok-error']).toBe('local_error');
    expect(res.body.toString()).toContain('invalid response');
  }
  // Every malformed answer cost its connection: none was reused.
  expect(local.conns.map((c) => c.heads.length)).toEqual(responses.map(() => 1));
  await waitFor(() => local.conns.every((c) => c.endedAt !== undefined), 'the client to close them');
});

test('a malformed chunk after the head cuts the public response instead of ending it cleanly', async () => {
  const local = await rawLocal((conn) => {
    conn.socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', 'latin1');
    setTimeout(() => conn.socket.write('zz\r\nnot a chunk\r\n'), 50);
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const outcome = await new Promise<{ status: number; complete: boolean; body: string }>((resolve) => {
    const req = http.get(
      { host: '127.0.0.1', port: relayPort, agent: false, headers: { Host: host } },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('error', () => {});
        res.on('close', () => resolve({ status: res.statusCode ?? 0, complete: res.complete, body }));
      },
    );
    req.on('error', () => resolve({ status: 0, complete: false, body: '' }));
  });
  expect(outcome).toEqual({ status: 200, complete: false, body: 'hello' });
});

test('an HTTP/1.0 response delimited by close arrives whole', async () => {
  const body = randomBytes(300 * 1024);
  const local = await rawLocal(async (conn) => {
    const { socket } = conn;
    socket.write('HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nX-Old: yes\r\n\r\n', 'latin1');
    for (let at = 0; at < body.length; at += 7001) {
      if (!socket.write(body.subarray(at, at + 7001))) await once(socket, 'drain');
      if (at % (7001 * 8) === 0) await sleep(1); // some pauses, so the body spans many reads
    }
    socket.end();
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const res = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(res.status).toBe(200);
  expect(res.headers['x-old']).toBe('yes');
  expect(res.body.length).toBe(body.length);
  expect(res.body.equals(body)).toBe(true);
  // The connection ended with the body: the next request needs (and gets) a new one.
  const again = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(again.body.equals(body)).toBe(true);
  expect(local.conns).toHaveLength(2);
});

test('a keep-alive response with Content-Length leaves the connection for the next request', async () => {
  let served = 0;
  const local = await rawLocal((conn, head, index) => {
    const path = /^GET (\S+)/.exec(head)![1]!;
    const text = `conn ${index} request ${++served}`;
    const extra = path === '/close' ? 'Connection: close\r\n' : '';
    conn.socket.write(
      `HTTP/1.1 200 OK\r\n${extra}Content-Length: ${text.length}\r\nContent-Type: text/plain\r\n\r\n${text}`,
      'latin1',
    );
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const get = async (path = '/') =>
    (await rawRequest({ port: relayPort, path, headers: { Host: host } })).body.toString();
  expect(await get()).toBe('conn 0 request 1');
  expect(await get()).toBe('conn 0 request 2');
  expect(await get()).toBe('conn 0 request 3');
  expect(local.conns).toHaveLength(1);
  expect(local.conns[0]!.heads).toHaveLength(3);
  expect(local.conns[0]!.endedAt).toBeUndefined();
  // After "Connection: close" the client closes that connection and opens another for the next request.
  expect(await get('/close')).toBe('conn 0 request 4');
  await waitFor(() => local.conns[0]!.endedAt !== undefined, 'the client to close the connection');
  expect(await get()).toBe('conn 1 request 5');
  expect(await get()).toBe('conn 1 request 6');
  expect(local.conns).toHaveLength(2);
});

test('a hundred requests at once leave a hundred connections that the next hundred reuse', async () => {
  // The local server holds every answer until the whole wave has arrived, so each wave needs 100 connections at once.
  const WAVE = 100;
  const { local } = await barrierLocal(WAVE);
  const { relayPort, host } = await tunnelTo(local.port);
  expect(await getsAtOnce(WAVE, relayPort, host)).toEqual(Array(WAVE).fill(200));
  expect(local.conns).toHaveLength(WAVE);
  expect(await getsAtOnce(WAVE, relayPort, host)).toEqual(Array(WAVE).fill(200));
  // Every connection served one request of each wave: none was closed for want of room in the idle pool.
  expect(local.conns).toHaveLength(WAVE);
  expect(local.conns.map((c) => c.heads.length)).toEqual(Array(WAVE).fill(2));
  expect(local.conns.filter((c) => c.endedAt !== undefined)).toHaveLength(0);
});

test('a connection with bytes after its response (a HEAD answered with a body) is not reused', async () => {
  const local = await rawLocal((conn, head, index) => {
    if (head.startsWith('HEAD '))
      return void conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray', 'latin1');
    conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${index}`, 'latin1');
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const head = await rawRequest({ port: relayPort, method: 'HEAD', headers: { Host: host } });
  expect(head.status).toBe(200);
  expect(head.headers['content-length']).toBe('5');
  expect(head.body.length).toBe(0);
  // At once, not after the idle timeout: the connection must not have gone back to the pool at all.
  const get = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(get.body.toString()).toBe('conn 1');
  expect(local.conns.map((c) => c.heads.length)).toEqual([1, 1]);
  await waitFor(() => local.conns[0]!.endedAt !== undefined, 'the client to close the connection', 2000);
});

test('a local server that closes a fresh connection without answering gives a 502', async () => {
  const local = await rawLocal((conn) => void conn.socket.end());
  const { relayPort, host } = await tunnelTo(local.port);
  const res = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(res.status).toBe(502);
  expect(res.headers['x-ggrok-error']).toBe('local_error');
  // The page says what happened, not that a response was malformed.
  expect(res.body.toString()).toContain('closed the connection without answering');
  expect(local.conns).toHaveLength(1); // a fresh connection is not retried
});

test('a reused keep-alive connection closed without an answer is retried once on a fresh one, if bodiless', async () => {
  // Each connection answers its first request and closes at its second, as a server whose keep-alive timeout
  // fires just as the client reuses the connection.
  const local = await rawLocal((conn, _head, index) => {
    if (conn.heads.length > 1) return void conn.socket.end();
    conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${index}`, 'latin1');
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const get = async () => (await rawRequest({ port: relayPort, headers: { Host: host } })).body.toString();
  expect(await get()).toBe('conn 0');
  expect(await get()).toBe('conn 1'); // tried on conn 0, which closed; retried on conn 1
  expect(local.conns.map((c) => c.heads.length)).toEqual([2, 1]);
  // A request with a body is not replayed: its body may have been consumed.
  const post = await rawRequest({
    port: relayPort,
    method: 'POST',
    headers: { Host: host, 'Content-Length': '3' },
    body: 'abc',
  });
  expect(post.status).toBe(502);
  expect(post.headers['x-ggrok-error']).toBe('local_error');
  expect(local.conns).toHaveLength(2);
});

test('a request with a body does not reuse a connection idle for over a second (a short keep-alive may close it)', async () => {
  // As above, each connection closes at its second request, like a server whose keep-alive timeout just fired.
  const local = await rawLocal((conn, head, index) => {
    if (conn.heads.length > 1) return void conn.socket.end();
    const text = `${head.split(' ')[0]} on conn ${index}`;
    conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${text.length}\r\n\r\n${text}`, 'latin1');
  });
  const { relayPort, host } = await tunnelTo(local.port);
  expect((await rawRequest({ port: relayPort, headers: { Host: host } })).body.toString()).toBe(
    'GET on conn 0',
  );
  await sleep(1200);
  const post = await rawRequest({
    port: relayPort,
    method: 'POST',
    headers: { Host: host, 'Content-Length': '3' },
    body: 'abc',
  });
  expect(post.status).toBe(200);
  expect(post.body.toString()).toBe('POST on conn 1');
  // Connection 0 stayed in the pool untouched; a bodiless request may still use it (and be retried if it fails).
  expect(local.conns[0]!.heads).toHaveLength(1);
});

test('with the idle pool full, the connection idle longest makes room for a fresh one a body can use', async () => {
  // 260 requests held until all have arrived: 260 connections, of which the pool keeps 256 when they finish.
  const WAVE = 260;
  const { local, barrier } = await barrierLocal(WAVE);
  const { relayPort, host } = await tunnelTo(local.port);
  expect(await getsAtOnce(WAVE, relayPort, host)).toEqual(Array(WAVE).fill(200));
  barrier.on = false;
  await sleep(1100); // every pooled connection is now too old to carry a body
  const post = () =>
    rawRequest({
      port: relayPort,
      method: 'POST',
      headers: { Host: host, 'Content-Length': '3' },
      body: 'abc',
    });
  expect((await post()).body.toString()).toBe(`conn ${WAVE}`); // a fresh connection
  // The fresh connection was kept (the oldest idle one made room), so the next body reuses it.
  expect((await post()).body.toString()).toBe(`conn ${WAVE}`);
  expect(local.conns).toHaveLength(WAVE + 1);
});

test('a connection whose response was paused for a slow visitor does not carry the next body', async () => {
  // While the visitor is not reading, the server may finish its response and start its keep-alive timer long before
  // the client reads the end, so how long the connection has been idle is unknown.
  const SIZE = 16 * 1024 * 1024;
  const local = await rawLocal((conn, head, index) => {
    if (head.startsWith('GET')) {
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\n\r\n`, 'latin1');
      conn.socket.write(Buffer.alloc(SIZE, 7));
    } else {
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${index}`, 'latin1');
    }
  });
  const { relayPort, host } = await tunnelTo(local.port);
  // A visitor that reads nothing for a while, then everything.
  const visitor = net.connect(relayPort, '127.0.0.1');
  cleanup.add(() => visitor.destroy());
  visitor.pause();
  visitor.write(`GET /big HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  await sleep(500);
  let got = 0;
  visitor.on('data', (d: Buffer) => (got += d.length));
  visitor.resume();
  await once(visitor, 'end');
  expect(got).toBeGreaterThan(SIZE);
  const post = await rawRequest({
    port: relayPort,
    method: 'POST',
    headers: { Host: host, 'Content-Length': '3' },
    body: 'abc',
  });
  expect(post.body.toString()).toBe('conn 1');
  expect(local.conns).toHaveLength(2);
});

test("a server's Keep-Alive timeout is honoured with a second to spare; under two seconds the connection is not kept", async () => {
  const local = await rawLocal((conn, head, index) => {
    const timeout = /^GET \/timeout=(\d+)/.exec(head)![1]!;
    const text = `conn ${index}`;
    conn.socket.write(
      `HTTP/1.1 200 OK\r\nKeep-Alive: timeout=${timeout}\r\nContent-Length: ${text.length}\r\n\r\n${text}`,
      'latin1',
    );
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const get = async (path: string) =>
    (await rawRequest({ port: relayPort, path, headers: { Host: host } })).body.toString();
  // timeout=5 (Node's default): kept, and reused at once.
  expect(await get('/timeout=5')).toBe('conn 0');
  // timeout=2: offered for one second only.
  expect(await get('/timeout=2')).toBe('conn 0');
  await sleep(1300);
  expect(await get('/timeout=1')).toBe('conn 1');
  await waitFor(() => local.conns[0]!.endedAt !== undefined, 'the client to close the expired connection');
  // timeout=1: not kept at all; the next request opens another connection.
  await waitFor(() => local.conns[1]!.endedAt !== undefined, 'the client to close the connection');
  expect(await get('/timeout=5')).toBe('conn 2');
});

test('a 101 whose head is split across writes, with channel bytes after it in the same write, switches intact', async () => {
  // websocket.test.ts covers the 101 and a frame in one write; here the head arrives in pieces first.
  const local = await rawLocal(async (conn) => {
    const { socket } = conn;
    socket.removeAllListeners('data');
    socket.on('data', (d: Buffer) => socket.write(d)); // after the switch: echo
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: byte-echo\r\nConn');
    await sleep(20);
    socket.write('ection: Upgrade\r');
    await sleep(20);
    socket.write('\n\r\nFIRST BYTES');
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const socket = net.connect(relayPort, '127.0.0.1');
  cleanup.add(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, 'connect');
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.write(`GET /up HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: byte-echo\r\n\r\n`);
  await waitFor(() => text.endsWith('\r\n\r\nFIRST BYTES'), 'the 101 and the bytes after it', 15_000);
  expect(text).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
  expect(text).toMatch(/\r\nUpgrade: byte-echo\r\n/i);
  socket.write('ping');
  await waitFor(() => text.endsWith('FIRST BYTESping'), 'the echo', 15_000);
});

test('a response written one byte per write arrives intact: status, headers, chunked body, trailers', async () => {
  const response =
    'HTTP/1.1 207 Fine Thanks\r\nX-First: 1\r\nContent-Type: text/plain\r\nx-lower: v\r\n' +
    'Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n' +
    '6;ext=1\r\nhello \r\nb\r\ntiny writes\r\n0\r\nX-Sum: 17\r\n\r\n';
  const second = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain';
  const local = await rawLocal((conn) => dribble(conn.socket, conn.heads.length === 1 ? response : second));
  const { relayPort, host } = await tunnelTo(local.port);
  const res = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(res.status).toBe(207);
  expect(res.statusMessage).toBe('Fine Thanks');
  const own: string[] = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2)
    if (/^(x-first|content-type|x-lower)$/i.test(res.rawHeaders[i]!))
      own.push(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  expect(own).toEqual(['X-First', '1', 'Content-Type', 'text/plain', 'x-lower', 'v']);
  expect(res.body.toString()).toBe('hello tiny writes');
  expect(res.rawTrailers).toEqual(['X-Sum', '17']);
  // And the connection, complete and keep-alive, serves the next request (also dribbled, with Content-Length).
  const res2 = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(res2.body.toString()).toBe('again');
  expect(local.conns).toHaveLength(1);
});

test('an idle pooled connection to the local service is closed after about 4 s', async () => {
  const answeredAt: number[] = [];
  const local = await rawLocal((conn) => {
    conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', 'latin1', () =>
      answeredAt.push(Date.now()),
    );
  });
  const { relayPort, host } = await tunnelTo(local.port);
  const res = await rawRequest({ port: relayPort, headers: { Host: host } });
  expect(res.body.toString()).toBe('ok');
  expect(local.conns).toHaveLength(1);
  await waitFor(() => local.conns[0]!.endedAt !== undefined, 'the idle connection to be closed', 15_000);
  const idle = local.conns[0]!.endedAt! - answeredAt[0]!;
  expect(idle).toBeGreaterThanOrEqual(3900);
  expect(idle).toBeLessThan(10_000);
  // The next request opens a new connection and works.
  expect((await rawRequest({ port: relayPort, headers: { Host: host } })).body.toString()).toBe('ok');
  expect(local.conns).toHaveLength(2);
});
