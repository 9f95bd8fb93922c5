// Incremental RFC 6455 frame parser for one direction of an upgraded channel, with permessage-deflate.
import zlib from 'node:zlib';
import type { WsMessageType } from './api.js';

export type { WsMessageType } from './api.js';

/** One parsed message (a whole fragmented message, or one control frame). */
export interface ParsedWsMessage {
  type: WsMessageType;
  /** Payload size in bytes (after decompression when compressed). */
  size: number;
  /** The first `maxMessageBytes` of the payload, unmasked (and inflated), in a buffer of its own. */
  data: Buffer;
  truncated: boolean;
  /** Sent with permessage-deflate (RSV1). */
  compressed: boolean;
  /** Set when a compressed payload could not be inflated; `data` is then empty. */
  note?: string;
}

export interface WsParserOptions {
  /** Client-to-server frames must be masked and server-to-client frames must not be. */
  expectMasked: boolean;
  /** permessage-deflate was negotiated; `noContextTakeover` for this direction's sender. */
  deflate?: { noContextTakeover: boolean };
  maxMessageBytes: number;
  /** Where kept payload bytes are copied; default: a buffer of its own for each. */
  allocate?: Allocate;
  /** Called in stream order for uncompressed messages; compressed ones arrive when inflated. `seq` is their order. */
  onMessage: (message: ParsedWsMessage, seq: number) => void;
  /** The bytes are not WebSocket frames; the parser stops for good. */
  onError: (reason: string) => void;
}

const OPCODES: Record<number, WsMessageType | 'continuation'> = {
  0: 'continuation',
  1: 'text',
  2: 'binary',
  8: 'close',
  9: 'ping',
  10: 'pong',
};

/** Bytes permessage-deflate strips from the end of every compressed message (RFC 7692 §7.2.2). */
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
/** Past this much inflated output for one message, stop inflating (a decompression bomb). */
const MAX_INFLATED_BYTES = 64 * 1024 * 1024;
/** Compressed bytes waiting for zlib; a channel that outruns it is no longer inflated. */
const MAX_INFLATE_BACKLOG_BYTES = 4 * 1024 * 1024;

/** A buffer of its own (not a slice of a shared pool), so keeping it never pins anything larger. */
export function ownCopy(src: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(src.length);
  src.copy(out);
  return out;
}

/** Where kept payload bytes go: a buffer of `size` bytes the caller may fill. */
export type Allocate = (size: number) => Buffer;

const allocateOwn: Allocate = (size) => Buffer.allocUnsafeSlow(size);

/** Payloads at least this long are unmasked a 32-bit word at a time. */
const WORD_UNMASK_MIN_BYTES = 16;

/** The rotated mask as bytes and as the word they make, in one module-wide buffer (no allocation per message). */
const MASK_BYTES = new Uint8Array(4);
const MASK_WORD = new Uint32Array(MASK_BYTES.buffer);

/** XORs `data` in place with the 4-byte `mask`, starting at mask byte `offset` (RFC 6455 §5.3). */
export function unmask(data: Buffer, mask: Buffer, offset: number): void {
  const n = data.length;
  let i = 0;
  if (n >= WORD_UNMASK_MIN_BYTES) {
    // Bytes up to a 4-byte boundary, then whole words with the mask rotated to match (any byte order: the mask
    // word is read through the same kind of view as the data).
    const lead = (4 - (data.byteOffset & 3)) & 3;
    for (; i < lead; i++) data[i]! ^= mask[(offset + i) & 3]!;
    for (let k = 0; k < 4; k++) MASK_BYTES[k] = mask[(offset + lead + k) & 3]!;
    const m = MASK_WORD[0]!;
    const words = new Uint32Array(data.buffer, data.byteOffset + lead, (n - lead) >>> 2);
    for (let w = 0; w < words.length; w++) words[w]! ^= m;
    i = lead + words.length * 4;
  }
  for (; i < n; i++) data[i]! ^= mask[(offset + i) & 3]!;
}

/** Collects the first `limit` bytes of a payload (copies), counting all of it. */
export class Collector {
  private parts: Buffer[] = [];
  kept = 0;
  size = 0;
  constructor(
    private readonly limit: number,
    private readonly allocate: Allocate = allocateOwn,
  ) {}
  add(chunk: Buffer, mask?: Buffer, maskOffset = 0): void {
    this.size += chunk.length;
    const room = this.limit - this.kept;
    if (room <= 0 || chunk.length === 0) return;
    const n = Math.min(room, chunk.length);
    const part = this.allocate(n);
    chunk.copy(part, 0, 0, n);
    if (mask) unmask(part, mask, maskOffset);
    this.parts.push(part);
    this.kept += n;
  }
  get truncated(): boolean {
    return this.size > this.kept;
  }
  take(): Buffer {
    const parts = this.parts;
    this.parts = [];
    if (parts.length === 1) return parts[0]!;
    const out = this.allocate(this.kept);
    let at = 0;
    for (const p of parts) at += p.copy(out, at);
    return out;
  }
}

/** One compressed message on its way through zlib. */
export interface PendingInflate {
  seq: number;
  type: WsMessageType;
  out: Collector;
  /** Compressed bytes seen. */
  wire: number;
  /** The message is complete and its flush is queued. */
  flushing: boolean;
  done: boolean;
}

/** One zlib context and the messages it is inflating, in order. */
interface InflateContext {
  stream: zlib.InflateRaw;
  pending: PendingInflate[];
  /** No more messages come: free the context once the pending ones are out. */
  closing: boolean;
}

/** Inflates the messages of one direction in order, on one zlib context (or a fresh one per message). */
class MessageInflater {
  private context: InflateContext | undefined;
  private readonly live = new Set<InflateContext>();
  private dead: string | undefined;

  constructor(
    private readonly noContextTakeover: boolean,
    private readonly maxMessageBytes: number,
    private readonly deliver: (m: ParsedWsMessage, seq: number) => void,
    private readonly allocate: Allocate,
  ) {}

  /** Starts a message; payload() and finish() follow. */
  begin(seq: number, type: WsMessageType): PendingInflate {
    const entry: PendingInflate = {
      seq,
      type,
      out: new Collector(this.maxMessageBytes, this.allocate),
      wire: 0,
      flushing: false,
      done: false,
    };
    if (this.dead) return entry;
    if (!this.context) {
      const context: InflateContext = {
        stream: zlib.createInflateRaw({ windowBits: 15 }),
        pending: [],
        closing: false,
      };
      context.stream.on('data', (chunk: Buffer) => {
        const current = context.pending[0];
        if (!current) return;
        current.out.add(chunk);
        if (current.out.size > MAX_INFLATED_BYTES) this.fail('a message inflates to more than 64 MiB');
      });
      context.stream.on('error', (err) => this.fail(`cannot inflate: ${err.message}`));
      context.stream.on('close', () => this.live.delete(context));
      this.context = context;
      this.live.add(context);
    }
    this.context.pending.push(entry);
    return entry;
  }

  payload(entry: PendingInflate, chunk: Buffer): void {
    entry.wire += chunk.length;
    const stream = this.context?.stream;
    if (this.dead || !stream) return;
    stream.write(chunk);
    if (stream.writableLength > MAX_INFLATE_BACKLOG_BYTES)
      this.fail('the channel outran decompression; later messages are not shown');
  }

  finish(entry: PendingInflate): void {
    const context = this.context;
    if (this.dead || !context) return this.deliverFailed(entry);
    entry.flushing = true;
    context.stream.write(DEFLATE_TAIL);
    // zlib pushes a write's output before its callback runs, so this message's output is complete here.
    context.stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      if (entry.done || context.pending[0] !== entry) return;
      context.pending.shift();
      entry.done = true;
      // An inflate stream is destroyed, never end()ed: zlib would call a sync-flushed stream truncated.
      if (context.closing && context.pending.length === 0) this.release(context);
      this.deliver(
        {
          type: entry.type,
          size: entry.out.size,
          truncated: entry.out.truncated,
          data: entry.out.take(),
          compressed: true,
        },
        entry.seq,
      );
    });
    if (this.noContextTakeover) {
      // Every message is a deflate stream of its own: the next one gets a fresh context.
      this.context = undefined;
      context.closing = true;
    }
  }

  private release(context: InflateContext): void {
    this.live.delete(context);
    context.stream.destroy();
  }

  private deliverFailed(entry: PendingInflate): void {
    if (entry.done) return;
    entry.done = true;
    this.deliver(
      {
        type: entry.type,
        size: entry.wire,
        truncated: entry.wire > 0,
        data: Buffer.alloc(0),
        compressed: true,
        note: `compressed, not shown (${this.dead ?? 'not inflated'})`,
      },
      entry.seq,
    );
  }

  private fail(reason: string): void {
    if (this.dead) return;
    this.dead = reason;
    const contexts = [...this.live];
    this.live.clear();
    this.context = undefined;
    for (const c of contexts) {
      c.stream.destroy();
      for (const p of c.pending.splice(0)) this.deliverFailed(p);
    }
  }

  /** No more messages: let queued ones finish inflating, then free the contexts. */
  end(): void {
    for (const c of [...this.live]) {
      c.closing = true;
      // A message the channel ended in the middle of never completes: drop it.
      const last = c.pending[c.pending.length - 1];
      if (last && !last.flushing) {
        c.pending.pop();
        last.done = true;
      }
      if (c.pending.length === 0) this.release(c);
    }
    this.context = undefined;
  }

  close(): void {
    this.dead ??= 'closed';
    for (const c of this.live) c.stream.destroy();
    this.live.clear();
    this.context = undefined;
  }
}

/**
 * Parses WebSocket frames from a raw byte stream pushed in arbitrary chunks. Unmasks client frames, joins
 * fragments (control frames may interleave), keeps at most `maxMessageBytes` of each message. Any violation
 * of the framing makes it call onError once and ignore everything after.
 */
export class WsFrameParser {
  private failed = false;
  private ended = false;
  private readonly head = Buffer.alloc(14);
  private headLen = 0;
  private headNeed = 2;
  private inPayload = false;
  // Current frame.
  private fin = false;
  private opcode = 0;
  private rsv1 = false;
  private mask: Buffer | undefined;
  private payloadLen = 0;
  private payloadPos = 0;
  // Current data message (may span frames) and control frame.
  private message:
    { type: WsMessageType; body: Collector; inflating: PendingInflate | undefined } | undefined;
  private control: { type: WsMessageType; body: Collector } | undefined;
  private seq = 0;
  private readonly inflater: MessageInflater | undefined;
  private readonly allocate: Allocate;
  /** The current frame's masking key (frames are parsed one at a time, so one buffer serves all). */
  private readonly maskKey = Buffer.alloc(4);

  constructor(private readonly opts: WsParserOptions) {
    this.allocate = opts.allocate ?? allocateOwn;
    if (opts.deflate)
      this.inflater = new MessageInflater(
        opts.deflate.noContextTakeover,
        opts.maxMessageBytes,
        opts.onMessage,
        this.allocate,
      );
  }

  /** True once the bytes turned out not to be WebSocket frames. */
  get stopped(): boolean {
    return this.failed;
  }

  push(chunk: Buffer): void {
    let at = 0;
    while (!this.failed && !this.ended && at < chunk.length) {
      if (!this.inPayload) {
        const take = Math.min(this.headNeed - this.headLen, chunk.length - at);
        chunk.copy(this.head, this.headLen, at, at + take);
        this.headLen += take;
        at += take;
        if (this.headLen === this.headNeed) this.parseHead();
        continue;
      }
      const take = Math.min(this.payloadLen - this.payloadPos, chunk.length - at);
      this.payload(chunk.subarray(at, at + take));
      at += take;
      if (this.payloadPos === this.payloadLen) this.endFrame();
    }
  }

  /** The channel ended: messages still inflating are delivered, then the zlib context is freed. */
  end(): void {
    this.ended = true;
    this.inflater?.end();
  }

  /** Frees the zlib context now (messages still inflating are dropped). */
  close(): void {
    this.inflater?.close();
  }

  private fail(reason: string): void {
    this.failed = true;
    this.inflater?.close();
    this.message = undefined;
    this.control = undefined;
    this.opts.onError(reason);
  }

  private parseHead(): void {
    const b0 = this.head[0]!;
    const b1 = this.head[1]!;
    if (this.headNeed === 2) {
      // Now the size of the rest of the head is known.
      const len7 = b1 & 0x7f;
      const extra = (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
      if (extra > 0) {
        this.headNeed += extra;
        return;
      }
    }
    this.fin = (b0 & 0x80) !== 0;
    this.rsv1 = (b0 & 0x40) !== 0;
    this.opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const len7 = b1 & 0x7f;
    let at = 2;
    if (len7 === 126) {
      this.payloadLen = this.head.readUInt16BE(2);
      at = 4;
    } else if (len7 === 127) {
      const big = this.head.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) return this.fail('frame length over 2^53');
      this.payloadLen = Number(big);
      at = 10;
    } else {
      this.payloadLen = len7;
    }
    if (masked) this.head.copy(this.maskKey, 0, at, at + 4);
    this.mask = masked ? this.maskKey : undefined;
    this.headLen = 0;
    this.headNeed = 2;
    this.payloadPos = 0;

    const kind = OPCODES[this.opcode];
    if (!kind) return this.fail(`reserved opcode ${this.opcode}`);
    if (b0 & 0x30) return this.fail('RSV2/RSV3 set');
    if (masked !== this.opts.expectMasked)
      return this.fail(this.opts.expectMasked ? 'unmasked client frame' : 'masked server frame');
    if (this.opcode >= 8) {
      if (!this.fin) return this.fail('fragmented control frame');
      if (this.payloadLen > 125) return this.fail('control frame over 125 bytes');
      if (this.rsv1) return this.fail('RSV1 on a control frame');
      this.control = { type: kind as WsMessageType, body: new Collector(125, this.allocate) };
    } else if (kind === 'continuation') {
      if (!this.message) return this.fail('continuation frame without a message');
      if (this.rsv1) return this.fail('RSV1 on a continuation frame');
    } else {
      if (this.message) return this.fail('new message before the last one ended');
      if (this.rsv1 && !this.inflater) return this.fail('RSV1 set without permessage-deflate');
      this.message = {
        type: kind,
        body: new Collector(this.opts.maxMessageBytes, this.allocate),
        inflating: this.rsv1 ? this.inflater!.begin(this.seq++, kind) : undefined,
      };
    }
    this.inPayload = true;
    if (this.payloadLen === 0) this.endFrame();
  }

  private payload(bytes: Buffer): void {
    const offset = this.payloadPos;
    this.payloadPos += bytes.length;
    if (this.opcode >= 8) return this.control!.body.add(bytes, this.mask, offset);
    const message = this.message!;
    if (!message.inflating) return message.body.add(bytes, this.mask, offset);
    // The whole compressed payload goes through zlib (the context needs it), unmasked into a copy.
    const copy = ownCopy(bytes);
    if (this.mask) unmask(copy, this.mask, offset);
    this.inflater!.payload(message.inflating, copy);
  }

  private endFrame(): void {
    this.inPayload = false;
    if (this.opcode >= 8) {
      const control = this.control!;
      this.control = undefined;
      const data = control.body.take();
      return this.opts.onMessage(
        { type: control.type, size: control.body.size, data, truncated: false, compressed: false },
        this.seq++,
      );
    }
    if (!this.fin) return;
    const message = this.message!;
    this.message = undefined;
    if (message.inflating) return this.inflater!.finish(message.inflating);
    this.opts.onMessage(
      {
        type: message.type,
        size: message.body.size,
        truncated: message.body.truncated,
        data: message.body.take(),
        compressed: false,
      },
      this.seq++,
    );
  }
}

/** Reads permessage-deflate from the 101's Sec-WebSocket-Extensions: per direction, whether it applies and how. */
export function negotiatedDeflate(
  extensions: string | undefined,
): { client: { noContextTakeover: boolean }; server: { noContextTakeover: boolean } } | undefined {
  if (!extensions) return undefined;
  for (const ext of extensions.split(',')) {
    const [name, ...params] = ext.split(';').map((s) => s.trim().toLowerCase());
    if (name !== 'permessage-deflate') continue;
    const has = (p: string): boolean => params.some((x) => x.split('=')[0]!.trim() === p);
    return {
      client: { noContextTakeover: has('client_no_context_takeover') },
      server: { noContextTakeover: has('server_no_context_takeover') },
    };
  }
  return undefined;
}
