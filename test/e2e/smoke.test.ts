// Smallest end-to-end check: one request through a real relay and client.
import { afterEach, expect, test } from 'vitest';
import { Cleanup, reply, startTunnel } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('a GET reaches the local server and its answer comes back', async () => {
  const t = await startTunnel(cleanup, (req, res) => reply(res, 200, `hi ${req.url}`));
  const res = await t.request({ path: '/x?y=1' });
  expect(res.status).toBe(200);
  expect(res.body.toString()).toBe('hi /x?y=1');
});
