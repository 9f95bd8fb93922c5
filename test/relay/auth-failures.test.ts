// The failed-secret throttle: free failures, then one attempt per refill period, per address (IPv6 by /64).
import { describe, expect, it } from 'vitest';
import { AUTH_FAILURE_BURST, AUTH_FAILURE_REFILL_MS, AuthFailures } from '../../relay/auth-failures.js';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('AuthFailures', () => {
  it('lets an address fail a burst of times, then makes it wait one refill period per attempt', () => {
    const c = clock();
    const f = new AuthFailures(c.now);
    for (let i = 0; i < AUTH_FAILURE_BURST; i++) {
      expect(f.blockedFor('198.51.100.7')).toBe(0);
      f.failed('198.51.100.7');
    }
    expect(f.blockedFor('198.51.100.7')).toBe(AUTH_FAILURE_REFILL_MS);
    c.advance(AUTH_FAILURE_REFILL_MS - 1);
    expect(f.blockedFor('198.51.100.7')).toBe(1);
    c.advance(1);
    expect(f.blockedFor('198.51.100.7')).toBe(0);
    f.failed('198.51.100.7'); // the attempt it was allowed failed too: wait again
    expect(f.blockedFor('198.51.100.7')).toBe(AUTH_FAILURE_REFILL_MS);
    // Another address is not affected.
    expect(f.blockedFor('198.51.100.8')).toBe(0);
  });

  it('forgets an address once its bucket is full again', () => {
    const c = clock();
    const f = new AuthFailures(c.now);
    f.failed('203.0.113.1');
    expect(f.tracked).toBe(1);
    c.advance(AUTH_FAILURE_REFILL_MS);
    expect(f.blockedFor('203.0.113.1')).toBe(0);
    expect(f.tracked).toBe(0);
  });

  it('counts every address of one IPv6 /64 together, however it is written', () => {
    const c = clock();
    const f = new AuthFailures(c.now);
    for (let i = 0; i < AUTH_FAILURE_BURST; i++) f.failed(`2001:db8:1:2::${(i + 1).toString(16)}`);
    expect(f.blockedFor('2001:0db8:0001:0002:ffff:eeee:dddd:cccc')).toBeGreaterThan(0);
    expect(f.blockedFor('2001:db8:1:3::1')).toBe(0);
  });

  it('logs one refusal per wait: firstRefusal is true once after each failure', () => {
    const f = new AuthFailures(clock().now);
    for (let i = 0; i < AUTH_FAILURE_BURST; i++) f.failed('192.0.2.1');
    expect([f.firstRefusal('192.0.2.1'), f.firstRefusal('192.0.2.1')]).toEqual([true, false]);
    f.failed('192.0.2.1');
    expect(f.firstRefusal('192.0.2.1')).toBe(true);
    expect(f.firstRefusal('192.0.2.99')).toBe(false);
  });

  it('remembers at most 10 000 addresses, dropping the one that failed longest ago', () => {
    const f = new AuthFailures(clock().now);
    for (let i = 0; i < 10_001; i++) f.failed(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(f.tracked).toBe(10_000);
  });
});
