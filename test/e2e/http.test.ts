// HTTP through the tunnel must look like a direct connection: request line, headers, bodies, status, 1xx, trailers.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import { DEFAULT_FLOW } from '../../protocol/frames.js';
import { Cleanup, rawExchange, reply, startTunnel, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Header pairs from a raw header list, without the ones the relay adds. */
function pairs(raw: string[], skip: RegExp = /^x-forwarded-/i): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) if (!skip.test(raw[i]!)) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

describe('request fidelity', () => {
  test('method, raw path and query pass byte-exact', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `${req.method} ${req.url}`));
    const targets = ['/a%2Fb/../c//d;e?x=1&x=2&y=%ZZ&z=%2F', '/', '/?', '/%E2%9C%93?q=a+b%20c'];
    for (const path of targets) {
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PURGE']) {
        const res = await t.request({ method, path, headers: { Host: t.host } });
        expect(res.body.toString()).toBe(`${method} ${path}`);
      }
    }
  });

  test('header names keep case, order and duplicates; the relay adds X-Forwarded-*', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const sent = [
      ['Host', ''],
      ['X-Custom-A', '1'],
      ['x-lower-case', '2'],
      ['X-Dup', 'a'],
      ['Content-Type', 'text/plain'],
      ['X-Dup', 'b'],
      ['content-type', 'second'],
      ['Authorization', 'Bearer one'],
      ['authorization', 'Bearer two'],
      ['X-Forwarded-For', '203.0.113.7'],
    ];
    sent[0]![1] = t.host;
    const head = `GET /h HTTP/1.1\r\n${sent.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`;
    const text = await rawExchange(t.relay.port, head);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK/);
    const got = t.local.requests[0]!.rawHeaders;
    // Connection belongs to the client's own hop to the local server, not to the public request.
    expect(pairs(got, /^(x-forwarded-.*|connection)$/i)).toEqual(
      sent.filter(([k]) => k !== 'X-Forwarded-For'),
    );
    const forwarded = Object.fromEntries(
      pairs(got, /^(?!x-forwarded-)/i).map(([k, v]) => [k.toLowerCase(), v]),
    );
    expect(forwarded['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(forwarded['x-forwarded-proto']).toBe('http');
    expect(forwarded['x-forwarded-host']).toBe(t.host);
    expect(forwarded['x-forwarded-port']).toBe(String(t.relay.port));
  });

  test('a request with 600 headers passes whole (and cannot close the tunnel)', async () => {
    const t = await startTunnel(cleanup, (req, res) => reply(res, 200, String(req.rawHeaders.length / 2)));
    const headers: string[] = ['Host', t.host];
    for (let i = 0; i < 600; i++) headers.push(`X-H${i}`, String(i));
    const res = await t.request({ headers });
    expect(res.body.toString()).toBe(String(601 + 4)); // + X-Forwarded-* (4); the local hop adds nothing
    expect((await t.request()).status).toBe(200);
  });

  test('hop-by-hop headers are stripped, including those named by Connection', async () => {
    const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'ok'));
    const head =
      `GET / HTTP/1.1\r\nHost: ${t.host}\r\nConnection: keep-alive, X-Secret\r\nX-Secret: hidden\r\n` +
      'Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n';
    await rawExchange(t.relay.port, head, (s) => s.includes('\r\n\r\nok'));
    const names = pairs(t.local.requests[0]!.rawHeaders).map(([k]) => k.toLowerCase());
    expect(names).toContain('x-kept');
    for (const hop of ['x-secret', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection'])
      expect(names).not.toContain(hop);
  });

  test('a request body of unknown length arrives chunked and intact, with its trailers', async () => {
    const t = await startTunnel(cleanup, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () =>
        reply(
          res,
          200,
          JSON.stringify({
            te: req.headers['transfer-encoding'],
            body: Buffer.concat(chunks).toString(),
            trailers: req.rawTrailers,
          }),
        ),
      );
    });
    const head = `POST /up HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nConnection: close\r\n\r\n`;
    const body = '5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n';
    const text = await rawExchange(t.relay.port, head + body);
    const json = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as {
      te: string;
      body: string;
      trailers: string[];
    };
    expect(json).toEqual({ te: 'chunked', body: 'hello world', trailers: ['X-Sum', '42'] });
  });
});

describe('response fidelity', () => {
  test('status code, reason phrase, header case, order and several Set-Cookie survive', async () => {
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(299, 'Custom Thing', [
        'Set-Cookie',
        'a=1; Path=/',
        'X-MiXeD-Case',
        'v',
        'set-cookie',
        'b=2; HttpOnly',
        'Content-Type',
        'text/plain',
        'Set-Cookie',
        'c=3',
        'Content-Length',
        '2',
      ]);
      res.end('ok');
    });
    const res = await t.request();
    expect(res.status).toBe(299);
    expect(res.statusMessage).toBe('Custom Thing');
    const own = pairs(res.rawHeaders, /^(date|connection|keep-alive)$/i);
    expect(own).toEqual([
      ['Set-Cookie', 'a=1; Path=/'],
      ['X-MiXeD-Case', 'v'],
      ['set-cookie', 'b=2; HttpOnly'],
      ['Content-Type', 'text/plain'],
      ['Set-Cookie', 'c=3'],
      ['Content-Length', '2'],
    ]);
    expect(res.body.toString()).toBe('ok');
  });

  test('HEAD, 204 and 304 carry no body and keep the connection usable', async () => {
    const t = await startTunnel(cleanup, (req, res) => {
      if (req.url === '/204') return void res.writeHead(204, { 'X-A': '1' }).end();
      if (req.url === '/304') return void res.writeHead(304, { ETag: '"x"' }).end();
      res.writeHead(200, { 'Content-Length': '1234', 'Content-Type': 'text/plain' });
      res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1234));
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.add(() => agent.destroy());
    const head = await t.request({ method: 'HEAD', agent });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('1234');
    expect(head.body.length).toBe(0);
    const noContent = await t.request({ path: '/204', agent });
    expect([noContent.status, noContent.body.length, noContent.headers['x-a']]).toEqual([204, 0, '1']);
    const notModified = await t.request({ path: '/304', agent });
    expect([notModified.status, notModified.body.length, notModified.headers.etag]).toEqual([304, 0, '"x"']);
    const get = await t.request({ agent });
    expect(get.body.length).toBe(1234);
  });

  test('a response of unknown length streams chunked, and its trailers pass', async () => {
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain', Trailer: 'X-Checksum' });
      res.write('part one, ');
      res.write('part two');
      res.addTrailers({ 'X-Checksum': 'abc123' });
      res.end();
    });
    const res = await t.request();
    expect(res.headers['transfer-encoding']).toBe('chunked');
    expect(res.body.toString()).toBe('part one, part two');
    expect(res.rawTrailers).toEqual(['X-Checksum', 'abc123']);
  });

  test('Expect: 100-continue reaches the local server, which decides', async () => {
    const t = await startTunnel(cleanup, () => {});
    t.local.server.removeAllListeners('request');
    t.local.server.on('checkContinue', (req, res) => {
      if (req.url === '/refuse') return reply(res, 417, 'no thanks');
      res.writeContinue();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => reply(res, 200, `got ${Buffer.concat(chunks).toString()}`));
    });
    const send = (path: string): Promise<{ status: number; continued: boolean; body: string }> =>
      new Promise((resolve, reject) => {
        let continued = false;
        const req = http.request({
          host: '127.0.0.1',
          port: t.relay.port,
          path,
          method: 'POST',
          agent: false,
          headers: { Host: t.host, Expect: '100-continue', 'Content-Length': '4' },
        });
        req.on('continue', () => {
          continued = true;
          req.end('body');
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, continued, body }));
        });
        req.on('error', reject);
        req.flushHeaders();
      });
    expect(await send('/accept')).toEqual({ status: 200, continued: true, body: 'got body' });
    expect(await send('/refuse')).toEqual({ status: 417, continued: false, body: 'no thanks' });
  });

  test('103 Early Hints pass before the final response', async () => {
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' }, () => reply(res, 200, 'done'));
    });
    const infos: number[] = [];
    const result = await new Promise<{ status: number; link: string | undefined }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: t.relay.port,
        agent: false,
        headers: { Host: t.host },
      });
      let link: string | undefined;
      req.on('information', (info) => {
        infos.push(info.statusCode);
        link = info.headers.link as string;
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, link }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(infos).toEqual([103]);
    expect(result).toEqual({ status: 200, link: '</style.css>; rel=preload; as=style' });
  });
});

describe('streaming', () => {
  test('server-sent events arrive one by one, never buffered', async () => {
    // The local server sends event i+1 only after the public client has received event i:
    // any buffering in the tunnel would deadlock this exchange.
    let received = 0;
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      let sent = 0;
      const next = (): void => {
        if (sent === 5) return void res.end();
        if (received < sent) return void setTimeout(next, 5);
        res.write(`id: ${sent}\ndata: event ${sent}\n\n`);
        sent++;
        setTimeout(next, 5);
      };
      next();
    });
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = http.get(
        { host: '127.0.0.1', port: t.relay.port, agent: false, headers: { Host: t.host } },
        (res) => {
          expect(res.headers['content-type']).toBe('text/event-stream');
          expect(res.headers['content-length']).toBeUndefined();
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            for (const block of chunk.split('\n\n').filter(Boolean)) events.push(block);
            received = events.length;
          });
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
    });
    expect(events).toEqual([0, 1, 2, 3, 4].map((i) => `id: ${i}\ndata: event ${i}`));
  });

  test('100 MiB download arrives intact (sha256)', async () => {
    const chunk = randomBytes(1024 * 1024);
    const expected = createHash('sha256');
    for (let i = 0; i < 100; i++) expected.update(chunk);
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(100 * chunk.length) });
      let i = 0;
      const pump = (): void => {
        while (i < 100) {
          i++;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const hash = createHash('sha256');
    let bytes = 0;
    await new Promise<void>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: t.relay.port, agent: false, headers: { Host: t.host } }, (res) => {
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            hash.update(c);
          });
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(bytes).toBe(100 * chunk.length);
    expect(hash.digest('hex')).toBe(expected.digest('hex'));
  });

  test('50 MiB chunked upload arrives intact (sha256)', async () => {
    const t = await startTunnel(cleanup, (req, res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      req.on('end', () =>
        reply(res, 200, `${bytes} ${hash.digest('hex')} ${req.headers['transfer-encoding']}`),
      );
    });
    const chunk = randomBytes(256 * 1024);
    const expected = createHash('sha256');
    const result = await new Promise<string>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: t.relay.port,
        method: 'POST',
        agent: false,
        headers: { Host: t.host, 'Transfer-Encoding': 'chunked' },
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      let i = 0;
      const pump = (): void => {
        while (i < 200) {
          i++;
          expected.update(chunk);
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(result).toBe(`${200 * chunk.length} ${expected.digest('hex')} chunked`);
  });
});

describe('concurrency', () => {
  test('200 concurrent requests with distinct bodies are never mixed', async () => {
    const t = await startTunnel(cleanup, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        // Answer in a scrambled order so responses interleave on the control socket.
        setTimeout(
          () => reply(res, 200, `${req.url}|${Buffer.concat(chunks).toString('hex')}`),
          Math.random() * 50,
        );
      });
    });
    const bodies = Array.from({ length: 200 }, () => randomBytes(2000 + Math.floor(Math.random() * 30_000)));
    const results = await Promise.all(
      bodies.map((body, i) =>
        t.request({
          method: 'POST',
          path: `/r/${i}`,
          body,
          headers: { Host: t.host, 'Content-Length': String(body.length) },
        }),
      ),
    );
    results.forEach((res, i) => expect(res.body.toString()).toBe(`/r/${i}|${bodies[i]!.toString('hex')}`));
  });

  test('a slow request and a stalled download do not delay small requests', async () => {
    let releaseSlow: () => void = () => {};
    const slowReleased = new Promise<void>((r) => (releaseSlow = r));
    const big = Buffer.alloc(1024 * 1024, 7);
    const t = await startTunnel(cleanup, (req, res) => {
      if (req.url === '/slow') return void slowReleased.then(() => reply(res, 200, 'slow'));
      if (req.url === '/big') {
        res.writeHead(200);
        const pump = (): void => {
          while (res.write(big));
          res.once('drain', pump);
        };
        return pump();
      }
      reply(res, 200, 'fast');
    });
    const order: string[] = [];
    const slow = t.request({ path: '/slow' }).then((r) => order.push(r.body.toString()));
    // A public client that reads 1 MiB of an endless download and then stops reading.
    const bigReq = http.get({
      host: '127.0.0.1',
      port: t.relay.port,
      path: '/big',
      agent: false,
      headers: { Host: t.host },
    });
    const bigRes = (await once(bigReq, 'response'))[0] as http.IncomingMessage;
    let got = 0;
    bigRes.on('data', (c: Buffer) => {
      got += c.length;
      if (got > 1024 * 1024) bigRes.pause();
    });
    await waitFor(() => got > 1024 * 1024, 'the big download to start');
    const fast = await Promise.all(Array.from({ length: 20 }, () => t.request({ path: '/fast' })));
    order.push(...fast.map((r) => r.body.toString()));
    releaseSlow();
    await slow;
    bigReq.destroy();
    expect(order).toEqual([...Array(20).fill('fast'), 'slow']);
  });
});

describe('cancellation', () => {
  test('a public client that goes away aborts the local request', async () => {
    let localClosed: () => void = () => {};
    const closed = new Promise<void>((r) => (localClosed = r));
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(200);
      res.write('started');
      res.on('close', () => localClosed());
    });
    const req = http.get({ host: '127.0.0.1', port: t.relay.port, agent: false, headers: { Host: t.host } });
    const res = (await once(req, 'response'))[0] as http.IncomingMessage;
    await once(res, 'data');
    req.destroy();
    await closed; // the local response was torn down, not left hanging
    await waitFor(() => t.client.openStreams === 0, 'the stream to be freed on the client');
  });

  test('a local server that dies mid-response cuts the public response', async () => {
    for (const withLength of [true, false]) {
      const t = await startTunnel(cleanup, (_req, res) => {
        res.writeHead(200, withLength ? { 'Content-Length': '100000' } : {});
        res.write('x'.repeat(1000), () => setTimeout(() => res.socket?.destroy(), 50));
      });
      const outcome = await new Promise<{ complete: boolean; bytes: number }>((resolve) => {
        const req = http.get(
          { host: '127.0.0.1', port: t.relay.port, agent: false, headers: { Host: t.host } },
          (res) => {
            let bytes = 0;
            res.on('data', (c: Buffer) => (bytes += c.length));
            res.on('close', () => resolve({ complete: res.complete, bytes }));
            res.on('error', () => {});
          },
        );
        req.on('error', () => resolve({ complete: false, bytes: -1 }));
      });
      expect(outcome.complete).toBe(false);
      await cleanup.run();
    }
  });
});

describe('memory', () => {
  test('a stalled 1 GiB download holds only the flow-control windows and socket buffers', async () => {
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    const t = await startTunnel(cleanup, (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(1024 * 1024 * 1024) });
      const pump = (): void => {
        while (written < 1024 * 1024 * 1024) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const req = http.get({ host: '127.0.0.1', port: t.relay.port, agent: false, headers: { Host: t.host } });
    const res = (await once(req, 'response'))[0] as http.IncomingMessage;
    res.pause();
    // Wait until the local server can no longer write: the whole chain is pushing back.
    let last = -1;
    await waitFor(
      async () => {
        const before = written;
        await new Promise((r) => setTimeout(r, 500));
        const settled = before === written && written === last;
        last = written;
        return settled;
      },
      'the local server to be stopped by backpressure',
      30_000,
    );
    // Loopback socket buffers (a few MiB each) plus the 256 KiB stream window; unbounded buffering would be ~1 GiB.
    expect(written).toBeLessThan(48 * 1024 * 1024);
    const relayStream = t.relay.relay.tunnel('demo')!.streams[0]!;
    expect(relayStream.bufferedBytes).toBeLessThanOrEqual(DEFAULT_FLOW.streamWindow);
    req.destroy();
  });
});
