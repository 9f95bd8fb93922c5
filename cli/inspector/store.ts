// The inspector's memory: one bounded record per exchange, fed by the tunnel's observer hook or by a replay.
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader } from '../../protocol/headers.js';
import type { Exchange, ExchangeObserver } from '../local-request.js';
import { SseParser } from './sse-parser.js';
import { negotiatedDeflate, ownCopy, WsFrameParser, type WsMessageType } from './websocket-parser.js';

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
/** Live updates of one exchange (body progress, messages) are batched at this pace. */
const UPDATE_INTERVAL_MS = 200;

/** The first `limit` bytes of a body, in copies of their own, with the total size. */
export class BodyCapture {
  private chunks: Buffer[] = [];
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
    const kept = ownCopy(chunk.length > room ? chunk.subarray(0, room) : chunk);
    this.chunks.push(kept);
    this.captured += kept.length;
    return kept.length;
  }

  /** The kept bytes as one buffer (joined once, then cached). */
  bytes(): Buffer {
    if (this.chunks.length === 0) return Buffer.alloc(0);
    if (this.chunks.length > 1) {
      const joined = Buffer.allocUnsafeSlow(this.captured);
      let at = 0;
      for (const c of this.chunks) at += c.copy(joined, at);
      this.chunks = [joined];
    }
    return this.chunks[0]!;
  }
}

/** One WebSocket message as kept. `in` flows from the public client to the local service. */
export interface WsMessage {
  seq: number;
  direction: 'in' | 'out';
  /** When it was parsed (ms since the epoch). */
  at: number;
  type: WsMessageType;
  size: number;
  data: Buffer;
  truncated: boolean;
  compressed: boolean;
  note?: string;
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
export interface SseEventRecord {
  seq: number;
  at: number;
  event?: string;
  id?: string;
  retry?: number;
  data: string;
  truncated: boolean;
}

export interface SseCapture {
  /** The last maxSseEvents events, in order. */
  events: SseEventRecord[];
  total: number;
}

/** Everything kept about one exchange. */
export interface ExchangeRecord {
  readonly id: number;
  /** Bumped on every change, so a client can keep the newest copy. */
  rev: number;
  tunnel: string;
  /** ms since the epoch. */
  startedAt: number;
  method: string;
  target: string;
  /** Request headers as the local service got them. */
  requestHeaders: HeaderList;
  /** Request headers as the relay passed them on, when the client's header rules changed them. */
  publicRequestHeaders?: HeaderList;
  requestBody: BodyCapture;
  status?: number;
  reason?: string;
  /** Response headers as the public client got them. */
  responseHeaders?: HeaderList;
  /** When the response head arrived (ms since the epoch). */
  responseAt?: number;
  responseBody: BodyCapture;
  durationMs?: number;
  done: boolean;
  error?: string;
  upgrade: boolean;
  /** The exchange this one replays. */
  replayOf?: number;
  channel?: ChannelCapture;
  sse?: SseCapture;
  /** Bytes this record holds, counted against maxTotalBytes. */
  bytes: number;
  /** Dropped from the store; its observer ignores everything from then on. */
  evicted: boolean;
}

/** What the store tells its subscribers (the live UI). */
export type StoreEvent =
  | { kind: 'start' | 'update' | 'end'; record: ExchangeRecord }
  | { kind: 'evict'; ids: number[] }
  | { kind: 'clear' };

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

/** Runs an observer callback without ever letting an inspector bug reach the tunnel's data path. */
function guard(fn: () => void): void {
  try {
    fn();
  } catch {
    // The inspector is a bystander: a failure here must not break the exchange it watches.
  }
}

/**
 * Watches one exchange and writes what it sees into its record: body captures, the response head, WebSocket
 * messages of upgraded channels, server-sent events. Cheap on the data path: copies at most the caps.
 */
export class Recorder implements ExchangeObserver {
  private wsIn: WsFrameParser | undefined;
  private wsOut: WsFrameParser | undefined;
  private sse: SseParser | undefined;
  private sseSeq = 0;

  constructor(
    private readonly store: InspectorStore,
    readonly record: ExchangeRecord,
  ) {}

  requestData(chunk: Buffer): void {
    guard(() => {
      if (this.record.evicted) return;
      this.store.account(this.record, this.record.requestBody.add(chunk));
      this.store.touch(this.record);
    });
  }

  response(status: number, reason: string, headers: HeaderList): void {
    guard(() => {
      const r = this.record;
      if (r.evicted) return;
      r.status = status;
      r.reason = reason;
      r.responseHeaders = headers;
      r.responseAt = Date.now();
      this.store.account(r, headerBytes(headers));
      if (status === 101) this.startChannel(headers);
      else if (isEventStream(headers)) {
        r.sse = { events: [], total: 0 };
        this.sse = new SseParser(this.store.limits.maxSseEventChars, (e) => this.addEvent(e));
      }
      this.store.touch(r);
    });
  }

  responseData(chunk: Buffer): void {
    guard(() => {
      const r = this.record;
      if (r.evicted) return;
      this.store.account(r, r.responseBody.add(chunk));
      this.sse?.push(chunk);
      this.store.touch(r);
    });
  }

  channelData(direction: 'in' | 'out', chunk: Buffer): void {
    guard(() => {
      const channel = this.record.channel;
      if (this.record.evicted || !channel) return;
      if (direction === 'in') channel.bytesIn += chunk.length;
      else channel.bytesOut += chunk.length;
      (direction === 'in' ? this.wsIn : this.wsOut)?.push(chunk);
      this.store.touch(this.record);
    });
  }

  end(summary: Pick<Exchange, 'status' | 'durationMs' | 'error'>): void {
    guard(() => {
      const r = this.record;
      this.stopParsers();
      if (r.evicted || r.done) return;
      r.done = true;
      r.durationMs = summary.durationMs;
      r.status ??= summary.status;
      if (summary.error) r.error = summary.error;
      r.requestBody.bytes(); // join the chunks once, now that no more come
      r.responseBody.bytes();
      this.store.ended(this);
    });
  }

  /** Stops parsing (the record was evicted or the store closed). */
  detach(): void {
    this.wsIn?.close();
    this.wsOut?.close();
    this.wsIn = this.wsOut = this.sse = undefined;
  }

  private stopParsers(): void {
    // Compressed messages still inflating are delivered; then the zlib contexts go.
    this.wsIn?.end();
    this.wsOut?.end();
    this.sse = undefined;
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
    this.record.channel = channel;
    if (!websocket) return;
    const limits = this.store.limits;
    const make = (direction: 'in' | 'out'): WsFrameParser =>
      new WsFrameParser({
        expectMasked: direction === 'in',
        deflate: deflate && (direction === 'in' ? deflate.client : deflate.server),
        maxMessageBytes: limits.maxMessageBytes,
        onMessage: (m, seq) =>
          guard(() => this.addMessage({ ...m, seq: seq * 2 + (direction === 'in' ? 0 : 1), direction })),
        onError: (reason) =>
          guard(() => {
            channel.protocol = 'other';
            channel.error = `not WebSocket frames (${direction === 'in' ? 'client' : 'server'}: ${reason})`;
            this.detach();
            this.store.touch(this.record);
          }),
      });
    this.wsIn = make('in');
    this.wsOut = make('out');
  }

  private addMessage(m: Omit<WsMessage, 'at'>): void {
    const r = this.record;
    const channel = r.channel;
    if (r.evicted || !channel) return;
    const message: WsMessage = { ...m, at: Date.now() };
    const list = channel.messages;
    // Compressed messages finish asynchronously: keep the list in stream order per direction.
    let at = list.length;
    while (at > 0 && list[at - 1]!.direction === m.direction && list[at - 1]!.seq > m.seq) at--;
    list.splice(at, 0, message);
    channel.total++;
    let delta = message.data.length + ITEM_OVERHEAD_BYTES;
    while (list.length > this.store.limits.maxChannelMessages)
      delta -= list.shift()!.data.length + ITEM_OVERHEAD_BYTES;
    this.store.account(r, delta);
    this.store.touch(r);
  }

  private addEvent(e: Omit<SseEventRecord, 'seq' | 'at'>): void {
    const r = this.record;
    const sse = r.sse;
    if (r.evicted || !sse) return;
    sse.events.push({ ...e, seq: this.sseSeq++, at: Date.now() });
    sse.total++;
    let delta = e.data.length * 2 + ITEM_OVERHEAD_BYTES;
    while (sse.events.length > this.store.limits.maxSseEvents)
      delta -= sse.events.shift()!.data.length * 2 + ITEM_OVERHEAD_BYTES;
    this.store.account(r, delta);
  }
}

function isEventStream(headers: HeaderList): boolean {
  const type = getHeader(headers, 'content-type')?.split(';')[0]?.trim().toLowerCase();
  const encoding = getHeader(headers, 'content-encoding')?.trim().toLowerCase();
  return type === 'text/event-stream' && (!encoding || encoding === 'identity');
}

/** The session's exchanges, newest last, within the count and byte bounds. */
export class InspectorStore {
  readonly limits: StoreLimits;
  private readonly records = new Map<number, ExchangeRecord>();
  /** Exchanges still in progress, to stop their parsers when they are evicted. */
  private readonly active = new Map<number, Recorder>();
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly dirty = new Set<ExchangeRecord>();
  private flushTimer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private closed = false;
  /** Bytes held over all records. */
  totalBytes = 0;

  constructor(limits: Partial<StoreLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Records a new exchange; feed the returned observer. */
  begin(start: ExchangeStart): Recorder {
    while (this.records.size >= this.limits.maxExchanges) this.evictOldest();
    const record: ExchangeRecord = {
      id: this.nextId++,
      rev: 0,
      tunnel: start.tunnel,
      startedAt: Date.now(),
      method: start.method,
      target: start.target,
      requestHeaders: start.headers,
      requestBody: new BodyCapture(this.limits.maxBodyBytes),
      responseBody: new BodyCapture(this.limits.maxBodyBytes),
      done: false,
      upgrade: start.upgrade,
      bytes: 0,
      evicted: false,
    };
    if (start.publicHeaders && !sameHeaders(start.publicHeaders, start.headers))
      record.publicRequestHeaders = start.publicHeaders;
    if (start.replayOf !== undefined) record.replayOf = start.replayOf;
    const recorder = new Recorder(this, record);
    if (this.closed) {
      record.evicted = true;
      return recorder;
    }
    this.records.set(record.id, record);
    this.active.set(record.id, recorder);
    this.account(
      record,
      headerBytes(start.headers) +
        (record.publicRequestHeaders ? headerBytes(record.publicRequestHeaders) : 0) +
        start.target.length +
        ITEM_OVERHEAD_BYTES,
    );
    this.emit({ kind: 'start', record });
    return recorder;
  }

  get(id: number): ExchangeRecord | undefined {
    return this.records.get(id);
  }

  /** Every kept exchange, newest first. */
  list(): ExchangeRecord[] {
    return [...this.records.values()].reverse();
  }

  /** Every kept exchange, oldest first. */
  chronological(): ExchangeRecord[] {
    return [...this.records.values()];
  }

  get size(): number {
    return this.records.size;
  }

  /** Forgets every exchange (those in progress stop being recorded). */
  clear(): void {
    for (const r of this.records.values()) r.evicted = true;
    for (const rec of this.active.values()) rec.detach();
    this.records.clear();
    this.active.clear();
    this.dirty.clear();
    this.totalBytes = 0;
    this.emit({ kind: 'clear' });
  }

  /** Calls `fn` for every change; returns the unsubscribe function. */
  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Stops recording and frees parsers and timers. */
  close(): void {
    this.closed = true;
    clearTimeout(this.flushTimer);
    for (const rec of this.active.values()) rec.detach();
    this.active.clear();
    this.listeners.clear();
    this.dirty.clear();
  }

  /** Adds (or with a negative delta, releases) bytes held by a record, evicting the oldest past the bound. */
  account(record: ExchangeRecord, delta: number): void {
    if (record.evicted || delta === 0) return;
    record.bytes += delta;
    this.totalBytes += delta;
    if (delta < 0) return;
    // The newest record is never evicted for its own growth: its captures have caps of their own.
    while (this.totalBytes > this.limits.maxTotalBytes && this.records.size > 1) this.evictOldest();
  }

  /** Marks a record changed; subscribers hear about it at most every UPDATE_INTERVAL_MS. */
  touch(record: ExchangeRecord): void {
    if (record.evicted) return;
    record.rev++;
    this.dirty.add(record);
    if (!this.flushTimer && !this.closed) {
      this.flushTimer = setTimeout(() => this.flush(), UPDATE_INTERVAL_MS);
      this.flushTimer.unref();
    }
  }

  /** An exchange finished (called by its recorder). */
  ended(recorder: Recorder): void {
    const record = recorder.record;
    this.active.delete(record.id);
    this.dirty.delete(record);
    record.rev++;
    this.emit({ kind: 'end', record });
  }

  private flush(): void {
    this.flushTimer = undefined;
    const records = [...this.dirty];
    this.dirty.clear();
    for (const record of records) if (!record.evicted) this.emit({ kind: 'update', record });
  }

  private evictOldest(): void {
    const oldest = this.records.values().next().value;
    if (!oldest) return;
    this.records.delete(oldest.id);
    oldest.evicted = true;
    this.totalBytes -= oldest.bytes;
    this.dirty.delete(oldest);
    this.active.get(oldest.id)?.detach();
    this.active.delete(oldest.id);
    this.emit({ kind: 'evict', ids: [oldest.id] });
  }

  private emit(e: StoreEvent): void {
    for (const fn of this.listeners) guard(() => fn(e));
  }
}

function sameHeaders(a: HeaderList, b: HeaderList): boolean {
  return a === b || (a.length === b.length && a.every((v, i) => v === b[i]));
}
