// The inspector page in a real Chromium (playwright-core): a tunnelled request appears live, shows, and replays.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, expect, test } from 'vitest';
import { startInspector } from '../../cli/inspector/index.js';
import { parseTarget } from '../../cli/target.js';
import { launchChromium } from '../browser.js';
import { Cleanup, startTunnel, waitFor } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

test('a request through the tunnel appears live; its details show; Replay and Edit & Replay reach the local server', async () => {
  const inspector = await startInspector({ port: 0 });
  cleanup.add(() => inspector.close());
  const seen: Seen[] = [];
  const t = await startTunnel(
    cleanup,
    (req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
        const answer = JSON.stringify({ youSent: body, path: req.url });
        res.writeHead(200, {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(answer),
        });
        res.end(answer);
      });
    },
    { client: { observe: inspector.observe } },
  );
  inspector.setTunnels([
    { name: t.client.name, url: t.client.url, target: parseTarget(String(t.local.port)) },
  ]);

  const browser = await launchChromium(cleanup);
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  await page.goto(inspector.url, { timeout: 15_000 });
  await expect
    .poll(() => page.getByTestId('connection-status').textContent({ timeout: 2000 }), {
      timeout: 15_000,
      interval: 50,
    })
    .toBe('live');
  expect(await page.getByTestId('exchange-row').count()).toBe(0);

  // The request happens after the page loaded: it must arrive without a reload.
  const res = await t.request({
    method: 'POST',
    path: '/hello?from=browser-test',
    headers: { Host: t.host, 'Content-Type': 'application/json', 'X-Browser-Test': 'yes' },
    body: '{"a":1,"list":[true]}',
  });
  expect(res.status).toBe(200);
  const row = page.getByTestId('exchange-row').filter({ hasText: '/hello?from=browser-test' });
  await expect.poll(() => row.count(), { timeout: 15_000, interval: 50 }).toBe(1);
  await expect
    .poll(() => row.getByTestId('row-status').textContent({ timeout: 2000 }), { timeout: 15_000 })
    .toBe('200');
  expect(await row.getByTestId('row-method').textContent()).toBe('POST');

  await row.click();
  await expect
    .poll(() => page.getByTestId('request-headers').textContent({ timeout: 2000 }), { timeout: 15_000 })
    .toContain('X-Browser-Test');
  expect(await page.getByTestId('request-headers').textContent()).toContain(t.host);
  expect(await page.getByTestId('request-body-text').textContent()).toBe(
    '{\n  "a": 1,\n  "list": [\n    true\n  ]\n}',
  );
  expect(JSON.parse((await page.getByTestId('response-body-text').textContent())!)).toEqual({
    youSent: '{"a":1,"list":[true]}',
    path: '/hello?from=browser-test',
  });
  expect(await page.getByTestId('detail-title').textContent()).toBe(
    `POST ${t.client.url}/hello?from=browser-test`,
  );

  // Replay: the local server gets the same request again, and the replay shows up selected.
  expect(seen).toHaveLength(1);
  await page.getByTestId('replay').click();
  await waitFor(() => seen.length === 2, 'the local server to receive the replay', 15_000);
  expect(seen[1]).toMatchObject({
    method: 'POST',
    url: '/hello?from=browser-test',
    body: '{"a":1,"list":[true]}',
  });
  expect(seen[1]!.headers['x-browser-test']).toBe('yes');
  await expect
    .poll(() => page.getByTestId('detail-meta').textContent({ timeout: 2000 }), { timeout: 15_000 })
    .toContain('replay of #');
  await expect.poll(() => page.getByTestId('exchange-row').count(), { timeout: 15_000 }).toBe(2);

  // Edit & Replay with another path and body.
  await page.getByTestId('edit-replay').click();
  await page.getByTestId('edit-target').fill('/changed/path?x=2');
  await page.getByTestId('edit-body').fill('{"b":2}');
  await page.getByTestId('edit-send').click();
  await waitFor(() => seen.length === 3, 'the local server to receive the edited replay', 15_000);
  expect(seen[2]).toMatchObject({ method: 'POST', url: '/changed/path?x=2', body: '{"b":2}' });
  expect(seen[2]!.headers['content-length']).toBe('7');
  await expect
    .poll(() => page.getByTestId('exchange-row').filter({ hasText: '/changed/path?x=2' }).count(), {
      timeout: 15_000,
    })
    .toBe(1);

  // Copy as curl shows the command for the public URL; the HAR link points at the export.
  await page.getByTestId('copy-curl').click();
  await expect
    .poll(() => page.getByTestId('curl-output').textContent({ timeout: 2000 }), { timeout: 15_000 })
    .toContain(`curl '${t.client.url}/changed/path?x=2'`);
  expect(await page.getByTestId('download-har').getAttribute('href')).toBe('/api/har');

  expect(problems).toEqual([]);
});
