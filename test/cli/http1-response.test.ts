// The local side's HTTP/1.1 response parser on hand-built byte strings: framing, 1xx, upgrades, limits, errors,
// and the same events however the bytes are split into reads.
import { describe, expect, test } from 'vitest';
import {
  MAX_RESPONSE_HEAD_BYTES,
  MAX_RESPONSE_HEADERS,
  ResponseParseError,
  ResponseParser,
} from '../../cli/http1-response.js';

type Event =
  | { type: 'head'; status: number; reason: string; headers: string[]; info: boolean }
  | { type: 'body'; data: string }
  | { type: 'done'; trailers: string[]; keepAlive: boolean }
  | { type: 'upgrade'; rest: string };

/** A parser whose events are recorded (bodies copied at once: they are views of the read). */
function recorder() {
  const events: Event[] = [];
  const parser: ResponseParser = new ResponseParser({
    onHead: (status, reason, headers, info) =>
      events.push({ type: 'head', status, reason, headers: [...headers], info }),
    onBody: (chunk) => events.push({ type: 'body', data: chunk.toString('latin1') }),
    // keepAlive as it stands when the response completes: that is when the connection is released.
    onDone: (trailers) => events.push({ type: 'done', trailers: [...trailers], keepAlive: parser.keepAlive }),
    // One call for the switch; recorded as the head it carries, then the handover.
    onUpgrade: (status, reason, headers, rest) =>
      events.push(
        { type: 'head', status, reason, headers: [...headers], info: false },
        { type: 'upgrade', rest: rest.toString('latin1') },
      ),
  });
  return { parser, events };
}

/** Consecutive body events merged: how a body is cut into pieces depends on the reads. */
function merged(events: Event[]): Event[] {
  const out: Event[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.type === 'body' && last?.type === 'body') last.data += e.data;
    else out.push(e.type === 'body' ? { ...e } : e);
  }
  return out;
}

interface Run {
  parser: ResponseParser;
  events: Event[];
}

/** Feeds `pieces` (latin1 strings) as separate reads of a response to `method`. */
function feed(pieces: string[], method = 'GET', upgrade = false): Run {
  const r = recorder();
  r.parser.expect(method, upgrade);
  for (const p of pieces) r.parser.execute(Buffer.from(p, 'latin1'));
  return r;
}

/** The response runs until the connection closes: the connection is not reusable, and after finish() the body is
 * `body`, then done. */
function expectUntilClose({ parser, events }: Run, body: string): void {
  expect(parser.untilClose).toBe(true);
  expect(parser.keepAlive).toBe(false);
  parser.finish();
  expect(merged(events).slice(1)).toEqual([
    { type: 'body', data: body },
    { type: 'done', trailers: [], keepAlive: false },
  ]);
}

/** Every way of cutting `text` into two reads, and one byte per read. */
function splits(text: string): string[][] {
  const out: string[][] = [];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  out.push([...text]);
  return out;
}

/** Checks that every split of `text` gives the same merged events (and final state) as one read. */
function expectSplitInvariant(text: string, method = 'GET', expectedEnd?: { done: boolean }): Event[] {
  const whole = feed([text], method);
  const reference = merged(whole.events);
  for (const pieces of splits(text)) {
    const r = feed(pieces, method);
    expect(merged(r.events), `split ${JSON.stringify(pieces.slice(0, 2))}`).toEqual(reference);
    expect(r.parser.done).toBe(whole.parser.done);
    expect(r.parser.keepAlive).toBe(whole.parser.keepAlive);
  }
  if (expectedEnd) expect(whole.parser.done).toBe(expectedEnd.done);
  return reference;
}

/** Asserts that parsing `text` (one read, then finish()) throws a ResponseParseError matching `message`. */
function expectParseError(text: string, message?: RegExp, method = 'GET', upgrade = false): void {
  const r = recorder();
  r.parser.expect(method, upgrade);
  let caught: unknown;
  try {
    r.parser.execute(Buffer.from(text, 'latin1'));
    r.parser.finish();
  } catch (err) {
    caught = err;
  }
  expect(caught, JSON.stringify(text.slice(0, 120))).toBeInstanceOf(ResponseParseError);
  expect((caught as ResponseParseError).code).toBe('HPE_INVALID_RESPONSE');
  if (message) expect((caught as Error).message).toMatch(message);
}

const SIMPLE =
  'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-MiXeD: 1\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n' +
  'Content-Length: 11\r\n\r\nhello world';

describe('Content-Length bodies', () => {
  test('a simple response: head with raw headers, body, done, keep-alive', () => {
    const { parser, events } = feed([SIMPLE]);
    expect(events).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: [
          'Content-Type',
          'text/plain',
          'X-MiXeD',
          '1',
          'set-cookie',
          'a=1',
          'Set-Cookie',
          'b=2',
          'Content-Length',
          '11',
        ],
        info: false,
      },
      { type: 'body', data: 'hello world' },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
    expect(parser.done).toBe(true);
    expect(parser.keepAlive).toBe(true);
    expect(parser.started).toBe(true);
  });

  test('the same bytes split at every byte boundary, or one byte per read, give the same events', () => {
    const reference = expectSplitInvariant(SIMPLE, 'GET', { done: true });
    expect(reference.map((e) => e.type)).toEqual(['head', 'body', 'done']);
  });

  test('nothing is done before the last body byte', () => {
    const { parser, events } = feed([SIMPLE.slice(0, -1)]);
    expect(parser.done).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['head', 'body']);
    parser.execute(Buffer.from('d'));
    expect(parser.done).toBe(true);
    expect(merged(events)[1]).toEqual({ type: 'body', data: 'hello world' });
  });

  test('Content-Length: 0 completes at the end of the head; a missing reason phrase is allowed', () => {
    const { parser, events } = feed(['HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n']);
    expect(events).toEqual([
      { type: 'head', status: 201, reason: '', headers: ['Content-Length', '0'], info: false },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
    expect(parser.done).toBe(true);
  });

  test('a reason phrase keeps its spaces and obs-text bytes', () => {
    const { events } = feed(['HTTP/1.1 299 Very  Custom \xe9t\xe9\r\nContent-Length: 0\r\n\r\n']);
    expect(events[0]).toMatchObject({ status: 299, reason: 'Very  Custom \xe9t\xe9' });
  });
});

describe('chunked bodies', () => {
  const CHUNKED =
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n' +
    '5;name=value\r\nhello\r\n' +
    '1 ; ext="q;uoted"\r\n \r\n' +
    'A\r\n0123456789\r\n' +
    '0;last\r\nX-Sum: 42\r\nx-other: a b\r\n\r\n';

  test('extensions are skipped, data is joined, trailers are reported raw', () => {
    const { parser, events } = feed([CHUNKED]);
    expect(merged(events)).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: ['Transfer-Encoding', 'chunked', 'Trailer', 'X-Sum'],
        info: false,
      },
      { type: 'body', data: 'hello 0123456789' },
      { type: 'done', trailers: ['X-Sum', '42', 'x-other', 'a b'], keepAlive: true },
    ]);
    expect(parser.done).toBe(true);
  });

  test('split at every boundary, at every pair of boundaries, and one byte per read: same events', () => {
    const reference = expectSplitInvariant(CHUNKED, 'GET', { done: true });
    for (let i = 1; i < CHUNKED.length; i++) {
      for (let j = i + 1; j < CHUNKED.length; j++) {
        const r = feed([CHUNKED.slice(0, i), CHUNKED.slice(i, j), CHUNKED.slice(j)]);
        if (JSON.stringify(merged(r.events)) !== JSON.stringify(reference))
          expect(merged(r.events), `splits at ${i}, ${j}`).toEqual(reference);
        expect(r.parser.done).toBe(true);
      }
    }
  });

  test('no trailers, upper-case hex sizes and LF-only chunk lines', () => {
    const { events } = feed([
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1F\r\n' + 'x'.repeat(31) + '\n2\nab\n0\n\n',
    ]);
    expect(merged(events).slice(1)).toEqual([
      { type: 'body', data: 'x'.repeat(31) + 'ab' },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });

  test('a final coding other than chunked runs until close and ends keep-alive', () => {
    expectUntilClose(feed(['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b']), '\x1f\x8b');
  });

  test('"gzip, chunked" is chunked', () => {
    const { parser } = feed([
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n',
    ]);
    expect(parser.done).toBe(true);
    expect(parser.keepAlive).toBe(true);
  });

  test('invalid chunk sizes and missing CRLF after chunk data throw', () => {
    const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
    expectParseError(`${head}zz\r\n`, /chunk size/);
    expectParseError(`${head}-1\r\n`, /chunk size/);
    expectParseError(`${head}\r\n`, /chunk size/);
    expectParseError(`${head}2\r\nabX\r\n`, /CRLF after chunk data/);
    expectParseError(`${head}2\r\nab\rX`, /CRLF after chunk data/);
    expectParseError(`${head}${'1'.repeat(5000)}`, /chunk-size line/);
  });
});

describe('bodiless responses', () => {
  test('a HEAD response with Content-Length has no body and is done at the end of its head', () => {
    const text = 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n';
    const { parser, events } = feed([text], 'HEAD');
    expect(events).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: ['Content-Length', '1234', 'Content-Type', 'text/html'],
        info: false,
      },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
    expect(parser.done).toBe(true);
    expectSplitInvariant(text, 'HEAD', { done: true });
  });

  test('a HEAD response with Transfer-Encoding: chunked has no body either', () => {
    const { parser, events } = feed(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'], 'HEAD');
    expect(parser.done).toBe(true);
    expect(events.map((e) => e.type)).toEqual(['head', 'done']);
  });

  test('204 and 304 have no body, whatever their headers say', () => {
    for (const text of [
      'HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n',
      'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 100\r\n\r\n',
    ]) {
      const { parser, events } = feed([text]);
      expect(events.map((e) => e.type)).toEqual(['head', 'done']);
      expect(parser.done).toBe(true);
      expect(parser.keepAlive).toBe(true);
      expect(parser.untilClose).toBe(false);
    }
  });
});

describe('1xx responses and upgrades', () => {
  test('100 Continue and 103 Early Hints come before the final head, marked info', () => {
    const text =
      'HTTP/1.1 100 Continue\r\n\r\n' +
      'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nLink: </b.js>; rel=preload\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const reference = expectSplitInvariant(text, 'POST', { done: true });
    expect(reference).toEqual([
      { type: 'head', status: 100, reason: 'Continue', headers: [], info: true },
      {
        type: 'head',
        status: 103,
        reason: 'Early Hints',
        headers: ['Link', '</a.css>; rel=preload', 'Link', '</b.js>; rel=preload'],
        info: true,
      },
      { type: 'head', status: 200, reason: 'OK', headers: ['Content-Length', '2'], info: false },
      { type: 'body', data: 'ok' },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });

  test('after a 1xx alone, the response is not done', () => {
    const { parser } = feed(['HTTP/1.1 100 Continue\r\n\r\n'], 'POST');
    expect(parser.done).toBe(false);
    expect(() => parser.finish()).toThrow(ResponseParseError);
  });

  test('an expected 101 hands over the bytes that followed it in the same read', () => {
    const frame = '\x81\x05hello\x00\r\n\r\nHTTP/1.1 200';
    const { parser, events } = feed(
      [`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n${frame}`],
      'GET',
      true,
    );
    expect(events).toEqual([
      {
        type: 'head',
        status: 101,
        reason: 'Switching Protocols',
        headers: ['Upgrade', 'websocket', 'Connection', 'Upgrade'],
        info: false,
      },
      { type: 'upgrade', rest: frame },
    ]);
    expect(parser.done).toBe(true);
    // The connection is no longer HTTP: further bytes are not parsed.
    parser.execute(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'));
    expect(events).toHaveLength(2);
  });

  test('an expected 101 whose head ends a later read hands over only what follows the head', () => {
    const head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n';
    for (let i = 1; i < head.length; i++) {
      const { events } = feed([head.slice(0, i), `${head.slice(i)}DATA`], 'GET', true);
      expect(events[events.length - 1]).toEqual({ type: 'upgrade', rest: 'DATA' });
    }
    const { events } = feed([head], 'GET', true);
    expect(events[1]).toEqual({ type: 'upgrade', rest: '' });
  });

  test('a 1xx before an expected 101 is info; a refused upgrade is a normal response', () => {
    const ok = feed(
      ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\nxyz'],
      'GET',
      true,
    );
    expect(ok.events.map((e) => (e.type === 'head' ? `${e.status}/${e.info}` : e.type))).toEqual([
      '100/true',
      '101/false',
      'upgrade',
    ]);
    const refused = feed(['HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno'], 'GET', true);
    expect(merged(refused.events).map((e) => e.type)).toEqual(['head', 'body', 'done']);
    expect(refused.parser.done).toBe(true);
  });

  test('a 101 without an upgrade request throws', () => {
    expectParseError('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n', /101/);
  });
});

describe('until-close bodies', () => {
  test('a body without length runs until finish()', () => {
    const { parser, events } = feed(['HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ', 'second']);
    expect(parser.untilClose).toBe(true);
    expect(parser.done).toBe(false);
    expect(parser.keepAlive).toBe(false);
    parser.execute(Buffer.from(' third'));
    parser.finish();
    expect(parser.done).toBe(true);
    expect(merged(events).slice(1)).toEqual([
      { type: 'body', data: 'first second third' },
      { type: 'done', trailers: [], keepAlive: false },
    ]);
  });

  test('an until-close body whose head arrives alone is empty but complete at finish()', () => {
    const { parser, events } = feed(['HTTP/1.1 200 OK\r\n\r\n']);
    parser.finish();
    expect(events.map((e) => e.type)).toEqual(['head', 'done']);
  });

  test('finish() mid-body, mid-chunk or mid-head throws', () => {
    for (const text of [
      'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n',
      'HTTP/1.1 200 OK\r\nContent-Len',
      '',
    ]) {
      expectParseError(text, /closed the connection mid-response/);
    }
  });

  test('finish() after a complete response is harmless', () => {
    const { parser, events } = feed([SIMPLE]);
    parser.finish();
    expect(events.filter((e) => e.type === 'done')).toHaveLength(1);
  });
});

describe('keep-alive', () => {
  const cases: [string, boolean][] = [
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx', true],
    ['HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx', true],
    ['HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx', false],
    ['HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\nContent-Length: 1\r\n\r\nx', false],
    ['HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx', false],
    ['HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx', false],
    ['HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx', true],
    ['HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\nx', false],
  ];
  test.each(cases)('%j -> keepAlive %s', (text, keepAlive) => {
    const { parser, events } = feed([text]);
    expect(parser.done).toBe(true);
    expect(parser.keepAlive).toBe(keepAlive);
    expect(events[events.length - 1]).toEqual({ type: 'done', trailers: [], keepAlive });
  });

  test('an HTTP/1.0 response without length is read until close, even with keep-alive', () => {
    expectUntilClose(feed(['HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nold', ' school']), 'old school');
  });

  test('bytes after a complete response (same read or later) end keep-alive', () => {
    // In the same read: keepAlive must already be false when onDone fires, since that is when the
    // connection is handed back to the pool.
    for (const extra of ['x', 'HTTP/1.1 200 OK\r\n\r\n']) {
      const same = feed([SIMPLE + extra]);
      expect(same.events[same.events.length - 1]).toEqual({ type: 'done', trailers: [], keepAlive: false });
      expect(same.parser.keepAlive).toBe(false);
    }
    const head = feed(['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'], 'HEAD');
    expect(head.events.map((e) => e.type)).toEqual(['head', 'done']);
    expect(head.parser.keepAlive).toBe(false);
    const chunked = feed(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\r\n']);
    expect(chunked.parser.keepAlive).toBe(false);

    const later = feed([SIMPLE]);
    expect(later.parser.keepAlive).toBe(true);
    later.parser.execute(Buffer.from('\r\n'));
    expect(later.parser.keepAlive).toBe(false);
    expect(later.events.filter((e) => e.type === 'done')).toHaveLength(1);
  });

  test('bytes with no request outstanding are not parsed and end keep-alive', () => {
    const r = recorder();
    r.parser.execute(Buffer.from(SIMPLE));
    expect(r.events).toEqual([]);
    expect(r.parser.keepAlive).toBe(false);
  });

  test('expect() resets the parser for the next response on the same connection', () => {
    const r = recorder();
    r.parser.expect('GET', false);
    expect(r.parser.started).toBe(false);
    r.parser.execute(
      Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\nX-T: 1\r\n\r\n'),
    );
    expect(r.parser.done).toBe(true);
    expect(r.parser.keepAlive).toBe(true);

    r.parser.expect('HEAD', false);
    expect(r.parser.done).toBe(false);
    expect(r.parser.started).toBe(false);
    expect(r.parser.keepAlive).toBe(false);
    r.parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-'));
    expect(r.parser.started).toBe(true);
    r.parser.execute(Buffer.from('Length: 99\r\n\r\n'));
    expect(r.parser.done).toBe(true);

    r.parser.expect('GET', false);
    r.parser.execute(Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\ntwo'));
    expect(r.parser.done).toBe(true);
    expect(merged(r.events)).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: ['Transfer-Encoding', 'chunked'],
        info: false,
      },
      { type: 'body', data: 'one' },
      { type: 'done', trailers: ['X-T', '1'], keepAlive: true },
      { type: 'head', status: 200, reason: 'OK', headers: ['Content-Length', '99'], info: false },
      { type: 'done', trailers: [], keepAlive: true },
      { type: 'head', status: 404, reason: 'Not Found', headers: ['Content-Length', '3'], info: false },
      { type: 'body', data: 'two' },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });

  test('expect() drops a half-read head left from an abandoned response', () => {
    const r = recorder();
    r.parser.expect('GET', false);
    r.parser.execute(Buffer.from('HTTP/1.1 500 Broken\r\nX-Half'));
    r.parser.expect('GET', false);
    r.parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    expect(r.events).toEqual([
      { type: 'head', status: 200, reason: 'OK', headers: ['Content-Length', '0'], info: false },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });
});

describe('framing conflicts', () => {
  test('both Transfer-Encoding and Content-Length throw', () => {
    expectParseError(
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      /both Transfer-Encoding and Content-Length/,
    );
    expectParseError(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n',
      /both Transfer-Encoding and Content-Length/,
    );
  });

  test('conflicting Content-Length values throw; identical duplicates are one length', () => {
    expectParseError('HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!', /conflicting/);
    expectParseError(
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      /conflicting/,
    );
    for (const text of [
      'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello',
    ]) {
      const { parser, events } = feed([text]);
      expect(parser.done).toBe(true);
      expect(parser.keepAlive).toBe(true);
      expect(merged(events)[1]).toEqual({ type: 'body', data: 'hello' });
    }
  });

  test('invalid Content-Length values throw', () => {
    for (const v of ['abc', '-1', '+5', '', '5,', '1e3', '0x10', '1234567890123456', '5 5'])
      expectParseError(`HTTP/1.1 200 OK\r\nContent-Length: ${v}\r\n\r\n`, /Content-Length/);
  });
});

describe('malformed heads', () => {
  test('invalid status lines throw', () => {
    for (const line of [
      'HTTP/1.1 20 OK',
      'HTTP/1.1 2000 OK',
      'HTTP/1.1 099 Low',
      'HTTP/1.1 abc OK',
      'HTTP/1.2 200 OK',
      'HTTP/2 200 OK',
      'HTTP/2.0 200 OK',
      'http/1.1 200 OK',
      'HTTP/1.1  200 OK',
      'HTTP/1.1 200OK',
      ' HTTP/1.1 200 OK',
      'ICY 200 OK',
      'HTTP/1.1 200 O\x01K',
      'HTTP/1.1 200 O\x7fK',
      'HTTP/1.1 200 O\rK',
      'garbage',
    ])
      expectParseError(`${line}\r\nContent-Length: 0\r\n\r\n`, /status line/);
  });

  test('invalid header names throw', () => {
    for (const line of [
      'Bad Name: x',
      'Name : x',
      ': x',
      'NoColon',
      'Na(me: x',
      'Na"me: x',
      'N\xe9me: x',
      'Na\x00me: x',
    ])
      expectParseError(`HTTP/1.1 200 OK\r\n${line}\r\nContent-Length: 0\r\n\r\n`, /invalid header line/);
  });

  test('invalid header values throw', () => {
    for (const value of ['a\x00b', 'a\x01b', 'a\x7fb', 'a\rb', 'a\x1bb'])
      expectParseError(`HTTP/1.1 200 OK\r\nX-A: ${value}\r\nContent-Length: 0\r\n\r\n`, /invalid character/);
  });

  test('tabs and obs-text are allowed in values; whitespace around a value is trimmed', () => {
    const { events } = feed([
      'HTTP/1.1 200 OK\r\nX-A: \t a\tb \xff\t \r\nX-Empty:\r\nContent-Length: 0\r\n\r\n',
    ]);
    expect(events[0]).toMatchObject({ headers: ['X-A', 'a\tb \xff', 'X-Empty', '', 'Content-Length', '0'] });
  });

  test('only spaces and tabs are trimmed from values: obs-text bytes such as 0xA0 stay', () => {
    // "voilà" in UTF-8 ends with the byte 0xA0, which String.prototype.trim takes for a no-break space.
    const { events } = feed([
      'HTTP/1.1 200 OK\r\nX-Name: voil\xc3\xa0\r\nX-Lead: \xa0x\r\nContent-Length: 0\r\n\r\n',
    ]);
    expect(events[0]).toMatchObject({
      headers: ['X-Name', 'voil\xc3\xa0', 'X-Lead', '\xa0x', 'Content-Length', '0'],
    });
  });

  test('control bytes at the ends of a value are refused, not trimmed away', () => {
    for (const value of ['a\x0b', '\x0ca', 'a\x0c'])
      expectParseError(`HTTP/1.1 200 OK\r\nX-A: ${value}\r\nContent-Length: 0\r\n\r\n`, /invalid character/);
  });

  test('obs-fold continuation lines are joined to the previous value with one space', () => {
    const text =
      'HTTP/1.1 200 OK\r\nX-Folded: first\r\n   second\r\n\tthird  \r\nX-Next: n\r\nContent-Length: 0\r\n\r\n';
    const [head] = expectSplitInvariant(text);
    expect(head).toMatchObject({
      headers: ['X-Folded', 'first second third', 'X-Next', 'n', 'Content-Length', '0'],
    });
  });

  test('a continuation line before any header, or with a bad byte, throws', () => {
    expectParseError('HTTP/1.1 200 OK\r\n folded: x\r\nContent-Length: 0\r\n\r\n', /continuation/);
    expectParseError('HTTP/1.1 200 OK\r\nX-A: a\r\n b\x00\r\nContent-Length: 0\r\n\r\n', /invalid character/);
  });

  test('an empty line inside the head (CR LF CR LF would have ended it) is refused', () => {
    // "\n\r\n" does not end a head; the bare line is rejected rather than misread.
    expectParseError('HTTP/1.1 200 OK\r\nX-A: 1\n\r\nX-B: 2\r\n\r\n', /empty line/);
  });
});

describe('LF-only heads', () => {
  test('a head whose lines end with LF alone parses like a CRLF head', () => {
    const text = 'HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello';
    const reference = expectSplitInvariant(text, 'GET', { done: true });
    expect(reference).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: ['Content-Type', 'text/plain', 'Content-Length', '5'],
        info: false,
      },
      { type: 'body', data: 'hello' },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });

  test('mixed CRLF and LF line ends parse', () => {
    const { events } = feed(['HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\n']);
    expect(events[0]).toMatchObject({ headers: ['X-A', '1', 'X-B', '2', 'Content-Length', '0'] });
  });

  test('an LF-only head ends at its empty line even when the body holds CR LF CR LF', () => {
    const body = 'a\r\n\r\nb';
    const text = `HTTP/1.1 200 OK\nContent-Length: ${body.length}\n\n${body}`;
    const reference = expectSplitInvariant(text, 'GET', { done: true });
    expect(reference).toEqual([
      {
        type: 'head',
        status: 200,
        reason: 'OK',
        headers: ['Content-Length', String(body.length)],
        info: false,
      },
      { type: 'body', data: body },
      { type: 'done', trailers: [], keepAlive: true },
    ]);
  });

  test('an LF-only 100 Continue followed by a CRLF final head in the same read', () => {
    const text = 'HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const reference = expectSplitInvariant(text, 'POST', { done: true });
    expect(reference.map((e) => (e.type === 'head' ? e.status : e.type))).toEqual([100, 200, 'body', 'done']);
  });
});

describe('limits', () => {
  /** A head of exactly `size` bytes before its final CRLF CRLF. */
  function headOf(size: number): string {
    const start = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ';
    return start + 'p'.repeat(size - start.length);
  }

  test('a head of 64 KiB is accepted, in one read or split', () => {
    const text = `${headOf(MAX_RESPONSE_HEAD_BYTES)}\r\n\r\n`;
    expect(feed([text]).parser.done).toBe(true);
    expect(feed([text.slice(0, 1000), text.slice(1000, 40_000), text.slice(40_000)]).parser.done).toBe(true);
    // Cut anywhere near its end, including inside the final CRLF CRLF.
    for (let cut = text.length - 8; cut < text.length; cut++)
      expect(feed([text.slice(0, cut), text.slice(cut)]).parser.done, `cut at ${cut}`).toBe(true);
  });

  test('a head larger than 64 KiB throws, complete or still incomplete', () => {
    const big = headOf(MAX_RESPONSE_HEAD_BYTES + 1);
    expectParseError(`${big}\r\n\r\n`, /larger than 65536/);
    // Incomplete, in many reads: refused as soon as it passes the limit, not buffered forever.
    const r = recorder();
    r.parser.expect('GET', false);
    const piece = Buffer.from(big.slice(0, 8192));
    let thrown: unknown;
    let fed = 0;
    try {
      for (let i = 0; i < 100; i++) {
        r.parser.execute(piece);
        fed += piece.length;
      }
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ResponseParseError);
    expect(fed).toBeLessThanOrEqual(MAX_RESPONSE_HEAD_BYTES);
    expect(r.events).toEqual([]);
  });

  test('trailers count against the head limit', () => {
    const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n';
    const trailers = Array.from({ length: 70 }, (_, i) => `X-T${i}: ${'t'.repeat(1000)}\r\n`).join('');
    expectParseError(`${head}${trailers}\r\n`, /trailers are larger/);
  });

  function withHeaders(n: number): string {
    let text = 'HTTP/1.1 200 OK\r\n';
    for (let i = 0; i < n - 1; i++) text += `X-H${i}: ${i}\r\n`;
    return `${text}Content-Length: 0\r\n\r\n`;
  }

  test('2000 headers are accepted', () => {
    const { parser, events } = feed([withHeaders(MAX_RESPONSE_HEADERS)]);
    expect(parser.done).toBe(true);
    expect((events[0] as { headers: string[] }).headers).toHaveLength(MAX_RESPONSE_HEADERS * 2);
  });

  test('more than 2000 headers throw', () => {
    expectParseError(withHeaders(MAX_RESPONSE_HEADERS + 1), /more than 2000 response headers/);
  });
});

describe('started', () => {
  test('false until the first byte of the response, then true', () => {
    const r = recorder();
    r.parser.expect('GET', false);
    r.parser.execute(Buffer.alloc(0));
    expect(r.parser.started).toBe(false);
    r.parser.execute(Buffer.from('H'));
    expect(r.parser.started).toBe(true);
  });
});

describe('the server idle timeout a response announces', () => {
  const idleTimeout = (header: string | undefined): number | undefined => {
    const extra = header === undefined ? '' : `${header}\r\n`;
    const { parser } = feed([`HTTP/1.1 200 OK\r\n${extra}Content-Length: 0\r\n\r\n`]);
    return parser.idleTimeoutMs;
  };

  test('Keep-Alive: timeout=N is read in seconds, whatever the case, order, spacing or quotes', () => {
    expect(idleTimeout('Keep-Alive: timeout=5')).toBe(5000);
    expect(idleTimeout('keep-alive: max=100, timeout=2')).toBe(2000);
    expect(idleTimeout('KEEP-ALIVE: Timeout = "3"')).toBe(3000);
  });

  test('no Keep-Alive header, or one without a timeout, announces nothing', () => {
    expect(idleTimeout(undefined)).toBeUndefined();
    expect(idleTimeout('Keep-Alive: max=5')).toBeUndefined();
    expect(idleTimeout('Keep-Alive: mytimeout=5')).toBeUndefined();
  });

  test('each response announces its own: a later one without the header clears it', () => {
    const r = recorder();
    r.parser.expect('GET', false);
    r.parser.execute(
      Buffer.from('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 0\r\n\r\n', 'latin1'),
    );
    expect(r.parser.idleTimeoutMs).toBe(2000);
    r.parser.expect('GET', false);
    r.parser.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', 'latin1'));
    expect(r.parser.idleTimeoutMs).toBeUndefined();
  });
});
