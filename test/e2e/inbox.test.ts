// Webhook inbox: requests kept while the client is away, answered 202, delivered byte-exact and in order when it is back.
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TunnelClient } from '../../cli/client.js';
import { connect } from '../../cli/index.js';
import { startInspector } from '../../cli/inspector/index.js';
import { tokenId } from '../../relay/tokens.js';
import type { Exchange } from '../../cli/local-request.js';
import { parseTarget } from '../../cli/target.js';
import {
  Cleanup,
  rawExchange,
  rawRequest,
  startClient,
  startLocal,
  sleep,
  startRelay,
  TOKEN,
  waitFor,
  type LocalServer,
  type TestRelay,
  type SeenRequest as Seen,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A local service recording every request whole; `status` decides each answer (by arrival count). */
async function recorder(status: (n: number, seen: Seen) => number = () => 200) {
  const seen: Seen[] = [];
  const local = await startLocal(cleanup, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s = {
        method: req.method!,
        url: req.url!,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
      };
      seen.push(s);
      res.writeHead(status(seen.length, s), { 'Content-Type': 'text/plain' });
      res.end('ok');
    });
  });
  return { local, seen };
}

function header(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

/** Starts a client for `hooks` with an inbox, then stops it: the name is held and requests are kept. */
async function away(
  relay: TestRelay,
  local: LocalServer,
  inbox: string[] = ['/*'],
  subdomain = 'hooks',
): Promise<string> {
  const client = await startClient(cleanup, relay.url, local.port, { subdomain, inbox });
  const host = new URL(client.url).host;
  await client.close();
  await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
  return host;
}

/** The client back for `hooks`, with its inbox reports and request summaries recorded (and an inspector watching). */
async function back(relay: TestRelay, local: LocalServer, subdomain = 'hooks') {
  const reports: unknown[] = [];
  const exchanges: Exchange[] = [];
  const inspector = await startInspector({ port: 0 });
  cleanup.add(() => inspector.close());
  // Listeners first: the inbox report comes with the welcome.
  const client = new TunnelClient({
    server: relay.url,
    token: TOKEN,
    target: parseTarget(String(local.port)),
    subdomain,
    inbox: ['/*'],
    observe: inspector.observe,
  });
  cleanup.add(() => client.close());
  client.on('inbox', (r) => reports.push(r));
  client.on('request', (x) => exchanges.push(x));
  await client.start();
  return { client, reports, exchanges, inspector };
}

describe('webhook inbox', () => {
  it('keeps a signed GitHub-style POST and a chunked Stripe-style POST while the client is away, and delivers them byte-exact', async () => {
    const relay = await startRelay(cleanup, { inboxRetryMs: 50 });
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    const secret = 'gh-secret';
    const ghBody = JSON.stringify({ action: 'opened', number: 7, text: 'héllo' });
    const ghSig = `sha256=${createHmac('sha256', secret).update(ghBody).digest('hex')}`;
    // Order, case and duplicates as GitHub might send them; the local service must get exactly these first.
    const ghHeaders = ['Host', host, 'X-GitHub-Event', 'pull_request', 'x-hub-signature-256', ghSig];
    ghHeaders.push('Content-Type', 'application/json', 'X-Dup', 'a', 'X-Dup', 'b');
    ghHeaders.push('Content-Length', String(Buffer.byteLength(ghBody)));
    const gh = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/webhooks/github?x=1',
      headers: ghHeaders,
      body: ghBody,
    });
    expect(gh.status).toBe(202);
    const ghId = gh.headers['x-ggrok-inbox'] as string;
    expect(ghId).toMatch(/^ib_/);
    // Stripe-style: Stripe-Signature t=<ts>,v1=HMAC(ts.payload), body sent chunked in pieces.
    const stripeBody = Buffer.from(
      JSON.stringify({ id: 'evt_1', type: 'charge.succeeded', n: 'x'.repeat(5000) }),
    );
    const ts = Math.floor(Date.now() / 1000);
    const v1 = createHmac('sha256', 'whsec').update(`${ts}.${stripeBody.toString()}`).digest('hex');
    const parts = [stripeBody.subarray(0, 100), stripeBody.subarray(100, 3000), stripeBody.subarray(3000)];
    const chunked = parts.map((p) => `${p.length.toString(16)}\r\n${p.toString('latin1')}\r\n`).join('');
    const text = await rawExchange(
      relay.port,
      `POST /stripe HTTP/1.1\r\nHost: ${host}\r\nStripe-Signature: t=${ts},v1=${v1}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}0\r\n\r\n`,
    );
    expect(text).toMatch(/^HTTP\/1.1 202 /);
    const stripeId = /X-Ggrok-Inbox: (\S+)/i.exec(text)?.[1];
    expect(stripeId).toMatch(/^ib_/);
    expect(seen).toHaveLength(0);
    expect(relay.relay.inbox.count).toBe(2);
    const metrics = await rawRequest({
      port: relay.port,
      path: '/_ggrok/metrics',
      headers: { Host: `127.0.0.1:${relay.port}`, Authorization: `Bearer ${TOKEN}` },
    });
    expect(metrics.body.toString()).toMatch(/^ggrok_inbox_requests\{[^}]*\} 2$/m);

    const { reports, exchanges, inspector } = await back(relay, local);
    await waitFor(() => seen.length === 2, 'both deliveries');
    expect(reports).toEqual([{ name: 'hooks', kept: 2, refused: 0, failed: 0 }]);
    const [first, second] = seen as [Seen, Seen];
    expect(first.method).toBe('POST');
    expect(first.url).toBe('/webhooks/github?x=1');
    expect(first.body.toString()).toBe(ghBody);
    // The head as sent, in order and case, duplicates kept; then the relay's forwarding and inbox headers.
    expect(first.rawHeaders.slice(0, ghHeaders.length)).toEqual(ghHeaders);
    const verify = `sha256=${createHmac('sha256', secret).update(first.body).digest('hex')}`;
    expect(header(first.rawHeaders, 'x-hub-signature-256')).toBe(verify);
    expect(header(first.rawHeaders, 'x-ggrok-inbox')).toBe(ghId);
    const at = Date.parse(header(first.rawHeaders, 'x-ggrok-received-at') ?? '');
    expect(Math.abs(at - Date.now())).toBeLessThan(60_000);

    expect(second.url).toBe('/stripe');
    expect(second.body.equals(stripeBody)).toBe(true);
    const sig = header(second.rawHeaders, 'stripe-signature')!;
    const [, t, v] = /^t=(\d+),v1=([0-9a-f]+)$/.exec(sig)!;
    expect(createHmac('sha256', 'whsec').update(`${t}.${second.body.toString()}`).digest('hex')).toBe(v);
    expect(header(second.rawHeaders, 'x-ggrok-inbox')).toBe(stripeId);
    await waitFor(() => relay.relay.inbox.count === 0, 'the inbox to empty');
    await waitFor(() => exchanges.length === 2, 'both summaries');
    expect(exchanges.map((x) => x.inbox)).toEqual([ghId, stripeId]);
    // The inspector lists them as inbox deliveries, with the time the relay received them.
    const listed = await rawRequest({
      port: Number(new URL(inspector.url).port),
      path: '/api/exchanges',
      headers: { Host: new URL(inspector.url).host },
    });
    const rows = (
      JSON.parse(listed.body.toString()) as {
        exchanges: { target: string; inbox?: string; receivedAt?: number }[];
      }
    ).exchanges;
    expect(rows.map((r) => [r.target, r.inbox]).sort()).toEqual([
      ['/stripe', stripeId],
      ['/webhooks/github?x=1', ghId],
    ]);
    expect(
      rows.every((r) => typeof r.receivedAt === 'number' && Math.abs(r.receivedAt - Date.now()) < 60_000),
    ).toBe(true);
  });

  it('delivers 50 kept requests in the order they arrived', async () => {
    const relay = await startRelay(cleanup);
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    for (let i = 0; i < 50; i++) {
      const r = await rawRequest({
        port: relay.port,
        method: 'POST',
        path: `/e/${i}`,
        headers: { Host: host, 'Content-Type': 'text/plain' },
        body: `event ${i}`,
      });
      expect(r.status).toBe(202);
    }
    await back(relay, local);
    await waitFor(() => seen.length === 50, '50 deliveries');
    expect(seen.map((s) => s.url)).toEqual(Array.from({ length: 50 }, (_, i) => `/e/${i}`));
    expect(seen.map((s) => s.body.toString())).toEqual(Array.from({ length: 50 }, (_, i) => `event ${i}`));
    await waitFor(() => relay.relay.inbox.count === 0, 'the inbox to empty');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toHaveLength(50); // never twice
  });

  it('retries a delivery the local service answered 500, and delivers it once it answers 2xx, never twice', async () => {
    const relay = await startRelay(cleanup, { inboxRetryMs: 50 });
    const { local, seen } = await recorder((n) => (n <= 2 ? 500 : 200));
    const host = await away(relay, local);
    const r = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/hook',
      headers: { Host: host },
      body: 'x',
    });
    expect(r.status).toBe(202);
    const next = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/later',
      headers: { Host: host },
      body: 'y',
    });
    expect(next.status).toBe(202);
    await back(relay, local);
    await waitFor(() => seen.length === 4, 'two failures, then both delivered');
    expect(seen.map((s) => s.url)).toEqual(['/hook', '/hook', '/hook', '/later']);
    await waitFor(() => relay.relay.inbox.count === 0, 'the inbox to empty');
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toHaveLength(4);
    expect(relay.events.filter((e) => e.event === 'inbox_delivered').map((e) => e.attempts)).toEqual([2, 0]);
  });

  it('keeps a request as failed after the bounded attempts, and tells the owner', async () => {
    const relay = await startRelay(cleanup, { inboxRetryMs: 20, inboxMaxAttempts: 3 });
    const { local, seen } = await recorder(() => 500);
    const host = await away(relay, local);
    await rawRequest({ port: relay.port, method: 'POST', path: '/hook', headers: { Host: host }, body: 'x' });
    const first = await back(relay, local);
    await waitFor(() => seen.length === 3, 'three attempts');
    await waitFor(() => relay.events.some((e) => e.event === 'inbox_failed'), 'the failure');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toHaveLength(3);
    expect(relay.relay.inbox.count).toBe(1);
    await first.client.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
    const again = await back(relay, local);
    expect(again.reports).toEqual([{ name: 'hooks', kept: 0, refused: 0, failed: 1 }]);
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toHaveLength(3); // a failed request is not retried on its own
  });

  it('keeps nothing for a name nobody holds, for paths outside the patterns, or for upgrades', async () => {
    const relay = await startRelay(cleanup, { waitForClientMs: 0 });
    const { local } = await recorder();
    const unheld = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/x',
      headers: { Host: `nobody.localhost:${relay.port}` },
      body: 'x',
    });
    expect(unheld.status).toBe(404);
    const host = await away(relay, local, ['/webhooks/*']);
    const outside = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/other',
      headers: { Host: host },
      body: 'x',
    });
    expect(outside.status).toBe(503);
    expect(outside.headers['x-ggrok-error']).toBe('tunnel_offline');
    const inside = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/webhooks/a',
      headers: { Host: host },
      body: 'x',
    });
    expect(inside.status).toBe(202);
    const upgrade = await rawExchange(
      relay.port,
      `GET /webhooks/ws HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    expect(upgrade).toMatch(/^HTTP\/1.1 503 /);
    expect(relay.relay.inbox.count).toBe(1);
  });

  it('refuses a body over the cap (413) and the request after the count cap (503), and counts refusals for the owner', async () => {
    const relay = await startRelay(cleanup, { inboxMaxRequests: 3, inboxMaxBodyBytes: 1024 });
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    const big = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/big',
      headers: { Host: host },
      body: Buffer.alloc(1025, 1),
    });
    expect(big.status).toBe(413);
    expect(big.headers['x-ggrok-error']).toBe('payload_too_large');
    // Chunked, so the cap is found while reading.
    const chunkedBig = await rawExchange(
      relay.port,
      `POST /big HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'a'.repeat(1024)}\r\n1\r\nb\r\n0\r\n\r\n`,
      (t) => t.includes('\r\n\r\n'),
    );
    expect(chunkedBig).toMatch(/^HTTP\/1.1 413 /);
    for (let i = 0; i < 3; i++)
      expect(
        (
          await rawRequest({
            port: relay.port,
            method: 'POST',
            path: `/${i}`,
            headers: { Host: host },
            body: 'x',
          })
        ).status,
      ).toBe(202);
    const over = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/3',
      headers: { Host: host },
      body: 'x',
    });
    expect(over.status).toBe(503);
    expect(over.headers['x-ggrok-error']).toBe('inbox_full');
    expect(relay.relay.inbox.count).toBe(3);
    const { reports } = await back(relay, local);
    await waitFor(() => seen.length === 3, 'three deliveries');
    expect(reports).toEqual([{ name: 'hooks', kept: 3, refused: 1, failed: 0 }]);
  });

  it('with the default limits: a body over 1 MiB gets 413 and the 1 001st request 503; nothing older is dropped', async () => {
    const relay = await startRelay(cleanup);
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    const big = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/big',
      headers: { Host: host },
      body: Buffer.alloc(1024 * 1024 + 1, 7),
    });
    expect(big.status).toBe(413);
    const exact = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/exact',
      headers: { Host: host },
      body: Buffer.alloc(1024 * 1024, 7),
    });
    expect(exact.status).toBe(202);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    cleanup.add(() => agent.destroy());
    const statuses = await Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        rawRequest({
          port: relay.port,
          method: 'POST',
          path: `/${i}`,
          headers: { Host: host },
          body: `${i}`,
          agent,
        }),
      ).map((p) => p.then((r) => r.status)),
    );
    expect(statuses.filter((s) => s === 202)).toHaveLength(999);
    expect(statuses.filter((s) => s === 503)).toHaveLength(1);
    expect(relay.relay.inbox.count).toBe(1000);
    const { reports } = await back(relay, local);
    expect(reports).toEqual([{ name: 'hooks', kept: 1000, refused: 1, failed: 0 }]);
    await waitFor(() => seen.length === 1000, '1 000 deliveries', 60_000);
    expect(seen[0]!.url).toBe('/exact');
    expect(seen[0]!.body.length).toBe(1024 * 1024);
  });

  it('a relay-wide cap refuses requests for every tunnel once the inboxes together hold it', async () => {
    const relay = await startRelay(cleanup, {
      inboxMaxTotalBytes: 16 * 1024,
      inboxMaxTunnelBytes: 12 * 1024,
    });
    const { local } = await recorder();
    const a = await away(relay, local, ['/*'], 'aaa');
    const b = await away(relay, local, ['/*'], 'bbb');
    const post = (host: string) =>
      rawRequest({
        port: relay.port,
        method: 'POST',
        path: '/',
        headers: { Host: host },
        body: Buffer.alloc(5000),
      });
    expect((await post(a)).status).toBe(202);
    expect((await post(a)).status).toBe(202);
    expect((await post(a)).status).toBe(503); // its own cap: 12 KiB
    expect((await post(b)).status).toBe(202);
    const refused = await post(b); // the relay's: 16 KiB over both
    expect(refused.status).toBe(503);
    expect(refused.headers['x-ggrok-error']).toBe('inbox_full');
    expect(relay.relay.inbox.bytes).toBeLessThanOrEqual(16 * 1024);
    expect(relay.relay.inbox.count).toBe(3);
  });

  it('a flood from one visitor stays within the caps and does not slow another tunnel', async () => {
    const relay = await startRelay(cleanup, {
      inboxMaxRequests: 100,
      inboxMaxTunnelBytes: 512 * 1024,
      streamsPerSecond: 100_000,
    });
    const { local } = await recorder();
    const host = await away(relay, local);
    const other = await startLocal(cleanup, (_req, res) => res.end('fine'));
    const live = await startClient(cleanup, relay.url, other.port, { subdomain: 'live' });
    const liveHost = new URL(live.url).host;
    let peakBytes = 0;
    let peakCount = 0;
    const sampler = setInterval(() => {
      peakBytes = Math.max(peakBytes, relay.relay.inbox.bytes);
      peakCount = Math.max(peakCount, relay.relay.inbox.count);
    }, 1);
    cleanup.add(() => clearInterval(sampler));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    cleanup.add(() => agent.destroy());
    const flood = Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        rawRequest({
          port: relay.port,
          method: 'POST',
          path: `/${i}`,
          headers: { Host: host },
          body: Buffer.alloc(16 * 1024, i),
          agent,
        }).then((r) => r.status),
      ),
    );
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = Date.now();
      const r = await rawRequest({ port: relay.port, headers: { Host: liveHost } });
      expect(r.body.toString()).toBe('fine');
      latencies.push(Date.now() - started);
    }
    const statuses = await flood;
    clearInterval(sampler);
    expect(statuses.every((s) => s === 202 || s === 503)).toBe(true);
    const kept = statuses.filter((s) => s === 202).length;
    expect(kept).toBe(relay.relay.inbox.count);
    expect(kept).toBeLessThanOrEqual(100);
    expect(peakCount).toBeLessThanOrEqual(100);
    expect(peakBytes).toBeLessThanOrEqual(512 * 1024);
    expect(relay.relay.inbox.bytes).toBeLessThanOrEqual(512 * 1024);
    // Generous: the other tunnel's requests are served while the flood is refused, not after it.
    expect(Math.max(...latencies)).toBeLessThan(2000);
  });

  it('with --inbox-dir, kept requests survive a relay restart and are delivered by the new process', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ggrok-inbox-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const { local, seen } = await recorder();
    const first = await startRelay(cleanup, { inboxDir: dir });
    const host = await away(first, local);
    const body = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    const kept = await rawRequest({
      port: first.port,
      method: 'PUT',
      path: '/bin?a=%20b',
      headers: ['Host', host, 'X-Order', '1', 'content-type', 'application/octet-stream'],
      body,
    });
    expect(kept.status).toBe(202);
    const chunked = await rawExchange(
      first.port,
      `POST /two HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    );
    expect(chunked).toMatch(/^HTTP\/1.1 202 /);
    await first.relay.close(0);
    expect(readdirSync(dir).filter((f) => f.endsWith('.req'))).toHaveLength(2);

    const second = await startRelay(cleanup, { inboxDir: dir });
    expect(second.relay.inbox.count).toBe(2);
    const { reports } = await back(second, local);
    expect(reports).toEqual([{ name: 'hooks', kept: 2, refused: 0, failed: 0 }]);
    await waitFor(() => seen.length === 2, 'both deliveries after the restart');
    expect(seen[0]!.method).toBe('PUT');
    expect(seen[0]!.url).toBe('/bin?a=%20b');
    expect(seen[0]!.rawHeaders.slice(0, 6)).toEqual([
      'Host',
      host,
      'X-Order',
      '1',
      'content-type',
      'application/octet-stream',
    ]);
    expect(seen[0]!.body.equals(body)).toBe(true);
    expect(seen[1]!.body.toString()).toBe('abc');
    await waitFor(() => second.relay.inbox.count === 0, 'the inbox to empty');
    await second.relay.close(0);
    // Stopped while the client was connected: it is away now, and its hold waits for the next start.
    expect(readdirSync(dir)).toEqual(['hold.hooks.json']);
  });

  it('reads --inbox-dir files as hostile: anything malformed, oversized or inconsistent is skipped', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ggrok-inbox-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const meta = {
      v: 1,
      id: 'ib_AAAAAAAAAAAAAAAA',
      name: 'hooks',
      owner: 'ab'.repeat(32),
      seq: 1,
      receivedAt: Date.now(),
      method: 'POST',
      target: '/x',
      headers: ['Host', 'hooks.localhost', 'Content-Length', '2'],
      body: 1,
      attempts: 0,
      state: 'queued',
      bytes: 2,
    };
    const put = (id: string, m: object, data = 'ok'): void =>
      writeFileSync(path.join(dir, `${id}.req`), `${JSON.stringify({ ...meta, id, ...m })}\n${data}`);
    put('ib_AAAAAAAAAAAAAAAA', {}); // the one good file
    put('ib_BBBBBBBBBBBBBBBB', { id: 'ib_CCCCCCCCCCCCCCCC' }); // id differs from its name
    put('ib_DDDDDDDDDDDDDDDD', { headers: ['Bad Name', 'x', 'Content-Length', '2'] });
    put('ib_EEEEEEEEEEEEEEEE', { headers: ['Host', 'a\r\nX: y', 'Content-Length', '2'] });
    put('ib_FFFFFFFFFFFFFFFF', {}, 'longer than said');
    put('ib_GGGGGGGGGGGGGGGG', { headers: ['Content-Length', '9'] });
    put('ib_HHHHHHHHHHHHHHHH', { name: '../etc' });
    put('ib_IIIIIIIIIIIIIIII', { target: '/a b' });
    put('ib_JJJJJJJJJJJJJJJJ', { method: 'GET /' });
    put('ib_KKKKKKKKKKKKKKKK', { bytes: 2 ** 40 });
    put('ib_LLLLLLLLLLLLLLLL', { seq: -1 });
    put('ib_MMMMMMMMMMMMMMMM', { v: 2 });
    put('ib_NNNNNNNNNNNNNNNN', { headers: 'Host: x' });
    writeFileSync(path.join(dir, 'ib_OOOOOOOOOOOOOOOO.req'), Buffer.from([0xff, 0x00, 0x10]));
    writeFileSync(path.join(dir, 'ib_PPPPPPPPPPPPPPPP.req'), `{"v":1}`); // no line end
    writeFileSync(path.join(dir, 'ib_QQQQQQQQQQQQQQQQ.req.123.tmp'), 'half written');
    writeFileSync(path.join(dir, 'notes.txt'), 'not ours');
    const hold = {
      v: 1,
      name: 'hooks',
      owner: 'ab'.repeat(32),
      patterns: ['/*'],
      heldUntil: Date.now() + 60_000,
    };
    writeFileSync(path.join(dir, 'hold.hooks.json'), JSON.stringify(hold));
    writeFileSync(path.join(dir, 'hold.other.json'), JSON.stringify({ ...hold }));
    writeFileSync(
      path.join(dir, 'hold.third.json'),
      JSON.stringify({
        ...hold,
        name: 'third',
        access: { basicAuth: ['nopassword'], allowIp: [], optionsWithoutAuth: false },
      }),
    );
    writeFileSync(
      path.join(dir, 'hold.fourth.json'),
      JSON.stringify({ ...hold, name: 'fourth', patterns: ['no-slash'] }),
    );
    const relay = await startRelay(cleanup, { inboxDir: dir, inboxMaxBodyBytes: 1024 });
    expect(relay.relay.inbox.count).toBe(1);
    const rejected = relay.events.filter((e) => e.event === 'inbox_file_rejected').map((e) => e.file);
    expect(rejected).toHaveLength(17);
    expect(rejected).toEqual(
      expect.arrayContaining(['hold.other.json', 'hold.third.json', 'hold.fourth.json']),
    );
    // The good hold is kept again: requests for its name go to its inbox, and the name stays its owner's.
    const kept = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/after',
      headers: { Host: `hooks.localhost:${relay.port}` },
      body: 'x',
    });
    expect(kept.status).toBe(202);
    expect(relay.relay.inbox.count).toBe(2);
    expect(readdirSync(dir)).not.toContain('ib_QQQQQQQQQQQQQQQQ.req.123.tmp');
    expect(readdirSync(dir)).toContain('notes.txt');
  });

  it('with --inbox-dir, an away tunnel stays away across a relay restart: its requests are kept, its rules still apply', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ggrok-inbox-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const { local, seen } = await recorder();
    const first = await startRelay(cleanup, { inboxDir: dir });
    const client = await startClient(cleanup, first.url, local.port, {
      subdomain: 'hooks',
      inbox: ['/hooks/*'],
      access: { basicAuth: ['gh:s3cret'], allowIp: [], optionsWithoutAuth: false },
    });
    await client.close();
    await waitFor(() => first.relay.tunnelCount === 0, 'the tunnel to go');
    await first.relay.close(0);
    expect(readdirSync(dir)).toEqual(['hold.hooks.json']);

    const second = await startRelay(cleanup, { inboxDir: dir, waitForClientMs: 0 });
    const host = `hooks.localhost:${second.port}`;
    const auth = `Basic ${Buffer.from('gh:s3cret').toString('base64')}`;
    const anonymous = await rawRequest({
      port: second.port,
      method: 'POST',
      path: '/hooks/a',
      headers: { Host: host },
      body: 'x',
    });
    expect(anonymous.status).toBe(401);
    const outside = await rawRequest({
      port: second.port,
      method: 'POST',
      path: '/elsewhere',
      headers: { Host: host, Authorization: auth },
      body: 'x',
    });
    expect(outside.status).toBe(503);
    const kept = await rawRequest({
      port: second.port,
      method: 'POST',
      path: '/hooks/a',
      headers: { Host: host, Authorization: auth },
      body: 'after the restart',
    });
    expect(kept.status).toBe(202);
    await back(second, local);
    await waitFor(() => seen.length === 1, 'the delivery');
    expect(seen[0]!.url).toBe('/hooks/a');
    expect(seen[0]!.body.toString()).toBe('after the restart');
    expect(header(seen[0]!.rawHeaders, 'authorization')).toBeUndefined(); // consumed by the relay, as live
    await waitFor(() => second.relay.inbox.count === 0, 'the inbox to empty');
    await second.relay.close(0);
    // Stopped while the client was connected: it is away now, and its hold waits for the next start.
    expect(readdirSync(dir)).toEqual(['hold.hooks.json']);
  });

  it("a sender's own X-Ggrok-Inbox and X-Ggrok-Received-At never reach the app, live or kept", async () => {
    const relay = await startRelay(cleanup);
    const { local, seen } = await recorder();
    const forged = { 'X-Ggrok-Inbox': 'ib_forgedforgedforg', 'x-ggrok-received-at': '1999-01-01T00:00:00Z' };
    const client = await startClient(cleanup, relay.url, local.port, { subdomain: 'hooks', inbox: ['/*'] });
    const host = new URL(client.url).host;
    await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/live',
      headers: { Host: host, ...forged },
      body: 'a',
    });
    await client.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
    const kept = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/kept',
      headers: { Host: host, ...forged },
      body: 'b',
    });
    await back(relay, local);
    await waitFor(() => seen.length === 2, 'both requests');
    expect(header(seen[0]!.rawHeaders, 'x-ggrok-inbox')).toBeUndefined();
    expect(header(seen[0]!.rawHeaders, 'x-ggrok-received-at')).toBeUndefined();
    const inbox = seen[1]!.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase().startsWith('x-ggrok-'));
    expect(inbox).toEqual(['X-Ggrok-Inbox', 'X-Ggrok-Received-At']);
    expect(header(seen[1]!.rawHeaders, 'x-ggrok-inbox')).toBe(kept.headers['x-ggrok-inbox']);
  });

  it('never gives what was kept for one owner to another who takes the name after the hold ends', async () => {
    const relay = await startRelay(cleanup, { tokens: [TOKEN, 'other-token'], nameGraceMs: 300 });
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    const kept = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/mine',
      headers: { Host: host },
      body: 'x',
    });
    expect(kept.status).toBe(202);
    await sleep(600); // the hold ends
    const late = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/late',
      headers: { Host: host },
      body: 'x',
    });
    expect(late.status).not.toBe(202);
    const reports: unknown[] = [];
    const stranger = new TunnelClient({
      server: relay.url,
      token: 'other-token',
      target: parseTarget(String(local.port)),
      subdomain: 'hooks',
      inbox: ['/*'],
    });
    cleanup.add(() => stranger.close());
    stranger.on('inbox', (r) => reports.push(r));
    await stranger.start();
    await sleep(300);
    expect(seen).toEqual([]);
    expect(reports).toEqual([]);
    expect(relay.relay.inbox.count).toBe(1);
    expect(relay.relay.inbox.list(tokenId(TOKEN)).map((r) => r.target)).toEqual(['/mine']);
    expect(relay.relay.inbox.list(tokenId('other-token'))).toEqual([]);
  });

  it('drops a kept request after the time to live (injected clock), and says so in the log', async () => {
    let now = Date.now();
    const relay = await startRelay(cleanup, { now: () => now, inboxTtlMs: 24 * 60 * 60_000 });
    const { local, seen } = await recorder();
    const host = await away(relay, local);
    const post = (p: string) =>
      rawRequest({ port: relay.port, method: 'POST', path: p, headers: { Host: host }, body: p });
    expect((await post('/old')).status).toBe(202);
    now += 12 * 60 * 60_000;
    expect((await post('/young')).status).toBe(202);
    now += 12 * 60 * 60_000; // /old is 24 h old now
    const { reports } = await back(relay, local);
    expect(reports).toEqual([{ name: 'hooks', kept: 1, refused: 0, failed: 0 }]);
    await waitFor(() => seen.length === 1, 'the young one');
    expect(seen[0]!.url).toBe('/young');
    expect(Date.parse(header(seen[0]!.rawHeaders, 'x-ggrok-received-at')!)).toBe(now - 12 * 60 * 60_000);
    expect(relay.events.filter((e) => e.event === 'inbox_expired')).toHaveLength(1);
    await sleep(200);
    expect(seen).toHaveLength(1);
  });

  it('tunnels of one connection each have their own inbox, reported by name', async () => {
    const relay = await startRelay(cleanup, { waitForClientMs: 0 });
    const { local, seen } = await recorder();
    const spec = (subdomain: string, inbox?: string[]) => ({
      subdomain,
      target: parseTarget(String(local.port)),
      ...(inbox ? { inbox } : {}),
    });
    const first = await startClient(cleanup, relay.url, local.port, {
      subdomain: 'plain',
      more: [spec('hooks', ['/*'])],
    });
    await first.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnels to go');
    const to = (name: string) =>
      rawRequest({
        port: relay.port,
        method: 'POST',
        path: '/x',
        headers: { Host: `${name}.localhost:${relay.port}` },
        body: name,
      });
    expect((await to('hooks')).status).toBe(202);
    expect((await to('plain')).status).toBe(503); // no inbox: answered as always
    const reports: unknown[] = [];
    const again = new TunnelClient({
      server: relay.url,
      token: TOKEN,
      ...spec('plain'),
      more: [spec('hooks', ['/*'])],
    });
    cleanup.add(() => again.close());
    again.on('inbox', (r) => reports.push(r));
    await again.start();
    expect(reports).toEqual([{ name: 'hooks', kept: 1, refused: 0, failed: 0 }]);
    await waitFor(() => seen.length === 1, 'the delivery');
    expect(header(seen[0]!.rawHeaders, 'host')).toBe(`hooks.localhost:${relay.port}`);
    expect(seen[0]!.body.toString()).toBe('hooks');
  });

  it('a visitor who cuts its upload short leaves nothing kept and nothing reserved', async () => {
    const relay = await startRelay(cleanup);
    const { local } = await recorder();
    const host = await away(relay, local);
    for (const head of [
      `POST /a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(5000)}`,
      `POST /b HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n${'y'.repeat(2000)}`,
    ]) {
      const socket = net.connect(relay.port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(head);
      await waitFor(() => relay.relay.inbox.bytes > 0, 'the upload to be under way');
      socket.destroy();
      await waitFor(() => relay.relay.inbox.bytes === 0, 'its reservation to be freed');
    }
    expect(relay.relay.inbox.count).toBe(0);
    // The relay still keeps requests afterwards.
    const ok = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/c',
      headers: { Host: host },
      body: 'z',
    });
    expect(ok.status).toBe(202);
  });

  it('connect({ inbox: true }) turns the inbox on from the programmatic API', async () => {
    const relay = await startRelay(cleanup, { waitForClientMs: 0 });
    const { local } = await recorder();
    const tunnel = await connect({
      port: local.port,
      server: relay.url,
      token: TOKEN,
      subdomain: 'sdk',
      inbox: true,
    });
    const host = new URL(tunnel.url).host;
    await tunnel.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
    const kept = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/any',
      headers: { Host: host },
      body: 'x',
    });
    expect(kept.status).toBe(202);
    const plain = await connect({ port: local.port, server: relay.url, token: TOKEN, subdomain: 'plain' });
    const plainHost = new URL(plain.url).host;
    await plain.close();
    await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
    const notKept = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: '/any',
      headers: { Host: plainHost },
      body: 'x',
    });
    expect(notKept.status).toBe(503);
  });
});
