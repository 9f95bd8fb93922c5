// The inbox store alone: path patterns, reservations against the limits, arrival order, owners, the time to live.
import { describe, expect, it } from 'vitest';
import { BodyKind } from '../../protocol/frames.js';
import { Inbox, inboxMatches, type Deliverer, type InboxDeps } from '../../relay/inbox.js';
import type { Tunnel } from '../../relay/tunnel.js';

const OWNER = 'a'.repeat(64);

/** An inbox with small limits, an injected clock, every name held for OWNER, and no delivery. */
function setup(limits: Partial<InboxDeps['options']> = {}) {
  const clock = { now: 1_000_000 };
  const logged: string[] = [];
  const inbox = new Inbox({
    options: {
      inboxMaxBodyBytes: 100,
      inboxMaxRequests: 3,
      inboxMaxTunnelBytes: 10_000,
      inboxMaxTotalBytes: 20_000,
      inboxTtlMs: 1000,
      nameGraceMs: 60_000,
      streamsPerSecond: 0,
      visitorStreamsPerSecond: 0,
      now: () => clock.now,
      ...limits,
    },
    heldFor: () => OWNER,
    hold: () => {},
    deliverer: (_inbox, _name, tunnel): Deliverer => ({ tunnel, poke() {}, stop() {} }),
    log: (e) => logged.push(e.event),
  });
  // A tunnel with an inbox that went away: what hello.ts hands over when its connection closes.
  const leave = (name: string, patterns = ['/*'], owner = OWNER): void =>
    inbox.away({ name, owner, inbox: patterns, access: undefined } as unknown as Tunnel);
  const keep = (name: string, target: string, body = 'x') => {
    const place = inbox.reserve(name, 10, body.length);
    if (typeof place === 'string') return place;
    if (place.grow(body.length)) throw new Error('unexpected');
    return place.commit({
      method: 'POST',
      target,
      headers: ['Host', 'h'],
      body: BodyKind.Length,
      data: Buffer.from(body),
    });
  };
  return { inbox, clock, logged, leave, keep };
}

describe('inboxMatches', () => {
  it('takes "/*" for everything, a trailing * as a prefix, anything else exactly, and ignores the query', () => {
    expect(inboxMatches(['/*'], '/anything?x=1')).toBe(true);
    expect(inboxMatches(['/webhooks/*'], '/webhooks/github')).toBe(true);
    expect(inboxMatches(['/webhooks/*'], '/webhooks')).toBe(false);
    expect(inboxMatches(['/webhooks/*'], '/other/webhooks/x')).toBe(false);
    expect(inboxMatches(['/stripe'], '/stripe?t=1')).toBe(true);
    expect(inboxMatches(['/stripe'], '/stripe/x')).toBe(false);
    expect(inboxMatches([], '/x')).toBe(false);
  });
});

describe('Inbox', () => {
  it('keeps only for an away tunnel with an inbox, on matching paths', () => {
    const { inbox, leave } = setup();
    expect(inbox.keeps('hooks', '/x')).toBeUndefined();
    leave('hooks', ['/in/*']);
    expect(inbox.keeps('hooks', '/in/a')?.name).toBe('hooks');
    expect(inbox.keeps('hooks', '/out')).toBeUndefined();
    leave('plain', []);
    expect(inbox.keeps('plain', '/x')).toBeUndefined();
  });

  it('counts a reservation against the limits while its body arrives, and frees it on cancel', () => {
    const { inbox, leave } = setup({ inboxMaxTunnelBytes: 250, inboxMaxBodyBytes: 200 });
    leave('hooks');
    const a = inbox.reserve('hooks', 10, undefined);
    if (typeof a === 'string') throw new Error(a);
    expect(a.grow(150)).toBeUndefined();
    expect(inbox.bytes).toBe(160);
    expect(a.grow(51)).toBe('too_large'); // 201 bytes of body
    const b = inbox.reserve('hooks', 10, undefined);
    if (typeof b === 'string') throw new Error(b);
    expect(b.grow(100)).toBe('full'); // 160 + 10 + 100 > 250
    b.cancel();
    a.cancel();
    a.cancel(); // once only
    expect(inbox.bytes).toBe(0);
    expect(inbox.reserve('hooks', 10, 201)).toBe('too_large');
  });

  it('keeps arrival order by head, not by when the body finished, and never more than the count', () => {
    const { inbox, leave, keep } = setup();
    leave('hooks');
    const slow = inbox.reserve('hooks', 10, undefined);
    if (typeof slow === 'string') throw new Error(slow);
    keep('hooks', '/second');
    slow.commit({
      method: 'POST',
      target: '/first',
      headers: [],
      body: BodyKind.None,
      data: Buffer.alloc(0),
    });
    keep('hooks', '/third');
    expect(keep('hooks', '/fourth')).toBe('full');
    expect(inbox.list(OWNER).map((r) => r.target)).toEqual(['/first', '/second', '/third']);
    expect(inbox.notices(['hooks'], OWNER)[0]).toEqual({ tunnel: 0, kept: 3, refused: 1, failed: 0 });
    expect(inbox.notices(['hooks'], 'b'.repeat(64))[0]).toBeUndefined();
  });

  it('hands each owner only its own requests', () => {
    const { inbox, leave, keep } = setup();
    leave('hooks');
    const mine = keep('hooks', '/mine');
    if (typeof mine === 'string') throw new Error(mine);
    const other = 'b'.repeat(64);
    expect(inbox.next('hooks', other)).toBeUndefined();
    expect(inbox.find(other, mine.id)).toBeUndefined();
    expect(inbox.next('hooks', OWNER)).toBe(mine);
  });

  it('drops requests older than the time to live', () => {
    const { inbox, clock, logged, leave, keep } = setup();
    leave('hooks');
    keep('hooks', '/old');
    clock.now += 600;
    keep('hooks', '/young');
    clock.now += 500;
    inbox.notices(['hooks'], OWNER); // sweeps
    expect(inbox.list(OWNER).map((r) => r.target)).toEqual(['/young']);
    expect(logged).toEqual(['inbox_expired']);
  });
});
