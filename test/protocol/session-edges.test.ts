// Edge cases of Batch messages and whole small responses: a real Session on one end of a real WebSocket,
// a hand-driven peer on the other (hostile when it needs to be).
import { afterEach, describe, expect, it } from 'vitest';
import { decodeMessage, encodeBatch, encodeData, encodeFrame } from '../../protocol/codec.js';
import { CloseCode, ResetCode, type GgrokError } from '../../protocol/errors.js';
import {
  BodyKind,
  DEFAULT_FLOW,
  FrameType,
  type FlowSettings,
  type Frame,
  type HeaderList,
  type RequestFrame,
  type ResponseFrame,
} from '../../protocol/frames.js';
import { MAX_CONTROL_BACKLOG_BYTES, Session, type SessionOptions } from '../../protocol/session.js';
import type { Stream, StreamHandler } from '../../protocol/stream.js';
import { Cleanup, waitFor } from '../helpers.js';
import { getRequest as get, socketPair } from './socket-pair.js';

const KiB = 1024;

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** What happened to one stream, in order. */
class Watch {
  readonly events: string[] = [];
  bytes = 0;
  response: ResponseFrame | undefined;
  reset: GgrokError | undefined;
  ended = false;
  trailers: HeaderList | undefined;
  stream!: Stream;
  /** The stream's owner: records each event into this watch. */
  readonly handler: StreamHandler = {
    response: (h) => {
      this.response = h;
      this.events.push(`response ${h.status}`);
    },
    data: (chunk) => {
      this.bytes += chunk.length;
      this.events.push(`data ${chunk.length}`);
      if (this.autoAck) this.stream.ack(chunk.length);
    },
    end: (trailers) => {
      this.ended = true;
      this.trailers = trailers;
      this.events.push('end');
    },
    reset: (err) => {
      this.reset = err;
      this.events.push(`reset ${err.code}`);
    },
    drain: () => {},
  };

  constructor(private readonly autoAck = true) {}

  /** A watch owning a stream `session` opens. */
  static open(session: Session, head: Omit<RequestFrame, 'type' | 'id'>, autoAck = true): Watch {
    const w = new Watch(autoAck);
    w.stream = session.openStream(head, w.handler);
    return w;
  }
}

/** A Session (role `role`, announcing `flow` both ways) on the server end; a raw WebSocket on the other. */
async function peerOf(role: 'relay' | 'client', flow: FlowSettings, extra: Partial<SessionOptions> = {}) {
  const { server, client: raw } = await socketPair(cleanup);

  const inbound: Watch[] = [];
  const protocolErrors: { message: string; fatal: boolean }[] = [];
  const closes: { code: number; reason: string }[] = [];
  const session = new Session(server, {
    role,
    localFlow: flow,
    remoteFlow: flow,
    heartbeatMs: 60_000,
    deadAfterMs: 120_000,
    ...extra,
    onRequest: (stream) => {
      const w = new Watch();
      w.stream = stream;
      inbound.push(w);
      return w.handler;
    },
    onProtocolError: (err, fatal) => protocolErrors.push({ message: err.message, fatal }),
    onClose: (info) => closes.push(info),
  });
  cleanup.add(() => session.terminate());

  /** Every frame the session sent, in order, with each Batch unpacked. */
  const received: Frame[] = [];
  /** How many WebSocket messages carried them. */
  let messages = 0;
  /** The frames of each message, in order. */
  const perMessage: Frame[][] = [];
  raw.on('message', (data: Buffer) => {
    messages++;
    const frames = decodeMessage(data);
    perMessage.push(frames);
    received.push(...frames);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    raw.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  );
  const send = (frame: Frame | Buffer): void => {
    raw.send(Buffer.isBuffer(frame) ? frame : encodeFrame(frame));
  };
  /** Everything sent before has been processed, and what the session sent in reply has arrived. */
  const sync = async (nonce: number): Promise<void> => {
    send({ type: FrameType.Ping, nonce });
    await waitFor(
      () => received.some((f) => f.type === FrameType.Pong && f.nonce === nonce),
      `pong ${nonce}`,
    );
  };
  return {
    session,
    inbound,
    protocolErrors,
    closes,
    received,
    messages: () => messages,
    perMessage,
    closed,
    send,
    sync,
  };
}

const post = (id: number): RequestFrame => ({ ...get(id), method: 'POST', body: BodyKind.Length });

/** The frames for stream `id`, without the Pongs and Windows around them. */
const framesFor = (frames: Frame[], id: number): Frame[] =>
  frames.filter((f) => 'id' in f && f.id === id && f.type !== FrameType.Window);

/** A frame encoded as it would be on its own, for hand-built batches. */
const enc = (f: Frame): Buffer => (f.type === FrameType.Data ? encodeData(f.id, f.data) : encodeFrame(f));
const batch = (frames: Frame[]): Buffer => {
  const parts = frames.map(enc);
  return encodeBatch(
    parts,
    parts.reduce((n, p) => n + p.length, 0),
  );
};

describe('whole small responses: the client side', () => {
  it('a body over the stream credit stays out of the head; the rest waits for a Window, and End follows it', async () => {
    const tight: FlowSettings = { streamWindow: 1024, connWindow: 64 * KiB, maxData: 1024 };
    const relay = await peerOf('client', tight);
    relay.send(get(1));
    await waitFor(() => relay.inbound.length === 1, 'the request');
    const { stream } = relay.inbound[0]!;
    stream.respond(200, 'OK', ['Content-Length', '1500']);
    stream.write(Buffer.alloc(1500, 1));
    stream.end();
    await relay.sync(1);
    // Only the stream window (1024) may leave before the relay grants more.
    expect(
      framesFor(relay.received, 1).map((f) => [f.type, f.type === FrameType.Data ? f.data.length : 0]),
    ).toEqual([
      [FrameType.Response, 0],
      [FrameType.Data, 1024],
    ]);
    const headFrame = framesFor(relay.received, 1)[0] as ResponseFrame;
    expect(headFrame.body).toBeUndefined();
    expect(headFrame.end).toBeUndefined();
    relay.send({ type: FrameType.Window, id: 1, increment: 1024 });
    await relay.sync(2);
    expect(
      framesFor(relay.received, 1).map((f) => [f.type, f.type === FrameType.Data ? f.data.length : 0]),
    ).toEqual([
      [FrameType.Response, 0],
      [FrameType.Data, 1024],
      [FrameType.Data, 476],
      [FrameType.End, 0],
    ]);
    expect(relay.session.streams.size).toBe(0);
  });

  it('with the connection window spent by another stream, a small body and End wait behind the head', async () => {
    const tight: FlowSettings = { streamWindow: 4 * KiB, connWindow: 4 * KiB, maxData: 4 * KiB };
    const relay = await peerOf('client', tight);
    relay.send(get(1));
    relay.send(get(2));
    await waitFor(() => relay.inbound.length === 2, 'the requests');
    const [a, b] = relay.inbound.map((w) => w.stream);
    a!.respond(200, 'OK', []);
    a!.write(Buffer.alloc(4 * KiB, 1)); // the whole connection window
    await relay.sync(1);
    b!.respond(200, 'OK', []);
    b!.write(Buffer.from('small'));
    b!.end();
    await relay.sync(2);
    expect(framesFor(relay.received, 2)).toEqual([
      { type: FrameType.Response, id: 2, status: 200, reason: 'OK', headers: [] },
    ]);
    relay.send({ type: FrameType.Window, id: 0, increment: 4 * KiB });
    await relay.sync(3);
    expect(framesFor(relay.received, 2)).toEqual([
      { type: FrameType.Response, id: 2, status: 200, reason: 'OK', headers: [] },
      { type: FrameType.Data, id: 2, data: Buffer.from('small') },
      { type: FrameType.End, id: 2, trailers: [] },
    ]);
  });

  it('twenty responses written in one turn leave in order, as batches of at most 8 frames', async () => {
    const relay = await peerOf('client', DEFAULT_FLOW);
    const ids = Array.from({ length: 20 }, (_, i) => 2 * i + 1);
    relay.send(batch(ids.map(get)));
    await waitFor(() => relay.inbound.length === 20, 'the requests');
    for (const { stream } of relay.inbound) {
      stream.respond(200, 'OK', ['Content-Length', '2']);
      stream.write(Buffer.from('ok'));
      stream.end();
    }
    await relay.sync(1);
    const carrying = relay.perMessage
      .map((m) => m.filter((f): f is ResponseFrame => f.type === FrameType.Response))
      .filter((m) => m.length > 0);
    // Whole responses, one frame each, in the order written; a batch closes at 8 frames, not at the end of the turn.
    expect(carrying.map((m) => m.length)).toEqual([8, 8, 4]);
    expect(relay.perMessage.every((m) => m.length <= 8)).toBe(true);
    const heads = carrying.flat();
    expect(heads.map((f) => f.id)).toEqual(ids);
    expect(heads.every((f) => f.end && f.body?.toString() === 'ok')).toBe(true);
  });

  it('a stream reset in the turn of its head sends no body, no End and no Data after the Reset', async () => {
    const relay = await peerOf('client', DEFAULT_FLOW);
    relay.send(get(1));
    await waitFor(() => relay.inbound.length === 1, 'the request');
    const { stream } = relay.inbound[0]!;
    stream.respond(200, 'OK', []);
    stream.write(Buffer.from('partial'));
    stream.reset(ResetCode.LocalError, 'local service died');
    await relay.sync(1);
    const frames = framesFor(relay.received, 1);
    expect(frames.some((f) => f.type === FrameType.Data || f.type === FrameType.End)).toBe(false);
    expect(frames.some((f) => f.type === FrameType.Response && (f.body?.length || f.end))).toBe(false);
    expect(frames.at(-1)).toMatchObject({ type: FrameType.Reset, id: 1, code: ResetCode.LocalError });
  });

  it('a Batch with frames for finished streams and a bad frame for an open one: each handled alone, in order', async () => {
    const relay = await peerOf('client', DEFAULT_FLOW);
    relay.send(post(1));
    relay.send({ type: FrameType.Reset, id: 1, code: ResetCode.Cancel, message: '' });
    relay.send(post(2));
    relay.send(post(3));
    await relay.sync(1);
    const [, two, three] = relay.inbound;
    const badData = encodeData(2, Buffer.from('xyz')).subarray(0, 5); // its length does not match
    const parts = [
      enc({ type: FrameType.Data, id: 1, data: Buffer.from('late') }), // finished stream: dropped
      enc({ type: FrameType.End, id: 1, trailers: [] }), // finished stream: dropped
      badData, // open stream 2: that stream is reset
      enc({ type: FrameType.Data, id: 3, data: Buffer.from('ok') }),
      enc({ type: FrameType.End, id: 3, trailers: ['X-T', '1'] }),
    ];
    relay.send(
      encodeBatch(
        parts,
        parts.reduce((n, p) => n + p.length, 0),
      ),
    );
    await relay.sync(2);
    expect(two!.events).toEqual([`reset ${ResetCode.ProtocolError}`]);
    expect(three!.events).toEqual(['data 2', 'end']);
    expect(three!.trailers).toEqual(['X-T', '1']);
    expect(relay.session.closed).toBe(false);
    expect(relay.protocolErrors.map((e) => e.fatal)).toEqual([false]);
  });

  it('a Batch naming a never-opened stream closes the session, and the frames after it are not handled', async () => {
    const relay = await peerOf('client', DEFAULT_FLOW);
    relay.send(post(1));
    await relay.sync(1);
    relay.send(
      batch([
        { type: FrameType.Data, id: 1, data: Buffer.from('a') },
        { type: FrameType.Data, id: 9, data: Buffer.from('b') },
        { type: FrameType.Data, id: 1, data: Buffer.from('c') },
      ]),
    );
    const closed = await relay.closed;
    expect(closed.code).toBe(CloseCode.ProtocolError);
    expect(closed.reason).toMatch(/never opened/);
    await waitFor(() => relay.inbound[0]!.reset !== undefined, 'the stream to be reset');
    expect(relay.inbound[0]!.events).toEqual(['data 1', `reset ${ResetCode.TunnelClosed}`]);
  });
});

describe('whole small responses: the relay side, from a hostile client', () => {
  const flow: FlowSettings = { streamWindow: 8 * KiB, connWindow: 64 * KiB, maxData: 4 * KiB };
  const whole = (id: number, body: Buffer, end: boolean): Buffer =>
    encodeFrame({ type: FrameType.Response, id, status: 200, reason: 'OK', headers: [], body, end });

  it('a body larger than maxData in a Response is fatal, as a Data frame that large would be', async () => {
    const client = await peerOf('relay', flow);
    const w = Watch.open(client.session, { ...get(0), tunnel: 0 });
    client.send(whole(w.stream.id, Buffer.alloc(4 * KiB + 1), true));
    const closed = await client.closed;
    expect(closed.code).toBe(CloseCode.ProtocolError);
    expect(closed.reason).toMatch(/over the limit/);
  });

  it('bodies carried in Response heads count against the connection window like Data', async () => {
    // 64 KiB connection window, nothing consumed: the 17th 4 KiB body is over it.
    const client = await peerOf('relay', flow, { bufferedSoftLimit: 0 });
    const watches: Watch[] = [];
    for (let i = 0; i < 16; i++) {
      const w = Watch.open(client.session, { ...get(0), tunnel: 0 }, false);
      watches.push(w);
      client.send(whole(w.stream.id, Buffer.alloc(4 * KiB, i), false));
    }
    await client.sync(1);
    expect(client.session.closed).toBe(false);
    expect(watches.every((w) => w.bytes === 4 * KiB)).toBe(true);
    const last = Watch.open(client.session, { ...get(0), tunnel: 0 }, false);
    client.send(whole(last.stream.id, Buffer.alloc(1), true));
    const closed = await client.closed;
    expect(closed.code).toBe(CloseCode.ProtocolError);
    expect(closed.reason).toMatch(/connection window/);
  });

  it('a whole Response whose body overruns the stream window resets the stream, not the session', async () => {
    const client = await peerOf('relay', flow);
    const a = Watch.open(client.session, { ...get(0), tunnel: 0 }, false);
    client.send(
      encodeFrame({ type: FrameType.Response, id: a.stream.id, status: 200, reason: 'OK', headers: [] }),
    );
    client.send(encodeData(a.stream.id, Buffer.alloc(4 * KiB)));
    client.send(encodeData(a.stream.id, Buffer.alloc(4 * KiB)));
    await client.sync(1);
    const b = Watch.open(client.session, { ...get(0), tunnel: 0 }, false);
    client.send(whole(b.stream.id, Buffer.alloc(4 * KiB), false));
    client.send(encodeData(b.stream.id, Buffer.alloc(4 * KiB)));
    client.send(encodeData(b.stream.id, Buffer.alloc(1))); // one byte over b's window
    await client.sync(2);
    expect(b.events).toEqual(['response 200', 'data 4096', 'data 4096', `reset ${ResetCode.ProtocolError}`]);
    expect(client.session.closed).toBe(false);
    expect(client.protocolErrors.every((e) => !e.fatal)).toBe(true);
  });

  it('bodies of whole Responses for streams already gone still give their connection credit back', async () => {
    // 64 KiB connection window, 4 KiB bodies: 40 of them (160 KiB) only fit if each one's credit comes back.
    const client = await peerOf('relay', flow, { bufferedSoftLimit: 0 });
    for (let i = 0; i < 40; i++) {
      const w = Watch.open(client.session, { ...get(0), tunnel: 0 }, false);
      w.stream.reset(ResetCode.Cancel, 'public client went away');
      client.send(whole(w.stream.id, Buffer.alloc(4 * KiB, i), true));
    }
    await client.sync(1);
    expect(client.session.closed).toBe(false);
    expect(client.protocolErrors).toEqual([]);
  });
});

describe('replies a peer can trigger are bounded (a peer that talks but never reads)', () => {
  it('Pings that arrive while a Pong is owed are answered by one Pong: the latest', async () => {
    const client = await peerOf('relay', DEFAULT_FLOW);
    // 200 messages of 1 000 Pings each: one Pong at most per message read, never one per Ping.
    const pings = Array.from({ length: 1000 }, (_, i) => ({ type: FrameType.Ping, nonce: i + 1 }) as const);
    for (let m = 0; m < 200; m++) client.send(batch(pings));
    await client.sync(5000);
    const pongs = client.received.filter((f) => f.type === FrameType.Pong);
    expect(pongs.length).toBeLessThanOrEqual(201);
    expect(pongs.at(-1)).toMatchObject({ nonce: 5000 });
    expect(client.session.closed).toBe(false);
  });

  it('control frames piling up unsent past MAX_CONTROL_BACKLOG_BYTES close the session (4005), not the process', async () => {
    const { server, client: raw } = await socketPair(cleanup);
    raw.pause(); // the peer never reads again
    const closes: { code: number; reason: string }[] = [];
    const session = new Session(server, {
      role: 'relay',
      localFlow: DEFAULT_FLOW,
      remoteFlow: DEFAULT_FLOW,
      heartbeatMs: 60_000,
      deadAfterMs: 120_000,
      onClose: (info) => closes.push(info),
    });
    cleanup.add(() => session.terminate());
    const big: HeaderList = ['X-Big', 'x'.repeat(60 * KiB)];
    // Far more request heads than the socket and its kernel buffers hold: the rest waits in the session's queue.
    for (let i = 0; i < (2 * MAX_CONTROL_BACKLOG_BYTES) / (60 * KiB) && !session.closed; i++) {
      session.openStream({ ...get(0), headers: big, tunnel: 0 }, new Watch().handler);
      if (i % 50 === 49) await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => closes.length > 0, 'the session to close');
    expect(closes[0]).toMatchObject({ code: CloseCode.Overloaded });
    expect(session.streams.size).toBe(0);
  });
});
