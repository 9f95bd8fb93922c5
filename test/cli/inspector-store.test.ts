// The inspector store off the data path: bytes queued and parsed in batches, reused message buffers, coalesced events.
import { randomBytes } from 'node:crypto';
import { afterEach, expect, test } from 'vitest';
import { InspectorStore, type StoreEvent } from '../../cli/inspector/store.js';
import { unmask } from '../../cli/inspector/websocket-parser.js';
import { waitFor } from '../helpers.js';

const stores: InspectorStore[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

function store(limits: ConstructorParameters<typeof InspectorStore>[0] = {}): InspectorStore {
  const s = new InspectorStore(limits);
  stores.push(s);
  return s;
}

/** One unfragmented binary frame; masked (as a client sends) with `key` when given. */
function frame(payload: Buffer, key?: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? [0x82, len] : [0x82, 126, len >> 8, len & 0xff];
  if (!key) return Buffer.concat([Buffer.from(head), payload]);
  head[1]! |= 0x80;
  return Buffer.concat([Buffer.from(head), key, Buffer.from(payload.map((b, i) => b ^ key[i & 3]!))]);
}

function channel(s: InspectorStore) {
  const record = s.begin({
    tunnel: 't',
    method: 'GET',
    target: '/ws',
    headers: ['Host', 'x', 'Connection', 'Upgrade', 'Upgrade', 'websocket'],
    upgrade: true,
  });
  record.response(101, 'Switching Protocols', ['Upgrade', 'websocket', 'Connection', 'Upgrade']);
  return record;
}

test('unmask: word-at-a-time equals byte-at-a-time at every alignment, length and mask offset', () => {
  const backing = randomBytes(300);
  for (let start = 0; start < 8; start++)
    for (const length of [0, 1, 3, 15, 16, 17, 31, 64, 255])
      for (let offset = 0; offset < 4; offset++) {
        const mask = randomBytes(4);
        const data = Buffer.from(backing).subarray(start, start + length);
        const expected = Buffer.from(data.map((b, i) => b ^ mask[(offset + i) & 3]!));
        unmask(data, mask, offset);
        expect([start, length, offset, data.equals(expected)]).toEqual([start, length, offset, true]);
      }
});

test('channel bytes wait for the batch; a read parses them; 1000 messages keep the last 200 intact', () => {
  const s = store();
  const record = channel(s);
  const sent: Buffer[] = [];
  for (let i = 0; i < 1000; i++) {
    // Sizes vary so that reused buffers are sometimes too small, sometimes a close fit.
    const payload = randomBytes(1 + ((i * 37) % 900));
    sent.push(payload);
    record.channelData('in', frame(payload, randomBytes(4)));
    record.channelData('out', frame(payload));
  }
  // Nothing parsed yet: the data path only queued the chunks.
  expect(record.channel!.total).toBe(0);
  expect(s.get(record.id)).toBe(record);
  expect(record.channel!.total).toBe(2000);
  const kept = record.channel!.messages;
  expect(kept).toHaveLength(200);
  expect(kept.map((m) => `${m.direction}:${m.data.toString('hex')}`)).toEqual(
    sent.slice(900).flatMap((p) => [`in:${p.toString('hex')}`, `out:${p.toString('hex')}`]),
  );
});

test('subscribers get one batch: an exchange that started and ended in it once, evictions of announced ones only', async () => {
  const s = store({ maxExchanges: 2 });
  const events: StoreEvent[] = [];
  s.subscribe((e) => events.push(e));
  const first = s.begin({ tunnel: 't', method: 'GET', target: '/a', headers: [], upgrade: false });
  first.response(200, 'OK', ['Content-Length', '2']);
  first.responseData(Buffer.from('ok'));
  first.end({ status: 200, durationMs: 1 });
  expect(events).toHaveLength(0); // nothing on the data path itself
  await waitFor(() => events.length > 0, 'the batch');
  expect(events).toHaveLength(1);
  const batch = events[0]!;
  expect(batch.kind).toBe('changes');
  if (batch.kind !== 'changes') return;
  expect(batch.records.map((r) => [r.target, r.done, r.status])).toEqual([['/a', true, 200]]);
  expect(batch.evicted).toEqual([]);

  // Three more: /a (announced) and /b (never announced: it came and went within one batch) are evicted.
  for (const target of ['/b', '/c', '/d'])
    s.begin({ tunnel: 't', method: 'GET', target, headers: [], upgrade: false });
  await waitFor(() => events.length > 1, 'the second batch');
  expect(events).toHaveLength(2);
  const next = events[1]!;
  if (next.kind !== 'changes') throw new Error('expected changes');
  expect(next.records.map((r) => r.target)).toEqual(['/c', '/d']);
  expect(next.evicted).toEqual([first.id]);
});

test('a channel faster than the batch is parsed as it goes: the queue stays within 4 MiB, and shrinks back', async () => {
  const s = store();
  const record = channel(s);
  const payload = randomBytes(60_000);
  for (let i = 0; i < 100; i++) record.channelData('out', frame(payload)); // 6 MB, no read, no timer yet
  expect(record.channel!.total).toBeGreaterThanOrEqual(69); // parsed when 4 MiB were waiting
  expect(s.queuedBytes).toBeLessThanOrEqual(4 * 1024 * 1024);
  expect(s.get(record.id)!.channel!.total).toBe(100);
  expect(s.queuedBytes).toBe(0);
  // The queue buffer grew for the burst; quiet batches give the memory back.
  await waitFor(() => s.queueCapacity === 64 * 1024, 'the queue to shrink');
});

test('after a busy batch subscribers wait longer, and still hear of every change', async () => {
  const s = store();
  const events: StoreEvent[] = [];
  s.subscribe((e) => events.push(e));
  const begin = (target: string) =>
    s.begin({ tunnel: 't', method: 'GET', target, headers: [], upgrade: false });
  for (let i = 0; i < 150; i++) begin(`/busy${i}`);
  await waitFor(() => events.length > 0, 'the busy batch');
  const late = begin('/late');
  late.end({ status: 204, durationMs: 0 });
  await waitFor(() => events.length > 1, 'the batch after the quiet period');
  const [busy, next] = events.map((e) => (e.kind === 'changes' ? e.records.map((r) => r.target) : []));
  expect(busy).toHaveLength(150);
  expect(next).toEqual(['/late']);
});
