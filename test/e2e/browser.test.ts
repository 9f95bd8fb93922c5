// A real browser (Debian's Chromium through playwright-core) loads a page through the tunnel and talks WebSocket to its own origin.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { afterEach, expect, test } from 'vitest';
import { WebSocketServer, type RawData } from 'ws';
import { launchChromium } from '../browser.js';
import { Cleanup, reply, startTunnel } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>ggrok browser test</title>
<pre id="out">waiting</pre>
<script>
  const out = document.getElementById('out');
  const replies = [];
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    ws.send('hello from the browser');
    ws.send(new Uint8Array([1, 2, 3, 250]));
  };
  ws.onmessage = (e) => {
    replies.push(typeof e.data === 'string' ? e.data : 'bytes:' + Array.from(new Uint8Array(e.data)).join(','));
    if (replies.length === 2) out.textContent = JSON.stringify({ replies, extensions: ws.extensions, url: ws.url });
  };
  ws.onerror = () => (out.textContent = 'websocket error');
  ws.onclose = (e) => { if (replies.length < 2) out.textContent = 'closed early: ' + e.code; };
</script>`;

test('a page loaded through the tunnel opens a WebSocket to its own origin and gets its echo', async () => {
  const t = await startTunnel(cleanup, (req, res) => {
    if (req.url === '/')
      reply(res, 200, PAGE, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    else reply(res, 404, 'not here');
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: true });
  const upgrades: IncomingMessage[] = [];
  const sockets: Duplex[] = [];
  cleanup.add(() => {
    sockets.forEach((s) => s.destroy());
    wss.close();
  });
  t.local.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrades.push(req);
    sockets.push(socket);
    socket.on('error', () => {});
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      ws.on('message', (data: RawData, isBinary: boolean) => {
        const buf = Buffer.isBuffer(data)
          ? data
          : Array.isArray(data)
            ? Buffer.concat(data)
            : Buffer.from(data);
        ws.send(isBinary ? Buffer.from(buf.map((b) => 255 - b)) : `echo: ${buf.toString()}`, {
          binary: isBinary,
        });
      });
    });
  });

  const browser = await launchChromium(cleanup);
  const page = await browser.newPage();
  const url = `${t.client.url}/`; // http://demo.localhost:<relay port>/ — Chromium maps *.localhost to loopback itself
  expect(new URL(url).hostname).toBe('demo.localhost');
  const response = await page.goto(url, { timeout: 15_000 });
  expect(response?.status()).toBe(200);
  const out = page.locator('#out');
  await expect
    .poll(() => out.textContent({ timeout: 2000 }), { timeout: 15_000, interval: 50 })
    .toMatch(/^\{/);
  const result = JSON.parse((await out.textContent()) ?? '') as {
    replies: string[];
    extensions: string;
    url: string;
  };
  expect(result.replies).toEqual(['echo: hello from the browser', 'bytes:254,253,252,5']);
  expect(result.url).toBe(`ws://${t.host}/ws`);
  // The browser and the local server negotiated compression between themselves, across the tunnel.
  expect(result.extensions).toContain('permessage-deflate');

  // The local server saw the page request and the upgrade with the tunnel's Host (and the page's Origin).
  // (Chromium may also ask for /favicon.ico; every request must carry the tunnel's Host.)
  expect(t.local.requests.find((r) => r.url === '/')?.headers.host).toBe(t.host);
  expect(new Set(t.local.requests.map((r) => r.headers.host))).toEqual(new Set([t.host]));
  expect(upgrades.map((r) => [r.url, r.headers.host, r.headers.origin])).toEqual([
    ['/ws', t.host, `http://${t.host}`],
  ]);
});
