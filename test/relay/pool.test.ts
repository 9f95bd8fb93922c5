// Endpoint pool members: the passive health state machine (injected clock) and the least-outstanding pick.
import { describe, expect, it } from 'vitest';
import { MemberHealth, pickMember, POOL_BACKOFF_MAX_MS, POOL_BACKOFF_MIN_MS } from '../../relay/pool.js';

/** A member with a name, its requests in flight and its health on a shared fake clock. */
function members(clock: { now: number }, ...active: number[]) {
  return active.map((activeRequests, i) => ({
    id: String.fromCharCode(97 + i),
    activeRequests,
    health: new MemberHealth(() => clock.now),
  }));
}

describe('MemberHealth', () => {
  it('takes a failing member out for a back-off that doubles up to the cap, then lets one probe through', () => {
    const clock = { now: 0 };
    const h = new MemberHealth(() => clock.now);
    const outFor: number[] = [];
    for (let i = 0; i < 8; i++) {
      h.failed();
      expect([h.state, h.available()]).toEqual(['out', false]);
      const start = clock.now;
      while (!h.available()) clock.now += 100;
      outFor.push(clock.now - start);
      h.taken(); // the probe
      expect([h.state, h.available()]).toEqual(['probing', false]);
    }
    expect(outFor).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    expect([POOL_BACKOFF_MIN_MS, POOL_BACKOFF_MAX_MS]).toEqual([1000, 30000]);
    h.served();
    expect([h.state, h.available(), h.failuresInARow]).toEqual(['healthy', true, 0]);
  });

  it('counts requests failing together while the member is out as one failure', () => {
    const clock = { now: 0 };
    const h = new MemberHealth(() => clock.now);
    for (let i = 0; i < 5; i++) h.failed();
    expect(h.failuresInARow).toBe(1);
    clock.now += POOL_BACKOFF_MIN_MS;
    expect(h.available()).toBe(true);
  });

  it('keeps a member out while its own check fails, and back at once when it passes', () => {
    const clock = { now: 0 };
    const h = new MemberHealth(() => clock.now);
    h.reported(false);
    clock.now += 60_000;
    expect([h.state, h.available()]).toEqual(['out', false]);
    h.reported(true);
    expect([h.state, h.available()]).toEqual(['healthy', true]);
  });

  it('never takes a leaving member back', () => {
    const h = new MemberHealth(() => 0);
    h.drain();
    h.served();
    h.reported(true);
    h.failed();
    expect([h.state, h.available()]).toEqual(['draining', false]);
  });
});

describe('pickMember', () => {
  it('picks the fewest requests in flight; equals take turns', () => {
    const clock = { now: 0 };
    const ms = members(clock, 3, 1, 1, 2);
    expect([0, 1, 2, 3, 4].map((turn) => pickMember(ms, turn)!.id)).toEqual(['b', 'b', 'c', 'b', 'b']);
    const idle = members(clock, 0, 0, 0);
    expect([0, 1, 2, 3].map((turn) => pickMember(idle, turn)!.id)).toEqual(['a', 'b', 'c', 'a']);
  });

  it('skips members out of the pool, excluded or leaving, and falls back when none is available', () => {
    const clock = { now: 0 };
    const [a, b, c] = members(clock, 0, 5, 9);
    a!.health.failed();
    expect(pickMember([a!, b!, c!], 0)!.id).toBe('b');
    expect(pickMember([a!, b!, c!], 0, new Set([b!]))!.id).toBe('c');
    c!.health.drain();
    b!.health.failed();
    // Nothing available: the least busy member that is not leaving gets it (it is its probe).
    expect(pickMember([a!, b!, c!], 0)!.id).toBe('a');
    expect(a!.health.state).toBe('probing');
    // Only a leaving member left: it still serves rather than the pool refusing.
    expect(pickMember([a!, b!, c!], 0, new Set([a!, b!]))!.id).toBe('c');
    expect(pickMember([a!], 0, new Set([a!]))).toBeUndefined();
  });
});
