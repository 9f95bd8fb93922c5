// `ggrok inbox list|replay|drop` against a real relay, and what `ggrok http --inbox` prints when kept requests arrive.
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  rawRequest,
  runCli,
  startClient,
  startLocal,
  startRelay,
  TOKEN,
  waitFor,
  type TestRelay,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Runs `ggrok inbox …` to its end: exit code, stdout, stderr. */
async function inbox(relay: TestRelay, args: string[], token = TOKEN) {
  const p = runCli(cleanup, ['inbox', ...args, '--server', relay.url, '--token', token]);
  const code = await p.exited;
  return { code, out: p.stdout(), err: p.stderr() };
}

/** Keeps `paths` for the tunnel `hooks` while its client is away; returns the ids the relay answered with. */
async function keep(relay: TestRelay, localPort: number, paths: string[]): Promise<string[]> {
  const client = await startClient(cleanup, relay.url, localPort, { subdomain: 'hooks', inbox: ['/*'] });
  const host = new URL(client.url).host;
  await client.close();
  await waitFor(() => relay.relay.tunnelCount === 0, 'the tunnel to go');
  const ids: string[] = [];
  for (const p of paths) {
    const r = await rawRequest({
      port: relay.port,
      method: 'POST',
      path: p,
      headers: { Host: host },
      body: p,
    });
    expect(r.status).toBe(202);
    ids.push(r.headers['x-ggrok-inbox'] as string);
  }
  return ids;
}

describe('ggrok inbox', () => {
  it('lists, drops and replays kept requests of its own token only', async () => {
    const relay = await startRelay(cleanup, {
      tokens: [TOKEN, 'other=other-token'],
      inboxMaxAttempts: 1,
    });
    let status = 500;
    const seen: string[] = [];
    const local = await startLocal(cleanup, (req, res) => {
      seen.push(req.url!);
      res.statusCode = status;
      res.end();
    });
    const [a, b] = (await keep(relay, local.port, ['/a', '/b'])) as [string, string];

    const listed = await inbox(relay, ['list', '--json']);
    expect(listed.code).toBe(0);
    const entries = (JSON.parse(listed.out) as { requests: { id: string; target: string; state: string }[] })
      .requests;
    expect(entries.map((e) => [e.id, e.target, e.state])).toEqual([
      [a, '/a', 'queued'],
      [b, '/b', 'queued'],
    ]);
    const text = await inbox(relay, ['list']);
    expect(text.out).toContain(`${a}  `);
    expect(text.out).toContain('hooks  POST /a');

    // Another token sees nothing and cannot touch them; a wrong one is refused.
    expect(JSON.parse((await inbox(relay, ['list', '--json'], 'other-token')).out)).toEqual({ requests: [] });
    const foreign = await inbox(relay, ['drop', a], 'other-token');
    expect(foreign.code).toBe(1);
    expect(foreign.err).toMatch(/no kept request has this id/);
    const wrong = await inbox(relay, ['list'], 'nope');
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/401/);

    const dropped = await inbox(relay, ['drop', a]);
    expect(dropped.code).toBe(0);
    expect(dropped.out).toBe(`${a} dropped\n`);
    expect(relay.relay.inbox.count).toBe(1);
    expect((await inbox(relay, ['drop', a])).code).toBe(1);

    // Back: /b fails its one attempt and is kept as failed; replayed once the service answers 2xx.
    await startClient(cleanup, relay.url, local.port, { subdomain: 'hooks', inbox: ['/*'] });
    await waitFor(() => relay.events.some((e) => e.event === 'inbox_failed'), '/b to fail');
    const failed = JSON.parse((await inbox(relay, ['list', '--json'])).out) as {
      requests: { state: string; lastError: string }[];
    };
    expect(failed.requests).toEqual([
      expect.objectContaining({ state: 'failed', lastError: 'local service answered 500' }),
    ]);
    status = 200;
    const replayed = await inbox(relay, ['replay', b]);
    expect(replayed.code).toBe(0);
    await waitFor(() => relay.relay.inbox.count === 0, 'the replay to be delivered');
    expect(seen).toEqual(['/b', '/b']);
  });

  it('`ggrok http --inbox` says how many requests were kept and marks each delivery', async () => {
    const relay = await startRelay(cleanup);
    const local = await startLocal(cleanup, (_req, res) => res.end('ok'));
    const ids = await keep(relay, local.port, ['/one', '/two']);
    const p = runCli(cleanup, [
      'http',
      String(local.port),
      '--server',
      relay.url,
      '--token',
      TOKEN,
      '--subdomain',
      'hooks',
      '--inbox',
    ]);
    await p.waitForOutput(/2 requests were kept while you were away, delivering…/);
    await p.waitForOutput(new RegExp(`/two .*\\(kept while away, ${ids[1]}\\)`));
    expect(p.stdout()).toMatch(new RegExp(`/one .*\\(kept while away, ${ids[0]}\\)`));
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(0);
  });
});
