// Two real sessions (or a session and a hand-driven hostile peer) over a real WebSocket on 127.0.0.1.
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type WebSocket from 'ws';
import { decodeMessage, encodeData, encodeFrame } from '../../protocol/codec.js';
import { CloseCode, ResetCode, type GgrokError } from '../../protocol/errors.js';
import {
  BodyKind,
  DEFAULT_FLOW,
  FrameType,
  PROTOCOL_VERSION,
  type FlowSettings,
  type Frame,
  type GoAwayFrame,
  type HeaderList,
  type InfoFrame,
  type RequestFrame,
  type ResponseFrame,
} from '../../protocol/frames.js';
import { Session, type SessionOptions } from '../../protocol/session.js';
import type { Stream, StreamHandler } from '../../protocol/stream.js';
import { Cleanup, waitFor } from '../helpers.js';
import { getRequest as get, socketPair } from './socket-pair.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Records everything that happens to one stream; acks received bytes at once or when told to. */
class Receiver {
  /** The stream this receiver owns (set when it is opened, or when the peer opened it). */
  stream!: Stream;
  /** What drain() does: writeAll() sets it to continue writing. */
  onDrain: () => void = () => {};
  bytes = 0;
  unacked = 0;
  ended = false;
  trailers: HeaderList | undefined;
  reset: GgrokError | undefined;
  response: ResponseFrame | undefined;
  infos: InfoFrame[] = [];
  private readonly hash = createHash('sha256');

  /** The stream's owner: records everything into this receiver. */
  readonly handler: StreamHandler = {
    data: (chunk) => {
      this.bytes += chunk.length;
      this.hash.update(chunk);
      if (this.autoAck) this.stream.ack(chunk.length);
      else this.unacked += chunk.length;
    },
    end: (trailers) => {
      this.ended = true;
      this.trailers = trailers;
      this.log.push(`end ${this.stream.id}`);
    },
    reset: (err) => {
      this.reset = err;
      this.log.push(`reset ${this.stream.id} ${err.code}`);
    },
    response: (head) => (this.response = head),
    info: (head) => this.infos.push(head),
    drain: () => this.onDrain(),
  };

  constructor(
    public autoAck: boolean,
    private readonly log: string[] = [],
    readonly head?: RequestFrame,
  ) {}

  /** Passes `n` received bytes on (all unacknowledged ones by default). */
  ack(n = this.unacked): void {
    this.unacked -= n;
    this.stream.ack(n);
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

interface Side {
  session: Session;
  /** Streams the peer opened, each already wired to a Receiver (synchronously, so no Data is missed). */
  inbound: Receiver[];
  /** Whether new inbound streams ack automatically. */
  autoAck: boolean;
  closes: { code: number; reason: string }[];
  protocolErrors: { err: GgrokError; fatal: boolean }[];
  goAways: GoAwayFrame[];
  log: string[];
}

const QUIET = { heartbeatMs: 60_000, deadAfterMs: 120_000 };

function attach(
  ws: WebSocket,
  role: 'relay' | 'client',
  flow: FlowSettings,
  extra: Partial<SessionOptions> = {},
): Side {
  const inbound: Receiver[] = [];
  const closes: Side['closes'] = [];
  const protocolErrors: Side['protocolErrors'] = [];
  const goAways: GoAwayFrame[] = [];
  const log: string[] = [];
  const session = new Session(ws, {
    role,
    localFlow: flow,
    remoteFlow: flow,
    ...QUIET,
    ...extra,
    onRequest: (stream, head) => {
      const rx = new Receiver(side.autoAck, log, head);
      rx.stream = stream;
      inbound.push(rx);
      return rx.handler;
    },
    onClose: (info) => closes.push(info),
    onProtocolError: (err, fatal) => protocolErrors.push({ err, fatal }),
    onGoAway: (frame) => goAways.push(frame),
  });
  const side: Side = { session, inbound, autoAck: true, closes, protocolErrors, goAways, log };
  cleanup.add(() => session.terminate());
  return side;
}

/** A relay session (server end) and a client session (client end) on one socket, both announcing `flow`. */
async function sessionPair(
  options: { flow?: FlowSettings; relay?: Partial<SessionOptions>; client?: Partial<SessionOptions> } = {},
): Promise<{ relay: Side; client: Side; sockets: { server: WebSocket; client: WebSocket } }> {
  const sockets = await socketPair(cleanup);
  const flow = options.flow ?? DEFAULT_FLOW;
  return {
    relay: attach(sockets.server, 'relay', flow, options.relay),
    client: attach(sockets.client, 'client', flow, options.client),
    sockets,
  };
}

const head = (target = '/', upgrade = false): Omit<RequestFrame, 'type' | 'id'> => ({
  method: 'POST',
  target,
  headers: ['Host', 'demo.example.com'],
  body: upgrade ? BodyKind.None : BodyKind.Chunked,
  upgrade,
  tunnel: 0,
});

/** Opens a stream from `side` (a relay) owned by a new Receiver. */
function open(
  side: Side,
  h: Omit<RequestFrame, 'type' | 'id'>,
  autoAck = true,
  log: string[] = [],
): Receiver {
  const rx = new Receiver(autoAck, log);
  rx.stream = side.session.openStream(h, rx.handler);
  return rx;
}

/** A small deterministic PRNG, so chunk patterns are reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Writes `data` in chunks, honouring write()'s backpressure, then ends the stream (with `trailers`). */
function writeAll(
  rx: Receiver,
  data: Buffer,
  options: { maxChunk?: number; seed?: number; trailers?: HeaderList; end?: boolean } = {},
): Promise<void> {
  const rnd = prng(options.seed ?? 1);
  const maxChunk = options.maxChunk ?? 100 * KiB;
  const stream = rx.stream;
  return new Promise((resolve) => {
    let at = 0;
    const pump = (): void => {
      while (at < data.length) {
        const n = Math.min(data.length - at, 1 + Math.floor(rnd() * maxChunk));
        const ok = stream.write(data.subarray(at, at + n));
        at += n;
        if (!ok) return;
      }
      rx.onDrain = () => {};
      if (options.end !== false) stream.end(options.trailers);
      resolve();
    };
    rx.onDrain = pump;
    pump();
  });
}

/** Sends a ping from `side` and waits for its pong: every frame `side` sent before has reached the peer. */
async function roundTrip(side: Side): Promise<void> {
  side.session.rttMs = -1;
  side.session.ping();
  await waitFor(() => side.session.rttMs >= 0, 'a pong', 15_000);
}

/**
 * Two round trips from the sender: the first makes sure the receiver's Window frames were processed by the sender,
 * the second that whatever Data the sender sent in response has been processed by the receiver.
 */
async function settle(sender: Side): Promise<void> {
  await roundTrip(sender);
  await roundTrip(sender);
}

describe('data transfer', () => {
  it('delivers 5 MiB each way on one stream, in order and complete', async () => {
    const { relay, client } = await sessionPair();
    const up = randomBytes(5 * MiB);
    const down = randomBytes(5 * MiB);
    const relayRx = open(relay, head('/upload'));
    const rs = relayRx.stream;
    const uploading = writeAll(relayRx, up, { seed: 7, trailers: ['X-Sum', sha256(up)] });
    await waitFor(() => client.inbound.length === 1, 'the request');
    const clientRx = client.inbound[0]!;
    expect(clientRx.head).toEqual({ type: FrameType.Request, id: rs.id, ...head('/upload') });
    clientRx.stream.respond(200, 'OK', ['Content-Type', 'application/octet-stream']);
    const downloading = writeAll(clientRx, down, { seed: 11, maxChunk: 300 * KiB });
    await Promise.all([uploading, downloading]);
    await waitFor(() => relayRx.ended && clientRx.ended, 'both ends', 30_000);

    expect(clientRx.bytes).toBe(up.length);
    expect(clientRx.digest()).toBe(sha256(up));
    expect(clientRx.trailers).toEqual(['X-Sum', sha256(up)]);
    expect(relayRx.response).toEqual({
      type: FrameType.Response,
      id: rs.id,
      status: 200,
      reason: 'OK',
      headers: ['Content-Type', 'application/octet-stream'],
    });
    expect(relayRx.bytes).toBe(down.length);
    expect(relayRx.digest()).toBe(sha256(down));
    expect(relayRx.reset).toBeUndefined();
    expect(clientRx.reset).toBeUndefined();
    // End both ways completes the stream on both sides.
    expect(relay.session.streams.size).toBe(0);
    expect(client.session.streams.size).toBe(0);
    expect(relay.session.stats).toMatchObject({
      dataBytesOut: up.length,
      dataBytesIn: down.length,
      streamsOpened: 1,
    });
    expect(client.session.stats).toMatchObject({
      dataBytesOut: down.length,
      dataBytesIn: up.length,
      streamsOpened: 1,
    });
    expect(relay.closes).toEqual([]);
    expect(relay.protocolErrors).toEqual([]);
    expect(client.protocolErrors).toEqual([]);
  });

  it('assigns increasing stream ids and keeps many concurrent streams apart', async () => {
    const { relay, client } = await sessionPair();
    const bodies = Array.from({ length: 20 }, (_, i) => randomBytes(10 * KiB + i * 3001));
    const senders = bodies.map((_, i) => open(relay, head(`/s${i}`)));
    expect(senders.map((s) => s.stream.id)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    await Promise.all(senders.map((s, i) => writeAll(s, bodies[i]!, { seed: i + 1, maxChunk: 7 * KiB })));
    await waitFor(
      () => client.inbound.length === 20 && client.inbound.every((r) => r.ended),
      'all streams',
      30_000,
    );
    for (const rx of client.inbound) {
      const i = Number(rx.head!.target.slice(2));
      expect(rx.stream.id).toBe(i + 1);
      expect(rx.digest()).toBe(sha256(bodies[i]!));
    }
  });

  it('passes Info heads before the Response, and empty bodies end cleanly', async () => {
    const { relay, client } = await sessionPair();
    const rx = open(relay, head('/empty'), true, relay.log);
    const rs = rx.stream;
    rs.end();
    await waitFor(() => client.inbound[0]?.ended === true, 'the request end');
    const cs = client.inbound[0]!.stream;
    cs.inform(103, 'Early Hints', ['Link', '</a.css>; rel=preload']);
    cs.respond(204, 'No Content', []);
    cs.end(['X-Trailer', 'yes']);
    await waitFor(() => rx.ended, 'the response end');
    expect(rx.infos.map((i) => i.status)).toEqual([103]);
    expect(rx.response?.status).toBe(204);
    expect(rx.bytes).toBe(0);
    expect(rx.trailers).toEqual(['X-Trailer', 'yes']);
    expect(relay.session.streams.size).toBe(0);
    expect(client.session.streams.size).toBe(0);
  });
});

describe('flow control', () => {
  const W = 64 * KiB;
  const SMALL: FlowSettings = { streamWindow: W, connWindow: 1 * MiB, maxData: 16 * KiB };

  it('a sender stops after exactly the stream window when nothing is acked, and resumes in quarter-window steps', async () => {
    const { relay, client } = await sessionPair({ flow: SMALL });
    client.autoAck = false;
    const data = randomBytes(3 * W);
    const rs = open(relay, head()).stream;
    rs.write(data); // queue it all at once, past the drain mark, so the window alone limits what is sent
    rs.end();
    await waitFor(() => client.inbound[0]?.bytes === W, 'one window of data');
    const rx = client.inbound[0]!;
    await settle(relay);
    expect(rx.bytes).toBe(W);
    expect(rs.sendWindow.available).toBe(0);
    expect(rs.out.bytes).toBe(2 * W); // the rest stays queued on the sender
    expect(rx.ended).toBe(false);

    // Credit goes back in batches of a quarter window of consumed bytes.
    rx.ack(W / 4 - 1);
    await settle(relay);
    expect(rx.bytes).toBe(W);
    rx.ack(1);
    await waitFor(() => rx.bytes === W + W / 4, 'a quarter window more');
    await settle(relay);
    expect(rx.bytes).toBe(W + W / 4);
    expect(rs.out.bytes).toBe(2 * W - W / 4);

    rx.autoAck = true;
    rx.ack();
    await waitFor(() => rx.ended, 'the rest');
    expect(rx.bytes).toBe(3 * W);
    expect(rx.digest()).toBe(sha256(data));
  });

  it('the connection window caps the sum over streams when received bytes are not consumed', async () => {
    const flow: FlowSettings = { streamWindow: W, connWindow: 160 * KiB, maxData: 16 * KiB };
    // bufferedSoftLimit 0: connection credit comes back only when bytes are consumed.
    const { relay, client } = await sessionPair({ flow, client: { bufferedSoftLimit: 0 } });
    client.autoAck = false;
    const bodies = Array.from({ length: 4 }, () => randomBytes(W));
    const streams = bodies.map(() => open(relay, head()).stream);
    streams.forEach((s, i) => {
      s.write(bodies[i]!);
      s.end();
    });
    const total = (): number => client.inbound.reduce((n, r) => n + r.bytes, 0);
    await waitFor(() => total() === flow.connWindow, 'one connection window');
    await settle(relay);
    expect(total()).toBe(flow.connWindow);
    for (const rx of client.inbound) expect(rx.bytes).toBeLessThanOrEqual(W);
    expect(streams.reduce((n, s) => n + s.out.bytes, 0)).toBe(4 * W - flow.connWindow);

    for (const rx of client.inbound) {
      rx.autoAck = true;
      rx.ack();
    }
    await waitFor(() => client.inbound.length === 4 && client.inbound.every((r) => r.ended), 'all streams');
    client.inbound.forEach((rx, i) => expect(rx.digest()).toBe(sha256(bodies[i]!)));
  });

  it('below the buffered soft limit, connection credit is returned on receipt; above it, only on consumption', async () => {
    const flow: FlowSettings = { streamWindow: W, connWindow: 160 * KiB, maxData: 16 * KiB };
    const softLimit = 100 * KiB;
    const { relay, client } = await sessionPair({ flow, client: { bufferedSoftLimit: softLimit } });
    client.autoAck = false;
    const bodies = Array.from({ length: 6 }, () => randomBytes(W));
    bodies.forEach((b) => void writeAll(open(relay, head()), b));
    const total = (): number => client.inbound.reduce((n, r) => n + r.bytes, 0);
    // 16 KiB frames: the first 6 (96 KiB <= soft limit) give their credit back on receipt, the rest hold it.
    const expected = 6 * 16 * KiB + flow.connWindow;
    await waitFor(() => total() === expected, 'the soft limit plus one connection window');
    await settle(relay);
    expect(total()).toBe(expected);
    expect(total()).toBeGreaterThan(flow.connWindow);
    expect(total()).toBeLessThanOrEqual(softLimit + flow.connWindow);

    for (const rx of client.inbound) {
      rx.autoAck = true;
      rx.ack();
    }
    await waitFor(() => client.inbound.length === 6 && client.inbound.every((r) => r.ended), 'all streams');
    client.inbound.forEach((rx, i) => expect(rx.digest()).toBe(sha256(bodies[i]!)));
  });

  it('a small stream is not stuck behind a big one whose receiver acks slowly', async () => {
    const { relay, client } = await sessionPair();
    client.autoAck = false;
    const big = randomBytes(4 * MiB);
    const a = open(relay, head('/big'));
    void writeAll(a, big, { maxChunk: 256 * KiB });
    await waitFor(
      () => client.inbound[0]?.bytes === DEFAULT_FLOW.streamWindow,
      'the big stream to fill its window',
    );
    const bigRx = client.inbound[0]!;
    // From now on the receiver passes on 32 KiB every 5 ms: about 6 MB/s, so 4 MiB take most of a second.
    const slowAcks = setInterval(() => bigRx.unacked > 0 && bigRx.ack(Math.min(bigRx.unacked, 32 * KiB)), 5);
    cleanup.add(() => clearInterval(slowAcks));

    const small = randomBytes(1 * KiB);
    client.autoAck = true;
    const b = open(relay, head('/small'));
    void writeAll(b, small);
    await waitFor(() => client.inbound[1]?.ended === true, 'the small stream');
    const smallRx = client.inbound[1]!;
    expect(smallRx.digest()).toBe(sha256(small));
    expect(bigRx.ended).toBe(false);
    expect(bigRx.bytes).toBeLessThan(big.length);

    await waitFor(() => bigRx.ended, 'the big stream', 30_000);
    expect(bigRx.digest()).toBe(sha256(big));
    expect(client.log).toEqual([`end ${b.stream.id}`, `end ${a.stream.id}`]);
  });

  it('round-robin: with full credit, a small stream opened after a big one still finishes first', async () => {
    const { relay, client } = await sessionPair();
    const big = randomBytes(8 * MiB);
    const small = randomBytes(2 * KiB);
    const a = open(relay, head('/big')).stream;
    a.write(big); // queue everything at once; the writer must still interleave
    a.end();
    const b = open(relay, head('/small')).stream;
    b.write(small);
    b.end();
    await waitFor(
      () => client.inbound.length === 2 && client.inbound.every((r) => r.ended),
      'both streams',
      30_000,
    );
    expect(client.log).toEqual([`end ${b.id}`, `end ${a.id}`]);
    expect(client.inbound[0]!.digest()).toBe(sha256(big));
    expect(client.inbound[1]!.digest()).toBe(sha256(small));
  });
});

describe('stream lifecycle', () => {
  it('a Reset from the relay reaches the client with its code and removes the stream on both sides', async () => {
    const { relay, client } = await sessionPair();
    const relayRx = open(relay, head(), true, relay.log);
    const rs = relayRx.stream;
    rs.write(Buffer.from('partial'));
    await waitFor(() => client.inbound[0]?.bytes === 7, 'some data');
    expect(relay.session.streams.has(rs.id)).toBe(true);
    expect(client.session.streams.has(rs.id)).toBe(true);
    rs.reset(ResetCode.Cancel, 'public client went away');
    expect(relay.session.streams.has(rs.id)).toBe(false);
    await waitFor(() => client.inbound[0]!.reset !== undefined, 'the reset');
    expect(client.inbound[0]!.reset).toMatchObject({ code: 'cancel', message: 'public client went away' });
    expect(client.session.streams.has(rs.id)).toBe(false);
    // The side that resets is not told about its own reset.
    expect(relayRx.reset).toBeUndefined();
    // Writes after a reset go nowhere.
    rs.write(Buffer.from('more'));
    expect(rs.out.bytes).toBe(0);
    await settle(relay);
    expect(client.inbound[0]!.bytes).toBe(7);
    expect(relay.protocolErrors).toEqual([]);
    expect(client.protocolErrors).toEqual([]);
  });

  it('a Reset from the client reaches the relay, and the session carries on', async () => {
    const { relay, client } = await sessionPair();
    const relayRx = open(relay, head(), true, relay.log);
    const rs = relayRx.stream;
    await waitFor(() => client.inbound.length === 1, 'the request');
    client.inbound[0]!.stream.reset(ResetCode.LocalUnreachable, 'connect ECONNREFUSED 127.0.0.1:3000');
    await waitFor(() => relayRx.reset !== undefined, 'the reset');
    expect(relayRx.reset).toMatchObject({
      code: 'local_unreachable',
      message: 'connect ECONNREFUSED 127.0.0.1:3000',
    });
    expect(relay.session.streams.size).toBe(0);
    expect(client.session.streams.size).toBe(0);

    const next = open(relay, head('/next')).stream;
    next.end();
    await waitFor(() => client.inbound[1]?.ended === true, 'a second stream');
    expect(next.id).toBe(rs.id + 1);
  });

  it('a stream over maxInboundStreams is refused with refused_stream', async () => {
    const { relay, client } = await sessionPair({ client: { maxInboundStreams: 1 } });
    const first = open(relay, head('/1'));
    const second = open(relay, head('/2'));
    await waitFor(() => second.reset !== undefined, 'the refusal');
    expect(second.reset?.code).toBe(ResetCode.RefusedStream);
    expect(first.reset).toBeUndefined();
    expect(client.inbound.map((r) => r.head!.target)).toEqual(['/1']);
    expect(relay.session.streams.has(second.stream.id)).toBe(false);
  });

  it('GoAway reaches the peer without closing anything', async () => {
    const { relay, client } = await sessionPair();
    relay.session.goAway('relay_shutting_down', 'bye', 1500);
    await waitFor(() => client.goAways.length === 1, 'the GoAway');
    expect(client.goAways[0]).toEqual({
      type: FrameType.GoAway,
      code: 'relay_shutting_down',
      message: 'bye',
      reconnectAfterMs: 1500,
    });
    await roundTrip(relay);
    expect(client.closes).toEqual([]);
  });

  it('close() closes both ends with code 1000 and resets open streams as tunnel_closed', async () => {
    const { relay, client } = await sessionPair();
    const rx = open(relay, head());
    await waitFor(() => client.inbound.length === 1, 'the request');
    client.session.close(CloseCode.Normal, 'client closed');
    await waitFor(() => relay.closes.length === 1 && client.closes.length === 1, 'both closes');
    expect(relay.closes[0]).toEqual({ code: CloseCode.Normal, reason: 'client closed' });
    expect(client.closes[0]!.code).toBe(CloseCode.Normal);
    expect(rx.reset?.code).toBe(ResetCode.TunnelClosed);
    expect(client.inbound[0]!.reset?.code).toBe(ResetCode.TunnelClosed);
    expect(relay.session.streams.size).toBe(0);
    expect(client.session.streams.size).toBe(0);
    expect(relay.session.closed).toBe(true);
  });
});

/** A session under test on the server end, driven by a raw WebSocket client that sends hand-encoded frames. */
async function hostilePeer(
  role: 'relay' | 'client',
  flow: FlowSettings,
  extra: Partial<SessionOptions> = {},
) {
  const sockets = await socketPair(cleanup);
  const side = attach(sockets.server, role, flow, extra);
  const raw = sockets.client;
  const received: Frame[] = [];
  raw.on('message', (data: Buffer) => received.push(...decodeMessage(data)));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    raw.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  );
  const send = (frame: Frame | Buffer | string): void => {
    raw.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : encodeFrame(frame));
  };
  /** Pings the session and waits for the pong: everything sent before was processed. */
  const sync = async (nonce: number): Promise<void> => {
    send({ type: FrameType.Ping, nonce });
    await waitFor(
      () => received.some((f) => f.type === FrameType.Pong && f.nonce === nonce),
      `pong ${nonce}`,
    );
  };
  return { side, raw, received, closed, send, sync };
}

const request = (id: number, upgrade = false): RequestFrame => ({
  type: FrameType.Request,
  id,
  ...head(`/r${id}`, upgrade),
});

describe('small responses travel whole', () => {
  const framesFor = (frames: Frame[], id: number): Frame[] => frames.filter((f) => 'id' in f && f.id === id);

  it('head, a small body and End written in one turn leave as one Response frame', async () => {
    const peer = await hostilePeer('client', DEFAULT_FLOW);
    peer.send(get(1));
    await waitFor(() => peer.side.inbound.length === 1, 'the request');
    const { stream } = peer.side.inbound[0]!;
    stream.respond(200, 'OK', ['Content-Length', '5']);
    stream.write(Buffer.from('hel'));
    stream.write(Buffer.from('lo'));
    stream.end();
    await peer.sync(1);
    expect(framesFor(peer.received, 1)).toEqual([
      {
        type: FrameType.Response,
        id: 1,
        status: 200,
        reason: 'OK',
        headers: ['Content-Length', '5'],
        body: Buffer.from('hello'),
        end: true,
      },
    ]);
    expect(peer.side.session.streams.size).toBe(0);
  });

  it('a large body, trailers, or a body written in a later turn keep their own frames, in order', async () => {
    const peer = await hostilePeer('client', DEFAULT_FLOW);
    for (const id of [1, 2, 3]) peer.send(get(id));
    await waitFor(() => peer.side.inbound.length === 3, 'the requests');
    const [large, trailed, later] = peer.side.inbound.map((r) => r.stream);
    large!.respond(200, 'OK', []);
    large!.write(Buffer.alloc(20 * KiB, 7));
    large!.end();
    trailed!.respond(200, 'OK', []);
    trailed!.write(Buffer.from('x'));
    trailed!.end(['X-Sum', '1']);
    later!.respond(204, 'No Content', []);
    await peer.sync(1);
    later!.end();
    await peer.sync(2);
    expect(
      framesFor(peer.received, 1).map((f) => [f.type, f.type === FrameType.Response && f.body !== undefined]),
    ).toEqual([
      [FrameType.Response, false],
      [FrameType.Data, false],
      [FrameType.End, false],
    ]);
    expect(framesFor(peer.received, 2)).toEqual([
      {
        type: FrameType.Response,
        id: 2,
        status: 200,
        reason: 'OK',
        headers: [],
        body: Buffer.from('x'),
        end: false,
      },
      { type: FrameType.End, id: 2, trailers: ['X-Sum', '1'] },
    ]);
    expect(framesFor(peer.received, 3)).toEqual([
      { type: FrameType.Response, id: 3, status: 204, reason: 'No Content', headers: [] },
      { type: FrameType.End, id: 3, trailers: [] },
    ]);
  });

  it('a relay session turns a whole Response back into head, data and end for the stream', async () => {
    const { relay, client } = await sessionPair();
    const rx = open(relay, { ...head('/x', false), method: 'GET', body: BodyKind.None });
    await waitFor(() => client.inbound.length === 1, 'the request');
    const { stream } = client.inbound[0]!;
    stream.respond(200, 'OK', ['A', 'b']);
    stream.write(Buffer.from('payload'));
    stream.end();
    await waitFor(() => rx.ended, 'the end');
    expect([rx.response?.status, rx.bytes, rx.trailers]).toEqual([200, 7, []]);
    expect(relay.session.streams.size).toBe(0);
  });
});

describe('a hostile peer', () => {
  const flow: FlowSettings = { streamWindow: 32 * KiB, connWindow: 1 * MiB, maxData: 16 * KiB };

  it('overrunning a stream window gets that stream reset with protocol_error; the session stays up', async () => {
    const peer = await hostilePeer('client', flow);
    peer.side.autoAck = false;
    peer.send(request(1));
    peer.send(encodeData(1, Buffer.alloc(16 * KiB, 1)));
    peer.send(encodeData(1, Buffer.alloc(16 * KiB, 2)));
    peer.send(encodeData(1, Buffer.from([3]))); // one byte over the window
    await waitFor(() => peer.received.some((f) => f.type === FrameType.Reset), 'a Reset');
    expect(peer.received.find((f) => f.type === FrameType.Reset)).toMatchObject({
      type: FrameType.Reset,
      id: 1,
      code: ResetCode.ProtocolError,
    });
    const rx = peer.side.inbound[0]!;
    expect(rx.bytes).toBe(32 * KiB);
    expect(rx.reset?.code).toBe(ResetCode.ProtocolError);
    expect(peer.side.session.streams.has(1)).toBe(false);
    expect(peer.side.protocolErrors.map((e) => [e.err.code, e.fatal])).toEqual([
      [ResetCode.ProtocolError, false],
    ]);

    // Late data for the reset stream is ignored, and the session keeps serving new streams.
    peer.send(encodeData(1, Buffer.from('late')));
    peer.send(request(2));
    peer.send(encodeData(2, Buffer.from('ok')));
    peer.send({ type: FrameType.End, id: 2, trailers: [] });
    await peer.sync(42);
    expect(peer.side.inbound[1]?.ended).toBe(true);
    expect(peer.side.inbound[1]?.bytes).toBe(2);
    expect(peer.side.session.closed).toBe(false);
    expect(peer.side.closes).toEqual([]);
  });

  it('a stream-level decode error resets only that stream', async () => {
    const peer = await hostilePeer('client', flow);
    peer.send(request(1));
    peer.send(encodeData(1, Buffer.from('x')).subarray(0, 5)); // Data frame cut short: its length does not match
    await waitFor(() => peer.received.some((f) => f.type === FrameType.Reset), 'a Reset');
    expect(peer.received.find((f) => f.type === FrameType.Reset)).toMatchObject({
      id: 1,
      code: ResetCode.ProtocolError,
    });
    await peer.sync(1);
    expect(peer.side.session.closed).toBe(false);
  });

  it('relay side: Data before the Response head, and a second Response head, are stream errors', async () => {
    const peer = await hostilePeer('relay', flow);
    const a = open(peer.side, head('/a'));
    const b = open(peer.side, head('/b'));
    peer.send(encodeData(a.stream.id, Buffer.from('too early')));
    peer.send({ type: FrameType.Response, id: b.stream.id, status: 200, reason: 'OK', headers: [] });
    peer.send({ type: FrameType.Response, id: b.stream.id, status: 200, reason: 'OK', headers: [] });
    await peer.sync(2);
    expect(a.reset?.code).toBe(ResetCode.ProtocolError);
    expect(b.response?.status).toBe(200);
    expect(b.reset?.code).toBe(ResetCode.ProtocolError);
    expect(peer.side.session.closed).toBe(false);
    expect(peer.side.protocolErrors.every((e) => !e.fatal)).toBe(true);
  });

  const fatalCases: [string, (peer: Awaited<ReturnType<typeof hostilePeer>>) => void, 'relay' | 'client'][] =
    [
      ['Data for a never-opened stream', (p) => p.send(encodeData(5, Buffer.from('x'))), 'client'],
      [
        'End for a never-opened stream',
        (p) => p.send({ type: FrameType.End, id: 5, trailers: [] }),
        'client',
      ],
      [
        'Window for a never-opened stream',
        (p) => p.send({ type: FrameType.Window, id: 5, increment: 10 }),
        'client',
      ],
      [
        'Reset for a never-opened stream',
        (p) => p.send({ type: FrameType.Reset, id: 5, code: 'cancel', message: '' }),
        'client',
      ],
      [
        'Response for a never-opened stream',
        (p) => p.send({ type: FrameType.Response, id: 5, status: 200, reason: 'OK', headers: [] }),
        'relay',
      ],
      ['a text message', (p) => p.send('hello'), 'client'],
      ['bytes that are not a frame', (p) => p.send(Buffer.from([0xc1, 0x00])), 'client'],
      ['a Request sent to the relay side', (p) => p.send(request(1)), 'relay'],
      [
        'a Request whose id does not increase',
        (p) => {
          p.send(request(2));
          p.send(request(2));
        },
        'client',
      ],
      [
        'a Response sent to the client side',
        (p) => {
          p.send(request(1));
          p.send({ type: FrameType.Response, id: 1, status: 200, reason: 'OK', headers: [] });
        },
        'client',
      ],
      [
        'a handshake frame after the handshake',
        (p) =>
          p.send({
            type: FrameType.Hello,
            version: PROTOCOL_VERSION,
            token: 't',
            name: '',
            agent: 'a',
            clientId: 'c',
            flow: DEFAULT_FLOW,
          }),
        'client',
      ],
      [
        'a Data frame over maxData',
        (p) => {
          p.send(request(1));
          p.send(encodeData(1, Buffer.alloc(16 * KiB + 1)));
        },
        'client',
      ],
    ];

  it.each(fatalCases)('%s closes the session with 4000', async (_name, act, role) => {
    const peer = await hostilePeer(role, flow);
    act(peer);
    const closed = await peer.closed;
    expect(closed.code).toBe(CloseCode.ProtocolError);
    expect(closed.reason).toMatch(/^protocol error: /);
    await waitFor(() => peer.side.closes.length === 1, 'onClose');
    expect(peer.side.closes[0]!.code).toBe(CloseCode.ProtocolError);
    expect(peer.side.protocolErrors.some((e) => e.fatal)).toBe(true);
    expect(peer.side.session.closed).toBe(true);
  });

  it('overrunning the connection window closes the session with 4000', async () => {
    const small: FlowSettings = { streamWindow: 32 * KiB, connWindow: 48 * KiB, maxData: 16 * KiB };
    const peer = await hostilePeer('client', small, { bufferedSoftLimit: 0 });
    peer.side.autoAck = false;
    peer.send(request(1));
    peer.send(request(2));
    peer.send(encodeData(1, Buffer.alloc(16 * KiB)));
    peer.send(encodeData(2, Buffer.alloc(16 * KiB)));
    peer.send(encodeData(1, Buffer.alloc(16 * KiB))); // 48 KiB: exactly the connection window, still fine
    await peer.sync(3);
    expect(peer.side.session.closed).toBe(false);
    peer.send(encodeData(2, Buffer.from([1]))); // stream 2 has room, the connection does not
    const closed = await peer.closed;
    expect(closed.code).toBe(CloseCode.ProtocolError);
    expect(closed.reason).toMatch(/connection window/);
  });
});

/**
 * waitFor for tests with a fake Date: polls on the real setTimeout and counts polls, not milliseconds (vi.waitFor
 * would advance the fake clock while it waits).
 */
async function realTimeWait(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1500; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('heartbeats', () => {
  it('rttMs is -1 until a pong arrives, then a round-trip time', async () => {
    const { relay, client } = await sessionPair();
    expect(relay.session.rttMs).toBe(-1);
    expect(client.session.rttMs).toBe(-1);
    relay.session.ping();
    await waitFor(() => relay.session.rttMs >= 0, 'the pong');
    expect(relay.session.rttMs).toBeLessThan(15_000);
    expect(client.session.rttMs).toBe(-1); // answering a ping does not measure anything
  });

  it('a peer that never answers is declared dead: onClose with 4002', async () => {
    // On a fake clock (Date and setInterval; sockets stay real), so an event-loop stall on this loaded machine cannot
    // pass the deadline before the first ping has gone out.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    try {
      const peer = await hostilePeer('client', DEFAULT_FLOW, { heartbeatMs: 100, deadAfterMs: 300 });
      vi.advanceTimersByTime(50); // the first heartbeat tick pings
      await realTimeWait(() => peer.received.some((f) => f.type === FrameType.Ping), 'the first ping');
      vi.advanceTimersByTime(250);
      expect(peer.side.closes).toEqual([]); // 300 ms of silence is the limit, not past it
      vi.advanceTimersByTime(50);
      let closed: { code: number } | undefined;
      void peer.closed.then((c) => (closed = c)); // the session terminates the socket
      await realTimeWait(
        () => closed !== undefined && peer.side.closes.length === 1,
        'the close and onClose',
      );
      expect(peer.side.closes[0]).toEqual({ code: CloseCode.HeartbeatTimeout, reason: 'heartbeat timeout' });
      expect(closed!.code).toBe(1006); // terminated: no close frame on the wire
      expect(peer.received.filter((f) => f.type === FrameType.Ping).length).toBeGreaterThanOrEqual(1);
      expect(peer.side.session.closed).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('answered heartbeats keep a session alive; when the peer stops reading, it is declared dead', async () => {
    // The heartbeat's clock is faked (Date and setInterval only; sockets and setTimeout stay real), so the time the
    // loaded machine takes to deliver a pong never counts as the peer's silence: the heartbeat sees exactly the
    // milliseconds the test advances, while the pings and pongs travel over the real socket.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    try {
      const { relay, client, sockets } = await sessionPair({ relay: { heartbeatMs: 100, deadAfterMs: 300 } });
      const rx = open(relay, head());
      // Twenty heartbeat intervals, over six times deadAfterMs: only the client's pongs keep the relay side alive
      // (the client never pings itself). Each interval the relay pings once and the pong comes back.
      for (let i = 0; i < 20; i++) {
        relay.session.rttMs = -1;
        vi.advanceTimersByTime(100);
        await realTimeWait(() => relay.session.rttMs >= 0, 'the pong');
      }
      expect(relay.closes).toEqual([]);
      // The client stops reading: the next pings go unanswered, and past deadAfterMs the relay gives up.
      sockets.client.pause();
      vi.advanceTimersByTime(300);
      expect(relay.closes).toEqual([]); // not yet: 300 ms without a frame is the limit, not past it
      vi.advanceTimersByTime(100);
      await realTimeWait(() => relay.closes.length === 1, 'the heartbeat timeout');
      expect(relay.closes[0]!.code).toBe(CloseCode.HeartbeatTimeout);
      expect(rx.reset?.code).toBe(ResetCode.TunnelClosed);
      expect(relay.session.streams.size).toBe(0);
      expect(client.closes.length).toBeLessThanOrEqual(1);
      client.session.terminate(); // while its fake interval can still be cleared
    } finally {
      vi.useRealTimers();
    }
  });
});
