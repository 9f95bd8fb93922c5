// Incremental HTTP/1.1 response parser for the local side: status lines, raw headers, bodies, trailers, upgrades.
// The local service is the user's own, but its bytes are still checked: a malformed response is an error, never a
// mis-framed body. Framing follows RFC 9112 §6.3 (HEAD/1xx/204/304 bodiless, chunked, Content-Length, until close).
import { FIELD_VALUE, TOKEN } from '../protocol/headers.js';

/** What the parser reports, in wire order. One object per connection, so no closures per request. */
export interface ResponseHandler {
  /** A response head. `info` is true for 1xx heads other than an expected 101; the final head follows later. */
  onHead(status: number, reason: string, headers: string[], info: boolean): void;
  /** A piece of the body (chunked framing removed). The Buffer is a view of the socket's read. */
  onBody(chunk: Buffer): void;
  /** The response is complete; `trailers` are the chunked trailers (raw names and values). */
  onDone(trailers: string[]): void;
  /**
   * The 101 of an expected upgrade arrived, head and all in one call (the connection stops being HTTP here);
   * `rest` holds the bytes that followed the head in the same read.
   */
  onUpgrade(status: number, reason: string, headers: string[], rest: Buffer): void;
}

/** The response is not valid HTTP/1.1; the connection cannot be used any further. */
export class ResponseParseError extends Error {
  readonly code = 'HPE_INVALID_RESPONSE';
}

/** Limits on what the local service may send, matching what Node's own client allows. */
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
export const MAX_RESPONSE_HEADERS = 2000;
/** A chunk-size line (hex size plus extensions). */
const MAX_CHUNK_LINE_BYTES = 4096;

const State = {
  Idle: 0,
  Head: 1,
  Length: 2,
  ChunkSize: 3,
  ChunkData: 4,
  ChunkDataEnd: 5,
  Trailers: 6,
  UntilClose: 7,
  Done: 8,
  Upgraded: 9,
} as const;
type StateValue = (typeof State)[keyof typeof State];

const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[\t ]*(;.*)?$/;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const LFLF = Buffer.from('\n\n');

/**
 * Parses the responses on one connection, one at a time: call `expect()` before each request, `execute()` with
 * every read and `finish()` at end of stream. Throws ResponseParseError for malformed input.
 */
export class ResponseParser {
  private state: StateValue = State.Idle;
  private head = true;
  private upgrade = false;
  /** Unparsed bytes of an incomplete line or head, carried to the next read. */
  private pending: Buffer | undefined;
  /** Where to resume looking for the end of the head in `pending`. */
  private scanFrom = 0;
  private remaining = 0;
  private trailers: string[] = [];
  /** Bytes of trailers seen so far (they count against the head limit). */
  private trailerBytes = 0;
  /** The connection may carry another request once this response is done. */
  keepAlive = false;
  /** How long the server keeps the connection open when idle, if its last response said (`Keep-Alive: timeout`). */
  idleTimeoutMs: number | undefined;
  /** Some bytes of a response arrived (a stale keep-alive socket closes before any). */
  started = false;

  constructor(private readonly handler: ResponseHandler) {}

  /** Prepares for the response to a new request. */
  expect(method: string, upgrade: boolean): void {
    this.state = State.Head;
    this.head = method !== 'HEAD';
    this.upgrade = upgrade;
    this.pending = undefined;
    this.scanFrom = 0;
    this.keepAlive = false;
    this.started = false;
  }

  /** True once the final response (or the switch of an upgrade) has been fully read. */
  get done(): boolean {
    return this.state === State.Done || this.state === State.Upgraded;
  }

  /** True while the body runs until the connection closes. */
  get untilClose(): boolean {
    return this.state === State.UntilClose;
  }

  /** Feeds one read from the socket. */
  execute(data: Buffer): void {
    if (data.length > 0) this.started = true;
    let buf = data;
    if (this.pending) {
      buf = Buffer.concat([this.pending, data]);
      this.pending = undefined;
    }
    let pos = 0;
    while (pos < buf.length) {
      switch (this.state) {
        case State.Head:
          pos = this.parseHead(buf, pos);
          break;
        case State.Length:
          pos = this.passBody(buf, pos);
          if (this.remaining === 0) this.finishMessage([], pos < buf.length);
          break;
        case State.ChunkSize:
          pos = this.parseChunkSize(buf, pos);
          break;
        case State.ChunkData:
          pos = this.passBody(buf, pos);
          if (this.remaining === 0) this.state = State.ChunkDataEnd;
          break;
        case State.ChunkDataEnd:
          pos = this.parseChunkEnd(buf, pos);
          break;
        case State.Trailers:
          pos = this.parseTrailer(buf, pos);
          break;
        case State.UntilClose:
          this.handler.onBody(pos === 0 ? buf : buf.subarray(pos));
          pos = buf.length;
          break;
        case State.Upgraded:
          return;
        case State.Idle:
        case State.Done:
          // Bytes after a complete response, or with no request outstanding: this connection is not HTTP/1.1.
          this.keepAlive = false;
          return;
      }
      if (pos < 0) return; // waiting for more bytes; the incomplete part is in `pending`
    }
  }

  /** End of stream from the server. Completes a body that runs until close; anything else incomplete throws. */
  finish(): void {
    if (this.state === State.UntilClose) return this.finishMessage([], false);
    if (this.state !== State.Done && this.state !== State.Idle && this.state !== State.Upgraded)
      throw new ResponseParseError('the local service closed the connection mid-response');
  }

  /** Keeps the tail of `buf` from `from` for the next read; returns -1 (the caller's "need more" marker). */
  private stash(buf: Buffer, from: number, limit: number, what: string): number {
    const rest = buf.subarray(from);
    if (rest.length > limit) throw new ResponseParseError(`${what} is larger than ${limit} bytes`);
    this.pending = Buffer.from(rest); // a copy: the socket's buffer may be a slice of a larger one
    return -1;
  }

  private parseHead(buf: Buffer, pos: number): number {
    // The end of the head: CRLF CRLF, or LF LF from lenient servers, whichever comes first (an LF-only head may be
    // followed by a body holding CRLF CRLF). LF LF is looked for only before the CRLF CRLF, so not through the body.
    const from = pos + this.scanFrom;
    let end = buf.indexOf(CRLFCRLF, from);
    let bodyAt = end + 4;
    const lf = (end < 0 ? buf : buf.subarray(0, end)).indexOf(LFLF, from);
    if (lf >= 0) {
      end = lf;
      bodyAt = lf + 2;
    }
    if (end < 0) {
      const size = buf.length - pos;
      this.scanFrom = size > 3 ? size - 3 : 0;
      // + 3: a head of exactly the limit may be waiting for the last bytes of its CRLF CRLF.
      return this.stash(buf, pos, MAX_RESPONSE_HEAD_BYTES + 3, 'the response head');
    }
    this.scanFrom = 0;
    if (end - pos > MAX_RESPONSE_HEAD_BYTES)
      throw new ResponseParseError(`the response head is larger than ${MAX_RESPONSE_HEAD_BYTES} bytes`);
    const lines = buf.toString('latin1', pos, end).split('\n');
    const m = STATUS_LINE.exec(trimCR(lines[0]!));
    if (!m) throw new ResponseParseError(`invalid status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
    const minor = m[1]!;
    const status = Number(m[2]);
    const reason = m[3] ?? '';
    if (status < 100 || !FIELD_VALUE.test(reason)) throw new ResponseParseError('invalid status line');
    const headers = parseFields(lines, 1, MAX_RESPONSE_HEADERS);

    if (status < 200) {
      if (status === 101 && this.upgrade) {
        this.state = State.Upgraded;
        this.handler.onUpgrade(status, reason, headers, buf.subarray(bodyAt));
        return buf.length;
      }
      if (status === 101) throw new ResponseParseError('101 Switching Protocols without an upgrade request');
      this.handler.onHead(status, reason, headers, true);
      return bodyAt; // the final head follows
    }

    const framing = bodyFraming(headers);
    this.keepAlive = !framing.close && (minor === '1' || framing.keepAlive10);
    this.idleTimeoutMs = framing.idleTimeoutMs;
    this.handler.onHead(status, reason, headers, false);
    if (!this.head || status === 204 || status === 304) {
      this.finishMessage([], bodyAt < buf.length);
    } else if (framing.chunked) {
      this.state = State.ChunkSize;
      this.trailers = [];
      this.trailerBytes = 0;
    } else if (framing.length !== undefined) {
      this.remaining = framing.length;
      this.state = State.Length;
      if (framing.length === 0) this.finishMessage([], bodyAt < buf.length);
    } else {
      this.keepAlive = false;
      this.state = State.UntilClose;
    }
    return bodyAt;
  }

  /** Hands on what this read holds of the `remaining` body bytes (the read itself when it is all body). */
  private passBody(buf: Buffer, pos: number): number {
    const n = Math.min(this.remaining, buf.length - pos);
    this.remaining -= n;
    this.handler.onBody(pos === 0 && n === buf.length ? buf : buf.subarray(pos, pos + n));
    return pos + n;
  }

  private parseChunkSize(buf: Buffer, pos: number): number {
    const nl = buf.indexOf(10, pos);
    if (nl < 0) return this.stash(buf, pos, MAX_CHUNK_LINE_BYTES, 'a chunk-size line');
    if (nl - pos > MAX_CHUNK_LINE_BYTES) throw new ResponseParseError('chunk-size line too long');
    const m = CHUNK_SIZE.exec(trimCR(buf.toString('latin1', pos, nl)));
    if (!m) throw new ResponseParseError('invalid chunk size');
    const size = parseInt(m[1]!, 16);
    if (size === 0) this.state = State.Trailers;
    else {
      this.remaining = size;
      this.state = State.ChunkData;
    }
    return nl + 1;
  }

  private parseChunkEnd(buf: Buffer, pos: number): number {
    // CRLF (or a lenient LF) after the chunk's data.
    if (buf[pos] === 10) {
      this.state = State.ChunkSize;
      return pos + 1;
    }
    if (buf[pos] !== 13) throw new ResponseParseError('missing CRLF after chunk data');
    if (pos + 1 >= buf.length) return this.stash(buf, pos, 2, 'a chunk terminator');
    if (buf[pos + 1] !== 10) throw new ResponseParseError('missing CRLF after chunk data');
    this.state = State.ChunkSize;
    return pos + 2;
  }

  private parseTrailer(buf: Buffer, pos: number): number {
    const nl = buf.indexOf(10, pos);
    if (nl < 0) return this.stash(buf, pos, MAX_RESPONSE_HEAD_BYTES - this.trailerBytes, 'the trailers');
    this.trailerBytes += nl + 1 - pos;
    if (this.trailerBytes > MAX_RESPONSE_HEAD_BYTES)
      throw new ResponseParseError(`the trailers are larger than ${MAX_RESPONSE_HEAD_BYTES} bytes`);
    const line = trimCR(buf.toString('latin1', pos, nl));
    if (line === '') {
      this.finishMessage(this.trailers, nl + 1 < buf.length);
      return nl + 1;
    }
    parseFieldLine(line, this.trailers);
    if (this.trailers.length > MAX_RESPONSE_HEADERS * 2) throw new ResponseParseError('too many trailers');
    return nl + 1;
  }

  /** `more`: bytes follow the response in the same read. Then the connection is not reusable, and that must be
   * known before onDone, which is where the connection goes back to the pool. */
  private finishMessage(trailers: string[], more: boolean): void {
    if (more) this.keepAlive = false;
    this.state = State.Done;
    this.handler.onDone(trailers);
  }
}

function trimCR(line: string): string {
  return line.charCodeAt(line.length - 1) === 13 ? line.slice(0, -1) : line;
}

/** Strips spaces and tabs (OWS) from both ends. Not String.prototype.trim: it also strips 0xA0 (an obs-text byte,
 * e.g. the last byte of UTF-8 "à") and control bytes such as VT and FF, which must be refused instead. */
function trimOWS(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/** Parses header lines `lines[from..]` into a flat [name, value, …] list, raw case and order kept. */
function parseFields(lines: string[], from: number, maxFields: number): string[] {
  const out: string[] = [];
  for (let i = from; i < lines.length; i++) {
    const line = trimCR(lines[i]!);
    if (line === '') throw new ResponseParseError('empty line inside the response head');
    parseFieldLine(line, out);
    if (out.length > maxFields * 2) throw new ResponseParseError(`more than ${maxFields} response headers`);
  }
  return out;
}

/** Adds one "Name: value" line to `out`; a line starting with whitespace continues the previous value (obs-fold). */
function parseFieldLine(line: string, out: string[]): void {
  const first = line.charCodeAt(0);
  if (first === 32 || first === 9) {
    // RFC 9112 §5.2: a recipient of obs-fold in a response replaces it with a space.
    if (out.length === 0) throw new ResponseParseError('header continuation line without a header');
    const value = trimOWS(line);
    if (!FIELD_VALUE.test(value)) throw new ResponseParseError('invalid character in a header value');
    out[out.length - 1] = value ? `${out[out.length - 1]!} ${value}` : out[out.length - 1]!;
    return;
  }
  const colon = line.indexOf(':');
  const name = colon > 0 ? line.slice(0, colon) : '';
  if (!TOKEN.test(name))
    throw new ResponseParseError(`invalid header line ${JSON.stringify(line.slice(0, 80))}`);
  const value = trimOWS(line.slice(colon + 1));
  if (!FIELD_VALUE.test(value)) throw new ResponseParseError(`invalid character in the value of ${name}`);
  out.push(name, value);
}

interface Framing {
  chunked: boolean;
  /** The declared Content-Length, when there is one and no Transfer-Encoding. */
  length: number | undefined;
  /** Connection: close was sent. */
  close: boolean;
  /** HTTP/1.0 with Connection: keep-alive. */
  keepAlive10: boolean;
  /** `Keep-Alive: timeout=N`: how long (ms) the server says it keeps the idle connection open. */
  idleTimeoutMs: number | undefined;
}

/** Reads the headers that decide how the body is framed and whether the connection survives it. */
function bodyFraming(headers: string[]): Framing {
  let te: string | undefined;
  let length: number | undefined;
  let close = false;
  let keepAlive10 = false;
  let idleTimeoutMs: number | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    // Cheap length checks first: most headers are none of these.
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      for (const part of headers[i + 1]!.split(',')) {
        const v = trimOWS(part);
        if (!/^\d{1,15}$/.test(v))
          throw new ResponseParseError(`invalid Content-Length ${JSON.stringify(v)}`);
        const n = Number(v);
        if (length !== undefined && length !== n)
          throw new ResponseParseError('conflicting Content-Length values');
        length = n;
      }
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      te = te === undefined ? headers[i + 1]! : `${te}, ${headers[i + 1]!}`;
    } else if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const token of headers[i + 1]!.toLowerCase().split(',')) {
        const t = token.trim();
        if (t === 'close') close = true;
        else if (t === 'keep-alive') keepAlive10 = true;
      }
    } else if (name.length === 10 && name.toLowerCase() === 'keep-alive') {
      const m = /(?:^|[,;\s])timeout\s*=\s*"?(\d{1,9})/i.exec(headers[i + 1]!);
      if (m) idleTimeoutMs = Number(m[1]) * 1000;
    }
  }
  if (te !== undefined) {
    // A body framed two ways is how responses get smuggled; refuse it as Node's parser does.
    if (length !== undefined) throw new ResponseParseError('both Transfer-Encoding and Content-Length');
    const codings = te.toLowerCase().split(',');
    const chunked = codings[codings.length - 1]!.trim() === 'chunked';
    // Another final coding: the body runs until the connection closes.
    return {
      chunked,
      length: undefined,
      close: close || !chunked,
      keepAlive10: keepAlive10 && chunked,
      idleTimeoutMs,
    };
  }
  return { chunked: false, length, close, keepAlive10, idleTimeoutMs };
}
