// Freezes the wire format with golden vectors and checks that decoding rejects everything that is not a valid frame.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  dataFromFragments,
  decodeFrame,
  decodeMessage,
  encodeBatch,
  encodeData,
  encodeDataHeader,
  encodeFrame,
  FrameError,
  splitBatch,
} from '../../protocol/codec.js';
import { FrameType, WIRE_LIMITS, type FlowSettings, type Frame } from '../../protocol/frames.js';

/** Hex with spaces and line breaks allowed, for readable vectors. */
const h = (...parts: string[]): Buffer => Buffer.from(parts.join('').replace(/\s+/g, ''), 'hex');

/** A plain msgpack encoder for building frames the real encoder would never produce. */
const raw = new Packr({ useRecords: false, moreTypes: false });
/** msgpackr with its own extensions on (Set, Error, RegExp, typed arrays…), as a hostile peer might use. */
const rawExt = new Packr({ useRecords: false, moreTypes: true });

const FLOW: FlowSettings = { streamWindow: 262144, connWindow: 4194304, maxData: 65536 };

// The flow map as this encoder writes it: msgpackr always writes object maps as map16 (de + count).
const FLOW_HEX = `a4 666c6f77 de0003
  ac 73747265616d57696e646f77 ce00040000
  aa 636f6e6e57696e646f77 ce00400000
  a7 6d617844617461 ce00010000`;

/** One example of every frame type and its exact bytes. Changing any of these is a wire-format change. */
const GOLDEN: { name: string; frame: Frame; hex: string }[] = [
  {
    name: 'Hello',
    frame: {
      type: FrameType.Hello,
      version: 1,
      token: 'tok',
      name: 'demo',
      agent: 'ggrok/0.1.0',
      clientId: 'c1',
      flow: FLOW,
    },
    hex: `92 01 de0006
      a7 76657273696f6e 01
      a5 746f6b656e a3 746f6b
      a4 6e616d65 a4 64656d6f
      a5 6167656e74 ab 6767726f6b2f302e312e30
      a8 636c69656e744964 a2 6331
      ${FLOW_HEX}`,
  },
  {
    // Optional visitor restrictions: the key is left out entirely when a client sets none.
    name: 'Hello (with access rules)',
    frame: {
      type: FrameType.Hello,
      version: 1,
      token: 'tok',
      name: 'demo',
      agent: 'ggrok/0.1.0',
      clientId: 'c1',
      flow: FLOW,
      access: { basicAuth: ['u:p'], allowIp: ['10.0.0.0/8'], optionsWithoutAuth: true },
    },
    hex: `92 01 de0007
      a7 76657273696f6e 01
      a5 746f6b656e a3 746f6b
      a4 6e616d65 a4 64656d6f
      a5 6167656e74 ab 6767726f6b2f302e312e30
      a8 636c69656e744964 a2 6331
      ${FLOW_HEX}
      a6 616363657373 de0003
        a9 626173696341757468 91 a3 753a70
        a7 616c6c6f774970 91 aa 31302e302e302e302f38
        b2 6f7074696f6e73576974686f757441757468 c3`,
  },
  {
    name: 'Welcome',
    frame: {
      type: FrameType.Welcome,
      name: 'demo',
      url: 'https://demo.example.com',
      flow: FLOW,
      heartbeatMs: 20000,
      maxStreams: 10000,
    },
    hex: `92 02 de0005
      a4 6e616d65 a4 64656d6f
      a3 75726c b8 68747470733a2f2f64656d6f2e6578616d706c652e636f6d
      ${FLOW_HEX}
      ab 6865617274626561744d73 cd4e20
      aa 6d617853747265616d73 cd2710`,
  },
  {
    // A cluster-aware client says which instances it holds sockets to already.
    name: 'Hello (attach)',
    frame: {
      type: FrameType.Hello,
      version: 2,
      token: 'tok',
      name: 'demo',
      agent: 'ggrok/0.1.0',
      clientId: 'c1',
      flow: FLOW,
      attach: { avoid: ['r1'] },
    },
    hex: `92 01 de0007
      a7 76657273696f6e 02
      a5 746f6b656e a3 746f6b
      a4 6e616d65 a4 64656d6f
      a5 6167656e74 ab 6767726f6b2f302e312e30
      a8 636c69656e744964 a2 6331
      ${FLOW_HEX}
      a6 617474616368 de0001 a5 61766f6964 91 a2 7231`,
  },
  {
    // A cluster's instance names itself and the live members (with how to reach each, when known).
    name: 'Welcome (cluster)',
    frame: {
      type: FrameType.Welcome,
      name: 'demo',
      url: 'https://demo.example.com',
      flow: FLOW,
      heartbeatMs: 2000,
      maxStreams: 11000,
      instance: 'r1',
      members: [{ id: 'r1' }, { id: 'r2', fly: '148e' }],
    },
    hex: `92 02 de0007
      a4 6e616d65 a4 64656d6f
      a3 75726c b8 68747470733a2f2f64656d6f2e6578616d706c652e636f6d
      ${FLOW_HEX}
      ab 6865617274626561744d73 cd07d0
      aa 6d617853747265616d73 cd2af8
      a8 696e7374616e6365 a2 7231
      a7 6d656d62657273 92 de0001 a2 6964 a2 7231 de0002 a2 6964 a2 7232 a3 666c79 a4 31343865`,
  },
  {
    name: 'Members',
    frame: { type: FrameType.Members, members: [{ id: 'r1' }, { id: 'r3', url: 'wss://r3.example' }] },
    hex: `92 13 de0001 a7 6d656d62657273 92
      de0001 a2 6964 a2 7231
      de0002 a2 6964 a2 7233 a3 75726c b0 7773733a2f2f72332e6578616d706c65`,
  },
  {
    // An endpoint pool member names its machine.
    name: 'Hello (pool)',
    frame: {
      type: FrameType.Hello,
      version: 2,
      token: 'tok',
      name: 'demo',
      agent: 'ggrok/0.1.0',
      clientId: 'c1',
      flow: FLOW,
      pool: true,
      host: 'h1',
    },
    hex: `92 01 de0008
      a7 76657273696f6e 02
      a5 746f6b656e a3 746f6b
      a4 6e616d65 a4 64656d6f
      a5 6167656e74 ab 6767726f6b2f302e312e30
      a8 636c69656e744964 a2 6331
      ${FLOW_HEX}
      a4 706f6f6c c3
      a4 686f7374 a2 6831`,
  },
  {
    name: 'Pool',
    frame: { type: FrameType.Pool, tunnel: 0, member: 'ab12', size: 2 },
    hex: '94 14 00 a4 61623132 02',
  },
  {
    name: 'Health',
    frame: { type: FrameType.Health, tunnel: 1, ok: false, detail: 'down' },
    hex: '94 15 01 c2 a4 646f776e',
  },
  {
    name: 'Refuse',
    frame: { type: FrameType.Refuse, code: 'name_in_use', message: 'taken' },
    hex: '93 03 ab 6e616d655f696e5f757365 a5 74616b656e',
  },
  {
    // Integers above 2^32 (a Date.now() nonce) are written as float64 by msgpackr.
    name: 'Ping',
    frame: { type: FrameType.Ping, nonce: 1700000000000 },
    hex: '92 04 cb 4278bcfe56800000',
  },
  { name: 'Pong', frame: { type: FrameType.Pong, nonce: 7 }, hex: '92 05 07' },
  {
    name: 'GoAway',
    frame: { type: FrameType.GoAway, code: 'relay_shutting_down', message: 'bye', reconnectAfterMs: 1000 },
    hex: '94 06 b3 72656c61795f7368757474696e675f646f776e a3 627965 cd03e8',
  },
  {
    name: 'Request',
    frame: {
      type: FrameType.Request,
      id: 1,
      method: 'GET',
      target: '/x?y=1',
      headers: ['Host', 'demo.example.com', 'Accept', '*/*'],
      body: 0,
      upgrade: false,
      tunnel: 0,
    },
    hex: `97 0a 01 a3 474554 a6 2f783f793d31
      94 a4 486f7374 b0 64656d6f2e6578616d706c652e636f6d a6 416363657074 a3 2a2f2a
      00 c2`,
  },
  {
    name: 'Request (upgrade, uint16 id)',
    frame: {
      type: FrameType.Request,
      id: 300,
      method: 'GET',
      target: '/ws',
      headers: ['Connection', 'Upgrade', 'Upgrade', 'websocket'],
      body: 0,
      upgrade: true,
      tunnel: 0,
    },
    hex: `97 0a cd012c a3 474554 a3 2f7773
      94 aa 436f6e6e656374696f6e a7 55706772616465 a7 55706772616465 a9 776562736f636b6574
      00 c3`,
  },
  {
    name: "Request (for the connection's third tunnel)",
    frame: {
      type: FrameType.Request,
      id: 2,
      method: 'GET',
      target: '/',
      headers: [],
      body: 0,
      upgrade: false,
      tunnel: 2,
    },
    hex: '98 0a 02 a3 474554 a1 2f 90 00 c2 02',
  },
  {
    name: 'Response',
    frame: {
      type: FrameType.Response,
      id: 1,
      status: 200,
      reason: 'OK',
      headers: ['Content-Type', 'text/plain'],
    },
    hex: '95 0b 01 ccc8 a2 4f4b 92 ac 436f6e74656e742d54797065 aa 746578742f706c61696e',
  },
  {
    name: 'Response with its body and End (a small response in one frame)',
    frame: {
      type: FrameType.Response,
      id: 1,
      status: 200,
      reason: 'OK',
      headers: [],
      body: Buffer.from('hi'),
      end: true,
    },
    hex: '97 0b 01 ccc8 a2 4f4b 90 c402 6869 c3',
  },
  {
    name: 'Info',
    frame: { type: FrameType.Info, id: 1, status: 100, reason: 'Continue', headers: [] },
    hex: '95 0c 01 64 a8 436f6e74696e7565 90',
  },
  {
    name: 'Data',
    frame: { type: FrameType.Data, id: 1, data: Buffer.from('hi') },
    hex: '93 0d 01 c402 6869',
  },
  {
    name: 'End',
    frame: { type: FrameType.End, id: 1, trailers: ['X-Checksum', 'abc'] },
    hex: '93 0e 01 92 aa 582d436865636b73756d a3 616263',
  },
  {
    name: 'Reset',
    frame: { type: FrameType.Reset, id: 1, code: 'cancel', message: 'gone' },
    hex: '94 0f 01 a6 63616e63656c a4 676f6e65',
  },
  {
    name: 'Window (connection)',
    frame: { type: FrameType.Window, id: 0, increment: 65536 },
    hex: '93 10 00 ce00010000',
  },
  {
    name: 'Window (stream)',
    frame: { type: FrameType.Window, id: 70000, increment: 300 },
    hex: '93 10 ce00011170 cd012c',
  },
  {
    // Relay -> client traffic counters: a map16 like Hello and Welcome; a Date.now() value is a float64.
    name: 'Stats',
    frame: {
      type: FrameType.Stats,
      requests: 10,
      bytesIn: 2048,
      bytesOut: 70000,
      channels: 1,
      lastActivityMs: 1700000000000,
      tunnel: 0,
      refused: 3,
    },
    hex: `92 11 de0007
      a8 7265717565737473 0a
      a7 6279746573496e cd0800
      a8 62797465734f7574 ce00011170
      a8 6368616e6e656c73 01
      ae 6c61737441637469766974794d73 cb4278bcfe56800000
      a6 74756e6e656c 00
      a7 72656675736564 03`,
  },
];

/** Decodes and returns the FrameError, failing the test if anything else happens. */
function rejects(bytes: Buffer, streamId?: number): FrameError {
  let caught: unknown;
  try {
    decodeFrame(bytes);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a FrameError for ${bytes.subarray(0, 40).toString('hex')}`).toBeInstanceOf(
    FrameError,
  );
  const err = caught as FrameError;
  expect(err.code).toBe('protocol_error');
  if (streamId !== undefined) expect(err.streamId).toBe(streamId);
  return err;
}

describe('golden vectors', () => {
  it('covers every frame type', () => {
    const covered = new Set<number>(GOLDEN.map((g) => g.frame.type));
    covered.add(FrameType.Batch); // a container, frozen by its own vector below
    expect([...covered].sort((a, b) => a - b)).toEqual(Object.values(FrameType).sort((a, b) => a - b));
  });

  for (const g of GOLDEN) {
    it(`${g.name}: encodes to the frozen bytes and decodes back`, () => {
      const bytes = h(g.hex);
      expect(encodeFrame(g.frame).toString('hex')).toBe(bytes.toString('hex'));
      expect(decodeFrame(bytes)).toEqual(g.frame);
    });
  }

  it('Batch: several frames in one message encode to the frozen bytes and split back', () => {
    const window = encodeFrame({ type: FrameType.Window, id: 1, increment: 65536 });
    const data = encodeData(1, Buffer.from('hi'));
    const end = encodeFrame({ type: FrameType.End, id: 1, trailers: [] });
    const bytes = h(`94 12
      c408 93 10 01 ce00010000
      c407 93 0d 01 c402 6869
      c404 93 0e 01 90`);
    expect(encodeBatch([window, data, end], window.length + data.length + end.length).toString('hex')).toBe(
      bytes.toString('hex'),
    );
    expect(decodeMessage(bytes)).toEqual([
      { type: FrameType.Window, id: 1, increment: 65536 },
      { type: FrameType.Data, id: 1, data: Buffer.from('hi') },
      { type: FrameType.End, id: 1, trailers: [] },
    ]);
    // A single frame is a message of its own, not a batch.
    expect(splitBatch(window)).toBeUndefined();
    expect(decodeMessage(window)).toEqual([{ type: FrameType.Window, id: 1, increment: 65536 }]);
  });

  it('Batch: large counts use array16, and every frame comes back whole', () => {
    const frames = Array.from({ length: 300 }, (_, i) => encodeData(i + 1, Buffer.alloc(i % 7, i)));
    const total = frames.reduce((n, f) => n + f.length, 0);
    const bytes = encodeBatch(frames, total);
    expect(bytes[0]).toBe(0xdc);
    expect(splitBatch(bytes)!.map((f) => f.toString('hex'))).toEqual(frames.map((f) => f.toString('hex')));
  });

  it('Batch: malformed batches are protocol errors, and batches do not nest', () => {
    const one = encodeFrame({ type: FrameType.Ping, nonce: 1 });
    const bad = [
      h('91 12'), // empty
      h('92 12 c405 9204'), // frame runs past the end
      h('92 12 a2 9204'), // a frame that is not bin
      Buffer.concat([encodeBatch([one, one], one.length * 2), h('00')]), // trailing bytes
    ];
    for (const b of bad) expect(() => splitBatch(b), b.toString('hex')).toThrow(FrameError);
    const nested = encodeBatch([encodeBatch([one, one], one.length * 2), one], 100);
    expect(() => decodeMessage(nested)).toThrow(FrameError);
  });

  it('a Data frame sent as header + payload fragments is the same bytes, read back without a copy', () => {
    for (const [id, size] of [
      [1, 20_000],
      [300, 70_000],
      [70_000, 16 * 1024],
    ] as const) {
      const payload = Buffer.alloc(size, id % 251);
      const header = encodeDataHeader(id, size);
      expect(Buffer.concat([header, payload]).equals(encodeData(id, payload))).toBe(true);
      const frame = dataFromFragments(header, payload);
      expect(frame).toEqual({ type: FrameType.Data, id, data: payload });
      if (frame?.type === FrameType.Data) expect(frame.data).toBe(payload);
    }
    // Anything else is left to the general decoder (which joins the fragments and validates the whole).
    const header = encodeDataHeader(5, 100);
    expect(dataFromFragments(header, Buffer.alloc(99))).toBeUndefined(); // length mismatch
    expect(dataFromFragments(encodeDataHeader(0, 100), Buffer.alloc(100))).toBeUndefined(); // stream 0
    expect(dataFromFragments(Buffer.concat([header, Buffer.from([1])]), Buffer.alloc(100))).toBeUndefined();
    expect(
      dataFromFragments(encodeFrame({ type: FrameType.Ping, nonce: 1 }), Buffer.alloc(1)),
    ).toBeUndefined();
  });

  it('encoded buffers stay intact after later encodes (no arena reuse under a queued frame)', () => {
    const first = encodeFrame(GOLDEN[0]!.frame);
    const copy = Buffer.from(first);
    for (let i = 0; i < 2000; i++) encodeFrame(GOLDEN[i % GOLDEN.length]!.frame);
    expect(first.equals(copy)).toBe(true);
  });

  it('a decoded Data payload is a view into the message, not a copy', () => {
    const bytes = h('93 0d 01 c402 6869');
    const frame = decodeFrame(bytes);
    if (frame.type !== FrameType.Data) throw new Error('expected Data');
    expect(frame.data.buffer).toBe(bytes.buffer);
  });

  it('accepts non-minimal but valid msgpack (other decoders may write it)', () => {
    // Data with id as uint32 and a bin32 length; Pong with nonce as uint16; Window id as float64.
    expect(decodeFrame(h('93 0d ce00000005 c600000002 6869'))).toEqual({
      type: FrameType.Data,
      id: 5,
      data: Buffer.from('hi'),
    });
    expect(decodeFrame(h('92 05 cd0007'))).toEqual({ type: FrameType.Pong, nonce: 7 });
    expect(decodeFrame(h('93 10 cb3ff0000000000000 01'))).toEqual({
      type: FrameType.Window,
      id: 1,
      increment: 1,
    });
    // Data with the id written as int8 (d0): not the fast path's shape, so the general decoder takes it.
    expect(decodeFrame(h('93 0d d005 c402 6869'))).toEqual({
      type: FrameType.Data,
      id: 5,
      data: Buffer.from('hi'),
    });
  });
});

describe('encodeData', () => {
  const ids = [1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffff_ffff];
  const lengths = [0, 1, 0xff, 0x100, 0xffff, 0x10000, 200_000];

  it.each(ids)('writes id %i exactly as msgpackr does', (id) => {
    for (const len of [0, 3]) {
      const data = Buffer.alloc(len, 0xab);
      expect(encodeData(id, data).toString('hex')).toBe(raw.pack([FrameType.Data, id, data]).toString('hex'));
    }
  });

  it.each(lengths)('writes a %i-byte payload exactly as msgpackr does', (len) => {
    const data = Buffer.alloc(len);
    for (let i = 0; i < len; i++) data[i] = (i * 31) & 0xff;
    for (const id of [1, 0x1234, 0xffff_ffff]) {
      const mine = encodeData(id, data);
      const theirs = raw.pack([FrameType.Data, id, data]);
      expect(mine.length).toBe(theirs.length);
      expect(mine.equals(theirs)).toBe(true);
      // encodeFrame delegates Data to the same hand encoder.
      expect(encodeFrame({ type: FrameType.Data, id, data }).equals(theirs)).toBe(true);
    }
  });

  it('uses the smallest form at every boundary', () => {
    expect(encodeData(0x7f, Buffer.alloc(0)).subarray(0, 5).toString('hex')).toBe('930d7fc400');
    expect(encodeData(0x80, Buffer.alloc(0)).subarray(0, 6).toString('hex')).toBe('930dcc80c400');
    expect(encodeData(0x100, Buffer.alloc(0)).subarray(0, 7).toString('hex')).toBe('930dcd0100c400');
    expect(encodeData(0x10000, Buffer.alloc(0)).subarray(0, 9).toString('hex')).toBe('930dce00010000c400');
    expect(encodeData(1, Buffer.alloc(0xff)).subarray(0, 5).toString('hex')).toBe('930d01c4ff');
    expect(encodeData(1, Buffer.alloc(0x100)).subarray(0, 6).toString('hex')).toBe('930d01c50100');
    expect(encodeData(1, Buffer.alloc(0x10000)).subarray(0, 8).toString('hex')).toBe('930d01c600010000');
  });

  it('round-trips through decodeFrame for every size class', () => {
    for (const id of ids)
      for (const len of lengths) {
        const data = Buffer.alloc(len, id & 0xff);
        const frame = decodeFrame(encodeData(id, data));
        expect(frame.type).toBe(FrameType.Data);
        if (frame.type !== FrameType.Data) continue;
        expect(frame.id).toBe(id);
        expect(frame.data.equals(data)).toBe(true);
      }
  });

  it('accepts a Uint8Array payload as well as a Buffer', () => {
    expect(encodeData(3, new Uint8Array([1, 2])).toString('hex')).toBe('930d03c4020102');
  });
});

describe('decodeFrame rejects', () => {
  it('unknown frame types', () => {
    for (const type of [0, 7, 9, 17, 99, -1]) rejects(raw.pack([type, 1]), 0);
    rejects(raw.pack(['Ping', 1]));
    rejects(raw.pack([null, 1]));
  });

  it('a Response carrying a body that is not binary, an end flag that is not boolean, or a body on a 101', () => {
    rejects(raw.pack([11, 3, 200, 'OK', [], 'hi', true]), 3);
    rejects(raw.pack([11, 3, 200, 'OK', [], Buffer.from('hi'), 1]), 3);
    rejects(raw.pack([11, 3, 200, 'OK', [], Buffer.from('hi')])); // 6 fields: a malformed frame, not a stream's
    rejects(raw.pack([11, 3, 101, 'Switching Protocols', [], Buffer.from('hi'), false]), 3);
    rejects(raw.pack([12, 3, 100, 'Continue', [], Buffer.alloc(0), true])); // Info never carries a body
    expect(decodeFrame(raw.pack([11, 3, 204, 'No Content', [], Buffer.alloc(0), true]))).toMatchObject({
      status: 204,
      end: true,
    });
  });

  it('messages that are not a short array', () => {
    rejects(Buffer.alloc(0));
    rejects(h('c0')); // nil
    rejects(h('04')); // a bare integer
    rejects(h('81 a1 61 01')); // a map
    rejects(h('90')); // empty array
    rejects(h('98 04 01 01 01 01 01 01 01')); // 8 elements: no frame has that many
    rejects(h('dc 0002 04 01')); // array16 form
    rejects(h('a4 70696e67')); // a string
  });

  it('wrong arity', () => {
    rejects(raw.pack([FrameType.Ping]));
    rejects(raw.pack([FrameType.Ping, 1, 2]));
    rejects(raw.pack([FrameType.Window, 1]));
    rejects(raw.pack([FrameType.Request, 1, 'GET', '/', [], 0]));
    rejects(raw.pack([FrameType.Response, 1, 200, 'OK', [], 'extra']));
    rejects(raw.pack([FrameType.Reset, 1, 'cancel']));
    rejects(raw.pack([FrameType.End, 1]));
    rejects(raw.pack([FrameType.Data, 1, Buffer.from('x'), 0]));
    rejects(raw.pack([FrameType.Hello, {}, {}]));
  });

  it('wrong field types', () => {
    rejects(raw.pack([FrameType.Ping, '1']));
    rejects(raw.pack([FrameType.Ping, 1.5]));
    rejects(raw.pack([FrameType.Ping, -1]));
    rejects(raw.pack([FrameType.Pong, true]));
    rejects(raw.pack([FrameType.Refuse, 1, 'x']));
    rejects(raw.pack([FrameType.GoAway, 'c', 'm', '1000']));
    rejects(raw.pack([FrameType.GoAway, 'c', 'm', 3_600_001]));
    rejects(raw.pack([FrameType.Request, 1, 'GET', '/', [], 3, false]), 1); // body kind
    rejects(raw.pack([FrameType.Request, 1, 'GET', '/', [], 0, 1]), 1); // upgrade flag
    rejects(raw.pack([FrameType.Request, 1, 'G ET', '/', [], 0, false]), 1); // method not a token
    rejects(raw.pack([FrameType.Request, 1, 'GET', '/a b', [], 0, false]), 1); // space in target
    rejects(raw.pack([FrameType.Request, 1, 'GET', '', [], 0, false]), 1); // empty target
    rejects(
      raw.pack([FrameType.Request, 1, 'GET', '/'.repeat(WIRE_LIMITS.MAX_TARGET_BYTES + 1), [], 0, false]),
      1,
    );
    rejects(raw.pack([FrameType.Request, 1, 'GET', '/', {}, 0, false]), 1); // headers as a map
    rejects(raw.pack([FrameType.Response, 1, '200', 'OK', []]), 1);
    rejects(raw.pack([FrameType.Response, 1, 200, 'O\r\nK', []]), 1);
    rejects(raw.pack([FrameType.Reset, 1, 7, 'm']), 1);
    rejects(raw.pack([FrameType.Reset, 1, 'c'.repeat(WIRE_LIMITS.MAX_STRING_BYTES + 1), 'm']), 1);
    rejects(raw.pack([FrameType.End, 1, 'X-A: b']), 1);
    rejects(raw.pack([FrameType.Window, 1, '5']), 1);
    rejects(raw.pack([FrameType.Window, 1, WIRE_LIMITS.MAX_WINDOW_BYTES + 1]), 1);
    rejects(raw.pack([FrameType.Window, WIRE_LIMITS.MAX_STREAM_ID + 1, 1]), 0);
  });

  it('bad handshake bodies', () => {
    const hello = { version: 1, token: 't', name: '', agent: 'a', clientId: 'c', flow: FLOW };
    expect(decodeFrame(raw.pack([FrameType.Hello, hello])).type).toBe(FrameType.Hello);
    rejects(raw.pack([FrameType.Hello, [1, 't', '', 'a', 'c']])); // body must be a map
    rejects(raw.pack([FrameType.Hello, { ...hello, token: undefined }])); // missing field
    rejects(raw.pack([FrameType.Hello, { ...hello, version: 0x10000 }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, name: 5 }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, flow: { ...FLOW, maxData: 1023 } }])); // below MIN_DATA_BYTES
    rejects(
      raw.pack([FrameType.Hello, { ...hello, flow: { ...FLOW, maxData: WIRE_LIMITS.MAX_DATA_BYTES + 1 } }]),
    );
    rejects(raw.pack([FrameType.Hello, { ...hello, flow: { ...FLOW, streamWindow: 1024, maxData: 2048 } }]));
    rejects(
      raw.pack([
        FrameType.Hello,
        { ...hello, flow: { ...FLOW, connWindow: WIRE_LIMITS.MAX_WINDOW_BYTES + 1 } },
      ]),
    );
    const access = { basicAuth: [], allowIp: ['::1'], optionsWithoutAuth: false };
    expect(decodeFrame(raw.pack([FrameType.Hello, { ...hello, access }]))).toMatchObject({ access });
    rejects(raw.pack([FrameType.Hello, { ...hello, access: [] }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, access: { ...access, optionsWithoutAuth: 1 } }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, access: { ...access, allowIp: '::1' } }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, access: { ...access, basicAuth: [1] } }]));
    rejects(
      raw.pack([FrameType.Hello, { ...hello, access: { ...access, basicAuth: ['u:'.padEnd(513, 'p')] } }]),
    );
    const tooMany = Array<string>(WIRE_LIMITS.MAX_ACCESS_RULES + 1).fill('::1');
    rejects(raw.pack([FrameType.Hello, { ...hello, access: { ...access, allowIp: tooMany } }]));
    const welcome = { name: 'n', url: 'u', flow: FLOW, heartbeatMs: 1, maxStreams: 1 };
    expect(decodeFrame(raw.pack([FrameType.Welcome, welcome])).type).toBe(FrameType.Welcome);
    rejects(raw.pack([FrameType.Welcome, { ...welcome, heartbeatMs: 3_600_001 }]));
    rejects(raw.pack([FrameType.Welcome, { ...welcome, flow: 'default' }]));
  });

  it('webhook inbox fields: patterns in Hello (and its more), counts in Welcome', () => {
    const hello = { version: 2, token: 't', name: '', agent: 'a', clientId: 'c', flow: FLOW };
    const inbox = ['/*', '/webhooks/*'];
    const more = [{ name: 'b', inbox: ['/x'] }];
    expect(decodeFrame(raw.pack([FrameType.Hello, { ...hello, inbox, more }]))).toMatchObject({
      inbox,
      more,
    });
    const encoded = encodeFrame({ type: FrameType.Hello, ...hello, inbox, more });
    expect(decodeFrame(encoded)).toMatchObject({ inbox, more });
    rejects(raw.pack([FrameType.Hello, { ...hello, inbox: '/*' }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, inbox: ['relative'] }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, inbox: ['/a b'] }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, inbox: ['/'.padEnd(513, 'a')] }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, inbox: Array<string>(33).fill('/a') }]));
    rejects(raw.pack([FrameType.Hello, { ...hello, more: [{ name: 'b', inbox: [1] }] }]));
    const welcome = { name: 'n', url: 'u', flow: FLOW, heartbeatMs: 1, maxStreams: 1 };
    const notice = [{ tunnel: 0, kept: 12, refused: 3, failed: 1 }];
    const w = encodeFrame({ type: FrameType.Welcome, ...welcome, inbox: notice });
    expect(decodeFrame(w)).toMatchObject({ inbox: notice });
    rejects(raw.pack([FrameType.Welcome, { ...welcome, inbox: [{ ...notice[0], tunnel: 32 }] }]));
    rejects(raw.pack([FrameType.Welcome, { ...welcome, inbox: [{ ...notice[0], kept: -1 }] }]));
    rejects(raw.pack([FrameType.Welcome, { ...welcome, inbox: [{ tunnel: 0 }] }]));
  });

  it('stream frames on stream id 0', () => {
    rejects(raw.pack([FrameType.Request, 0, 'GET', '/', [], 0, false]), 0);
    rejects(raw.pack([FrameType.Response, 0, 200, 'OK', []]), 0);
    rejects(raw.pack([FrameType.Info, 0, 100, 'Continue', []]), 0);
    rejects(h('93 0d 00 c402 6869'), 0); // Data through the fast path
    rejects(h('93 0d cc00 c402 6869'), 0);
    rejects(raw.pack([FrameType.End, 0, []]), 0);
    rejects(raw.pack([FrameType.Reset, 0, 'cancel', '']), 0);
  });

  it('stream ids that are negative, fractional or beyond 32 bits', () => {
    rejects(raw.pack([FrameType.End, -1, []]));
    rejects(raw.pack([FrameType.End, 1.5, []]));
    rejects(raw.pack([FrameType.End, 2 ** 32, []]));
  });

  it('bad header names and values', () => {
    const end = (trailers: unknown[]): Buffer => raw.pack([FrameType.End, 9, trailers]);
    expect(decodeFrame(end(['X-Ok', 'v\tv \x80\xff']))).toEqual({
      type: FrameType.End,
      id: 9,
      trailers: ['X-Ok', 'v\tv \x80\xff'],
    });
    for (const name of ['', 'X A', 'X:A', 'X\r\nA', 'X(A)', 'Ä', '\x00']) rejects(end([name, 'v']), 9);
    for (const value of ['a\rb', 'a\nb', 'a\r\nInjected: 1', 'a\x00b', 'a\x7fb', 'a\x01b', '\u0100', '😀'])
      rejects(end(['X-A', value]), 9);
    rejects(end(['X-A']), 9); // odd length
    rejects(end(['X-A', 1]), 9);
    rejects(end([1, 'v']), 9);
    rejects(end([['X-A', 'v']]), 9);
    const tooMany = Array.from({ length: WIRE_LIMITS.MAX_HEADER_LIST_ENTRIES + 2 }, (_, i) =>
      i % 2 ? 'v' : `h${i}`,
    );
    rejects(end(tooMany), 9);
    expect(decodeFrame(end(tooMany.slice(0, WIRE_LIMITS.MAX_HEADER_LIST_ENTRIES))).type).toBe(FrameType.End);
    const big = 'v'.repeat(WIRE_LIMITS.MAX_HEADER_LIST_BYTES / 2);
    rejects(end(['A', big, 'B', big]), 9); // 2 + 128 KiB of names and values
    // Headers in Request and Response are checked the same way and the error names the stream.
    rejects(raw.pack([FrameType.Request, 4, 'GET', '/', ['Host', 'x\ny'], 0, false]), 4);
    rejects(raw.pack([FrameType.Response, 5, 200, 'OK', ['Set-Cookie\r', 'a']]), 5);
  });

  it('status codes out of range', () => {
    const response = (status: number): Buffer => raw.pack([FrameType.Response, 2, status, 'x', []]);
    const info = (status: number): Buffer => raw.pack([FrameType.Info, 2, status, 'x', []]);
    for (const s of [101, 200, 204, 404, 599, 999])
      expect(decodeFrame(response(s)).type).toBe(FrameType.Response);
    for (const s of [0, 99, 100, 1000, 65535]) rejects(response(s), 2);
    for (const s of [100, 102, 103, 199]) expect(decodeFrame(info(s)).type).toBe(FrameType.Info);
    for (const s of [99, 200, 304]) rejects(info(s), 2);
  });

  it('Info 101 (a switch is a final Response)', () => {
    expect(rejects(raw.pack([FrameType.Info, 3, 101, 'Switching Protocols', []]), 3).message).toMatch(/101/);
  });

  it('a zero window increment, for a stream and for the connection', () => {
    rejects(h('93 10 05 00'), 5);
    rejects(h('93 10 00 00'), 0);
  });

  it('messages over MAX_MESSAGE_BYTES, at the exact boundary', () => {
    const max = WIRE_LIMITS.MAX_MESSAGE_BYTES;
    const header = 2 + 1 + 5; // fixarray, type, id 1, bin32 header
    const fits = encodeData(1, Buffer.alloc(max - header));
    expect(fits.length).toBe(max);
    expect(decodeFrame(fits).type).toBe(FrameType.Data);
    const over = encodeData(1, Buffer.alloc(max - header + 1));
    expect(rejects(over, 0).message).toMatch(/too large/);
    rejects(Buffer.concat([h('92 04'), Buffer.alloc(max)]), 0);
  });

  it('64-bit integers decode to numbers and are range-checked like any other', () => {
    expect(decodeFrame(h('92 04 cf 0000000000000005'))).toEqual({ type: FrameType.Ping, nonce: 5 });
    rejects(h('93 10 00 cf 0000000100000000')); // a window increment above 2^31 - 1
  });

  it('msgpack extension types where frames expect plain values', () => {
    rejects(h('92 04 d6ff 00000001')); // timestamp ext as a Ping nonce
    rejects(h('92 04 c70c ff 000000000000000000000001')); // timestamp 96 as a nonce
    rejects(h('93 0e 01 d6ff 00000001'), 1); // timestamp as a header list
    rejects(h('93 0d 01 d6ff 00000001'), 1); // timestamp as a Data payload
    rejects(h('93 0d 01 d4 00 00'), 1); // ext 0 (msgpackr reads it as undefined)
    rejects(h('92 04 d4 05 01')); // an unknown extension type
    rejects(rawExt.pack([FrameType.Ping, new Date(5000)]));
    rejects(rawExt.pack([FrameType.End, 1, new Set(['X-A', 'v'])]), 1);
    rejects(rawExt.pack([FrameType.Reset, 1, new Error('x'), 'm']), 1);
    rejects(rawExt.pack([FrameType.Reset, 1, 'c', /m/]), 1);
    rejects(rawExt.pack([FrameType.Data, 1, new Uint16Array([1, 2])]), 1);
    rejects(rawExt.pack([FrameType.Data, 1, new Float64Array([1])]), 1);
    rejects(h('93 0d 01 d4 70 00'), 0); // msgpackr structured-clone pointer with no target
  });

  // msgpackr's typed-array extension (ext 0x74, type 1 = Uint8Array) is not msgpack bin: only bin is a payload.
  it('a Data payload sent as msgpackr typed-array extension instead of bin', () => {
    const bytes = rawExt.pack([FrameType.Data, 1, new Uint8Array([1, 2, 3])]);
    expect(bytes.toString('hex')).toBe('930d01c7047401010203');
    rejects(bytes, 1);
  });

  it('text where binary is expected', () => {
    rejects(h('93 0d 01 a2 6869'), 1); // fixstr payload
    rejects(h('93 0d 01 d9 02 6869'), 1); // str8 payload
    rejects(raw.pack([FrameType.Data, 1, [104, 105]]), 1); // array of numbers
    rejects(raw.pack([FrameType.Data, 1, null]), 1);
  });

  it('binary where text is expected', () => {
    rejects(raw.pack([FrameType.Refuse, Buffer.from('bad_token'), 'm']));
    rejects(raw.pack([FrameType.End, 1, [Buffer.from('X-A'), 'v']]), 1);
  });

  it('truncated Data frames (the declared length is longer than the message)', () => {
    expect(rejects(h('93 0d 07 c405 6869'), 7).message).toMatch(/length/);
    rejects(h('93 0d 07 c5ffff 6869'), 7);
    rejects(h('93 0d 07 c6ffffffff 6869'), 7);
    rejects(h('93 0d cd01'), 0); // cut inside the id
    rejects(h('93 0d 07 c5ff'), 0); // cut inside the length
    rejects(h('93 0d'), 0);
  });

  it('every golden vector cut short at every length', () => {
    for (const g of GOLDEN) {
      const bytes = h(g.hex);
      for (let len = 0; len < bytes.length; len++) rejects(bytes.subarray(0, len));
    }
  });

  it('trailing bytes after a complete frame', () => {
    for (const g of GOLDEN)
      for (const extra of ['c0', '00', '920401']) rejects(Buffer.concat([h(g.hex), h(extra)]));
    expect(rejects(h('93 0d 07 c402 6869 ff'), 7).message).toMatch(/length/);
  });

  it('deep nesting without a RangeError escaping, and the decoder still works afterwards', () => {
    const depth = 200_000;
    const nested = Buffer.alloc(depth, 0x91); // [[[[…]]]]
    rejects(nested);
    rejects(Buffer.concat([h('93 0e 01'), Buffer.alloc(depth, 0x91)]));
    const hexes = Buffer.alloc(depth, 0x81); // {{{{…}}}} as map keys
    rejects(Buffer.concat([h('92 01'), hexes]));
    expect(decodeFrame(h('92 05 07'))).toEqual({ type: FrameType.Pong, nonce: 7 });
    expect(decodeFrame(h(GOLDEN[0]!.hex))).toEqual(GOLDEN[0]!.frame);
  });

  it('hostile map keys stay inert', () => {
    const hello = raw.pack([
      FrameType.Hello,
      new Map<unknown, unknown>([
        ['__proto__', { polluted: true }],
        ['version', 1],
        ['token', 't'],
        ['name', ''],
        ['agent', 'a'],
        ['clientId', 'c'],
        ['flow', FLOW],
      ]),
    ]);
    const frame = decodeFrame(hello);
    expect(frame.type).toBe(FrameType.Hello);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.keys(frame).sort()).toEqual([
      'agent',
      'clientId',
      'flow',
      'name',
      'token',
      'type',
      'version',
    ]);
  });
});

// ---- property-based fuzzing ----

const isUint = (v: unknown, max: number): boolean =>
  typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
const isStr = (v: unknown): boolean => typeof v === 'string';
const isHeaderList = (v: unknown): boolean => Array.isArray(v) && v.length % 2 === 0 && v.every(isStr);
const hasKeys = (o: object, keys: string[]): boolean =>
  JSON.stringify(Object.keys(o).sort()) === JSON.stringify([...keys, 'type'].sort());
const isFlow = (v: unknown): boolean => {
  if (typeof v !== 'object' || v === null) return false;
  const f = v as FlowSettings;
  return (
    JSON.stringify(Object.keys(f).sort()) === JSON.stringify(['connWindow', 'maxData', 'streamWindow']) &&
    isUint(f.streamWindow, WIRE_LIMITS.MAX_WINDOW_BYTES) &&
    isUint(f.connWindow, WIRE_LIMITS.MAX_WINDOW_BYTES) &&
    isUint(f.maxData, WIRE_LIMITS.MAX_DATA_BYTES) &&
    f.maxData >= WIRE_LIMITS.MIN_DATA_BYTES &&
    f.streamWindow >= f.maxData &&
    f.connWindow >= f.maxData
  );
};

const isAccess = (v: unknown): boolean => {
  if (typeof v !== 'object' || v === null) return false;
  const a = v as Record<string, unknown>;
  const list = (l: unknown): boolean =>
    Array.isArray(l) &&
    l.length <= WIRE_LIMITS.MAX_ACCESS_RULES &&
    l.every((x) => isStr(x) && x.length <= 512);
  return (
    JSON.stringify(Object.keys(a).sort()) ===
      JSON.stringify(['allowIp', 'basicAuth', 'optionsWithoutAuth']) &&
    list(a.basicAuth) &&
    list(a.allowIp) &&
    typeof a.optionsWithoutAuth === 'boolean'
  );
};

/** True when a decoded frame has exactly the fields of its type, with the right types and ranges. */
function shapeMatches(f: Frame): boolean {
  const sid = (id: unknown): boolean => isUint(id, WIRE_LIMITS.MAX_STREAM_ID) && id !== 0;
  switch (f.type) {
    case FrameType.Hello:
      return (
        hasKeys(f, [
          'version',
          'token',
          'name',
          'agent',
          'clientId',
          'flow',
          ...('access' in f ? ['access'] : []),
          ...('more' in f ? ['more'] : []),
          ...('attach' in f ? ['attach'] : []),
          ...('pool' in f ? ['pool'] : []),
          ...('host' in f ? ['host'] : []),
        ]) &&
        (!('pool' in f) || typeof f.pool === 'boolean') &&
        (!('host' in f) || (isStr(f.host) && f.host!.length <= WIRE_LIMITS.MAX_HOST_NAME_CHARS)) &&
        (!('access' in f) || isAccess(f.access)) &&
        (!f.attach || (Array.isArray(f.attach.avoid) && f.attach.avoid.every(isInstanceId))) &&
        isUint(f.version, 0xffff) &&
        [f.token, f.name, f.agent, f.clientId].every(isStr) &&
        isFlow(f.flow)
      );
    case FrameType.Welcome:
      return (
        hasKeys(f, [
          'name',
          'url',
          'flow',
          'heartbeatMs',
          'maxStreams',
          ...('more' in f ? ['more'] : []),
          ...('instance' in f ? ['instance'] : []),
          ...('members' in f ? ['members'] : []),
        ]) &&
        (f.instance === undefined || isInstanceId(f.instance)) &&
        (f.members === undefined || isMemberList(f.members)) &&
        isStr(f.name) &&
        isStr(f.url) &&
        isFlow(f.flow) &&
        isUint(f.heartbeatMs, 3_600_000) &&
        isUint(f.maxStreams, WIRE_LIMITS.MAX_STREAM_ID)
      );
    case FrameType.Refuse:
      return hasKeys(f, ['code', 'message']) && isStr(f.code) && isStr(f.message);
    case FrameType.Ping:
    case FrameType.Pong:
      return hasKeys(f, ['nonce']) && isUint(f.nonce, Number.MAX_SAFE_INTEGER);
    case FrameType.GoAway:
      return (
        hasKeys(f, ['code', 'message', 'reconnectAfterMs']) &&
        isStr(f.code) &&
        isStr(f.message) &&
        isUint(f.reconnectAfterMs, 3_600_000)
      );
    case FrameType.Request:
      return (
        hasKeys(f, ['id', 'method', 'target', 'headers', 'body', 'upgrade', 'tunnel']) &&
        isUint(f.tunnel, 31) &&
        sid(f.id) &&
        /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(f.method) &&
        isStr(f.target) &&
        f.target.length > 0 &&
        isHeaderList(f.headers) &&
        [0, 1, 2].includes(f.body) &&
        typeof f.upgrade === 'boolean'
      );
    case FrameType.Response:
      return (
        hasKeys(f, ['id', 'status', 'reason', 'headers']) &&
        sid(f.id) &&
        isUint(f.status, 999) &&
        (f.status >= 200 || f.status === 101) &&
        isStr(f.reason) &&
        isHeaderList(f.headers)
      );
    case FrameType.Info:
      return (
        hasKeys(f, ['id', 'status', 'reason', 'headers']) &&
        sid(f.id) &&
        isUint(f.status, 199) &&
        f.status >= 100 &&
        f.status !== 101 &&
        isStr(f.reason) &&
        isHeaderList(f.headers)
      );
    case FrameType.Data:
      return hasKeys(f, ['id', 'data']) && sid(f.id) && Buffer.isBuffer(f.data);
    case FrameType.End:
      return hasKeys(f, ['id', 'trailers']) && sid(f.id) && isHeaderList(f.trailers);
    case FrameType.Reset:
      return hasKeys(f, ['id', 'code', 'message']) && sid(f.id) && isStr(f.code) && isStr(f.message);
    case FrameType.Window:
      return (
        hasKeys(f, ['id', 'increment']) &&
        isUint(f.id, WIRE_LIMITS.MAX_STREAM_ID) &&
        isUint(f.increment, WIRE_LIMITS.MAX_WINDOW_BYTES) &&
        f.increment > 0
      );
    case FrameType.Stats:
      return (
        hasKeys(f, ['requests', 'bytesIn', 'bytesOut', 'channels', 'lastActivityMs', 'tunnel', 'refused']) &&
        [f.requests, f.bytesIn, f.bytesOut, f.lastActivityMs, f.refused].every((n) =>
          isUint(n, Number.MAX_SAFE_INTEGER),
        ) &&
        isUint(f.channels, WIRE_LIMITS.MAX_STREAM_ID) &&
        isUint(f.tunnel, WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1)
      );
    case FrameType.Members:
      return hasKeys(f, ['members']) && isMemberList(f.members);
    case FrameType.Pool:
      return (
        hasKeys(f, ['tunnel', 'member', 'size']) &&
        isUint(f.tunnel, WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1) &&
        isInstanceId(f.member) &&
        isUint(f.size, 0xffff)
      );
    case FrameType.Health:
      return (
        hasKeys(f, ['tunnel', 'ok', 'detail']) &&
        isUint(f.tunnel, WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1) &&
        typeof f.ok === 'boolean' &&
        isStr(f.detail)
      );
    default:
      return false;
  }
}

const isInstanceId = (v: unknown): boolean =>
  typeof v === 'string' &&
  v.length <= WIRE_LIMITS.MAX_INSTANCE_ID_CHARS &&
  /^[A-Za-z0-9][A-Za-z0-9._:-]*$/.test(v);
const isMemberList = (v: unknown): boolean =>
  Array.isArray(v) &&
  v.length <= WIRE_LIMITS.MAX_MEMBERS &&
  v.every(
    (m: { id?: unknown; url?: unknown; fly?: unknown }) =>
      isInstanceId(m.id) &&
      (m.url === undefined || isStr(m.url)) &&
      (m.fly === undefined || isInstanceId(m.fly)),
  );

/** Outcomes seen by the fuzz oracle, so a test can check that it exercised both paths. */
const outcomes = { decoded: 0, rejected: 0 };

/** The fuzz oracle: a frame of a valid shape, or a FrameError; anything else fails the property. */
function decodesSafely(bytes: Buffer): boolean {
  let frame: Frame;
  try {
    frame = decodeFrame(bytes);
  } catch (err) {
    if (err instanceof FrameError && err.code === 'protocol_error' && Number.isInteger(err.streamId)) {
      outcomes.rejected++;
      return true;
    }
    throw new Error(`decodeFrame threw ${String(err)} for ${bytes.toString('hex').slice(0, 200)}`);
  }
  if (!shapeMatches(frame))
    throw new Error(`bad shape ${JSON.stringify(frame)} from ${bytes.toString('hex').slice(0, 200)}`);
  outcomes.decoded++;
  return true;
}

const tokenArb = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const valueArb = fc.stringMatching(/^[\t\x20-\x7e\x80-\xff]{0,16}$/);
const headersArb = fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 4 }).map((pairs) => pairs.flat());
const idArb = fc.oneof(
  fc.integer({ min: 1, max: 300 }),
  fc.integer({ min: 1, max: WIRE_LIMITS.MAX_STREAM_ID }),
);
const textArb = fc.string({ unit: 'grapheme', maxLength: 12 });
const flowArb = fc
  .record({
    maxData: fc.integer({ min: WIRE_LIMITS.MIN_DATA_BYTES, max: WIRE_LIMITS.MAX_DATA_BYTES }),
    s: fc.integer({ min: 0, max: 1 << 24 }),
    c: fc.integer({ min: 0, max: 1 << 26 }),
  })
  .map(({ maxData, s, c }) => ({ streamWindow: maxData + s, connWindow: maxData + c, maxData }));

/** Any valid frame, so that encode -> decode round-trips and mutations start from realistic bytes. */
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record(
    {
      type: fc.constant(FrameType.Hello),
      version: fc.integer({ min: 0, max: 0xffff }),
      token: textArb,
      name: textArb,
      agent: textArb,
      clientId: textArb,
      flow: flowArb,
      access: fc.record({
        basicAuth: fc.array(textArb, { maxLength: 3 }),
        allowIp: fc.array(textArb, { maxLength: 3 }),
        optionsWithoutAuth: fc.boolean(),
      }),
    },
    // access is optional: absent from the wire when a client sets no rules.
    { requiredKeys: ['type', 'version', 'token', 'name', 'agent', 'clientId', 'flow'] },
  ),
  fc.record({
    type: fc.constant(FrameType.Welcome),
    name: textArb,
    url: textArb,
    flow: flowArb,
    heartbeatMs: fc.integer({ min: 0, max: 3_600_000 }),
    maxStreams: fc.integer({ min: 0, max: WIRE_LIMITS.MAX_STREAM_ID }),
  }),
  fc.record({ type: fc.constant(FrameType.Refuse), code: textArb, message: textArb }),
  fc.record({ type: fc.constant(FrameType.Ping), nonce: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(FrameType.Pong), nonce: fc.maxSafeNat() }),
  fc.record({
    type: fc.constant(FrameType.GoAway),
    code: textArb,
    message: textArb,
    reconnectAfterMs: fc.integer({ min: 0, max: 3_600_000 }),
  }),
  fc.record({
    type: fc.constant(FrameType.Request),
    id: idArb,
    method: tokenArb,
    target: fc.stringMatching(/^\/[\x21-\x7e]{0,20}$/),
    headers: headersArb,
    body: fc.constantFrom(0 as const, 1 as const, 2 as const),
    upgrade: fc.boolean(),
    tunnel: fc.integer({ min: 0, max: 31 }),
  }),
  fc.record({
    type: fc.constant(FrameType.Response),
    id: idArb,
    status: fc.integer({ min: 200, max: 999 }).map((s) => (s === 200 ? 101 : s)),
    reason: valueArb,
    headers: headersArb,
  }),
  fc.record({
    type: fc.constant(FrameType.Info),
    id: idArb,
    status: fc.integer({ min: 100, max: 199 }).filter((s) => s !== 101),
    reason: valueArb,
    headers: headersArb,
  }),
  fc.record({
    type: fc.constant(FrameType.Data),
    id: idArb,
    data: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  }),
  fc.record({ type: fc.constant(FrameType.End), id: idArb, trailers: headersArb }),
  fc.record({ type: fc.constant(FrameType.Reset), id: idArb, code: textArb, message: textArb }),
  fc.record({
    type: fc.constant(FrameType.Window),
    id: fc.oneof(fc.constant(0), idArb),
    increment: fc.integer({ min: 1, max: WIRE_LIMITS.MAX_WINDOW_BYTES }),
  }),
  fc.record({
    type: fc.constant(FrameType.Stats),
    requests: fc.maxSafeNat(),
    bytesIn: fc.maxSafeNat(),
    bytesOut: fc.maxSafeNat(),
    channels: fc.integer({ min: 0, max: WIRE_LIMITS.MAX_STREAM_ID }),
    lastActivityMs: fc.maxSafeNat(),
    tunnel: fc.integer({ min: 0, max: WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION - 1 }),
    refused: fc.maxSafeNat(),
  }),
);

type Mutation =
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'truncate'; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 6 }),
  }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function mutate(bytes: Buffer, mutations: Mutation[]): Buffer {
  let b = Buffer.from(bytes);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    if (m.kind === 'set' && b.length > 0) b[at % b.length] = m.byte;
    else if (m.kind === 'insert') b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
    else if (m.kind === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.count)]);
    else if (m.kind === 'truncate') b = b.subarray(0, at);
  }
  return b;
}

/** Random bytes, often starting like a frame so that they get past the first-byte check. */
const randomBytesArb = fc.oneof(
  fc.uint8Array({ maxLength: 48 }),
  fc
    .tuple(
      fc.integer({ min: 0x91, max: 0x97 }),
      fc.constantFrom(...Object.values(FrameType), 0, 17, 0xcc),
      fc.uint8Array({ maxLength: 48 }),
    )
    .map(([head, type, rest]) => Uint8Array.from([head, type, ...rest])),
);

describe('fuzz', () => {
  it('every valid frame round-trips', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        expect(decodeFrame(encodeFrame(frame))).toEqual(frame);
      }),
      { numRuns: 5_000 },
    );
  });

  it('random bytes decode to a well-shaped frame or a FrameError, never anything else', () => {
    outcomes.decoded = outcomes.rejected = 0;
    fc.assert(
      fc.property(randomBytesArb, (bytes) => decodesSafely(Buffer.from(bytes))),
      { numRuns: 100_000 },
    );
    expect(outcomes.rejected).toBeGreaterThan(50_000);
    expect(outcomes.decoded).toBeGreaterThan(10); // a few random inputs are valid frames (e.g. Pong, Window)
  });

  it('mutated valid frames decode to a well-shaped frame or a FrameError, never anything else', () => {
    outcomes.decoded = outcomes.rejected = 0;
    fc.assert(
      fc.property(frameArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (frame, mutations) =>
        decodesSafely(mutate(encodeFrame(frame), mutations)),
      ),
      { numRuns: 100_000 },
    );
    // Both paths must be exercised: mutations that keep a frame valid reach the field validators' accept side.
    expect(outcomes.rejected).toBeGreaterThan(10_000);
    expect(outcomes.decoded).toBeGreaterThan(1_000);
  });

  it('a failed decode leaves the decoder usable (no state leaks between messages)', () => {
    const good = h(GOLDEN[0]!.hex);
    const digest = createHash('sha256')
      .update(JSON.stringify(decodeFrame(good)))
      .digest('hex');
    fc.assert(
      fc.property(randomBytesArb, (bytes) => {
        try {
          decodeFrame(Buffer.from(bytes));
        } catch {
          // expected for most inputs
        }
        return (
          createHash('sha256')
            .update(JSON.stringify(decodeFrame(good)))
            .digest('hex') === digest
        );
      }),
      { numRuns: 5_000 },
    );
  });
});

describe('Stats frame', () => {
  const stats = {
    requests: 1,
    bytesIn: 2,
    bytesOut: 3,
    channels: 0,
    lastActivityMs: 0,
    tunnel: 0,
    refused: 4,
  };

  it('reads a missing refused count (relays before it) as 0', () => {
    const { refused: _refused, ...older } = stats;
    expect(decodeFrame(raw.pack([FrameType.Stats, older]))).toEqual({
      type: FrameType.Stats,
      ...older,
      refused: 0,
    });
  });

  it('ignores unknown keys and accepts 64-bit counters up to 2^53-1', () => {
    const big = { ...stats, bytesOut: Number.MAX_SAFE_INTEGER, extra: 'x' };
    expect(decodeFrame(raw.pack([FrameType.Stats, big]))).toEqual({
      type: FrameType.Stats,
      ...stats,
      bytesOut: Number.MAX_SAFE_INTEGER,
    });
  });

  it('rejects missing, negative, fractional or out-of-range fields, and a non-map body', () => {
    for (const key of Object.keys(stats)) {
      const missing: Record<string, unknown> = { ...stats };
      delete missing[key];
      if (key !== 'refused') rejects(raw.pack([FrameType.Stats, missing]), 0);
      rejects(raw.pack([FrameType.Stats, { ...stats, [key]: -1 }]), 0);
      rejects(raw.pack([FrameType.Stats, { ...stats, [key]: 1.5 }]), 0);
      rejects(raw.pack([FrameType.Stats, { ...stats, [key]: '1' }]), 0);
    }
    rejects(raw.pack([FrameType.Stats, { ...stats, tunnel: WIRE_LIMITS.MAX_TUNNELS_PER_CONNECTION }]), 0);
    rejects(raw.pack([FrameType.Stats, { ...stats, channels: 2 ** 32 }]), 0);
    rejects(raw.pack([FrameType.Stats, [1, 2, 3, 4, 5, 6]]), 0);
    rejects(raw.pack([FrameType.Stats, stats, 1]), 0);
  });
});
