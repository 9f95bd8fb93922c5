// The relay's traffic counters, as the client receives them, appear in the inspector's tunnel list.
import { afterEach, expect, test } from 'vitest';
import { startInspector } from '../../cli/inspector/index.js';
import { parseTarget } from '../../cli/target.js';
import { Cleanup, rawRequest } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('setStats feeds /api/tunnels (the page header shows it)', async () => {
  const inspector = await startInspector({ port: 0 });
  cleanup.add(() => inspector.close());
  const port = Number(new URL(inspector.url).port);
  const get = async (): Promise<unknown> =>
    JSON.parse(
      (
        await rawRequest({ port, path: '/api/tunnels', headers: { Host: `127.0.0.1:${port}` } })
      ).body.toString(),
    );
  inspector.setTunnels([{ name: 'web', url: 'https://web.example.com', target: parseTarget('3000') }]);
  expect(await get()).toMatchObject({ tunnels: [{ name: 'web', traffic: null }] });
  inspector.setStats({ name: 'web', requests: 7, bytesIn: 100, bytesOut: 2048, channels: 1 });
  expect(await get()).toMatchObject({
    tunnels: [{ name: 'web', traffic: { requests: 7, bytesIn: 100, bytesOut: 2048, channels: 1 } }],
  });
});
