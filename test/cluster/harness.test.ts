// The cluster harness itself, against plain Node servers and the real relay: each piece does what the cluster tests rely on.
import { createClient } from '@redis/client';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import http, { type IncomingMessage, type RequestListener } from 'node:http';
import net, { type Socket } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { Cleanup, rawRequest, reply, startClient, startLocal, startRawServer } from '../helpers.js';
import {
  FRONT_ERROR_HEADER,
  freePort,
  MAX_REPLAY_BODY_BYTES,
  parseFlyReplay,
  startFlyFront,
  startL4Front,
  startRedis,
  startRelayProcess,
} from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** True while a process with this id exists, a zombie included (Linux /proc). */
const processExists = (pid: number | undefined): boolean => pid !== undefined && existsSync(`/proc/${pid}`);

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Reads a whole request body. */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('startRedis', () => {
  test('answers PING and commands; kill -9 leaves no process; restart is the same port, empty', async () => {
    const redis = await startRedis(cleanup);
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await redis.ping()).toBe(true);

    const client = createClient({ url: redis.url, socket: { reconnectStrategy: false } });
    client.on('error', () => {});
    await client.connect();
    cleanup.add(() => client.destroy());
    await client.set('k', 'v');
    expect(await client.get('k')).toBe('v');
    client.destroy();

    const pid = redis.pid;
    expect(processExists(pid)).toBe(true);
    await redis.kill();
    expect(redis.running).toBe(false);
    expect(processExists(pid)).toBe(false); // reaped: no zombie
    expect(await redis.ping(300)).toBe(false);

    await redis.restart();
    expect(redis.pid).not.toBe(pid);
    const again = createClient({ url: redis.url, socket: { reconnectStrategy: false } });
    again.on('error', () => {});
    await again.connect();
    cleanup.add(() => again.destroy());
    expect(await again.get('k')).toBeNull(); // nothing persisted
    again.destroy();

    const second = redis.pid;
    await redis.stop();
    expect(processExists(second)).toBe(false);
    expect(await redis.ping(300)).toBe(false);
  });

  test('a missing binary fails with the package to install', async () => {
    await expect(startRedis(cleanup, { binary: 'no-such-redis-server' })).rejects.toThrow(
      /apt-get install -y redis-server/,
    );
  });
});

describe('startRelayProcess', () => {
  const health = (port: number): Promise<Record<string, unknown>> =>
    rawRequest({ port, path: '/_ggrok/health', headers: { Host: '127.0.0.1' } }).then(
      (r) => JSON.parse(r.body.toString()) as Record<string, unknown>,
    );

  test('runs the compiled relay: pause, resume, kill -9 without a zombie, restart on the same port, stop', async () => {
    const relay = await startRelayProcess(cleanup, ['--domain', 'example.test']);
    expect(relay.url).toBe(`http://127.0.0.1:${relay.port}`);
    expect(relay.output()).toMatch(new RegExp(`listening on 127\\.0\\.0\\.1:${relay.port}`));
    expect(await health(relay.port)).toMatchObject({ ok: true, mode: 'domain', domain: 'example.test' });

    // Stopped: the kernel still accepts the connection, but nothing answers until SIGCONT.
    await relay.pause();
    let answered = false;
    const pending = health(relay.port).then((h) => ((answered = true), h));
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    await relay.resume();
    expect(await pending).toMatchObject({ ok: true });

    const pid = relay.pid;
    await relay.kill();
    expect(relay.running).toBe(false);
    expect(processExists(pid)).toBe(false);
    await expect(health(relay.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await relay.restart();
    expect(relay.pid).not.toBe(pid);
    expect(await health(relay.port)).toMatchObject({ ok: true, domain: 'example.test' }); // same args
    expect(relay.output()).toContain('[harness] restart');

    // SIGTERM while stopped still ends it: stop() continues the process.
    await relay.pause();
    expect(await relay.stop()).toBe(0);
    expect(relay.output()).toMatch(/stopping/);
    await expect(relay.waitForOutput(/never printed/, 1_000)).rejects.toThrow(/exited before printing/);
  });

  test('finds the port in json logs, and takes env', async () => {
    const relay = await startRelayProcess(cleanup, ['--log-format', 'json'], {
      env: { GGROK_DOMAIN: undefined },
    });
    expect(relay.port).toBeGreaterThan(0);
    expect(await health(relay.port)).toMatchObject({ ok: true, mode: 'own-host' });
  });

  test('a relay that cannot start fails with its output', async () => {
    await expect(startRelayProcess(cleanup, ['--max-requests', '0'])).rejects.toThrow(
      /exited at start[\s\S]*max-requests/,
    );
  });
});

/** An HTTP server that answers with its name. */
async function named(name: string): Promise<number> {
  return (await startLocal(cleanup, (_req, res) => reply(res, 200, name))).port;
}

describe('startL4Front', () => {
  test('picks a backend at random per connection, skips dead ones, and reads the list each time', async () => {
    const a = await named('a');
    const b = await named('b');
    const dead = await freePort();
    let backends = [a, b, dead];
    const front = await startL4Front(cleanup, () => backends);

    const seen: string[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await rawRequest({ port: front.port, headers: { Host: 'x' } });
      expect(res.status).toBe(200);
      seen.push(res.body.toString());
    }
    expect(new Set(seen)).toEqual(new Set(['a', 'b']));
    expect(front.connections).toBe(40);
    expect(front.perBackend.get(dead)).toBeUndefined();
    expect((front.perBackend.get(a) ?? 0) + (front.perBackend.get(b) ?? 0)).toBe(40);

    backends = [b];
    for (let i = 0; i < 5; i++) expect((await rawRequest({ port: front.port })).body.toString()).toBe('b');
  });

  test('closes the client connection when every backend is down', async () => {
    const front = await startL4Front(cleanup, () => [1]); // port 1: nothing listens there
    const socket = net.connect(front.port, '127.0.0.1');
    socket.on('error', () => {});
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString()));
    await once(socket, 'close');
    expect(got).toBe('');
  });

  test('passes a half-close on, and 8 MiB both ways intact', async () => {
    // The backend answers only after the client's end: the digest of what it got, then 8 MiB of its own.
    const answer = randomBytes(8 * 1024 * 1024);
    const backend = await startRawServer(
      cleanup,
      (socket) => {
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('end', () => {
          socket.write(`${sha256(Buffer.concat(chunks))}\n`);
          socket.end(answer);
        });
      },
      { allowHalfOpen: true },
    );
    const front = await startL4Front(cleanup, () => [backend]);
    const upload = randomBytes(8 * 1024 * 1024);
    const socket = net.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true });
    const received: Buffer[] = [];
    socket.on('data', (c: Buffer) => received.push(c));
    await once(socket, 'connect');
    socket.end(upload);
    await once(socket, 'end');
    const all = Buffer.concat(received);
    const newline = all.indexOf(10);
    expect(all.subarray(0, newline).toString()).toBe(sha256(upload));
    expect(sha256(all.subarray(newline + 1))).toBe(sha256(answer));
    socket.destroy();
  });

  test('carries a WebSocket', async () => {
    const server = await startLocal(cleanup, (_req, res) => reply(res, 404, ''));
    const wss = new WebSocketServer({ server: server.server });
    wss.on('connection', (ws) => ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`)));
    cleanup.add(() => wss.close());
    const front = await startL4Front(cleanup, () => [server.port]);
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}/`);
    cleanup.add(() => ws.terminate());
    await once(ws, 'open');
    ws.send('hi');
    const [msg] = (await once(ws, 'message')) as [Buffer];
    expect(msg.toString()).toBe('echo hi');
  });
});

interface Seen {
  machine: string;
  method: string;
  url: string;
  rawHeaders: string[];
  sha256: string;
  bytes: number;
}

/** A machine that answers with what it saw as JSON (unless `handler` answers first: it returns true then). */
async function machine(
  id: string,
  handler?: (req: IncomingMessage, res: http.ServerResponse, body: Buffer) => boolean,
): Promise<number> {
  const listener: RequestListener = (req, res) => {
    readBody(req).then(
      (body) => {
        if (handler?.(req, res, body)) return;
        const seen: Seen = {
          machine: id,
          method: req.method ?? '',
          url: req.url ?? '',
          rawHeaders: req.rawHeaders,
          sha256: sha256(body),
          bytes: body.length,
        };
        const json = JSON.stringify(seen);
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(json) });
        res.end(json);
      },
      () => res.destroy(),
    );
  };
  return (await startLocal(cleanup, listener)).port;
}

const seenOf = (body: Buffer): Seen => JSON.parse(body.toString()) as Seen;
const header = (raw: string[], name: string): string | undefined => {
  const i = raw.findIndex((h, n) => n % 2 === 0 && h.toLowerCase() === name.toLowerCase());
  return i < 0 ? undefined : raw[i + 1];
};

describe('startFlyFront', () => {
  test('parses fly-replay as Fly documents it', () => {
    expect(parseFlyReplay('instance=abc;timeout=2s;fallback=prefer_self;state=x=1')).toEqual({
      instance: 'abc',
      elsewhere: false,
      timeoutMs: 2000,
      fallback: 'prefer_self',
      state: 'x=1',
    });
    expect(parseFlyReplay('elsewhere=true; timeout=800ms')).toEqual({ elsewhere: true, timeoutMs: 800 });
    expect(parseFlyReplay('prefer_instance=m2')).toEqual({ elsewhere: false, preferInstance: 'm2' });
  });

  test('routes at random, keeps raw headers, adds Fly-Client-IP, and honours fly-force-instance-id', async () => {
    const ids = ['a', 'b', 'c'];
    const machines = new Map<string, number>();
    for (const id of ids) machines.set(id, await machine(id));
    machines.set('down', await freePort()); // in the list, but refusing: random routing skips it
    const front = await startFlyFront(cleanup, () => machines);

    const hit = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const res = await rawRequest({
        port: front.port,
        path: `/r/${i}?q=%2F`,
        headers: { Host: 'app.test' },
      });
      expect(res.status).toBe(200);
      const seen = seenOf(res.body);
      expect(seen.url).toBe(`/r/${i}?q=%2F`);
      hit.add(seen.machine);
    }
    expect(hit).toEqual(new Set(ids));
    expect(front.requests).toBe(30);

    const res = await rawRequest({
      port: front.port,
      headers: [
        'Host',
        'app.test',
        'X-Mixed-Case',
        '1',
        'x-dup',
        'a',
        'fly-force-instance-id',
        'b',
        'x-dup',
        'b',
      ],
    });
    const seen = seenOf(res.body);
    expect(seen.machine).toBe('b');
    const names = seen.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(names.slice(0, 5)).toEqual(['Host', 'X-Mixed-Case', 'x-dup', 'fly-force-instance-id', 'x-dup']);
    expect(seen.rawHeaders.slice(0, 10)).toContain('b');
    expect(header(seen.rawHeaders, 'Fly-Client-IP')).toBe('127.0.0.1');
    expect(header(seen.rawHeaders, 'X-Forwarded-For')).toBe('127.0.0.1');

    for (let i = 0; i < 5; i++) {
      const forced = await rawRequest({
        port: front.port,
        headers: { Host: 'x', 'fly-force-instance-id': 'c' },
      });
      expect(seenOf(forced.body).machine).toBe('c');
    }
    // Hop-by-hop headers stop here, but a Connection token cannot remove Host or the framing.
    const hop = await rawRequest({
      port: front.port,
      method: 'POST',
      headers: {
        Host: 'app.test',
        Connection: 'X-Hop, Host, Content-Length',
        'X-Hop': '1',
        'Content-Length': '2',
      },
      body: 'hi',
    });
    const hopSeen = seenOf(hop.body);
    expect(header(hopSeen.rawHeaders, 'Host')).toBe('app.test');
    expect(header(hopSeen.rawHeaders, 'X-Hop')).toBeUndefined();
    expect(hopSeen.bytes).toBe(2);

    for (const id of ['down', 'nope']) {
      const refused = await rawRequest({
        port: front.port,
        headers: { Host: 'x', 'fly-force-instance-id': id },
      });
      expect(refused.status).toBe(503);
      expect(refused.headers[FRONT_ERROR_HEADER.toLowerCase()]).toBe(`machine ${id} unavailable`);
    }
  });

  test('with no machine at all, 503 from the front', async () => {
    const front = await startFlyFront(cleanup, () => new Map());
    const res = await rawRequest({ port: front.port, headers: { Host: 'x' } });
    expect(res.status).toBe(503);
    expect(res.headers[FRONT_ERROR_HEADER.toLowerCase()]).toBe('no machine available');
  });

  test('fly-replay: the same request, body and headers go to the named machine, with fly-replay-src', async () => {
    const machines = new Map<string, number>();
    machines.set('b', await machine('b'));
    machines.set(
      'a',
      await machine('a', (_req, res) => {
        reply(res, 409, 'this body must never reach the visitor', { 'fly-replay': 'instance=b;state=s1' });
        return true;
      }),
    );
    const front = await startFlyFront(cleanup, () => machines);
    const body = randomBytes(300_000);
    const res = await rawRequest({
      port: front.port,
      method: 'PUT',
      path: '/up?x=1',
      headers: [
        'Host',
        'app.test',
        'fly-force-instance-id',
        'a',
        'X-Token',
        'T',
        'Content-Length',
        String(body.length),
      ],
      body,
    });
    expect(res.status).toBe(200);
    const seen = seenOf(res.body);
    expect(seen).toMatchObject({ machine: 'b', method: 'PUT', url: '/up?x=1', sha256: sha256(body) });
    expect(seen.rawHeaders.slice(0, 6)).toEqual([
      'Host',
      'app.test',
      'fly-force-instance-id',
      'a',
      'X-Token',
      'T',
    ]);
    expect(header(seen.rawHeaders, 'fly-replay-src')).toMatch(/^instance=a;.*;state=s1$/);
    expect(front.replays).toBe(1);
    expect(front.deliveries.at(-1)).toMatchObject({ machines: ['a', 'b'], status: 200, upgrade: false });

    // A chunked body (no length) is replayed too.
    const chunked = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request({
        port: front.port,
        host: '127.0.0.1',
        method: 'POST',
        headers: { Host: 'app.test', 'fly-force-instance-id': 'a' },
      });
      req.on('error', reject);
      req.on('response', (r) => void readBody(r).then(resolve, reject));
      req.write('part one, ');
      setTimeout(() => req.end('part two'), 50);
    });
    expect(seenOf(chunked)).toMatchObject({
      machine: 'b',
      sha256: sha256(Buffer.from('part one, part two')),
    });
    expect(front.replays).toBe(2);
  });

  test('a body over 1 MiB is not replayed: the answer comes back as it is', async () => {
    const machines = new Map<string, number>();
    machines.set('b', await machine('b'));
    machines.set(
      'a',
      await machine('a', (_req, res, body) => {
        reply(res, 200, `a kept ${body.length}`, { 'fly-replay': 'instance=b' });
        return true;
      }),
    );
    const front = await startFlyFront(cleanup, () => machines);
    const body = Buffer.alloc(MAX_REPLAY_BODY_BYTES + 1, 1);
    const res = await rawRequest({
      port: front.port,
      method: 'POST',
      headers: { Host: 'x', 'fly-force-instance-id': 'a', 'Content-Length': String(body.length) },
      body,
    });
    expect(res.body.toString()).toBe(`a kept ${body.length}`);
    expect(res.headers['fly-replay']).toBe('instance=b');
    expect(front.replays).toBe(0);
  });

  test('fallback=prefer_self brings the request back with fly-replay-failed; without a fallback, 503', async () => {
    const machines = new Map<string, number>();
    machines.set('gone', await freePort());
    machines.set(
      'a',
      await machine('a', (req, res) => {
        const failed = req.headers['fly-replay-failed'];
        if (failed) reply(res, 200, `a again: ${String(failed)}`);
        else if (req.url === '/fallback')
          reply(res, 200, '', { 'fly-replay': 'instance=gone;timeout=1s;fallback=prefer_self' });
        else reply(res, 200, '', { 'fly-replay': 'instance=gone' });
        return true;
      }),
    );
    const front = await startFlyFront(cleanup, () => machines);
    const back = await rawRequest({
      port: front.port,
      path: '/fallback',
      headers: { Host: 'x', 'fly-force-instance-id': 'a' },
    });
    expect(back.body.toString()).toBe('a again: reason=unreachable;instance=gone');
    const refused = await rawRequest({
      port: front.port,
      headers: { Host: 'x', 'fly-force-instance-id': 'a' },
    });
    expect(refused.status).toBe(503);
    expect(refused.headers[FRONT_ERROR_HEADER.toLowerCase()]).toBe('machine gone unavailable');
  });

  test('a request body reaches the machine as it arrives, not after it ends', async () => {
    const machines = new Map<string, number>();
    machines.set(
      'a',
      (
        await startLocal(cleanup, (req, res) => {
          req.once('data', (c: Buffer) => {
            res.writeHead(200, { 'Content-Type': 'text/plain' });
            res.write(`first: ${c.toString()}`);
            req.on('end', () => res.end());
            req.resume();
          });
        })
      ).port,
    );
    const front = await startFlyFront(cleanup, () => machines);
    const req = http.request({ port: front.port, host: '127.0.0.1', method: 'POST', headers: { Host: 'x' } });
    req.write('hello');
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    const [first] = (await once(res, 'data')) as [Buffer];
    expect(first.toString()).toBe('first: hello'); // answered while the body is still open
    req.end();
    await once(res, 'end');
  }, 10_000); // a front that buffered the body first would never answer

  test('keep-alive visitors: every request on one connection is routed on its own', async () => {
    const machines = new Map<string, number>([
      ['a', await machine('a')],
      ['b', await machine('b')],
    ]);
    const front = await startFlyFront(cleanup, () => machines);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.add(() => agent.destroy());
    const hit = new Set<string>();
    let reused = 0;
    for (let i = 0; i < 20; i++) {
      const res = await new Promise<{ body: Buffer; reused: boolean }>((resolve, reject) => {
        const req = http.get({ port: front.port, host: '127.0.0.1', agent, headers: { Host: 'x' } }, (r) => {
          readBody(r).then((body) => resolve({ body, reused: req.reusedSocket }), reject);
        });
        req.on('error', reject);
      });
      hit.add(seenOf(res.body).machine);
      if (res.reused) reused++;
    }
    expect(reused).toBe(19);
    expect(hit).toEqual(new Set(['a', 'b']));
  });

  test('upgrades: replayed on fly-replay, joined after the 101 with the bytes that came with it', async () => {
    const machines = new Map<string, number>();
    // b accepts any upgrade by hand: its 101 and first bytes in one write, then an echo in capitals.
    let bHead = '';
    machines.set(
      'b',
      await startRawServer(cleanup, (socket: Socket) => {
        let buffered = '';
        const onHead = (c: Buffer): void => {
          buffered += c.toString('latin1');
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) return;
          socket.off('data', onHead);
          bHead = buffered.slice(0, end);
          socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nHELLO;',
          );
          const early = buffered.slice(end + 4);
          if (early) socket.write(early.toUpperCase());
          socket.on('data', (d: Buffer) => socket.write(d.toString('latin1').toUpperCase()));
        };
        socket.on('data', onHead);
      }),
    );
    // a answers upgrades with a plain response naming b (http.Server without an 'upgrade' listener).
    machines.set(
      'a',
      (await startLocal(cleanup, (_req, res) => reply(res, 200, 'not here', { 'fly-replay': 'instance=b' })))
        .port,
    );
    // c refuses upgrades with a plain 403.
    machines.set('c', (await startLocal(cleanup, (_req, res) => reply(res, 403, 'no upgrades here'))).port);
    const front = await startFlyFront(cleanup, () => machines);

    const socket = net.connect(front.port, '127.0.0.1');
    cleanup.add(() => socket.destroy());
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    await once(socket, 'connect');
    socket.write(
      'GET /chan HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: test\r\n' +
        'fly-force-instance-id: a\r\n\r\nearly;',
    );
    await waitForText(() => got, 'EARLY;');
    expect(got).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nHELLO;EARLY;$/);
    socket.write('later');
    await waitForText(() => got, 'LATER');
    expect(bHead).toMatch(
      /^GET \/chan HTTP\/1\.1\r\nHost: app\.test\r\nConnection: Upgrade\r\nUpgrade: test\r\n/,
    );
    expect(bHead).toMatch(/\r\nfly-replay-src: instance=a;/);
    expect(bHead).toMatch(/\r\nFly-Client-IP: 127\.0\.0\.1/);
    expect(front.replays).toBe(1);
    expect(front.deliveries.at(-1)).toMatchObject({ upgrade: true, machines: ['a', 'b'], status: 101 });

    const refused = await rawRequest({
      port: front.port,
      headers: { Host: 'x', Connection: 'Upgrade', Upgrade: 'websocket', 'fly-force-instance-id': 'c' },
    }).catch((err: unknown) => err);
    expect(refused).toMatchObject({ status: 403, body: Buffer.from('no upgrades here') });
  });

  test('a real WebSocket through it, to a forced machine', async () => {
    const server = await startLocal(cleanup, (_req, res) => reply(res, 404, ''));
    const wss = new WebSocketServer({ server: server.server });
    wss.on('connection', (ws, req) => {
      ws.send(`welcome ${String(req.headers['fly-client-ip'])}`);
      ws.on('message', (m: Buffer) => ws.send(`echo ${m.toString()}`));
    });
    cleanup.add(() => wss.close());
    const machines = new Map([
      ['ws', server.port],
      ['other', await machine('other')],
    ]);
    const front = await startFlyFront(cleanup, () => machines);
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}/`, { headers: { 'fly-force-instance-id': 'ws' } });
    cleanup.add(() => ws.terminate());
    const messages: string[] = [];
    ws.on('message', (m: Buffer) => messages.push(m.toString()));
    await once(ws, 'open');
    ws.send('hi');
    await waitForText(() => messages.join('|'), 'echo hi');
    expect(messages).toEqual(['welcome 127.0.0.1', 'echo hi']);
  });
});

/** Waits until `text()` contains `needle` (2 s at most). */
async function waitForText(text: () => string, needle: string): Promise<void> {
  const until = Date.now() + 2_000;
  while (!text().includes(needle)) {
    if (Date.now() > until)
      throw new Error(`timed out waiting for ${JSON.stringify(needle)}; got ${JSON.stringify(text())}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('the fronts with a real relay and client', () => {
  test('a tunnel works through the L4 front and through the Fly front, control socket included', async () => {
    const relay = await startRelayProcess(cleanup, []);
    const local = await startLocal(cleanup, (req, res) => {
      readBody(req).then(
        (body) =>
          reply(res, 200, `${req.method} ${req.url} ${body.length} ${String(req.headers['fly-client-ip'])}`),
        () => res.destroy(),
      );
    });
    const l4 = await startL4Front(cleanup, () => [relay.port]);
    const fly = await startFlyFront(cleanup, () => new Map([['m1', relay.port]]));
    for (const [front, name] of [
      [l4, 'via-l4'],
      [fly, 'via-fly'],
    ] as const) {
      const client = await startClient(cleanup, front.url, local.port, { subdomain: name });
      const host = `${name}.localhost:${front.port}`;
      const body = randomBytes(200_000);
      const res = await rawRequest({
        port: front.port,
        method: 'POST',
        path: '/p?q=1',
        headers: { Host: host, 'Content-Length': String(body.length) },
        body,
      });
      expect([name, res.status]).toEqual([name, 200]);
      const clientIp = front === fly ? '127.0.0.1' : 'undefined';
      expect(res.body.toString()).toBe(`POST /p?q=1 ${body.length} ${clientIp}`);
      await client.close();
    }
    expect(fly.deliveries.some((d) => d.upgrade && d.status === 101)).toBe(true); // the client's control socket
  });
});
