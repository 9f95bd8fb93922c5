// Tunnel names: validation, reserved names, claims, replacement by the same client, and held names after a disconnect.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isValidName, randomName, Registry, RESERVED_NAMES } from '../../relay/registry.js';

// Scripted values for randomInt, so that name collisions can be forced; falls back to the real one.
const scripted = vi.hoisted((): number[] => []);
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  const randomInt = (a: number, b?: number): number => {
    const next = scripted.shift();
    if (next !== undefined) return next;
    return b === undefined ? real.randomInt(a) : real.randomInt(a, b);
  };
  return { ...real, default: { ...real, randomInt }, randomInt };
});

interface FakeTunnel {
  owner: string;
  clientId: string;
  label: string;
}
const tunnel = (owner: string, clientId: string, label = `${owner}/${clientId}`): FakeTunnel => ({
  owner,
  clientId,
  label,
});

describe('isValidName', () => {
  it('accepts lowercase DNS labels of 1 to 63 characters', () => {
    for (const name of [
      'a',
      '0',
      'demo',
      'my-app',
      'a-b-c',
      'x1',
      '1x',
      'a--b',
      'a'.repeat(63),
      `a${'-'.repeat(61)}b`,
    ])
      expect(isValidName(name), name).toBe(true);
  });

  it('rejects empty, too long, leading/trailing hyphens, uppercase and other characters', () => {
    for (const name of [
      '',
      'a'.repeat(64),
      '-a',
      'a-',
      '-',
      'Demo',
      'DEMO',
      'dEmo',
      'a_b',
      'a.b',
      'a b',
      'ä',
      'a\n',
      '\na',
      'xn--',
      'a/b',
    ])
      expect(isValidName(name), JSON.stringify(name)).toBe(false);
  });
});

describe('Registry.check', () => {
  let registry: Registry<FakeTunnel>;
  beforeEach(() => {
    registry = new Registry<FakeTunnel>(60_000);
  });

  it('refuses invalid and reserved names before anything else', () => {
    expect(registry.check('Bad', 'o', 'c')).toEqual({ problem: 'invalid' });
    expect(registry.check('a'.repeat(64), 'o', 'c')).toEqual({ problem: 'invalid' });
    for (const name of ['www', 'relay', 'ggrok', 'api', 'admin', 'localhost'])
      expect(registry.check(name, 'o', 'c'), name).toEqual({ problem: 'reserved' });
    for (const name of RESERVED_NAMES) {
      expect(isValidName(name), `reserved name ${name} should be a valid label`).toBe(true);
      expect(registry.check(name, 'o', 'c').problem).toBe('reserved');
    }
  });

  it('allows a free name', () => {
    expect(registry.check('demo', 'o', 'c')).toEqual({});
  });

  it('in_use for another owner, and for the same owner from another client process', () => {
    const live = tunnel('alice', 'c1');
    registry.add('demo', live);
    expect(registry.check('demo', 'bob', 'c2')).toEqual({ problem: 'in_use' });
    expect(registry.check('demo', 'bob', 'c1')).toEqual({ problem: 'in_use' });
    expect(registry.check('demo', 'alice', 'c2')).toEqual({ problem: 'in_use' });
  });

  it('the same client process (owner and clientId) replaces its own live tunnel', () => {
    const live = tunnel('alice', 'c1');
    registry.add('demo', live);
    const result = registry.check('demo', 'alice', 'c1');
    expect(result.problem).toBeUndefined();
    expect(result.replaces).toBe(live);
    const next = tunnel('alice', 'c1', 'second');
    registry.add('demo', next);
    expect(registry.get('demo')).toBe(next);
    expect(registry.size).toBe(1);
    // The old tunnel's late close must not remove (or hold) the name its replacement now serves.
    registry.remove('demo', live);
    expect(registry.get('demo')).toBe(next);
    expect(registry.isHeld('demo')).toBe(false);
  });
});

describe('held names after a disconnect', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date('2025-01-01T00:00:00Z'));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds the name for its owner: another owner is refused, the same owner (any client) may take it', () => {
    const registry = new Registry<FakeTunnel>(10_000);
    const t = tunnel('alice', 'c1');
    registry.add('demo', t);
    registry.remove('demo', t);
    expect(registry.size).toBe(0);
    expect(registry.get('demo')).toBeUndefined();
    expect(registry.isHeld('demo')).toBe(true);
    expect(registry.check('demo', 'bob', 'c9')).toEqual({ problem: 'held' });
    expect(registry.check('demo', 'alice', 'c1')).toEqual({});
    expect(registry.check('demo', 'alice', 'another-process')).toEqual({});
    // Re-adding clears the hold.
    registry.add('demo', tunnel('alice', 'c2'));
    expect(registry.isHeld('demo')).toBe(false);
  });

  it('the hold expires after graceMs', () => {
    const registry = new Registry<FakeTunnel>(10_000);
    const t = tunnel('alice', 'c1');
    registry.add('demo', t);
    registry.remove('demo', t);
    vi.advanceTimersByTime(9_999);
    expect(registry.check('demo', 'bob', 'c9')).toEqual({ problem: 'held' });
    expect(registry.isHeld('demo')).toBe(true);
    vi.advanceTimersByTime(1);
    expect(registry.check('demo', 'bob', 'c9')).toEqual({});
    expect(registry.isHeld('demo')).toBe(false);
  });

  it('expired holds are swept when another tunnel is removed', () => {
    const registry = new Registry<FakeTunnel>(1_000);
    const a = tunnel('alice', 'c1');
    const b = tunnel('bob', 'c2');
    registry.add('one', a);
    registry.add('two', b);
    registry.remove('one', a);
    vi.advanceTimersByTime(2_000);
    registry.remove('two', b);
    expect(registry.isHeld('one')).toBe(false);
    expect(registry.isHeld('two')).toBe(true);
    expect(registry.check('two', 'carol', 'c3')).toEqual({ problem: 'held' });
  });

  it('graceMs 0 frees the name at once', () => {
    const registry = new Registry<FakeTunnel>(0);
    const t = tunnel('alice', 'c1');
    registry.add('demo', t);
    registry.remove('demo', t);
    expect(registry.isHeld('demo')).toBe(false);
    expect(registry.check('demo', 'bob', 'c9')).toEqual({});
  });

  it('values() lists live tunnels only', () => {
    const registry = new Registry<FakeTunnel>(1_000);
    const a = tunnel('alice', 'c1');
    const b = tunnel('bob', 'c2');
    registry.add('one', a);
    registry.add('two', b);
    registry.remove('one', a);
    expect([...registry.values()]).toEqual([b]);
  });
});

describe('random names', () => {
  afterEach(() => {
    scripted.length = 0;
  });

  it('are valid, not reserved, readable, and rarely repeat', () => {
    const names = Array.from({ length: 500 }, () => randomName());
    for (const name of names) {
      expect(name).toMatch(/^[a-z]+-[a-z]+-[1-9][0-9]$/);
      expect(isValidName(name)).toBe(true);
      expect(RESERVED_NAMES.has(name)).toBe(false);
    }
    // 32 adjectives x 32 nouns x 90 numbers = 92 160 names: 500 draws collide about once on average.
    expect(new Set(names).size).toBeGreaterThanOrEqual(490);
  });

  it('pickName skips names that are live or held', () => {
    const registry = new Registry<FakeTunnel>(60_000);
    // randomInt is called as (adjectives), (nouns), (10, 100).
    scripted.push(0, 0, 10);
    expect(registry.pickName()).toBe('amber-otter-10');
    // Script three names: the first is live, the second held, so the third must come out.
    scripted.push(0, 0, 10, 1, 1, 11, 2, 2, 12);
    const live = tunnel('alice', 'c1');
    registry.add('amber-otter-10', live);
    const held = tunnel('bob', 'c2');
    registry.add('brave-falcon-11', held);
    registry.remove('brave-falcon-11', held);
    expect(registry.pickName()).toBe('calm-badger-12');
    expect(scripted).toEqual([]);
  });
});

describe('Registry pools', () => {
  const member = (owner: string, clientId: string, pool: boolean) => ({ owner, clientId, pool });

  it('lets pool clients of the same owner share a name, and nobody else', () => {
    const registry = new Registry<ReturnType<typeof member>>(1000);
    const a = member('o1', 'c1', true);
    registry.add('shop', a);
    expect(registry.check('shop', 'o1', 'c2', true)).toEqual({});
    const b = member('o1', 'c2', true);
    registry.add('shop', b);
    expect(registry.check('shop', 'o1', 'c3', false).problem).toBe('in_use');
    expect(registry.check('shop', 'o2', 'c4', true).problem).toBe('in_use');
    // A member's own reconnect replaces only itself.
    expect(registry.check('shop', 'o1', 'c2', true).replaces).toBe(b);
    expect([registry.size, registry.members('shop')]).toEqual([2, [a, b]]);
    registry.remove('shop', a);
    expect([registry.size, registry.members('shop'), registry.isHeld('shop')]).toEqual([1, [b], false]);
    registry.remove('shop', b);
    expect([registry.size, registry.members('shop'), registry.heldFor('shop')]).toEqual([0, [], 'o1']);
  });

  it('does not turn a name served without --pool into a pool', () => {
    const registry = new Registry<ReturnType<typeof member>>(1000);
    registry.add('solo', member('o1', 'c1', false));
    expect(registry.check('solo', 'o1', 'c2', true).problem).toBe('in_use');
  });
});
