// Edge cases of the data path (lean local client, whole small responses, lean relay path) over real sockets: raw `net`
// local servers that write exact bytes, raw public clients, and the in-process relay and client. Each of the first six
// was a real bug found in review: a 103 that crashed the relay, unbounded 1xx and tiny-chunk buffering, header rules
// breaking request framing, and over-long reason phrases.
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, expect, test } from 'vitest';
import type { ClientOptions, TunnelClient } from '../../cli/client.js';
import {
  Cleanup,
  rawRequest,
  sleep,
  startClient,
  startLocal,
  startRawServer,
  startRelay,
  waitFor,
  type RawResponse,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MB = 1e6;

/** One connection a raw local server accepted, with every byte it received. */
interface RawConn {
  socket: net.Socket;
  index: number;
  received: string;
  /** Answers written so far (the answer function keeps count). */
  answered: number;
  closedAt?: number;
}

/**
 * A raw local server on 127.0.0.1 port 0. `onData` runs after every read with the connection's bytes so far and
 * writes exact answers itself.
 */
async function rawServer(onData: (conn: RawConn) => void): Promise<{ port: number; conns: RawConn[] }> {
  const conns: RawConn[] = [];
  const port = await startRawServer(cleanup, (socket) => {
    const conn: RawConn = { socket, index: conns.length, received: '', answered: 0 };
    conns.push(conn);
    socket.on('close', () => (conn.closedAt ??= Date.now()));
    socket.on('data', (d: Buffer) => {
      conn.received += d.toString('latin1');
      onData(conn);
    });
  });
  return { port, conns };
}

/** A relay and a client exposing `port`. */
async function tunnelTo(port: number, options: Partial<ClientOptions> = {}) {
  const relay = await startRelay(cleanup);
  const client = await startClient(cleanup, relay.url, port, { subdomain: 'demo', ...options });
  const host = new URL(client.url).host;
  return {
    relay,
    client,
    relayPort: relay.port,
    host,
    get: (path = '/', method = 'GET') =>
      withTimeout(rawRequest({ port: relay.port, method, path, headers: { Host: host } })),
  };
}

/** Connections to the local service the client holds for exchanges in progress. */
const busy = (client: TunnelClient): number => client.busyLocalConnections;

/** A raw public client: writes `data` to the relay and collects what comes back. */
async function rawPublic(port: number, data: string) {
  const socket = net.connect(port, '127.0.0.1');
  cleanup.add(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, 'connect');
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  socket.write(data);
  return { socket, text: () => text, closed };
}

/** Fails after `ms` instead of hanging until the test times out. */
function withTimeout<T>(p: Promise<T>, ms = 10_000, what = 'the response'): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref(),
    ),
  ]);
}

/** Number of complete chunked bodies (last chunk and trailer section) in `text`. */
const chunkedBodies = (text: string): number => text.split(/\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n/).length - 1;

// ---- bugs ----

test.each([
  {
    // writeEarlyHints() throws ERR_INVALID_ARG_VALUE for "<a>; rel=preload, <b>; rel=preload"; the throw escapes the
    // WebSocket message handler: an uncaught exception that ends the relay process (every tunnel goes down).
    name: 'a list of links (valid RFC 8288) passes',
    hints: 'Link: </a.css>; rel=preload; as=style, </b.js>; rel=preload; as=script\r\n',
  },
  {
    // writeInformational() collects hints in a plain object: `hints["constructor"] ??= []` finds
    // Object.prototype.constructor, and `.push` on it throws a TypeError out of the message handler.
    name: 'a header named like an Object.prototype member passes',
    hints: 'Link: </a.css>; rel=preload\r\nconstructor: x\r\n',
  },
])('a 103 Early Hints with $name without crashing the relay', async ({ hints }) => {
  const local = await rawServer((conn) => {
    if (conn.answered++ > 0) return;
    conn.socket.write(
      `HTTP/1.1 103 Early Hints\r\n${hints}\r\n` + 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
    );
  });
  const t = await tunnelTo(local.port);
  const res = await t.get('/hints');
  expect([res.status, res.body.toString()]).toEqual([200, 'ok']);
});

test('a stalled download of many tiny chunks holds memory bounded like any other (not per chunk)', async () => {
  // Flow control counts payload bytes only, and each chunk of the local response becomes its own Data frame and its
  // own res.write() on the relay: a 1 MiB stream window of 1-byte chunks is a million buffered writes (~280 MB of
  // heap for one stalled visitor; 4 KiB chunks cost nothing).
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let written = 0;
  const piece = Buffer.from('1\r\nx\r\n');
  const block = Buffer.concat(Array<Buffer>(Math.ceil(65536 / piece.length)).fill(piece));
  const local = await rawServer((conn) => {
    if (conn.answered++ > 0) return;
    const s = conn.socket;
    s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
    const pump = (): void => {
      while (written < 100 * MB && !s.destroyed) {
        written += block.length;
        if (!s.write(block)) return void s.once('drain', pump);
      }
    };
    pump();
  });
  const t = await tunnelTo(local.port);
  gc();
  const before = process.memoryUsage().heapUsed;
  const pub = await rawPublic(t.relayPort, `GET /tiny HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
  pub.socket.pause(); // a visitor that stops reading
  // Until the local server can no longer write: the whole chain pushes back.
  let last = -1;
  await waitFor(
    async () => {
      const at = written;
      await sleep(500);
      const settled = at === written && written === last && written > 0;
      last = written;
      return settled;
    },
    'the local server to be held back',
    40_000,
  );
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  expect(written).toBeLessThan(60 * MB);
  expect(grown / MB).toBeLessThan(64);
});

test('a response of many small chunks that ends while the visitor is paused still arrives whole, in order', async () => {
  // The relay holds (merges) small chunks while the visitor's socket is full; the End that follows them must not
  // overtake what is held.
  // 8 MB in 1 KB pieces: more than the loopback socket buffers hold, so the relay's writes to the visitor back up.
  const pieces = Array.from({ length: 8000 }, (_, i) => `${String(i).padStart(6, '0')}|`.repeat(128));
  const expected = pieces.join('');
  const local = await rawServer((conn) => {
    if (conn.answered++ > 0) return;
    const s = conn.socket;
    s.setNoDelay(true);
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${expected.length}\r\n\r\n`);
    let i = 0;
    const pump = (): void => {
      // A few pieces per turn, so they travel as many small reads and frames.
      for (let k = 0; k < 20 && i < pieces.length; k++) s.write(pieces[i++]!);
      if (i < pieces.length) setImmediate(pump);
    };
    pump();
  });
  const t = await tunnelTo(local.port);
  const pub = await rawPublic(t.relayPort, `GET /pieces HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
  pub.socket.pause();
  await waitFor(() => local.conns[0]?.answered === 1, 'the local server to answer', 10_000);
  await sleep(500); // the whole response is sent and ended while nobody reads
  pub.socket.resume();
  await waitFor(() => pub.text().length >= expected.length, 'the whole body', 20_000);
  const body = pub.text().slice(pub.text().indexOf('\r\n\r\n') + 4);
  expect(body).toBe(expected);
});

test('a flood of 1xx heads to a stalled visitor does not make the relay buffer without bound', async () => {
  // Info frames bypass flow control, the client reads 1xx heads without limit or backpressure, and the relay writes
  // each one (102 -> writeProcessing) into the visitor's socket whatever its buffer holds. A local app (or a hostile
  // client sending Info frames) that streams 1xx heads grows the relay's memory at the speed of the tunnel.
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let written = 0;
  const block = Buffer.from('HTTP/1.1 102 Processing\r\n\r\n'.repeat(2000));
  const local = await rawServer((conn) => {
    if (conn.answered++ > 0) return;
    const s = conn.socket;
    const pump = (): void => {
      while (written < 80 * MB && !s.destroyed) {
        written += block.length;
        if (!s.write(block)) return void s.once('drain', pump);
      }
    };
    pump();
  });
  const t = await tunnelTo(local.port);
  gc();
  const before = process.memoryUsage().heapUsed;
  const pub = await rawPublic(t.relayPort, `GET /processing HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
  pub.socket.pause();
  // Until the local server has written 80 MB, or is held back (no progress for 1.5 s).
  let last = -1;
  let still = 0;
  const until = Date.now() + 40_000;
  while (written < 80 * MB && still < 3 && Date.now() < until) {
    await sleep(500);
    still = written === last ? still + 1 : 0;
    last = written;
  }
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  expect(grown / MB).toBeLessThan(48);
});

test('request framing survives header rules (removing Content-Length must not turn the body into a request)', async () => {
  // The lean client frames a Content-Length body by whatever Content-Length is left after --request-header-remove /
  // --request-header-add. Without it the body bytes follow a bodiless head on a keep-alive connection, and the local
  // server reads them as the next request (node:http's ClientRequest chunk-encoded such a POST).
  const seen: { method: string; url: string; body: string }[] = [];
  const local = await startLocal(cleanup, (req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, body });
      res.writeHead(200, { 'Content-Length': '2' });
      res.end('ok');
    });
  });
  const t = await tunnelTo(local.port, {
    headerRules: { requestAdd: [], requestRemove: ['Content-Length'], responseAdd: [], responseRemove: [] },
  });
  const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
  const res = await withTimeout(
    rawRequest({
      port: t.relayPort,
      method: 'POST',
      path: '/form',
      headers: { Host: t.host },
      body: smuggled,
    }),
  );
  expect(res.status).toBe(200);
  await sleep(200);
  expect(seen).toEqual([{ method: 'POST', url: '/form', body: smuggled }]);
});

test('a reason phrase longer than the wire limit (1024) still gets the response through', async () => {
  // The lean parser accepts any reason within the 64 KiB head; the relay rejects a Response whose reason exceeds
  // 1024 characters, and the visitor gets a 502 protocol_error instead of the local server's answer.
  const reason = 'R'.repeat(2000);
  const local = await rawServer((conn) => {
    if (conn.answered++ > 0) return;
    conn.socket.write(`HTTP/1.1 200 ${reason}\r\nContent-Length: 2\r\n\r\nok`);
  });
  const t = await tunnelTo(local.port);
  const res = await t.get();
  expect(res.headers['x-ggrok-error']).toBeUndefined();
  expect([res.status, res.body.toString()]).toEqual([200, 'ok']);
  expect(reason.startsWith(res.statusMessage)).toBe(true);
});

// ---- behaviour the other suites do not pin down ----

test('request bodies are framed byte for byte: chunked with trailers, then Content-Length, on one reused connection', async () => {
  const local = await rawServer((conn) => {
    // First a chunked request (answered when its trailer section is complete), then one with Content-Length: 5.
    const done = chunkedBodies(conn.received) + (/\r\n\r\nabcde$/.test(conn.received) ? 1 : 0);
    for (; conn.answered < done; conn.answered++)
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nreq ${conn.answered}`);
  });
  const t = await tunnelTo(local.port);
  const pub = await rawPublic(
    t.relayPort,
    `POST /chunked HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\n\r\n` +
      '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\nX-Other: two words\r\n\r\n',
  );
  await waitFor(() => pub.text().endsWith('req 0'), 'the first answer');
  pub.socket.write(`PUT /length HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 5\r\n\r\nabcde`);
  await waitFor(() => pub.text().endsWith('req 1'), 'the second answer');
  expect(local.conns).toHaveLength(1);
  const heads = local.conns[0]!.received.split(/(?=POST |PUT )/);
  expect(heads).toHaveLength(2);
  // Chunk extensions are not kept (the relay re-chunks what it read), sizes, data and trailers are.
  expect(heads[0]).toMatch(/^POST \/chunked HTTP\/1\.1\r\n/);
  expect(heads[0]).toMatch(
    /\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\nX-Other: two words\r\n\r\n$/,
  );
  expect(heads[1]).toMatch(/^PUT \/length HTTP\/1\.1\r\n/);
  expect(heads[1]).toMatch(/\r\nContent-Length: 5\r\n(?:[^\r\n]+\r\n)*\r\nabcde$/);
  expect(heads[1]).not.toMatch(/transfer-encoding/i);
});

test('a local server answering before the body arrives: its connection is dropped, the next request gets a fresh one', async () => {
  // The raw server answers the POST at its head (keep-alive, body unread) and would read whatever follows as a new
  // request: the client must not put that connection back in the pool.
  const local = await rawServer((conn) => {
    if (conn.index === 0 && conn.answered === 0 && conn.received.includes('\r\n\r\n')) {
      conn.answered++;
      conn.socket.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!');
    } else if (conn.index > 0 && conn.answered === 0 && conn.received.includes('\r\n\r\n')) {
      conn.answered++;
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${conn.index}`);
    }
  });
  const t = await tunnelTo(local.port);
  const pub = await rawPublic(
    t.relayPort,
    `POST /upload HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 100000\r\n\r\n${'a'.repeat(1000)}`,
  );
  await waitFor(() => pub.text().endsWith('big!'), 'the early answer');
  expect(pub.text()).toMatch(/^HTTP\/1\.1 413 Payload Too Large\r\n/);
  pub.socket.write('b'.repeat(99_000)); // the rest of the body, which nobody wants any more
  await waitFor(() => local.conns[0]!.closedAt !== undefined, 'the client to drop the connection');
  const next = await t.get('/next');
  expect(next.body.toString()).toBe('conn 1');
  expect(local.conns[0]!.received).not.toContain('/next');
  expect((local.conns[0]!.received.match(/HTTP\/1\.1\r\n/g) ?? []).length).toBe(1);
  await waitFor(() => busy(t.client) === 0, 'no connection busy');
});

test('a visitor leaving mid-request-body or mid-response: the local connection is closed, never pooled', async () => {
  const local = await rawServer((conn) => {
    if (conn.answered > 0 || !conn.received.includes('\r\n\r\n')) return;
    conn.answered++;
    if (conn.received.startsWith('GET /slow'))
      // A keep-alive response of which only the first half comes at once.
      conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.');
    else if (conn.received.startsWith('GET '))
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${conn.index}`);
    // POST: no answer; the server waits for the body.
  });
  const t = await tunnelTo(local.port);
  // 1. Mid-request-body.
  const up = await rawPublic(
    t.relayPort,
    `POST /up HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 50\r\n\r\nten bytes!`,
  );
  await waitFor(() => local.conns[0]?.received.endsWith('ten bytes!') === true, 'the first body bytes');
  up.socket.destroy();
  await waitFor(() => local.conns[0]!.closedAt !== undefined, 'the client to close connection 0');
  // 2. Mid-response.
  const down = await rawPublic(t.relayPort, `GET /slow HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
  await waitFor(() => down.text().endsWith('half.'), 'the first half');
  down.socket.destroy();
  await waitFor(() => local.conns[1]?.closedAt !== undefined, 'the client to close connection 1');
  // The next request gets a fresh connection, and nothing is left busy.
  expect((await t.get('/after')).body.toString()).toBe('conn 2');
  expect(local.conns).toHaveLength(3);
  expect(local.conns[1]!.received).not.toContain('/after');
  await waitFor(() => busy(t.client) === 0, 'no connection busy');
});

test('a refused upgrade: the early channel bytes never reach the local server, and the pool counts nothing busy', async () => {
  const local = await rawServer((conn) => {
    if (conn.answered > 0 || !conn.received.includes('\r\n\r\n')) return;
    conn.answered++;
    if (conn.received.startsWith('GET /ws'))
      conn.socket.write(
        'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnope!',
      );
    else conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn ${conn.index}`);
  });
  const t = await tunnelTo(local.port);
  const pub = await rawPublic(
    t.relayPort,
    `GET /ws HTTP/1.1\r\nHost: ${t.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /early HTTP/1.1\r\n\r\n`,
  );
  await withTimeout(pub.closed, 15_000, 'the refusal to close the public connection');
  expect(pub.text()).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
  expect(pub.text()).toMatch(/\r\nConnection: close\r\n/i);
  expect(pub.text()).toMatch(/\r\n\r\nnope!$/);
  expect((await t.get('/next')).body.toString()).toBe('conn 1');
  expect(local.conns[0]!.received).not.toContain('/early');
  await waitFor(() => local.conns[0]!.closedAt !== undefined, 'the refused connection to close');
  await waitFor(() => busy(t.client) === 0, 'no connection busy');
});

test('many small responses on one keep-alive connection stay in order with their own bodies (whole-response frames)', async () => {
  // Every answer fits in one read with its head, so each travels as one Response frame carrying body and end.
  let served = 0;
  const local = await rawServer((conn) => {
    const requests = conn.received.split('\r\n\r\n').length - 1;
    for (; conn.answered < requests; conn.answered++) {
      const path = [...conn.received.matchAll(/GET (\S+)/g)][conn.answered]![1]!;
      const body = `${path}#${++served}`;
      conn.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }
  });
  const t = await tunnelTo(local.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  cleanup.add(() => agent.destroy());
  const results: RawResponse[] = [];
  for (let i = 0; i < 50; i++)
    results.push(
      await withTimeout(rawRequest({ port: t.relayPort, path: `/p${i}`, agent, headers: { Host: t.host } })),
    );
  expect(results.map((r) => r.body.toString())).toEqual(results.map((_, i) => `/p${i}#${i + 1}`));
  expect(local.conns).toHaveLength(1);
  expect(busy(t.client)).toBe(0);
});
