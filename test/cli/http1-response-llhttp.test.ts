// The local side's response parser (cli/http1-response.ts) against Node's own llhttp, on generated responses: the
// same bytes go to our parser (cut into random reads) and, over a real socket, to Node's http client. Both must
// report the same interim heads, status, raw headers, body, trailers and connection reuse, or both refuse the bytes.
// Where they may differ, the difference is named below (Quirk) with the reason ours is right or at least safe.
import fc from 'fast-check';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { MAX_RESPONSE_HEAD_BYTES, ResponseParseError, ResponseParser } from '../../cli/http1-response.js';

/** Generated cases per run: a few seconds on two loaded cores. LLHTTP_RUNS=5000 for a long hunt. */
const RUNS = Number(process.env.LLHTTP_RUNS ?? 300);

// ---------------------------------------------------------------------------------------------------------------
// What a parser made of the bytes.

interface Head {
  status: number;
  reason: string;
  /** Raw names and values, in order (latin1, as both parsers decode them). */
  headers: string[];
}

type Outcome =
  | { kind: 'response'; infos: Head[]; head: Head; body: string; trailers: string[]; keepAlive: boolean }
  | { kind: 'upgrade'; infos: Head[]; head: Head; rest: string }
  | { kind: 'rejected'; why: string };

const latin1 = (chunks: Buffer[]): string => Buffer.concat(chunks).toString('latin1');

/** Our parser, fed `pieces` as separate reads, then end of stream. */
function parseOurs(pieces: Buffer[], method: string, upgrade: boolean): Outcome {
  const infos: Head[] = [];
  let head: Head | undefined;
  const body: Buffer[] = [];
  let done: { trailers: string[]; keepAlive: boolean } | undefined;
  let rest: Buffer[] | undefined;
  const parser: ResponseParser = new ResponseParser({
    onHead: (status, reason, headers, info) => {
      const h = { status, reason, headers: [...headers] };
      if (info) infos.push(h);
      else head = h;
    },
    onBody: (chunk) => body.push(Buffer.from(chunk)), // a view of the read: copied
    // keepAlive as it stands when the response completes: that is when the connection goes back to the pool.
    onDone: (trailers) => (done = { trailers: [...trailers], keepAlive: parser.keepAlive }),
    // The switch arrives in one call: the 101's head, then what followed it.
    onUpgrade: (status, reason, headers, bytes) => {
      head = { status, reason, headers: [...headers] };
      rest = [Buffer.from(bytes)];
    },
  });
  parser.expect(method, upgrade);
  try {
    for (const piece of pieces) {
      // After the switch the parser reads nothing more: the caller takes the socket's bytes as they come.
      if (rest) rest.push(piece);
      else parser.execute(piece);
    }
    if (!rest) parser.finish();
  } catch (err) {
    if (err instanceof ResponseParseError) return { kind: 'rejected', why: err.message };
    throw err;
  }
  if (rest && head) return { kind: 'upgrade', infos, head, rest: latin1(rest) };
  if (!head || !done) throw new Error('the parser neither completed, refused nor switched protocols');
  return { kind: 'response', infos, head, body: latin1(body), ...done };
}

/**
 * Node's http client over a real socket: a raw server writes exactly the given pieces (a turn of the event loop
 * between them, so llhttp also sees separate reads) and closes. A keep-alive agent per request makes
 * `req.shouldKeepAlive` llhttp's verdict on reusing the connection.
 */
class Llhttp {
  private server: net.Server | undefined;
  private port = 0;
  private next = 0;
  private readonly cases = new Map<string, Buffer[]>();
  private readonly sockets = new Set<net.Socket>();

  async start(): Promise<void> {
    const server = net.createServer((socket) => this.serve(socket));
    this.server = server;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise((r) => this.server!.close(r));
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    socket.setNoDelay(true);
    let request = '';
    const onData = (data: Buffer): void => {
      request += data.toString('latin1');
      if (!request.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.resume(); // whatever else the client sends is not read
      const pieces = this.cases.get(/^[A-Z]+ \/(\d+) /.exec(request)?.[1] ?? '');
      if (!pieces) return void socket.destroy();
      void (async () => {
        for (const piece of pieces) {
          if (socket.destroyed) return;
          socket.write(piece);
          await new Promise((r) => setImmediate(r));
        }
        socket.end();
      })();
    };
    socket.on('data', onData);
  }

  parse(pieces: Buffer[], method: string, upgrade: boolean, maxHeaderSize?: number): Promise<Outcome> {
    const id = String(this.next++);
    this.cases.set(id, pieces);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    return new Promise<Outcome>((resolve) => {
      const infos: Head[] = [];
      let error: string | undefined;
      let result: Outcome | undefined;
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.cases.delete(id);
        agent.destroy();
        // A response that completed stands, whatever llhttp says about bytes after it.
        resolve(result ?? { kind: 'rejected', why: error ?? 'closed without a response' });
      };
      const timer = setTimeout(() => {
        error = 'timed out';
        settle();
      }, 10_000);
      const req = http.request({
        host: '127.0.0.1',
        port: this.port,
        method,
        path: `/${id}`,
        agent,
        maxHeaderSize,
        headers: upgrade ? { Connection: 'Upgrade', Upgrade: 'test' } : {},
      });
      req.on('information', (info) =>
        infos.push({ status: info.statusCode, reason: info.statusMessage, headers: info.rawHeaders }),
      );
      req.on('error', (err: NodeJS.ErrnoException) => (error ??= `${err.code ?? ''} ${err.message}`));
      let responded = false;
      if (upgrade)
        req.on('upgrade', (res, socket, head) => {
          responded = true;
          const rest: Buffer[] = [head];
          socket.on('data', (d: Buffer) => rest.push(d));
          socket.on('error', () => {});
          socket.on('end', () => socket.destroy());
          socket.on('close', () => {
            result = { kind: 'upgrade', infos, head: headOf(res), rest: latin1(rest) };
            settle();
          });
        });
      req.on('response', (res) => {
        responded = true;
        const body: Buffer[] = [];
        res.on('data', (d: Buffer) => body.push(d));
        res.on(
          'error',
          (err: NodeJS.ErrnoException) => (error ??= `response ${err.code ?? ''} ${err.message}`),
        );
        res.on('end', () => {
          if (!res.complete || error) return;
          result = {
            kind: 'response',
            infos,
            head: headOf(res),
            body: latin1(body),
            trailers: res.rawTrailers,
            keepAlive: req.shouldKeepAlive,
          };
        });
        res.on('close', () => setImmediate(settle));
      });
      req.on('close', () => {
        if (!responded) setImmediate(settle);
      });
      req.end();
    });
  }
}

const headOf = (res: http.IncomingMessage): Head => ({
  status: res.statusCode ?? 0,
  reason: res.statusMessage ?? '',
  headers: res.rawHeaders,
});

// ---------------------------------------------------------------------------------------------------------------
// Where the two may differ. Each quirk is added by the generator only when it actually writes the feature.

/** llhttp (strict, as Node's client runs it) refuses these; ours accepts them, as RFC 9112 lets a recipient. */
const LENIENT = [
  // Bare LF line endings: "a recipient MAY recognize a single LF as a line terminator" (RFC 9112 §2.2). Local dev
  // servers written by hand do this; ours reads the same lines llhttp would read with CRLF.
  'lf-only',
  // obs-fold in a response: "a user agent that receives an obs-fold ... MUST replace each received obs-fold with
  // one or more SP octets" (RFC 9112 §5.2). Ours joins the lines with one space.
  'obs-fold',
  // The same Content-Length twice, or as a list of one value: RFC 9110 §8.6 lets a recipient take it as that one
  // value. Different values are refused by both.
  'cl-repeated',
  // Whitespace in a chunk-size line: before ';' or around '=' is BWS in the chunk-ext grammar (RFC 9112 §7.1);
  // after a bare size it is not, but it cannot change where the chunk ends.
  'chunk-bws',
  // Chunk extensions ours does not check (it skips them to the end of the line; CR inside is still refused): they
  // carry no meaning for us and never move the chunk boundary.
  'chunk-ext-chars',
  // Content-Length among the trailers: llhttp refuses it; ours reports it as a trailer (never used for framing,
  // and the relay drops framing fields from trailers).
  'trailer-cl',
  // An interim (1xx) response that would not keep the connection (`Connection: close`, or HTTP/1.0 without
  // keep-alive): llhttp ends the exchange after it and refuses the final response; but an interim response does not
  // complete the request (RFC 9110 §15.2), so ours reads the final response, whose own fields decide reuse.
  'info-close',
] as const;

/** Ours refuses these; llhttp accepts them. A refusal is an error page, never a mis-framed body. */
const STRICTER = [
  // Status codes below 100 (RFC 9110 §15: three digits, 100-599 in use, first digit the class).
  'status-low',
  // Control characters in the reason phrase (RFC 9112 §4: HTAB / SP / VCHAR / obs-text only).
  'reason-ctl',
  // Content-Length over 15 digits or a chunk size over 12 hex digits (leading zeros): ours caps lengths at sizes
  // it can represent exactly, whatever zeros pad them.
  'long-number',
  // 101 without `Connection: upgrade` to a request that did not ask to upgrade: llhttp reads a bodiless final
  // response; ours refuses any 101 it did not ask for.
  'unasked-101',
  // An empty Transfer-Encoding followed by Content-Length: llhttp ignores the empty field and frames by length
  // (the other order it refuses); ours refuses a body framed two ways however the fields are spelled or ordered.
  'empty-te',
] as const;

/** Both accept, and decide differently; the comparison checks ours against the rule it follows. */
const DIFFERENT = [
  // 101 without `Connection: upgrade` to a request that asked to upgrade: llhttp reads an ordinary bodiless final
  // response (and then fails on the new protocol's bytes); ours switches, as the status says (RFC 9110 §15.2.2).
  '101-plain',
  // A HEAD response with neither Content-Length nor chunked: llhttp (at the time it decides) expects a body until
  // close and does not reuse the connection; the method makes it bodiless (RFC 9112 §6.3), so ours reuses it
  // under the usual rule (Connection, HTTP version).
  'head-eof',
  // 204/304 with a non-chunked Transfer-Encoding: llhttp reuses the connection (the status makes it bodiless);
  // ours does not (any non-chunked final coding ends the connection). Conservative, never mis-framed.
  'bodiless-te',
  // HTTP/1.0 with both `close` and `keep-alive` among the Connection options: llhttp looks only for keep-alive on
  // 1.0 and reuses the connection; "close" wins (RFC 9112 §9.3), so ours does not.
  'close-wins',
] as const;

type Quirk = (typeof LENIENT)[number] | (typeof STRICTER)[number] | (typeof DIFFERENT)[number];

// ---------------------------------------------------------------------------------------------------------------
// Generated responses.

const VCHAR = Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i));
const OBS_TEXT = ['\x80', '\xa0', '\xe9', '\xff'];
const TCHAR = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"];

function trimOWS(s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, '');
}

const valueChar = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...VCHAR) },
  { weight: 2, arbitrary: fc.constantFrom(' ', '\t') },
  { weight: 1, arbitrary: fc.constantFrom(...OBS_TEXT) },
);
/** A field value as both parsers report it: no whitespace at either end. */
const fieldValue = fc.string({ unit: valueChar, maxLength: 24 }).map(trimOWS);
const ows = fc.constantFrom('', '', '', ' ', '\t', '  ', ' \t ');
const FRAMING_NAMES = /^(content-length|transfer-encoding|connection)$/i;
const fieldName = fc
  .oneof(
    fc.constantFrom(
      'Content-Type',
      'content-type',
      'X-Custom',
      'x-custom',
      'X-CUSTOM',
      'Set-Cookie',
      'set-cookie',
      'Vary',
      'Cache-Control',
      'ETag',
      'Link',
      'Date',
      'Keep-Alive',
      'Trailer',
      'Upgrade',
    ),
    fc.string({ unit: fc.constantFrom(...TCHAR), minLength: 1, maxLength: 10 }),
  )
  .filter((n) => !FRAMING_NAMES.test(n));

interface FieldSpec {
  name: string;
  value: string;
  pre: string;
  post: string;
  /** An obs-fold continuation line (written only after a non-empty value). */
  fold: { ws: string; value: string } | null;
}
const field: fc.Arbitrary<FieldSpec> = fc.record({
  name: fieldName,
  value: fieldValue,
  pre: ows,
  post: ows,
  fold: fc.oneof(
    { weight: 30, arbitrary: fc.constant(null) },
    {
      weight: 1,
      arbitrary: fc.record({
        ws: fc.constantFrom(' ', '\t', '  \t'),
        value: fieldValue.filter((v) => v !== ''),
      }),
    },
  ),
});

const reasonSpec = fc.record({
  space: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  text: fc.oneof(
    { weight: 10, arbitrary: fc.constantFrom('OK', 'Not Found', 'Switching Protocols', 'Early Hints', '') },
    { weight: 10, arbitrary: fc.string({ unit: valueChar, maxLength: 16 }) },
    { weight: 1, arbitrary: fc.constantFrom('a\x01', '\x7f', 'x\x1fy') }, // control characters
  ),
});

const smallBody = fc.uint8Array({ maxLength: 80 });
const body = fc.oneof(
  { weight: 8, arbitrary: smallBody },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 2000, maxLength: 6000 }) },
);
/** Leading zeros on a length or chunk size: mostly none, sometimes a few, sometimes very many. */
const zeros = fc.oneof(
  { weight: 30, arbitrary: fc.constant(0) },
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 3 }) },
  { weight: 1, arbitrary: fc.integer({ min: 12, max: 18 }) },
);

interface ExtSpec {
  text: string;
  strict: string;
  quirk: Quirk | null;
}
const ext: fc.Arbitrary<ExtSpec> = fc.oneof(
  {
    weight: 30,
    arbitrary: fc
      .constantFrom('', '', '', ';a', ';a=b', ';name="quoted value"', ';a;b=c', ';x=1;y="\\"z\\""', ';=x')
      .map((text) => ({ text, strict: text, quirk: null })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(' ', '\t', ' ;a', '; a', ';a = b', ';a =b', ';a= b')
      .map((text) => ({ text, strict: text.replace(/[ \t]/g, ''), quirk: 'chunk-bws' as const })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(';a=b c', ';a=\x01', ';a=\x7f', ';a@b', ';a=\xe9', ';a="\x01"')
      .map((text) => ({ text, strict: '', quirk: 'chunk-ext-chars' as const })),
  },
);

const chunk = fc.record({
  data: fc.oneof(
    { weight: 8, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1000, maxLength: 5000 }) },
  ),
  upper: fc.boolean(),
  zeros,
  ext,
});

type FramingSpec =
  | { kind: 'length'; body: Uint8Array; repeat: 'none' | 'twice' | 'list'; zeros: number }
  | {
      kind: 'chunked';
      te: readonly string[];
      chunks: { data: Uint8Array; upper: boolean; zeros: number; ext: ExtSpec }[];
      lastZeros: number;
      lastExt: ExtSpec;
      trailers: FieldSpec[];
      trailerCl: boolean;
    }
  | { kind: 'close'; body: Uint8Array }
  | { kind: 'te-other'; te: readonly string[]; body: Uint8Array };

const framing = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('length' as const),
      body,
      repeat: fc.oneof(
        { weight: 20, arbitrary: fc.constant('none' as const) },
        { weight: 1, arbitrary: fc.constantFrom('twice' as const, 'list' as const) },
      ),
      zeros,
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('chunked' as const),
      te: fc.constantFrom(
        ['chunked'],
        ['Chunked'],
        ['CHUNKED'],
        ['gzip, chunked'],
        ['gzip,chunked'],
        ['gzip', 'chunked'],
      ),
      chunks: fc.array(chunk, { maxLength: 5 }),
      lastZeros: zeros,
      lastExt: ext,
      trailers: fc.oneof(
        { weight: 3, arbitrary: fc.constant([]) },
        { weight: 2, arbitrary: fc.array(field, { maxLength: 3 }) },
      ),
      trailerCl: fc.oneof(
        { weight: 12, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('close' as const), body }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('te-other' as const),
      te: fc.constantFrom(
        ['gzip'],
        ['chunked, gzip'],
        ['chunked', 'gzip'],
        ['identity'],
        ['chunked;q=1'],
        [''],
      ),
      body,
    }),
  },
) as unknown as fc.Arbitrary<FramingSpec>;

/** Invalid input both parsers must refuse (or, cut short, read the same way). Applied only to quirk-free cases. */
const MUTATIONS = [
  'truncate',
  'bad-status',
  'bad-name',
  'ctl-value',
  'cl-conflict',
  'cl-and-te',
  'cl-bad',
  'chunk-bad-size',
  'chunk-overrun',
  'continuation-first',
  'trailer-ctl',
] as const;
type Mutation = (typeof MUTATIONS)[number];

interface Spec {
  method: 'GET' | 'HEAD';
  /** The request asked to upgrade (GET only). */
  upgrade: boolean;
  version: '1.1' | '1.0';
  lf: boolean;
  infos: {
    status: number;
    reason: { space: boolean; text: string };
    fields: FieldSpec[];
    connection: string | null;
  }[];
  /** The final response is a 101 (asked for or not). */
  switching: boolean;
  switchConnection: string | null;
  rest: Uint8Array;
  status: number;
  reason: { space: boolean; text: string };
  fields: FieldSpec[];
  connection: string[];
  framing: FramingSpec;
  /** Where among the fields the framing fields go (0..1). */
  framingAt: number;
  mutation: Mutation | null;
  /** Which variant of the mutation, or where to cut (0..1). */
  mutationAt: number;
  /** Read boundaries (0..1 of the length), or one byte per read. */
  cuts: number[] | 'bytes';
}

const fraction = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

const spec = fc
  .record({
    method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD'),
    upgrade: fc.oneof(
      { weight: 3, arbitrary: fc.constant(false) },
      { weight: 1, arbitrary: fc.constant(true) },
    ),
    version: fc.constantFrom('1.1', '1.1', '1.1', '1.0'),
    lf: fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    infos: fc.oneof(
      { weight: 4, arbitrary: fc.constant([]) },
      {
        weight: 1,
        arbitrary: fc.array(
          fc.record({
            status: fc.constantFrom(100, 102, 103, 150, 199),
            reason: reasonSpec,
            fields: fc.array(field, { maxLength: 2 }),
            connection: fc.constantFrom(null, null, null, 'keep-alive', 'close'),
          }),
          { minLength: 1, maxLength: 2 },
        ),
      },
    ),
    switching: fc.oneof(
      { weight: 5, arbitrary: fc.constant(false) },
      { weight: 1, arbitrary: fc.constant(true) },
    ),
    switchConnection: fc.constantFrom('Upgrade', 'upgrade', 'keep-alive, Upgrade', null),
    rest: fc.uint8Array({ maxLength: 40 }),
    status: fc.oneof(
      {
        weight: 40,
        arbitrary: fc.constantFrom(200, 200, 201, 204, 206, 299, 301, 304, 400, 404, 500, 503, 600, 999),
      },
      { weight: 1, arbitrary: fc.constantFrom(0, 42, 99) }, // below 100
    ),
    reason: reasonSpec,
    fields: fc.array(field, { maxLength: 5 }),
    // Connection field lines of the final response.
    connection: fc.constantFrom(
      [],
      [],
      [],
      ['close'],
      ['Close'],
      ['keep-alive'],
      ['Keep-Alive'],
      ['foo, close'],
      ['closed'],
      ['TE'],
      ['upgrade'],
      ['keep-alive, Upgrade'],
      ['keep-alive', 'close'],
      ['close', 'keep-alive'],
      ['close,'],
      [''],
    ),
    framing,
    framingAt: fraction,
    mutation: fc.oneof(
      { weight: 7, arbitrary: fc.constant(null) },
      { weight: 3, arbitrary: fc.constantFrom(...MUTATIONS) },
    ),
    mutationAt: fraction,
    cuts: fc.oneof(
      { weight: 12, arbitrary: fc.array(fraction, { maxLength: 8 }) },
      { weight: 1, arbitrary: fc.constant('bytes' as const) },
    ),
  })
  .map((s) => ({ ...s, upgrade: s.upgrade && s.method === 'GET' })) as unknown as fc.Arbitrary<Spec>;

const pick = <T>(items: readonly T[], at: number): T => items[Math.floor(at * items.length)]!;
const tokens = (value: string | null | string[]): string[] =>
  (Array.isArray(value) ? value.join(',') : (value ?? ''))
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());

/** Whether the final response keeps the connection under the usual rule (Connection, then the HTTP version). */
function persistent(s: Spec): boolean {
  const t = tokens(s.connection);
  if (t.includes('close')) return false;
  return s.version === '1.1' || t.includes('keep-alive');
}

interface Rendered {
  bytes: Buffer;
  quirks: Set<Quirk>;
}

/**
 * Writes the response `s` describes. `strict`: the equivalent llhttp accepts (each lenient feature in its strict
 * form); `mutate`: apply the mutation.
 */
function render(s: Spec, { strict, mutate }: { strict: boolean; mutate: boolean }): Rendered {
  const quirks = new Set<Quirk>();
  const lenient = (q: Quirk): boolean => {
    if (strict) return false;
    quirks.add(q);
    return true;
  };
  const m = mutate ? s.mutation : null;
  const eol = s.lf && lenient('lf-only') ? '\n' : '\r\n';
  const out: Buffer[] = [];
  const text = (t: string): void => void out.push(Buffer.from(t, 'latin1'));

  const statusLine = (status: number, reason: { space: boolean; text: string }): string => {
    if (status < 100) quirks.add('status-low');
    if (reason.space && [...reason.text].some((c) => (c < ' ' && c !== '\t') || c === '\x7f'))
      quirks.add('reason-ctl');
    return `HTTP/${s.version} ${String(status).padStart(3, '0')}${reason.space ? ` ${reason.text}` : ''}`;
  };
  const fieldLine = (f: FieldSpec): string => {
    if (f.fold && f.value !== '') {
      if (lenient('obs-fold'))
        return `${f.name}:${f.pre}${f.value}${eol}${f.fold.ws}${f.fold.value}${f.post}`;
      return `${f.name}:${f.pre}${f.value} ${f.fold.value}${f.post}`;
    }
    return `${f.name}:${f.pre}${f.value}${f.post}`;
  };

  for (const info of s.infos) {
    const lines = [statusLine(info.status, info.reason), ...info.fields.map(fieldLine)];
    if (info.connection === 'close' || (info.connection === null && s.version === '1.0')) {
      // Strict equivalent: an interim response that keeps the connection.
      if (!lenient('info-close')) lines.push('Connection: keep-alive');
      else if (info.connection) lines.push(`Connection: ${info.connection}`);
    } else if (info.connection) lines.push(`Connection: ${info.connection}`);
    text(lines.join(eol) + eol + eol);
  }

  // The final head.
  const status = s.switching ? 101 : s.status;
  const bodiless = !s.switching && (s.method === 'HEAD' || status === 204 || status === 304);
  const f = s.framing;
  const lines: string[] = [statusLine(status, s.reason)];
  if (m === 'continuation-first') lines.push(' folded-without-a-field');
  const fields = s.fields.map(fieldLine);
  const framingFields: string[] = [];
  if (s.switching) {
    framingFields.push('Upgrade: test');
    if (s.switchConnection) framingFields.push(`Connection: ${s.switchConnection}`);
    if (!tokens(s.switchConnection).includes('upgrade')) quirks.add(s.upgrade ? '101-plain' : 'unasked-101');
  } else {
    for (const c of s.connection) framingFields.push(`Connection: ${c}`);
    const options = tokens(s.connection);
    if (s.version === '1.0' && options.includes('close') && options.includes('keep-alive'))
      quirks.add('close-wins');
    if (f.kind === 'length') {
      const digits = String(f.body.length);
      if (f.zeros + digits.length > 15) quirks.add('long-number');
      const cl = '0'.repeat(f.zeros) + digits;
      if (m === 'cl-conflict')
        framingFields.push(`Content-Length: ${cl}`, `Content-Length: ${f.body.length + 1}`);
      else if (m === 'cl-bad')
        framingFields.push(
          `Content-Length: ${pick(['1x', '-1', '+1', '1.0', '', '0x10', '1 2', '1,2'], s.mutationAt)}`,
        );
      else if (f.repeat === 'twice' && lenient('cl-repeated'))
        framingFields.push(`Content-Length: ${cl}`, `Content-Length:${cl}`);
      else if (f.repeat === 'list' && lenient('cl-repeated'))
        framingFields.push(`Content-Length: ${cl}, ${cl}`);
      else framingFields.push(`Content-Length: ${cl}`);
      if (m === 'cl-and-te') framingFields.push('Transfer-Encoding: chunked');
    } else if (f.kind === 'chunked' || f.kind === 'te-other') {
      for (const te of f.te) framingFields.push(`Transfer-Encoding: ${te}`);
      if (m === 'cl-and-te')
        framingFields.push(`Content-Length: ${f.kind === 'te-other' ? f.body.length : 0}`);
      if (m === 'cl-and-te' && f.te.some((te) => te.trim() === '')) quirks.add('empty-te');
      if (m === 'cl-conflict') framingFields.push('Content-Length: 1', 'Content-Length: 2');
      if (f.kind === 'te-other' && (status === 204 || status === 304) && persistent(s))
        quirks.add('bodiless-te');
    } else {
      if (m === 'cl-conflict') framingFields.push('Content-Length: 1', 'Content-Length: 2');
      if (s.method === 'HEAD' && status !== 204 && status !== 304 && persistent(s)) quirks.add('head-eof');
    }
  }
  if (m === 'bad-name')
    fields.push(
      pick(
        ['Bad Name: x', 'X(y: z', ': empty', 'NoColon', 'X\x01: y', '\xc4: y', 'X : y', 'X\t: y'],
        s.mutationAt,
      ),
    );
  if (m === 'ctl-value')
    fields.push(`X-Ctl: a${pick(['\x00', '\x01', '\x7f', '\x1b', '\r', '\x0b'], s.mutationAt)}b`);
  const at = Math.floor(s.framingAt * (fields.length + 1));
  lines.push(...fields.slice(0, at), ...framingFields, ...fields.slice(at));
  if (m === 'bad-status')
    lines[0] = pick(
      [
        'HTTP/1.1 20 OK',
        'HTTP/1.1 2000 OK',
        'HTTP/1.2 200 OK',
        'HTTX/1.1 200 OK',
        'HTTP/1.1  200 OK',
        'http/1.1 200 OK',
        'HTTP/11 200 OK',
        'HTTP/1.1 2x0 OK',
        ' HTTP/1.1 200 OK',
        'HTTP/1.1\t200 OK',
        'HTTP/1.1 200 OK\rX-After-CR: y',
      ],
      s.mutationAt,
    );
  text(lines.join(eol) + eol + eol);

  // The body.
  if (s.switching) out.push(Buffer.from(s.rest));
  else if (!bodiless) {
    if (f.kind === 'length' || f.kind === 'close' || f.kind === 'te-other') out.push(Buffer.from(f.body));
    else {
      f.chunks.forEach((c, i) => {
        const hex = c.data.length.toString(16);
        if (c.zeros + hex.length > 12) quirks.add('long-number');
        let size = '0'.repeat(c.zeros) + (c.upper ? hex.toUpperCase() : hex);
        if (i === 0 && m === 'chunk-bad-size')
          size = pick(['zz', '-1', '0x1', '', ' 1', '1_0', 'g'], s.mutationAt);
        if (i === 0 && m === 'chunk-overrun' && c.data.length > 1) size = (c.data.length - 1).toString(16);
        const extension = c.ext.quirk && lenient(c.ext.quirk) ? c.ext.text : c.ext.strict;
        text(size + extension + eol);
        out.push(Buffer.from(c.data));
        text(eol);
      });
      if (f.lastZeros + 1 > 12) quirks.add('long-number');
      const lastExt = f.lastExt.quirk && lenient(f.lastExt.quirk) ? f.lastExt.text : f.lastExt.strict;
      const trailers = f.trailers.map(fieldLine);
      if (f.trailerCl && lenient('trailer-cl')) trailers.push('Content-Length: 5');
      if (m === 'trailer-ctl') trailers.push('X-Trailer: a\x01b');
      text(`${'0'.repeat(f.lastZeros)}0${lastExt}${eol}${trailers.map((t) => t + eol).join('')}${eol}`);
    }
  }

  let bytes = Buffer.concat(out);
  if (m === 'truncate') bytes = bytes.subarray(0, Math.floor(s.mutationAt * bytes.length));
  return { bytes, quirks };
}

/** The bytes as separate reads. */
function cut(bytes: Buffer, cuts: Spec['cuts']): Buffer[] {
  if (cuts === 'bytes' && bytes.length <= 3000) return [...bytes].map((b) => Buffer.from([b]));
  const at = [...new Set((cuts === 'bytes' ? [] : cuts).map((c) => Math.floor(c * bytes.length)))]
    .filter((p) => p > 0)
    .sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const p of at) {
    pieces.push(bytes.subarray(from, p));
    from = p;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

// ---------------------------------------------------------------------------------------------------------------
// The comparison.

const without = (headers: string[], name: string): string[] => {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i]!.toLowerCase() !== name) out.push(headers[i]!, headers[i + 1]!);
  return out;
};

/** Ours must equal the reference (llhttp on the same bytes, or on their strict equivalent), quirks allowed for. */
function expectSame(ours: Outcome, reference: Outcome, quirks: Set<Quirk>, s: Spec, label: string): void {
  if (ours.kind === 'rejected' || reference.kind === 'rejected') {
    const why = (o: Outcome): string =>
      o.kind === 'rejected' ? `refused (${o.why})` : `accepted as ${o.kind}`;
    expect(ours.kind, `${label}: ours ${why(ours)}, llhttp ${why(reference)}`).toBe(reference.kind);
    return;
  }
  let theirs: Outcome = reference;
  if (quirks.has('101-plain')) {
    // llhttp: a bodiless final 101 (then an error on the new protocol's bytes, which comes too late to matter).
    expect(reference, label).toMatchObject({ kind: 'response', head: { status: 101 }, body: '' });
    theirs = {
      kind: 'upgrade',
      infos: reference.infos,
      head: reference.head,
      rest: Buffer.from(s.rest).toString('latin1'),
    };
  }
  if (theirs.kind === 'response' && ours.kind === 'response') {
    if (quirks.has('head-eof')) {
      expect(theirs.keepAlive, `${label}: llhttp does not reuse after a HEAD without length`).toBe(false);
      theirs = { ...theirs, keepAlive: persistent(s) };
    }
    if (quirks.has('bodiless-te') || quirks.has('close-wins')) theirs = { ...theirs, keepAlive: false };
  }
  const normal = (o: Outcome): Outcome => {
    if (o.kind === 'rejected') return o;
    const infos = quirks.has('info-close')
      ? o.infos.map((h) => ({ ...h, headers: without(h.headers, 'connection') }))
      : o.infos;
    const head = quirks.has('cl-repeated')
      ? { ...o.head, headers: without(o.head.headers, 'content-length') }
      : o.head;
    if (o.kind === 'upgrade') return { ...o, infos, head };
    const trailers = quirks.has('trailer-cl') ? without(o.trailers, 'content-length') : o.trailers;
    return { ...o, infos, head, trailers };
  };
  expect(normal(ours), label).toEqual(normal(theirs));
}

/** The bytes for a failure message: JSON-quoted latin1, long bodies elided. */
function show(bytes: Buffer): string {
  const text = JSON.stringify(bytes.toString('latin1'));
  return text.length > 1200 ? `${text.slice(0, 1000)}…(${bytes.length} bytes)…${text.slice(-150)}` : text;
}

const llhttp = new Llhttp();
beforeAll(() => llhttp.start());
afterAll(() => llhttp.close());

test('our response parser reads generated responses as llhttp does', async () => {
  const seen = {
    ours: new Map<string, number>(),
    quirks: new Map<string, number>(),
    mutations: new Map<string, number>(),
  };
  let quirkFree = 0;
  const count = (map: Map<string, number>, key: string): void => void map.set(key, (map.get(key) ?? 0) + 1);

  await fc.assert(
    fc.asyncProperty(spec, async (s) => {
      const plain = render(s, { strict: false, mutate: false });
      // Mutations only where nothing else differs: then any difference in the verdict is a disagreement.
      const mutated = s.mutation !== null && plain.quirks.size === 0;
      const { bytes, quirks } = mutated ? render(s, { strict: false, mutate: true }) : plain;
      const pieces = cut(bytes, s.cuts);
      const label = `${s.method}${s.upgrade ? ' (upgrade)' : ''} ${show(bytes)} in ${pieces.length} reads; quirks ${[...quirks].join(', ') || 'none'}`;
      const ours = parseOurs(pieces, s.method, s.upgrade);
      const node = await llhttp.parse(pieces, s.method, s.upgrade);
      count(seen.ours, ours.kind);
      for (const q of quirks) count(seen.quirks, q);
      if (quirks.size === 0) quirkFree++;
      if (mutated) count(seen.mutations, s.mutation!);

      const stricter = STRICTER.filter((q) => quirks.has(q));
      const lenient = LENIENT.filter((q) => quirks.has(q));
      if (stricter.length > 0) {
        expect(ours.kind, label).toBe('rejected');
        // (Unless something else makes llhttp refuse it too: a lenient quirk, or a 101 nobody asked for.)
        if (lenient.length === 0 && !(s.switching && !s.upgrade))
          expect(node.kind, `${label}: llhttp accepts it`).not.toBe('rejected');
        return;
      }
      if (lenient.length > 0) {
        expect(node.kind, `${label}: llhttp refuses it`).toBe('rejected');
        // Ours on these bytes reads what llhttp reads on their strict equivalent.
        const strict = render(s, { strict: true, mutate: false });
        expect(LENIENT.filter((q) => strict.quirks.has(q))).toEqual([]);
        const reference = await llhttp.parse(cut(strict.bytes, s.cuts), s.method, s.upgrade);
        expectSame(ours, reference, quirks, s, `${label}; strict ${show(strict.bytes)}`);
        return;
      }
      expectSame(ours, node, quirks, s, label);
    }),
    { numRuns: RUNS },
  );

  // The run covered what it claims to: accepted responses, switches, refusals, quirks and mutations.
  expect(seen.ours.get('response') ?? 0).toBeGreaterThan(RUNS / 3);
  expect(seen.ours.get('upgrade') ?? 0).toBeGreaterThan(0);
  expect(seen.ours.get('rejected') ?? 0).toBeGreaterThan(RUNS / 20);
  expect(quirkFree).toBeGreaterThan(RUNS / 3); // most cases compare the two verdicts directly
  expect(seen.quirks.size).toBeGreaterThan(3);
  expect(DIFFERENT.some((q) => seen.quirks.has(q))).toBe(true);
  expect(seen.mutations.size).toBeGreaterThan(3);
});

test('head size: ours allows 64 KiB, as Node does when told to; Node by default stops at 16 KiB', async () => {
  const response = (headBytes: number): Buffer[] => {
    const start = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: ';
    return [Buffer.from(`${start}${'v'.repeat(headBytes - start.length - 2)}\r\n\r\nok`, 'latin1')];
  };
  // Well inside 64 KiB but over Node's default: a difference of configuration, not of reading. The local service
  // is the user's own, and dev servers send big cookies and CSP headers.
  expect(parseOurs(response(20_000), 'GET', false)).toMatchObject({ kind: 'response', body: 'ok' });
  expect(await llhttp.parse(response(20_000), 'GET', false)).toMatchObject({
    kind: 'rejected',
    why: expect.stringContaining('HPE_HEADER_OVERFLOW'),
  });
  // With the same limit both read a head just under it, and both refuse one just over it.
  const under = response(MAX_RESPONSE_HEAD_BYTES - 100);
  const over = response(MAX_RESPONSE_HEAD_BYTES + 100);
  expect(parseOurs(under, 'GET', false)).toEqual(
    await llhttp.parse(under, 'GET', false, MAX_RESPONSE_HEAD_BYTES),
  );
  expect(parseOurs(over, 'GET', false).kind).toBe('rejected');
  expect((await llhttp.parse(over, 'GET', false, MAX_RESPONSE_HEAD_BYTES)).kind).toBe('rejected');
});
