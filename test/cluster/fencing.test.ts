// Names, fences and stalls in the cluster store, with a real redis-server and two in-process instances whose
// clocks the test moves: takeovers are announced, a stalled instance checks its names before serving again, and a
// Redis that restarted empty gets every served name back for its owner.
import { afterEach, describe, expect, test } from 'vitest';
import { Cluster, MEMBER_LEASE_MS } from '../../relay/cluster/cluster.js';
import type { HeldName } from '../../relay/cluster/names.js';
import { Cleanup, sleep, waitFor } from '../helpers.js';
import { startRedis } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** One in-process instance: the names it serves are whatever the test puts in `served`. */
function instance(redisUrl: string, id: string) {
  let now = Date.now();
  const served: HeldName[] = [];
  const superseded: [string, number][] = [];
  const cluster = new Cluster(
    { redis: { url: redisUrl }, instanceId: id, holdMs: 60_000, now: () => now },
    { served: () => served },
  );
  cluster.on('superseded', (name, fence) => superseded.push([name, fence]));
  cluster.start();
  cleanup.add(() => cluster.close());
  return {
    cluster,
    served,
    superseded,
    /** Moves this instance's clock (a stall, as SIGSTOP would cause). */
    advance: (ms: number) => (now += ms),
  };
}

describe('the cluster store', () => {
  test('a claim by another owner is refused; the same client gets the same fence; a takeover is announced', async () => {
    const redis = await startRedis(cleanup);
    const a = instance(redis.url, 'a');
    const b = instance(redis.url, 'b');
    await waitFor(
      () => a.cluster.redisUp && b.cluster.redisUp && a.cluster.listening && b.cluster.listening,
      'both instances on Redis, listening for takeovers',
    );
    expect(await a.cluster.claim('n', 'owner', 'c1')).toEqual({ kind: 'new', fence: 1 });
    a.served.push({ name: 'n', owner: 'owner', client: 'c1', fence: 1 });
    // The same client on the other instance: the same fence, nobody superseded.
    expect(await b.cluster.claim('n', 'owner', 'c1')).toEqual({ kind: 'same', fence: 1 });
    expect(await b.cluster.claim('n', 'someone-else', 'x')).toEqual({ kind: 'held' });
    // Another process of the owner while the name is served live somewhere: refused.
    a.cluster.servedChanged();
    await waitFor(() => b.cluster.whereIs('n').length === 1, 'b to see a serving n', 5000);
    expect(await b.cluster.claim('n', 'owner', 'c2')).toEqual({ kind: 'in_use' });
    // Once nobody serves it live, the owner's new process takes over: the fence goes up, a is told at once.
    a.served.length = 0;
    a.cluster.servedChanged();
    await waitFor(() => b.cluster.whereIs('n').length === 0, 'b to see n free', 5000);
    a.served.push({ name: 'n', owner: 'owner', client: 'c1', fence: 1 }); // a's stale socket, still there
    expect(await b.cluster.claim('n', 'owner', 'c2')).toEqual({ kind: 'takeover', fence: 2 });
    await waitFor(() => a.superseded.length > 0, 'the takeover announcement');
    expect(a.superseded[0]).toEqual(['n', 2]);
  }, 30_000);

  test('an instance that stalled past its lease checks its names before serving: a superseded name is reported', async () => {
    const redis = await startRedis(cleanup);
    const a = instance(redis.url, 'a');
    const b = instance(redis.url, 'b');
    await waitFor(
      () => a.cluster.redisUp && b.cluster.redisUp && a.cluster.listening && b.cluster.listening,
      'both instances on Redis, listening for takeovers',
    );
    expect(await a.cluster.claim('n', 'owner', 'c1')).toEqual({ kind: 'new', fence: 1 });
    a.served.push({ name: 'n', owner: 'owner', client: 'c1', fence: 1 });
    // a is frozen (its announcement missed, here: taken while a does not announce n), b's client takes over.
    expect(await b.cluster.claim('n', 'owner', 'c2')).toEqual({ kind: 'takeover', fence: 2 });
    // The announcement reaches a now; a stalled instance would have missed it, so forget it was heard.
    await waitFor(() => a.superseded.length === 1, 'the announcement');
    a.superseded.length = 0;
    expect(a.cluster.stale()).toBe(false);
    a.advance(MEMBER_LEASE_MS + 1000); // a wakes up: its clock jumped past its lease
    expect(a.cluster.stale()).toBe(true); // known at once, in memory, before any request is served
    const order: string[] = [];
    a.cluster.afterVerification(() => order.push(`served after ${a.superseded.length} superseded`));
    await waitFor(() => order.length === 1, 'the check to finish');
    expect(order).toEqual(['served after 1 superseded']);
    expect(a.superseded).toEqual([['n', Number.MAX_SAFE_INTEGER]]); // whatever fence a holds, it must go
    expect(a.cluster.stale()).toBe(false);
  }, 30_000);

  test('Redis restarted empty: every served name is registered again for its owner, with its fence', async () => {
    const redis = await startRedis(cleanup);
    const a = instance(redis.url, 'a');
    await waitFor(() => a.cluster.redisUp, 'a on Redis');
    expect(await a.cluster.claim('n', 'owner', 'c1')).toEqual({ kind: 'new', fence: 1 });
    a.served.push({ name: 'n', owner: 'owner', client: 'c1', fence: 1 });
    // Down long enough for a's reconnect attempts to be 1 s apart, then back empty.
    await redis.kill();
    await sleep(2500);
    await redis.restart();
    const b = instance(redis.url, 'b');
    // Another owner asks for n as soon as b reaches the empty store, which is mostly before a is back (a reconnects
    // up to 1 s apart): new names wait while the store settles, a registers n again meanwhile, the thief is refused.
    await waitFor(() => b.cluster.redisUp, 'b on Redis', 10_000);
    expect(await b.cluster.claim('n', 'thief', 't')).toEqual({ kind: 'held' });
    expect(a.cluster.redisUp).toBe(true);
    // The same client keeps its fence.
    expect(await b.cluster.claim('n', 'owner', 'c1')).toEqual({ kind: 'same', fence: 1 });
    expect(a.superseded).toEqual([]);
  }, 30_000);

  test('an endpoint pool: members of the owner join with the same fence, pass the checks, and others are refused', async () => {
    const redis = await startRedis(cleanup);
    const a = instance(redis.url, 'a');
    const b = instance(redis.url, 'b');
    await waitFor(
      () => a.cluster.redisUp && b.cluster.redisUp && a.cluster.listening && b.cluster.listening,
      'both instances on Redis, listening for takeovers',
    );
    expect(await a.cluster.claim('p', 'owner', 'c1', true)).toEqual({ kind: 'new', fence: 1 });
    a.served.push({ name: 'p', owner: 'owner', client: 'c1', fence: 1, pool: true });
    a.cluster.servedChanged();
    await waitFor(() => b.cluster.whereIs('p').length === 1, 'b to see a serving p', 5000);
    // A second client of the owner joins the pool on the other instance while the first serves live: no takeover.
    expect(await b.cluster.claim('p', 'owner', 'c2', true)).toEqual({ kind: 'same', fence: 1 });
    b.served.push({ name: 'p', owner: 'owner', client: 'c2', fence: 1, pool: true });
    // A client without the pool flag, or another owner, is refused.
    expect(await b.cluster.claim('p', 'owner', 'c3')).toEqual({ kind: 'in_use' });
    expect(await b.cluster.claim('p', 'other', 'c4', true)).toEqual({ kind: 'held' });
    // Both members survive the fence checks of a stalled instance.
    for (const x of [a, b]) {
      x.advance(MEMBER_LEASE_MS + 1000);
      const done: string[] = [];
      x.cluster.afterVerification(() => done.push('checked'));
      await waitFor(() => done.length === 1, 'the check to finish');
    }
    expect([a.superseded, b.superseded]).toEqual([[], []]);
    // A name served without the pool flag cannot be joined as a pool.
    expect(await a.cluster.claim('solo', 'owner', 'c1')).toEqual({ kind: 'new', fence: 1 });
    a.served.push({ name: 'solo', owner: 'owner', client: 'c1', fence: 1 });
    a.cluster.servedChanged();
    await waitFor(() => b.cluster.whereIs('solo').length === 1, 'b to see a serving solo', 5000);
    expect(await b.cluster.claim('solo', 'owner', 'c2', true)).toEqual({ kind: 'in_use' });
  }, 30_000);
});
