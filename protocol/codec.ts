// Encodes frames to msgpack and decodes + validates untrusted bytes back into frames.
import { Packr, Unpackr } from 'msgpackr';
import { GgrokError } from './errors.js';
import { FIELD_VALUE, TOKEN } from './headers.js';
import {
  BodyKind,
  FrameType,
  type InboxNotice,
  isInboxPattern,
  WIRE_LIMITS,
  type AccessRules,
  type FlowSettings,
  type Frame,
  type HeaderList,
  type MemberRef,
} from './frames.js';

const EMPTY = Buffer.alloc(0);

// Plain msgpack (no msgpackr records) so any msgpack decoder can read the wire format.
const packr = new Packr({ useRecords: false, moreTypes: false });
// Maps decode to Map (not plain objects), so hostile keys such as "__proto__" are inert.
// 64-bit integers (which other msgpack encoders use for e.g. timestamps) decode to numbers; uint() range-checks them.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: 'number' });

/** A decoding or validation failure: the peer sent something that is not a valid frame. */
export class FrameError extends GgrokError {
  /** Stream the bad frame named, when it could be read; 0 when the whole frame is unreadable. */
  readonly streamId: number;
  constructor(message: string, streamId = 0) {
    super('protocol_error', message);
    this.name = 'FrameError';
    this.streamId = streamId;
  }
}

/** Encodes one frame to the bytes of one WebSocket binary message. */
export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case FrameType.Hello: {
      const body: Record<string, unknown> = {
        version: frame.version,
        token: frame.token,
        name: frame.name,
        agent: frame.agent,
        clientId: frame.clientId,
        flow: flowToWire(frame.flow),
      };
      if (frame.access) body.access = { ...frame.access };
      if (frame.inbox?.length) body.inbox = [...frame.inbox];
      if (frame.more?.length)
        body.more = frame.more.map((t) => ({
          name: t.name,
          ...(t.access ? { access: { ...t.access } } : {}),
          ...(t.pool ? { pool: true } : {}),
          ...(t.inbox?.length ? { inbox: [...t.inbox] } : {}),
        }));
      if (frame.attach) body.attach = { avoid: [...frame.attach.avoid] };
      if (frame.pool) body.pool = true;
      if (frame.host !== undefined) body.host = frame.host;
      return packr.pack([frame.type, body]);
    }
    case FrameType.Welcome:
      return packr.pack([
        frame.type,
        {
          name: frame.name,
          url: frame.url,
          flow: flowToWire(frame.flow),
          heartbeatMs: frame.heartbeatMs,
          maxStreams: frame.maxStreams,
          ...(frame.more?.length ? { more: frame.more.map((t) => ({ name: t.name, url: t.url })) } : {}),
          ...(frame.instance !== undefined ? { instance: frame.instance } : {}),
          ...(frame.members ? { members: frame.members.map(memberToWire) } : {}),
          ...(frame.inbox?.length ? { inbox: frame.inbox.map((n) => ({ ...n })) } : {}),
        },
      ]);
    case FrameType.Members:
      return packr.pack([frame.type, { members: frame.members.map(memberToWire) }]);
    case FrameType.Refuse:
      return packr.pack([frame.type, frame.code, frame.message]);
    case FrameType.Ping:
    case FrameType.Pong:
      return packr.pack([frame.type, frame.nonce]);
    case FrameType.GoAway:
      return packr.pack([frame.type, frame.code, frame.message, frame.reconnectAfterMs]);
    case FrameType.Request: {
      const fields = [
        frame.type,
        frame.id,
        frame.method,
        frame.target,
        frame.headers,
        frame.body,
        frame.upgrade,
      ];
      return packr.pack(frame.tunnel ? [...fields, frame.tunnel] : fields);
    }
    case FrameType.Response:
      // A small response travels whole: [11, id, status, reason, headers, body, end].
      if (frame.body !== undefined || frame.end)
        return packr.pack([
          frame.type,
          frame.id,
          frame.status,
          frame.reason,
          frame.headers,
          frame.body ?? EMPTY,
          frame.end === true,
        ]);
      return packr.pack([frame.type, frame.id, frame.status, frame.reason, frame.headers]);
    case FrameType.Info:
      return packr.pack([frame.type, frame.id, frame.status, frame.reason, frame.headers]);
    case FrameType.Data:
      return encodeData(frame.id, frame.data);
    case FrameType.End:
      return packr.pack([frame.type, frame.id, frame.trailers]);
    case FrameType.Reset:
      return packr.pack([frame.type, frame.id, frame.code, frame.message]);
    case FrameType.Window:
      return packr.pack([frame.type, frame.id, frame.increment]);
    case FrameType.Pool:
      return packr.pack([frame.type, frame.tunnel, frame.member, frame.size]);
    case FrameType.Health:
      return packr.pack([frame.type, frame.tunnel, frame.ok, frame.detail]);
    case FrameType.Stats:
      return packr.pack([
        frame.type,
        {
          requests: frame.requests,
          bytesIn: frame.bytesIn,
          bytesOut: frame.bytesOut,
          channels: frame.channels,
          lastActivityMs: frame.lastActivityMs,
          tunnel: frame.tunnel,
          refused: frame.refused,
        },
      ]);
  }
}

/**
 * Encodes a Data frame by hand: [13, id, bin] with the smallest msgpack forms, exactly what msgpackr
 * would produce, but with a single copy of the payload and no arena churn on the hot path.
 */
export function encodeData(id: number, data: Uint8Array): Buffer {
  return encodeDataParts(id, [data], data.length);
}

/**
 * The bytes of a Data frame that come before its payload: [13, id, bin header]. A Data frame is this header followed
 * by the payload, which is how a large frame is sent without copying its payload (as two WebSocket fragments).
 */
export function encodeDataHeader(id: number, len: number): Buffer {
  return writeData(id, [], len, false);
}

/**
 * Reads a Data frame that arrived as two fragments, its header and its payload: returns the frame with the payload as
 * it is (no copy), or undefined when the fragments are anything else (the caller then joins them and decodes that).
 */
export function dataFromFragments(header: Buffer, payload: Buffer): Frame | undefined {
  const h = parseDataHeader(header);
  if (!h || h.at !== header.length || h.len !== payload.length || h.id === 0) return undefined;
  return { type: FrameType.Data, id: h.id, data: payload };
}

/** Encodes one Data frame whose payload is `parts` joined (`len` bytes in all), copying each part once. */
export function encodeDataParts(id: number, parts: Uint8Array[], len: number): Buffer {
  return writeData(id, parts, len, true);
}

/** Size of the smallest msgpack bin header for a payload of `len` bytes (bin8, bin16 or bin32). */
function binHeaderBytes(len: number): number {
  return len < 0x100 ? 2 : len < 0x10000 ? 3 : 5;
}

/** Writes the smallest msgpack bin header for `len` bytes at `at`; returns where the payload starts. */
function writeBinHeader(out: Buffer, at: number, len: number): number {
  if (len < 0x100) {
    out[at] = 0xc4;
    out[at + 1] = len;
    return at + 2;
  }
  if (len < 0x10000) {
    out[at] = 0xc5;
    out.writeUInt16BE(len, at + 1);
    return at + 3;
  }
  out[at] = 0xc6;
  out.writeUInt32BE(len, at + 1);
  return at + 5;
}

/** Reads a msgpack bin header (any of the three forms) at `at`: the payload length and where it starts. */
function readBinHeader(b: Buffer, at: number): { len: number; at: number } | undefined {
  const tag = b[at];
  if (tag === 0xc4 && b.length >= at + 2) return { len: b[at + 1]!, at: at + 2 };
  if (tag === 0xc5 && b.length >= at + 3) return { len: b.readUInt16BE(at + 1), at: at + 3 };
  if (tag === 0xc6 && b.length >= at + 5) return { len: b.readUInt32BE(at + 1), at: at + 5 };
  return undefined;
}

/** Writes [13, id, bin header] and, when `withPayload`, the payload after it. */
function writeData(id: number, parts: Uint8Array[], len: number, withPayload: boolean): Buffer {
  const idBytes = id < 0x80 ? 1 : id < 0x100 ? 2 : id < 0x10000 ? 3 : 5;
  const out = Buffer.allocUnsafe(2 + idBytes + binHeaderBytes(len) + (withPayload ? len : 0));
  out[0] = 0x93;
  out[1] = FrameType.Data;
  let at = 2;
  if (idBytes === 1) out[at++] = id;
  else if (idBytes === 2) {
    out[at++] = 0xcc;
    out[at++] = id;
  } else if (idBytes === 3) {
    out[at++] = 0xcd;
    out.writeUInt16BE(id, at);
    at += 2;
  } else {
    out[at++] = 0xce;
    out.writeUInt32BE(id, at);
    at += 4;
  }
  at = writeBinHeader(out, at, len);
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Encodes several already-encoded frames as one Batch message: [Batch, bin, bin, …]. `totalBytes` is the sum
 * of their lengths. The frames are copied once into the message.
 */
export function encodeBatch(frames: Buffer[], totalBytes: number): Buffer {
  const count = frames.length + 1;
  const arrayHeader = count < 16 ? 1 : count < 0x10000 ? 3 : 5;
  let size = arrayHeader + 1 + totalBytes;
  for (const f of frames) size += binHeaderBytes(f.length);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (arrayHeader === 1) out[at++] = 0x90 | count;
  else if (arrayHeader === 3) {
    out[at++] = 0xdc;
    out.writeUInt16BE(count, at);
    at += 2;
  } else {
    out[at++] = 0xdd;
    out.writeUInt32BE(count, at);
    at += 4;
  }
  out[at++] = FrameType.Batch;
  for (const f of frames) {
    at = writeBinHeader(out, at, f.length);
    out.set(f, at);
    at += f.length;
  }
  return out;
}

/**
 * Splits a Batch message into the encoded frames it carries (views, no copies). Returns undefined when the
 * message is not a Batch (then it is one frame); throws FrameError for a malformed or empty batch.
 */
export function splitBatch(b: Buffer): Buffer[] | undefined {
  const first = b[0];
  let count: number;
  let at: number;
  if (first !== undefined && first >= 0x91 && first <= 0x9f) {
    count = first & 0x0f;
    at = 1;
  } else if (first === 0xdc && b.length >= 3) {
    count = b.readUInt16BE(1);
    at = 3;
  } else if (first === 0xdd && b.length >= 5) {
    count = b.readUInt32BE(1);
    at = 5;
  } else return undefined;
  if (b[at] !== FrameType.Batch) return undefined;
  if (b.length > WIRE_LIMITS.MAX_MESSAGE_BYTES) throw new FrameError('message too large');
  at++;
  if (count < 2) throw new FrameError('empty batch');
  const frames: Buffer[] = [];
  for (let i = 1; i < count; i++) {
    const bin = readBinHeader(b, at);
    if (!bin) throw new FrameError('malformed batch: expected a frame as bin');
    if (bin.at + bin.len > b.length) throw new FrameError('malformed batch: frame runs past the message');
    frames.push(b.subarray(bin.at, bin.at + bin.len));
    at = bin.at + bin.len;
  }
  if (at !== b.length) throw new FrameError('malformed batch: bytes after the last frame');
  return frames;
}

/**
 * Decodes and validates one message from the peer. Throws FrameError for anything that is not a
 * well-formed frame of a known type; never returns a value of an unexpected shape.
 */
export function decodeFrame(bytes: Buffer): Frame {
  if (bytes.length > WIRE_LIMITS.MAX_MESSAGE_BYTES) throw new FrameError('message too large');
  const fast = decodeDataFast(bytes);
  if (fast) return fast;
  // Cheap pre-check before handing bytes to the general decoder: every frame is a short array.
  const first = bytes[0];
  if (first === undefined || first < 0x91 || first > 0x98)
    throw new FrameError('not a frame: expected an array');
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (err) {
    throw new FrameError(`undecodable message: ${(err as Error).message}`);
  }
  if (!Array.isArray(value)) throw new FrameError('not a frame: expected an array');
  return validate(value);
}

/** Decodes every frame of one message (a single frame or a Batch), for code that reads messages whole. */
export function decodeMessage(bytes: Buffer): Frame[] {
  const parts = splitBatch(bytes);
  return parts ? parts.map(decodeFrame) : [decodeFrame(bytes)];
}

/** Parses [13, id, bin] directly; returns undefined when the bytes do not have that exact shape. */
function decodeDataFast(b: Buffer): Frame | undefined {
  const h = parseDataHeader(b);
  if (!h) return undefined;
  if (h.at + h.len !== b.length) throw new FrameError('data frame length mismatch', h.id);
  if (h.id === 0) throw new FrameError('data frame on stream 0');
  return { type: FrameType.Data, id: h.id, data: b.subarray(h.at) };
}

/** Reads [13, id, bin header] at the start of `b`: the stream id, payload length and where the payload starts. */
function parseDataHeader(b: Buffer): { id: number; len: number; at: number } | undefined {
  if (b.length < 4 || b[0] !== 0x93 || b[1] !== FrameType.Data) return undefined;
  let at = 2;
  let id: number;
  const idTag = b[at++]!;
  if (idTag < 0x80) id = idTag;
  else if (idTag === 0xcc && b.length >= at + 1) id = b[at++]!;
  else if (idTag === 0xcd && b.length >= at + 2) {
    id = b.readUInt16BE(at);
    at += 2;
  } else if (idTag === 0xce && b.length >= at + 4) {
    id = b.readUInt32BE(at);
    at += 4;
  } else return undefined;
  const bin = readBinHeader(b, at);
  return bin && { id, len: bin.len, at: bin.at };
}

function validate(a: unknown[]): Frame {
  const type = a[0];
  switch (type) {
    case FrameType.Hello: {
      arity(a, 2);
      const m = map(a[1], 'hello');
      return {
        type,
        version: uint(m.get('version'), 'version', 0xffff),
        token: str(m.get('token'), 'token'),
        name: str(m.get('name'), 'name'),
        agent: str(m.get('agent'), 'agent'),
        clientId: str(m.get('clientId'), 'clientId'),
        flow: flow(m.get('flow')),
        ...(m.has('access') ? { access: access(m.get('access')) } : {}),
        ...(m.has('inbox') ? { inbox: inboxPatterns(m.get('inbox')) } : {}),
        ...(m.has('more')
          ? {
              more: tunnelList(m.get('more'), (t) => ({
                name: str(t.get('name'), 'name'),
                ...(t.has('access') ? { access: access(t.get('access')) } : {}),
                ...(t.has('pool') ? { pool: bool(t.get('pool'), 'pool') } : {}),
                ...(t.has('inbox') ? { inbox: inboxPatterns(t.get('inbox')) } : {}),
              })),
            }
          : {}),
        ...(m.has('attach')
          ? { attach: { avoid: idList(map(m.get('attach'), 'attach').get('avoid')) } }
          : {}),
        ...(m.has('pool') ? { pool: bool(m.get('pool'), 'pool') } : {}),
        ...(m.has('host') ? { host: str(m.get('host'), 'host', 0, WIRE_LIMITS.MAX_HOST_NAME_CHARS) } : {}),
      };
    }
    case FrameType.Welcome: {
      arity(a, 2);
      const m = map(a[1], 'welcome');
      return {
        type,
        name: str(m.get('name'), 'name'),
        url: str(m.get('url'), 'url'),
        flow: flow(m.get('flow')),
        heartbeatMs: uint(m.get('heartbeatMs'), 'heartbeatMs', 3_600_000),
        maxStreams: uint(m.get('maxStreams'), 'maxStreams', WIRE_LIMITS.MAX_STREAM_ID),
        ...(m.has('more')
          ? {
              more: tunnelList(m.get('more'), (t) => ({
                name: str(t.get('name'), 'name'),
                url: str(t.get('url'), 'url'),
              })),
            }
          : {}),
        ...(m.has('instance') ? { instance: instanceId(m.get('instance')) } : {}),
        ...(m.has('members') ? { members: memberList(m.get('members')) } : {}),
        ...(m.has('inbox') ? { inbox: inboxNotices(m.get('inbox')) } : {}),
      };
    }
    case FrameType.Members: {
      arity(a, 2);
      return { type, members: memberList(map(a[1], 'members').get('members')) };
    }
    case FrameType.Refuse:
      arity(a, 3);
      return { type, code: str(a[1], 'code'), message: str(a[2], 'message') };
    case FrameType.Ping:
    case FrameType.Pong:
      arity(a, 2);
      return { type, nonce: uint(a[1], 'nonce', Number.MAX_SAFE_INTEGER) };
    case FrameType.GoAway:
      arity(a, 4);
      return {
        type,
        code: str(a[1], 'code'),
        message: str(a[2], 'message'),
        reconnectAfterMs: uint(a[3], 'reconnectAfterMs', 3_600_000),
      };
    case FrameType.Request: {
      if (a.length !== 7 && a.length !== 8) arity(a, 7);
      const id = streamId(a[1]);
      const body = a[5];
      if (body !== BodyKind.None && body !== BodyKind.Length && body !== BodyKind.Chunked)
        throw new FrameError('bad body kind', id);
      if (typeof a[6] !== 'boolean') throw new FrameError('bad upgrade flag', id);
      return {
        type,
        id,
        method: token(a[2], 'method', id),
        target: target(a[3], id),
        headers: headers(a[4], id),
        body: body,
        upgrade: a[6],
        tunnel:
          a.length === 8 ? uint(a[7], 'tunnel index', WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1, id) : 0,
      };
    }
    case FrameType.Response:
    case FrameType.Info: {
      if (type === FrameType.Info || a.length !== 7) arity(a, 5);
      const id = streamId(a[1]);
      const status = uint(a[2], 'status', 999, id);
      const min = type === FrameType.Info ? 100 : 101;
      const max = type === FrameType.Info ? 199 : 999;
      if (
        status < min ||
        status > max ||
        (type === FrameType.Info && status === 101) ||
        (type === FrameType.Response && status < 200 && status !== 101)
      )
        throw new FrameError(`bad status ${status}`, id);
      if (a.length === 5) return { type, id, status, reason: reason(a[3], id), headers: headers(a[4], id) };
      const body = a[5];
      if (!Buffer.isBuffer(body)) throw new FrameError('response body must be binary', id);
      if (typeof a[6] !== 'boolean') throw new FrameError('bad end flag', id);
      if (status === 101 && (body.length > 0 || a[6])) throw new FrameError('a 101 carries no body', id);
      return {
        type: FrameType.Response,
        id,
        status,
        reason: reason(a[3], id),
        headers: headers(a[4], id),
        body,
        end: a[6],
      };
    }
    case FrameType.Data: {
      // Reached only for Data frames the fast path did not recognise (non-minimal encodings).
      arity(a, 3);
      const id = streamId(a[1]);
      if (!Buffer.isBuffer(a[2])) throw new FrameError('data payload must be binary', id);
      return { type, id, data: a[2] };
    }
    case FrameType.End: {
      arity(a, 3);
      const id = streamId(a[1]);
      return { type, id, trailers: headers(a[2], id) };
    }
    case FrameType.Reset: {
      arity(a, 4);
      const id = streamId(a[1]);
      return { type, id, code: str(a[2], 'code', id), message: str(a[3], 'message', id) };
    }
    case FrameType.Window: {
      arity(a, 3);
      const id = uint(a[1], 'stream id', WIRE_LIMITS.MAX_STREAM_ID);
      const increment = uint(a[2], 'increment', WIRE_LIMITS.MAX_WINDOW_BYTES, id);
      if (increment === 0) throw new FrameError('zero window increment', id);
      return { type, id, increment };
    }
    case FrameType.Pool:
      arity(a, 4);
      return {
        type,
        tunnel: uint(a[1], 'tunnel', WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1),
        member: instanceId(a[2]),
        size: uint(a[3], 'pool size', 0xffff),
      };
    case FrameType.Health:
      arity(a, 4);
      return {
        type,
        tunnel: uint(a[1], 'tunnel', WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1),
        ok: bool(a[2], 'ok'),
        detail: str(a[3], 'detail', 0, WIRE_LIMITS.MAX_REASON_CHARS),
      };
    case FrameType.Stats: {
      arity(a, 2);
      const m = map(a[1], 'stats');
      const count = (key: string, max: number = Number.MAX_SAFE_INTEGER): number =>
        uint(m.get(key), key, max);
      return {
        type,
        requests: count('requests'),
        bytesIn: count('bytesIn'),
        bytesOut: count('bytesOut'),
        channels: count('channels', WIRE_LIMITS.MAX_STREAM_ID),
        lastActivityMs: count('lastActivityMs'),
        tunnel: count('tunnel', WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1),
        refused: m.has('refused') ? count('refused') : 0,
      };
    }
    default:
      throw new FrameError(`unknown frame type ${String(type)}`);
  }
}

function arity(a: unknown[], n: number): void {
  if (a.length !== n) throw new FrameError(`frame type ${String(a[0])} needs ${n} fields, got ${a.length}`);
}

function map(v: unknown, what: string): Map<unknown, unknown> {
  if (!(v instanceof Map)) throw new FrameError(`${what} body must be a map`);
  return v;
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new FrameError(`bad ${what}`);
  return v;
}

function uint(v: unknown, what: string, max: number, id = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    throw new FrameError(`bad ${what}`, id);
  return v;
}

function streamId(v: unknown): number {
  const id = uint(v, 'stream id', WIRE_LIMITS.MAX_STREAM_ID);
  if (id === 0) throw new FrameError('stream frame on stream 0');
  return id;
}

function str(v: unknown, what: string, id = 0, max: number = WIRE_LIMITS.MAX_STRING_BYTES): string {
  if (typeof v !== 'string' || v.length > max) throw new FrameError(`bad ${what}`, id);
  return v;
}

// Request target: visible ASCII only (Node's parser already rejects the rest on the public side).
const TARGET = /^[\x21-\x7e\x80-\xff]+$/;

function token(v: unknown, what: string, id: number): string {
  if (typeof v !== 'string' || v.length > 256 || !TOKEN.test(v)) throw new FrameError(`bad ${what}`, id);
  return v;
}

function target(v: unknown, id: number): string {
  if (typeof v !== 'string' || v.length > WIRE_LIMITS.MAX_TARGET_BYTES || !TARGET.test(v))
    throw new FrameError('bad request target', id);
  return v;
}

function reason(v: unknown, id: number): string {
  if (typeof v !== 'string' || v.length > WIRE_LIMITS.MAX_REASON_CHARS || !FIELD_VALUE.test(v))
    throw new FrameError('bad reason phrase', id);
  return v;
}

/** Whether a header list fits the wire limits (count and bytes); senders check before building a frame. */
export function headerListFits(list: HeaderList): boolean {
  if (list.length > WIRE_LIMITS.MAX_HEADER_LIST_ENTRIES) return false;
  let bytes = 0;
  for (const item of list) bytes += item.length;
  return bytes <= WIRE_LIMITS.MAX_HEADER_LIST_BYTES;
}

/** Validates a flat header list: token names, safe values, bounded size. */
function headers(v: unknown, id: number): HeaderList {
  if (!Array.isArray(v) || v.length % 2 !== 0 || v.length > WIRE_LIMITS.MAX_HEADER_LIST_ENTRIES)
    throw new FrameError('bad header list', id);
  let bytes = 0;
  for (let i = 0; i < v.length; i += 2) {
    const name: unknown = v[i];
    const value: unknown = v[i + 1];
    if (typeof name !== 'string' || !TOKEN.test(name)) throw new FrameError('bad header name', id);
    if (typeof value !== 'string' || !FIELD_VALUE.test(value))
      throw new FrameError(`bad value for header ${name}`, id);
    bytes += name.length + value.length;
  }
  if (bytes > WIRE_LIMITS.MAX_HEADER_LIST_BYTES) throw new FrameError('header list too large', id);
  return v as HeaderList;
}

function stringList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > WIRE_LIMITS.MAX_ACCESS_RULES) throw new FrameError(`bad ${what}`);
  return v.map((item) => str(item, what, 0, 512));
}

function access(v: unknown): AccessRules {
  const m = map(v, 'access rules');
  const optionsWithoutAuth = m.get('optionsWithoutAuth');
  if (typeof optionsWithoutAuth !== 'boolean') throw new FrameError('bad optionsWithoutAuth');
  return {
    basicAuth: stringList(m.get('basicAuth'), 'basicAuth'),
    allowIp: stringList(m.get('allowIp'), 'allowIp'),
    optionsWithoutAuth,
  };
}

/** A webhook inbox's path patterns: absolute paths, printable, bounded in number and length. */
function inboxPatterns(v: unknown): string[] {
  if (!Array.isArray(v) || v.length > WIRE_LIMITS.MAX_INBOX_PATTERNS)
    throw new FrameError('bad inbox patterns');
  return v.map((item) => {
    const p = str(item, 'inbox pattern', 0, WIRE_LIMITS.MAX_INBOX_PATTERN_CHARS);
    if (!isInboxPattern(p)) throw new FrameError('bad inbox pattern');
    return p;
  });
}

/** Welcome's per-tunnel inbox counts. */
function inboxNotices(v: unknown): InboxNotice[] {
  if (!Array.isArray(v) || v.length > WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION)
    throw new FrameError('bad inbox notices');
  return v.map((item) => {
    const m = map(item, 'inbox notice');
    return {
      tunnel: uint(m.get('tunnel'), 'tunnel', WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1),
      kept: uint(m.get('kept'), 'kept', Number.MAX_SAFE_INTEGER),
      refused: uint(m.get('refused'), 'refused', Number.MAX_SAFE_INTEGER),
      failed: uint(m.get('failed'), 'failed', Number.MAX_SAFE_INTEGER),
    };
  });
}

/** An instance id: a short printable token (it becomes part of Redis keys and HTTP headers). */
function instanceId(v: unknown): string {
  const id = str(v, 'instance id', 0, WIRE_LIMITS.MAX_INSTANCE_ID_CHARS);
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]*$/.test(id)) throw new FrameError('bad instance id');
  return id;
}

function idList(v: unknown): string[] {
  if (!Array.isArray(v) || v.length > WIRE_LIMITS.MAX_MEMBERS) throw new FrameError('bad instance list');
  return v.map(instanceId);
}

/** A bounded list of cluster members. */
function memberList(v: unknown): MemberRef[] {
  if (!Array.isArray(v) || v.length > WIRE_LIMITS.MAX_MEMBERS) throw new FrameError('bad members list');
  return v.map((item) => {
    const m = map(item, 'member');
    return {
      id: instanceId(m.get('id')),
      ...(m.has('url') ? { url: str(m.get('url'), 'member url') } : {}),
      ...(m.has('fly') ? { fly: instanceId(m.get('fly')) } : {}),
    };
  });
}

function memberToWire(m: MemberRef): Record<string, string> {
  return {
    id: m.id,
    ...(m.url !== undefined ? { url: m.url } : {}),
    ...(m.fly !== undefined ? { fly: m.fly } : {}),
  };
}

/** A bounded list of maps describing further tunnels. */
function tunnelList<T>(v: unknown, read: (m: Map<unknown, unknown>) => T): T[] {
  if (!Array.isArray(v) || v.length >= WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION)
    throw new FrameError('bad tunnel list');
  return v.map((item) => read(map(item, 'tunnel')));
}

function flowToWire(f: FlowSettings): Record<string, number> {
  return { streamWindow: f.streamWindow, connWindow: f.connWindow, maxData: f.maxData };
}

function flow(v: unknown): FlowSettings {
  const m = map(v, 'flow settings');
  const streamWindow = uint(m.get('streamWindow'), 'streamWindow', WIRE_LIMITS.MAX_WINDOW_BYTES);
  const connWindow = uint(m.get('connWindow'), 'connWindow', WIRE_LIMITS.MAX_WINDOW_BYTES);
  const maxData = uint(m.get('maxData'), 'maxData', WIRE_LIMITS.MAX_DATA_BYTES);
  if (maxData < WIRE_LIMITS.MIN_DATA_BYTES) throw new FrameError('maxData too small');
  if (streamWindow < maxData || connWindow < maxData) throw new FrameError('window smaller than maxData');
  return { streamWindow, connWindow, maxData };
}
