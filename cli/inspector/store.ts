// The inspector's memory: one bounded record per exchange, fed by the tunnel's observer hook or by a replay.
// On the data path a record only counts and copies: the first bytes of each body, and raw channel and event-stream
// bytes into one reused queue; WebSocket frames and server-sent events are parsed in batches, off the data path
// (every BATCH_INTERVAL_MS, when the queue is full, or before anyone reads), and subscribers hear of changes then.
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader, INBOX_ID_HEADER, INBOX_RECEIVED_HEADER } from '../../protocol/headers.js';
import type { Exchange, ExchangeObserver } from '../local-request.js';
import type { WsMessageType } from './api.js';
import { SseParser, type ParsedSseEvent } from './sse-parser.js';
import { negotiatedDeflate, ownCopy, WsFrameParser, type ParsedWsMessage } from './websocket-parser.js';

/** Every bound the store keeps. */
export interface StoreLimits {
  /** Exchanges kept; the oldest go first. */
  maxExchanges: number;
  /** Bytes kept of each request and response body. */
  maxBodyBytes: number;
  /** Bytes kept over all exchanges (bodies, messages, events, headers); the oldest exchanges go first. */
  maxTotalBytes: number;
  /** Messages kept per WebSocket channel (the last ones). */
  maxChannelMessages: number;
  /** Bytes kept of each WebSocket message. */
  maxMessageBytes: number;
  /** Events kept per event stream (the last ones). */
  maxSseEvents: number;
  /** Characters kept of each event's data. */
  maxSseEventChars: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

export const DEFAULT_LIMITS: StoreLimits = {
  maxExchanges: 500,
  maxBodyBytes: MiB,
  maxTotalBytes: 64 * MiB,
  maxChannelMessages: 200,
  maxMessageBytes: 64 * KiB,
  maxSseEvents: 200,
  maxSseEventChars: 64 * KiB,
};

/** Rough bookkeeping cost of one kept message or event, on top of its payload. */
const ITEM_OVERHEAD_BYTES = 96;
/** Queued bytes are parsed, and subscribers told of changes, at most this long after they happened. */
const BATCH_INTERVAL_MS = 100;
/**
 * After a batch that announced more than BUSY_BATCH_EXCHANGES exchanges, subscribers wait this long for the next: a
 * page cannot show hundreds of rows a second anyway, and each costs a summary serialised on the tunnel's thread.
 */
const BUSY_NOTIFY_INTERVAL_MS = 1000;
const BUSY_BATCH_EXCHANGES = 100;
/** The parse queue starts this large and grows (doubling) as traffic needs. */
const MIN_QUEUE_BYTES = 64 * KiB;
/** Bytes the parse queue holds at most: a fuller one is parsed at once. */
const MAX_QUEUE_BYTES = 4 * MiB;

/** Payload buffers of dropped messages a channel keeps for reuse. */
const MAX_SPARE_BUFFERS = 8;
/** How much longer than needed a reused payload buffer may be (besides twice the size). */
const SPARE_SLACK_BYTES = 256;

const NO_BYTES = Buffer.alloc(0);
/**
 * Chunks under this size are copied into Node's shared 8 KiB pool: a copy of its own costs an ArrayBuffer (about
 * ten times the time, and GC work). A kept small copy pins its 8 KiB pool, so at most 16 KiB per record (two
 * bodies) beyond what it counts; larger chunks get buffers of their own.
 */
const POOLED_COPY_BYTES = 4 * KiB;

/** A copy of `chunk` for keeping: pooled when small (see POOLED_COPY_BYTES), else a buffer of its own. */
function keepCopy(chunk: Buffer): Buffer {
  if (chunk.length >= POOLED_COPY_BYTES) return ownCopy(chunk);
  const copy = Buffer.allocUnsafe(chunk.length);
  chunk.copy(copy);
  return copy;
}

/** The first `limit` bytes of a body, in copies of their own, with the total size. */
export class BodyCapture {
  /** The kept bytes: one buffer (most bodies arrive in one chunk), or the chunks until bytes() joins them. */
  private kept: Buffer | Buffer[] = NO_BYTES;
  captured = 0;
  size = 0;

  constructor(private readonly limit: number) {}

  get truncated(): boolean {
    return this.size > this.captured;
  }

  /** Counts a chunk and keeps what fits; returns the bytes newly kept. */
  add(chunk: Buffer): number {
    this.size += chunk.length;
    const room = this.limit - this.captured;
    if (room <= 0 || chunk.length === 0) return 0;
    const copy = keepCopy(chunk.length > room ? chunk.subarray(0, room) : chunk);
    if (this.captured === 0) this.kept = copy;
    else if (Array.isArray(this.kept)) this.kept.push(copy);
    else this.kept = [this.kept, copy];
    this.captured += copy.length;
    return copy.length;
  }

  /** The kept bytes as one buffer (joined on the first call, then cached). */
  bytes(): Buffer {
    if (!Array.isArray(this.kept)) return this.kept;
    const joined = Buffer.allocUnsafeSlow(this.captured);
    let at = 0;
    for (const c of this.kept) at += c.copy(joined, at);
    this.kept = joined;
    return joined;
  }
}

/** What every record has until a body arrives (most requests have none): one shared, never written. */
const NO_BODY = new BodyCapture(0);
Object.freeze(NO_BODY);

/** One WebSocket message as kept. `in` flows from the public client to the local service. */
export interface WsMessage {
  seq: number;
  direction: 'in' | 'out';
  /** When the bytes that completed it arrived (compressed ones: when inflated), ms since the epoch. */
  at: number;
  type: WsMessageType;
  size: number;
  data: Buffer;
  truncated: boolean;
  compressed: boolean;
  note: string | undefined;
}

/** What an upgraded channel carried. */
export interface ChannelCapture {
  /** 'websocket' while the bytes parse as frames; 'other' for other protocols or once parsing failed. */
  protocol: 'websocket' | 'other';
  /** Why the bytes are not shown as messages. */
  error?: string;
  deflate: boolean;
  /** The last maxChannelMessages messages, in order. */
  messages: WsMessage[];
  /** Messages seen in all. */
  total: number;
  /** Raw channel bytes each way. */
  bytesIn: number;
  bytesOut: number;
}

/** One server-sent event as kept. */
export interface SseEventRecord extends ParsedSseEvent {
  seq: number;
  /** When the bytes that completed it arrived, ms since the epoch. */
  at: number;
}

export interface SseCapture {
  /** The last maxSseEvents events, in order. */
  events: SseEventRecord[];
  total: number;
}

/** What the store tells its subscribers (the live UI), once per batch. */
export type StoreEvent =
  /** Exchanges that started or changed since the last batch (newest state), and announced ones evicted since. */
  { kind: 'changes'; records: ExchangeRecord[]; evicted: number[] } | { kind: 'clear' };

/** How an exchange begins: its request head. */
export interface ExchangeStart {
  tunnel: string;
  method: string;
  target: string;
  headers: HeaderList;
  publicHeaders?: HeaderList;
  upgrade: boolean;
  replayOf?: number;
}

function headerBytes(headers: HeaderList): number {
  let n = 0;
  for (const s of headers) n += s.length + 4;
  return n;
}

const EVENT_STREAM_TYPE = /^[\t ]*text\/event-stream[\t ]*(?:;|$)/i;

function isEventStream(headers: HeaderList): boolean {
  const type = getHeader(headers, 'content-type');
  if (type === undefined || !EVENT_STREAM_TYPE.test(type)) return false;
  const encoding = getHeader(headers, 'content-encoding')?.trim().toLowerCase();
  return !encoding || encoding === 'identity';
}

/** Runs an observer callback without ever letting an inspector bug reach the tunnel's data path. */
function guard(fn: () => void): void {
  try {
    fn();
  } catch {
    // The inspector is a bystander: a failure here must not break the exchange it watches.
  }
}

/** What a queued chunk is: raw channel bytes one way or the other, or event-stream body bytes. */
const Queued = { ChannelIn: 0, ChannelOut: 1, EventStream: 2 } as const;
type QueuedKind = (typeof Queued)[keyof typeof Queued];

/**
 * Everything kept about one exchange, and the observer that fills it in: body captures, the response head,
 * WebSocket messages of upgraded channels, server-sent events. One object per exchange.
 */
export class ExchangeRecord implements ExchangeObserver {
  /** Bumped on every change, so a client can keep the newest copy. */
  rev = 0;
  readonly tunnel: string;
  /** ms since the epoch. */
  readonly startedAt = Date.now();
  readonly method: string;
  readonly target: string;
  /** Request headers as the local service got them. */
  readonly requestHeaders: HeaderList;
  /** Request headers as the relay passed them on, when the client's header rules changed them. */
  readonly publicRequestHeaders: HeaderList | undefined;
  requestBody = NO_BODY;
  status: number | undefined;
  reason: string | undefined;
  /** Response headers as the public client got them. */
  responseHeaders: HeaderList | undefined;
  /** When the response head arrived (ms since the epoch). */
  responseAt: number | undefined;
  responseBody = NO_BODY;
  durationMs: number | undefined;
  done = false;
  error: string | undefined;
  readonly upgrade: boolean;
  /** The exchange this one replays. */
  readonly replayOf: number | undefined;
  /** The relay's inbox id when this is the delivery of a request kept while the client was away. */
  readonly inbox: string | undefined;
  /** When the relay received that request (ms since the epoch). */
  readonly receivedAt: number | undefined;
  channel: ChannelCapture | undefined;
  sse: SseCapture | undefined;
  /** Bytes this record holds, counted against maxTotalBytes. */
  bytes = 0;
  /** Dropped from the store; everything the exchange does from then on is ignored. */
  evicted = false;
  /** A subscriber or reader may know this record, so its eviction is worth announcing. */
  announced = false;

  /** Buffers of messages that fell off the kept list, reused for new ones: a busy channel then allocates nothing. */
  private spare: Buffer[] | undefined;
  private wsIn: WsFrameParser | undefined;
  private wsOut: WsFrameParser | undefined;
  private sseParser: SseParser | undefined;
  private sseSeq = 0;
  /** Chunks of this record waiting in the store's parse queue. */
  queued = 0;
  /** Arrival time of the chunk being parsed: what the messages and events it completes are stamped with. */
  private clock = 0;

  constructor(
    private readonly store: InspectorStore,
    readonly id: number,
    start: ExchangeStart,
  ) {
    this.tunnel = start.tunnel;
    this.method = start.method;
    this.target = start.target;
    this.requestHeaders = start.headers;
    this.publicRequestHeaders =
      start.publicHeaders && !sameHeaders(start.publicHeaders, start.headers)
        ? start.publicHeaders
        : undefined;
    this.upgrade = start.upgrade;
    this.replayOf = start.replayOf;
    this.inbox = start.upgrade ? undefined : getHeader(start.headers, INBOX_ID_HEADER);
    const received = this.inbox === undefined ? undefined : getHeader(start.headers, INBOX_RECEIVED_HEADER);
    this.receivedAt = received === undefined ? undefined : Date.parse(received) || undefined;
  }

  requestData(chunk: Buffer): void {
    try {
      if (this.evicted) return;
      if (this.requestBody === NO_BODY) this.requestBody = new BodyCapture(this.store.limits.maxBodyBytes);
      this.store.account(this, this.requestBody.add(chunk));
      this.store.touch(this);
    } catch {
      // As guard(): an inspector bug never reaches the data path (no closure per call here, the hot path).
    }
  }

  response(status: number, reason: string, headers: HeaderList): void {
    try {
      if (this.evicted) return;
      this.status = status;
      this.reason = reason;
      this.responseHeaders = headers;
      this.responseAt = Date.now();
      this.store.account(this, headerBytes(headers));
      if (status === 101) this.startChannel(headers);
      else if (isEventStream(headers)) {
        this.sse = { events: [], total: 0 };
        this.sseParser = new SseParser(this.store.limits.maxSseEventChars, (e) => this.addEvent(e));
      }
      this.store.touch(this);
    } catch {
      // As guard(): an inspector bug never reaches the data path (no closure per call here, the hot path).
    }
  }

  responseData(chunk: Buffer): void {
    try {
      if (this.evicted) return;
      if (this.responseBody === NO_BODY) this.responseBody = new BodyCapture(this.store.limits.maxBodyBytes);
      this.store.account(this, this.responseBody.add(chunk));
      if (this.sseParser) this.store.enqueue(this, Queued.EventStream, chunk);
      this.store.touch(this);
    } catch {
      // As guard(): an inspector bug never reaches the data path (no closure per call here, the hot path).
    }
  }

  channelData(direction: 'in' | 'out', chunk: Buffer): void {
    try {
      const channel = this.channel;
      if (this.evicted || !channel) return;
      if (direction === 'in') channel.bytesIn += chunk.length;
      else channel.bytesOut += chunk.length;
      if (this.wsIn)
        this.store.enqueue(this, direction === 'in' ? Queued.ChannelIn : Queued.ChannelOut, chunk);
      this.store.touch(this);
    } catch {
      // As guard(): an inspector bug never reaches the data path (no closure per call here, the hot path).
    }
  }

  end(summary: Pick<Exchange, 'status' | 'durationMs' | 'error'>): void {
    try {
      if (this.queued > 0) this.store.parseAll();
      this.stopParsers();
      if (this.evicted || this.done) return;
      this.done = true;
      this.durationMs = summary.durationMs;
      this.status ??= summary.status;
      if (summary.error) this.error = summary.error;
      this.store.touch(this); // bodies are joined when first read, not here on the data path
    } catch {
      // As guard(): an inspector bug never reaches the data path (no closure per call here, the hot path).
    }
  }

  /** Parses one queued chunk (called by the store's queue, in arrival order); `chunk` is only valid during the call. */
  parse(kind: QueuedKind, chunk: Buffer, at: number): void {
    this.queued--;
    if (this.evicted) return;
    this.clock = at;
    if (kind === Queued.EventStream) this.sseParser?.push(chunk);
    else (kind === Queued.ChannelIn ? this.wsIn : this.wsOut)?.push(chunk);
  }

  /** Stops parsing (the record was evicted or the store closed); what it queued is skipped. */
  detach(): void {
    this.wsIn?.close();
    this.wsOut?.close();
    this.wsIn = this.wsOut = this.sseParser = undefined;
    this.spare = undefined;
  }

  private stopParsers(): void {
    // Compressed messages still inflating are delivered; then the zlib contexts go.
    this.wsIn?.end();
    this.wsOut?.end();
    this.sseParser = undefined;
    this.spare = undefined;
  }

  /** Message payload buffers for the parsers: a spare one that fits, or a new one of its own. */
  private readonly allocate = (size: number): Buffer => {
    const spare = this.spare ?? [];
    for (let i = spare.length - 1; i >= 0; i--) {
      const buffer = spare[i]!;
      const capacity = buffer.buffer.byteLength;
      // Only a close fit: a reused buffer holds (and pins) its whole length, and only `size` is counted.
      if (capacity < size || capacity > 2 * size + SPARE_SLACK_BYTES) continue;
      spare.splice(i, 1);
      return buffer.length === size ? buffer : Buffer.from(buffer.buffer, 0, size);
    }
    return Buffer.allocUnsafeSlow(size);
  };

  /** A message fell off the kept list: its payload buffer may serve a later one (nothing else refers to it). */
  private recycle(data: Buffer): void {
    const spare = (this.spare ??= []);
    if (data.byteOffset !== 0 || data.length === 0 || spare.length >= MAX_SPARE_BUFFERS) return;
    spare.push(data);
  }

  private startChannel(headers: HeaderList): void {
    const websocket = getHeader(headers, 'upgrade')?.trim().toLowerCase() === 'websocket';
    const deflate = websocket ? negotiatedDeflate(getHeader(headers, 'sec-websocket-extensions')) : undefined;
    const channel: ChannelCapture = {
      protocol: websocket ? 'websocket' : 'other',
      deflate: deflate !== undefined,
      messages: [],
      total: 0,
      bytesIn: 0,
      bytesOut: 0,
    };
    this.channel = channel;
    if (!websocket) return;
    const limits = this.store.limits;
    const make = (direction: 'in' | 'out'): WsFrameParser =>
      new WsFrameParser({
        expectMasked: direction === 'in',
        deflate: deflate && (direction === 'in' ? deflate.client : deflate.server),
        maxMessageBytes: limits.maxMessageBytes,
        allocate: this.allocate,
        onMessage: (m, seq) =>
          guard(() => this.addMessage(m, seq * 2 + (direction === 'in' ? 0 : 1), direction)),
        onError: (reason) =>
          guard(() => {
            channel.protocol = 'other';
            channel.error = `not WebSocket frames (${direction === 'in' ? 'client' : 'server'}: ${reason})`;
            this.detach();
            this.store.touch(this);
          }),
      });
    this.wsIn = make('in');
    this.wsOut = make('out');
  }

  private addMessage(m: ParsedWsMessage, seq: number, direction: 'in' | 'out'): void {
    const channel = this.channel;
    if (this.evicted || !channel) return;
    const list = channel.messages;
    const max = this.store.limits.maxChannelMessages;
    channel.total++;
    let delta = m.data.length + ITEM_OVERHEAD_BYTES;
    // A full list drops its oldest message, whose object and payload buffer serve the new one: a busy channel then
    // allocates nothing that lives long (objects that die young cost the GC almost nothing; these would not).
    let reused: WsMessage | undefined;
    while (list.length > 0 && list.length >= max) {
      reused = list.shift()!;
      delta -= reused.data.length + ITEM_OVERHEAD_BYTES;
      this.recycle(reused.data);
    }
    if (max <= 0) return void this.recycle(m.data);
    // Compressed messages complete in a zlib callback, after the batch that queued their bytes.
    const seen = m.compressed ? Date.now() : this.clock;
    let message: WsMessage;
    if (reused) {
      message = reused;
      message.seq = seq;
      message.direction = direction;
      message.at = seen;
      message.type = m.type;
      message.size = m.size;
      message.data = m.data;
      message.truncated = m.truncated;
      message.compressed = m.compressed;
      message.note = m.note;
    } else {
      message = {
        seq,
        direction,
        at: seen,
        type: m.type,
        size: m.size,
        data: m.data,
        truncated: m.truncated,
        compressed: m.compressed,
        note: m.note,
      };
    }
    // Compressed messages finish asynchronously: keep the list in stream order per direction.
    let at = list.length;
    while (at > 0 && list[at - 1]!.direction === direction && list[at - 1]!.seq > seq) at--;
    if (at === list.length) list.push(message);
    else list.splice(at, 0, message);
    this.store.account(this, delta);
    this.store.touch(this);
  }

  private addEvent(e: ParsedSseEvent): void {
    const sse = this.sse;
    if (this.evicted || !sse) return;
    const event: SseEventRecord = { ...e, seq: this.sseSeq++, at: this.clock };
    sse.events.push(event);
    sse.total++;
    let delta = e.data.length * 2 + ITEM_OVERHEAD_BYTES;
    while (sse.events.length > this.store.limits.maxSseEvents)
      delta -= sse.events.shift()!.data.length * 2 + ITEM_OVERHEAD_BYTES;
    this.store.account(this, delta);
    this.store.touch(this);
  }
}

/**
 * Raw channel and event-stream bytes waiting to be parsed: copied in arrival order into one buffer, with each chunk's
 * record, kind, arrival time and length beside it, all reused batch after batch. Copying a chunk costs less than
 * keeping the tunnel's buffer alive for a batch, and reused storage gives the GC nothing to move; the parsers copy
 * what they keep.
 */
class ParseQueue {
  private bytes = Buffer.allocUnsafeSlow(MIN_QUEUE_BYTES);
  /** Bytes in use. */
  used = 0;
  /** The most bytes in use since the last shrink(). */
  private peak = 0;
  private count = 0;
  private records: (ExchangeRecord | undefined)[] = [];
  /** Per chunk: kind, arrival time (ms), length. */
  private meta = new Float64Array(3 * 256);

  get capacity(): number {
    return this.bytes.length;
  }

  /** Copies a chunk in; false when it does not fit (MAX_QUEUE_BYTES): drain, then try again. */
  add(record: ExchangeRecord, kind: QueuedKind, chunk: Buffer, now: number): boolean {
    const n = chunk.length;
    if (this.used + n > this.bytes.length) {
      if (this.used + n > MAX_QUEUE_BYTES) return false;
      let size = this.bytes.length;
      while (size < this.used + n) size *= 2;
      const bigger = Buffer.allocUnsafeSlow(Math.min(size, MAX_QUEUE_BYTES));
      this.bytes.copy(bigger, 0, 0, this.used);
      this.bytes = bigger;
    }
    if (3 * this.count + 3 > this.meta.length) {
      const meta = new Float64Array(this.meta.length * 2);
      meta.set(this.meta);
      this.meta = meta;
    }
    chunk.copy(this.bytes, this.used);
    this.used += n;
    this.records[this.count] = record;
    const j = 3 * this.count++;
    this.meta[j] = kind;
    this.meta[j + 1] = now;
    this.meta[j + 2] = n;
    return true;
  }

  /** Hands every queued chunk to its record, in order, then empties the queue. */
  drain(): void {
    const count = this.count;
    if (count === 0) return;
    const { bytes, meta, records } = this;
    this.count = 0;
    this.peak = Math.max(this.peak, this.used);
    this.used = 0;
    let at = 0;
    for (let i = 0; i < count; i++) {
      const record = records[i]!;
      records[i] = undefined;
      const n = meta[3 * i + 2]!;
      const chunk = bytes.subarray(at, at + n);
      at += n;
      const kind = meta[3 * i] as QueuedKind;
      const arrived = meta[3 * i + 1]!;
      guard(() => record.parse(kind, chunk, arrived));
    }
    // Parsers never call back into the queue, so all of it is free again here.
  }

  /** Drops everything queued (the store was cleared or closed). */
  clear(): void {
    this.records.fill(undefined, 0, this.count);
    this.count = 0;
    this.used = 0;
  }

  /** Gives memory back after a burst; true while the buffer is still larger than the minimum. */
  shrink(): boolean {
    const size = this.bytes.length;
    if (size > MIN_QUEUE_BYTES && this.used === 0 && this.peak * 4 < size)
      this.bytes = Buffer.allocUnsafeSlow(Math.max(MIN_QUEUE_BYTES, this.peak * 2));
    this.peak = 0;
    return this.bytes.length > MIN_QUEUE_BYTES;
  }
}

/** The session's exchanges, oldest first, within the count and byte bounds. */
export class InspectorStore {
  readonly limits: StoreLimits;
  /**
   * Kept records from index `head` on, oldest first, with consecutive ids (records are only ever dropped from the
   * front), so a record is found by arithmetic on its id. Slots before `head` are empty until compacted.
   */
  private records: (ExchangeRecord | undefined)[] = [];
  private head = 0;
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  /** Records changed since the last batch (kept only while someone listens). */
  private readonly changed = new Set<ExchangeRecord>();
  /** Announced records evicted since the last batch (kept only while someone listens). */
  private evictedIds: number[] = [];
  /** Raw channel and event-stream bytes waiting to be parsed. */
  private readonly queue = new ParseQueue();
  private batchTimer: NodeJS.Timeout | undefined;
  /** Under heavy traffic subscribers hear nothing before this time (ms since the epoch); see BUSY_NOTIFY_INTERVAL_MS. */
  private quietUntil = 0;
  private nextId = 1;
  private closed = false;
  /** Bytes held over all records. */
  totalBytes = 0;

  constructor(limits: Partial<StoreLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Records a new exchange; feed the returned observer. */
  begin(start: ExchangeStart): ExchangeRecord {
    while (this.size >= this.limits.maxExchanges) this.evictOldest();
    const record = new ExchangeRecord(this, this.nextId++, start);
    if (this.closed) {
      record.evicted = true;
      return record;
    }
    this.records.push(record);
    this.account(
      record,
      headerBytes(start.headers) +
        (record.publicRequestHeaders ? headerBytes(record.publicRequestHeaders) : 0) +
        start.target.length +
        ITEM_OVERHEAD_BYTES,
    );
    this.touch(record);
    return record;
  }

  /** One exchange, its queued bytes parsed. */
  get(id: number): ExchangeRecord | undefined {
    const first = this.records[this.head];
    if (!first) return undefined;
    const record = this.records[this.head + id - first.id];
    if (!record || record.id !== id) return undefined;
    if (record.queued > 0) this.parseAll();
    record.announced = true;
    return record;
  }

  /** Every kept exchange, newest first, queued bytes parsed. */
  list(): ExchangeRecord[] {
    return this.chronological().reverse();
  }

  /** Every kept exchange, oldest first, queued bytes parsed. */
  chronological(): ExchangeRecord[] {
    this.parseAll();
    const out = this.records.slice(this.head) as ExchangeRecord[];
    for (const r of out) r.announced = true;
    return out;
  }

  get size(): number {
    return this.records.length - this.head;
  }

  /** Forgets every exchange (those in progress stop being recorded). */
  clear(): void {
    for (let i = this.head; i < this.records.length; i++) {
      const r = this.records[i]!;
      r.evicted = true;
      r.detach();
    }
    this.records = [];
    this.head = 0;
    this.queue.clear();
    this.changed.clear();
    this.evictedIds = [];
    this.totalBytes = 0;
    this.emit({ kind: 'clear' });
  }

  /** Calls `fn` with every batch of changes; returns the unsubscribe function. */
  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size > 0) return;
      this.changed.clear();
      this.evictedIds = [];
    };
  }

  /** Stops recording and frees parsers and timers. */
  close(): void {
    this.closed = true;
    clearTimeout(this.batchTimer);
    for (let i = this.head; i < this.records.length; i++) this.records[i]!.detach();
    this.queue.clear();
    this.listeners.clear();
    this.changed.clear();
  }

  /** Adds (or with a negative delta, releases) bytes held by a record, evicting the oldest past the bound. */
  account(record: ExchangeRecord, delta: number): void {
    if (record.evicted || delta === 0) return;
    record.bytes += delta;
    this.totalBytes += delta;
    if (delta < 0) return;
    // The newest record is never evicted for its own growth: its captures have caps of their own.
    while (this.totalBytes > this.limits.maxTotalBytes && this.size > 1) this.evictOldest();
  }

  /** Marks a record changed; subscribers hear of it in the next batch. */
  touch(record: ExchangeRecord): void {
    if (record.evicted) return;
    record.rev++;
    if (this.listeners.size === 0) return;
    this.changed.add(record);
    this.schedule();
  }

  /** Bytes waiting in the parse queue. */
  get queuedBytes(): number {
    return this.queue.used;
  }

  /** Bytes the parse queue holds allocated. */
  get queueCapacity(): number {
    return this.queue.capacity;
  }

  /** Copies a chunk of raw channel or event-stream bytes into the parse queue (called by its record). */
  enqueue(record: ExchangeRecord, kind: QueuedKind, chunk: Buffer): void {
    if (chunk.length === 0) return;
    record.queued++;
    const now = Date.now();
    if (!this.queue.add(record, kind, chunk, now)) {
      this.parseAll();
      // A chunk larger than the whole queue (never from the tunnel, whose reads and frames are far smaller).
      if (!this.queue.add(record, kind, chunk, now)) return guard(() => record.parse(kind, chunk, now));
    }
    this.schedule();
  }

  /** Parses everything queued, in arrival order. */
  parseAll(): void {
    this.queue.drain();
  }

  private schedule(): void {
    if (this.batchTimer || this.closed) return;
    this.batchTimer = setTimeout(() => this.batch(), BATCH_INTERVAL_MS);
    this.batchTimer.unref();
  }

  /** Parses what was queued, then tells subscribers what changed, in one event. */
  private batch(): void {
    this.batchTimer = undefined;
    this.parseAll();
    // After a burst the queue gives memory back once traffic calms: one more look, in the next batch.
    if (this.queue.shrink()) this.schedule();
    if (this.listeners.size === 0 || (this.changed.size === 0 && this.evictedIds.length === 0)) return;
    if (Date.now() < this.quietUntil) return this.schedule();
    const records = [...this.changed];
    this.changed.clear();
    for (const r of records) r.announced = true;
    const evicted = this.evictedIds;
    this.evictedIds = [];
    this.quietUntil = records.length > BUSY_BATCH_EXCHANGES ? Date.now() + BUSY_NOTIFY_INTERVAL_MS : 0;
    this.emit({ kind: 'changes', records, evicted });
  }

  private evictOldest(): void {
    const oldest = this.records[this.head];
    if (!oldest) return;
    this.records[this.head++] = undefined;
    // Compact now and then: dropped slots cost one pointer each until then.
    if (this.head >= 1024 && this.head * 2 >= this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
    oldest.evicted = true;
    this.totalBytes -= oldest.bytes;
    oldest.detach();
    if (this.listeners.size > 0) {
      this.changed.delete(oldest);
      if (oldest.announced) this.evictedIds.push(oldest.id);
      this.schedule();
    }
  }

  private emit(e: StoreEvent): void {
    for (const fn of this.listeners) guard(() => fn(e));
  }
}

function sameHeaders(a: HeaderList, b: HeaderList): boolean {
  return a === b || (a.length === b.length && a.every((v, i) => v === b[i]));
}
