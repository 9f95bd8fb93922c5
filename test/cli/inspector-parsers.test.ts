// The inspector's incremental parsers on hand-built byte streams: WebSocket frames (RFC 6455, RFC 7692) and SSE.
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { expect, test } from 'vitest';
import { renderBody } from '../../cli/inspector/body.js';
import { shellQuote } from '../../cli/inspector/export.js';
import { parseInspectAddress } from '../../cli/inspector/index.js';
import { SseParser, type ParsedSseEvent } from '../../cli/inspector/sse-parser.js';
import {
  negotiatedDeflate,
  WsFrameParser,
  type ParsedWsMessage,
  type WsParserOptions,
} from '../../cli/inspector/websocket-parser.js';
import { waitFor } from '../helpers.js';

/** One frame, masked with a random key when `mask` is set. */
function frame(
  opcode: number,
  payload: Buffer | string,
  { fin = true, mask = false, rsv1 = false }: { fin?: boolean; mask?: boolean; rsv1?: boolean } = {},
): Buffer {
  const data = Buffer.from(payload);
  const len = data.length;
  const head: number[] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(len));
    head.push(m | 127, ...b);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), data]);
  const key = randomBytes(4);
  const masked = Buffer.from(data.map((byte, i) => byte ^ key[i & 3]!));
  return Buffer.concat([Buffer.from(head), key, masked]);
}

function parser(options: Partial<WsParserOptions> = {}) {
  const messages: (ParsedWsMessage & { seq: number })[] = [];
  const errors: string[] = [];
  const p = new WsFrameParser({
    expectMasked: false,
    maxMessageBytes: 64 * 1024,
    onMessage: (m, seq) => messages.push({ ...m, seq }),
    onError: (e) => errors.push(e),
    ...options,
  });
  return { p, messages, errors };
}

/** Pushes `bytes` in pieces of `size` bytes (1 = byte by byte). */
function pushInPieces(p: WsFrameParser, bytes: Buffer, size: number): void {
  for (let i = 0; i < bytes.length; i += size) p.push(bytes.subarray(i, i + size));
}

test('WebSocket frames: 7-, 16- and 64-bit lengths, masking, fragments with a ping between, close; fed byte by byte', () => {
  const big = randomBytes(70_000);
  const stream = Buffer.concat([
    frame(1, 'hello', { mask: true }),
    frame(2, Buffer.alloc(300, 7), { mask: true }),
    frame(2, big, { mask: true }),
    frame(1, 'frag-', { mask: true, fin: false }),
    frame(9, 'are you there', { mask: true }),
    frame(0, 'ment', { mask: true, fin: false }),
    frame(0, 'ed', { mask: true }),
    frame(8, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('bye')]), { mask: true }),
  ]);
  for (const size of [1, 7, 1000, stream.length]) {
    const { p, messages, errors } = parser({ expectMasked: true, maxMessageBytes: 65_536 });
    pushInPieces(p, stream, size);
    expect(errors).toEqual([]);
    expect(messages.map((m) => [m.type, m.size, m.truncated])).toEqual([
      ['text', 5, false],
      ['binary', 300, false],
      ['binary', 70_000, true],
      ['ping', 13, false],
      ['text', 11, false],
      ['close', 5, false],
    ]);
    expect(messages[0]!.data.toString()).toBe('hello');
    expect(messages[1]!.data.equals(Buffer.alloc(300, 7))).toBe(true);
    expect(messages[2]!.data.equals(big.subarray(0, 65_536))).toBe(true);
    expect(messages[3]!.data.toString()).toBe('are you there');
    expect(messages[4]!.data.toString()).toBe('frag-mented');
    expect(messages[5]!.data.readUInt16BE(0)).toBe(1000);
    expect(messages[5]!.data.subarray(2).toString()).toBe('bye');
  }
});

test('WebSocket parse errors stop the parser once and never throw', () => {
  const cases: [string, Buffer, boolean][] = [
    ['HTTP text', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), false],
    ['reserved opcode', frame(3, 'x'), false],
    ['continuation without a message', frame(0, 'x'), false],
    ['fragmented control frame', frame(9, 'x', { fin: false }), false],
    ['control frame over 125 bytes', frame(9, Buffer.alloc(126)), false],
    ['unmasked client frame', frame(1, 'x'), true],
    ['masked server frame', frame(1, 'x', { mask: true }), false],
    ['RSV1 without permessage-deflate', frame(1, 'x', { rsv1: true }), false],
    [
      'new message inside a fragmented one',
      Buffer.concat([frame(1, 'a', { fin: false }), frame(1, 'b')]),
      false,
    ],
  ];
  for (const [what, bytes, expectMasked] of cases) {
    const { p, messages, errors } = parser({ expectMasked });
    p.push(bytes);
    p.push(frame(1, 'after', { mask: expectMasked })); // ignored once stopped
    expect(errors, what).toHaveLength(1);
    expect(p.stopped, what).toBe(true);
    expect(messages, what).toEqual([]);
  }
});

test('permessage-deflate messages are inflated, with context takeover and without', async () => {
  expect(negotiatedDeflate('permessage-deflate; client_max_window_bits; server_no_context_takeover')).toEqual(
    {
      client: { noContextTakeover: false },
      server: { noContextTakeover: true },
    },
  );
  expect(negotiatedDeflate('x-webkit-deflate-frame')).toBeUndefined();

  // Context takeover: one deflate stream across messages, each ended with a sync flush minus its 4-byte tail.
  const deflate = zlib.createDeflateRaw();
  const compress = (text: string): Promise<Buffer> =>
    new Promise((resolve) => {
      const parts: Buffer[] = [];
      const onData = (c: Buffer): number => parts.push(c);
      deflate.on('data', onData);
      deflate.write(text);
      deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        deflate.off('data', onData);
        const all = Buffer.concat(parts);
        resolve(all.subarray(0, all.length - 4));
      });
    });
  const texts = ['hello hello hello', 'hello again, hello', 'x'.repeat(100_000)];
  const compressed = [];
  for (const t of texts) compressed.push(await compress(t));
  deflate.close();
  const { p, messages, errors } = parser({
    expectMasked: true,
    deflate: { noContextTakeover: false },
    maxMessageBytes: 1000,
  });
  const bytes = Buffer.concat([
    frame(1, compressed[0]!, { mask: true, rsv1: true }),
    frame(9, 'ping', { mask: true }),
    frame(1, compressed[1]!.subarray(0, 3), { mask: true, rsv1: true, fin: false }),
    frame(0, compressed[1]!.subarray(3), { mask: true }),
    frame(1, compressed[2]!, { mask: true, rsv1: true }),
  ]);
  pushInPieces(p, bytes, 5);
  await waitFor(() => messages.length === 4, 'four messages');
  expect(errors).toEqual([]);
  const bySeq = [...messages].sort((a, b) => a.seq - b.seq);
  expect(bySeq.map((m) => [m.type, m.compressed, m.size, m.truncated])).toEqual([
    ['text', true, texts[0]!.length, false],
    ['ping', false, 4, false],
    ['text', true, texts[1]!.length, false],
    ['text', true, 100_000, true],
  ]);
  expect(bySeq[0]!.data.toString()).toBe(texts[0]);
  expect(bySeq[2]!.data.toString()).toBe(texts[1]);
  expect(bySeq[3]!.data.toString()).toBe('x'.repeat(1000));
  p.close();

  // No context takeover: every message is deflated on its own.
  const own = parser({ deflate: { noContextTakeover: true } });
  const one = zlib.deflateRawSync('first message', { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const two = zlib.deflateRawSync('second message', { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  own.p.push(
    Buffer.concat([
      frame(1, one.subarray(0, -4), { rsv1: true }),
      frame(1, two.subarray(0, -4), { rsv1: true }),
    ]),
  );
  await waitFor(() => own.messages.length === 2, 'two messages');
  expect(own.messages.sort((a, b) => a.seq - b.seq).map((m) => m.data.toString())).toEqual([
    'first message',
    'second message',
  ]);

  // Garbage marked as compressed: reported as a message that could not be inflated, never thrown.
  const bad = parser({ deflate: { noContextTakeover: false } });
  bad.p.push(frame(1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]), { rsv1: true }));
  await waitFor(() => bad.messages.length === 1, 'the undecodable message');
  expect(bad.messages[0]!.note).toMatch(/not shown/);
  bad.p.close();
});

test('SSE: fields, multi-line data, comments, CRLF and CR line ends split across chunks, truncation', () => {
  const events: ParsedSseEvent[] = [];
  const p = new SseParser(20, (e) => events.push(e));
  const text =
    '\ufeff: comment\r\n' +
    'event: greeting\r\nid: 1\r\ndata: hello\r\ndata: world\r\n\r\n' +
    'data:no space\rretry: 3000\r\r' +
    'id: 2\ndata: ' +
    'y'.repeat(50) +
    '\n\n' +
    'event: ping\n\n' +
    'data: é and 😀\n\n';
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += 3) p.push(bytes.subarray(i, i + 3));
  expect(events).toEqual([
    { event: 'greeting', id: '1', data: 'hello\nworld', truncated: false },
    { data: 'no space', retry: 3000, truncated: false },
    { id: '2', data: 'y'.repeat(20), truncated: true },
    { event: 'ping', data: '', truncated: false },
    { data: 'é and 😀', truncated: false },
  ]);
});

test('bodies: JSON pretty-printed, text kept, binary summarised, gzip decoded, cut UTF-8 tolerated', () => {
  const json = renderBody(Buffer.from('{"a":[1,2],"b":"x"}'), 19, ['Content-Type', 'application/json'], 1e6);
  expect(json).toMatchObject({ kind: 'json', text: '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "x"\n}' });
  const png = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]),
    Buffer.from('IHDR'),
    Buffer.from([0, 0, 2, 128, 0, 0, 1, 224]),
  ]);
  expect(renderBody(png, png.length, ['Content-Type', 'image/png'], 1e6)).toMatchObject({
    kind: 'binary',
    summary: 'PNG image 640×480, 24 B',
    base64: png.toString('base64'),
  });
  const gz = zlib.gzipSync('{"zipped":true}');
  expect(
    renderBody(gz, gz.length, ['Content-Type', 'application/json', 'Content-Encoding', 'gzip'], 1e6),
  ).toMatchObject({
    kind: 'json',
    decoded: true,
    decodedSize: 15,
    text: '{\n  "zipped": true\n}',
  });
  // A capture cut in the middle of "é" is still text; truncated JSON is shown as text, not pretty-printed.
  const cut = Buffer.from('{"name": "é');
  expect(
    renderBody(cut.subarray(0, cut.length - 1), 100, ['Content-Type', 'application/json'], 1e6),
  ).toMatchObject({
    kind: 'text',
    truncated: true,
    text: '{"name": "',
  });
  expect(renderBody(Buffer.alloc(0), 0, undefined, 1e6).kind).toBe('empty');
  expect(renderBody(Buffer.from([0, 1, 2, 3]), 4, undefined, 1e6)).toMatchObject({
    kind: 'binary',
    summary: 'binary data, 4 B',
  });
});

test('shell quoting survives quotes, dollars, backticks and newlines', () => {
  expect(shellQuote('plain/path-1.2')).toBe('plain/path-1.2');
  expect(shellQuote("it's $(rm -rf /) `x`\nline")).toBe("'it'\\''s $(rm -rf /) `x`\nline'");
});

test('--inspect values: port, host, host:port, [v6]:port; nonsense is refused', () => {
  expect(parseInspectAddress('5000')).toEqual({ host: '127.0.0.1', port: 5000 });
  expect(parseInspectAddress('0.0.0.0:4041')).toEqual({ host: '0.0.0.0', port: 4041 });
  expect(parseInspectAddress('localhost')).toEqual({ host: 'localhost', port: 4040 });
  expect(parseInspectAddress('[::1]:4050')).toEqual({ host: '::1', port: 4050 });
  expect(() => parseInspectAddress('host:99999')).toThrow(/0-65535/);
  expect(() => parseInspectAddress('http://x:1')).toThrow(/not a port/);
});
