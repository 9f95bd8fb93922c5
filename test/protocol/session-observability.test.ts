// Session hooks for observability: Stats frames reach the client (and are fatal at the relay), and the writer
// reports each time it runs out of stream or connection credit with data still queued.
import { once } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { CloseCode } from '../../protocol/errors.js';
import {
  BodyKind,
  type RequestFrame,
  FrameType,
  type FlowSettings,
  type StatsFrame,
} from '../../protocol/frames.js';
import { Session, type SessionOptions } from '../../protocol/session.js';
import type { Stream, StreamHandler } from '../../protocol/stream.js';
import { Cleanup, waitFor } from '../helpers.js';
import { socketPair } from './socket-pair.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** An owner that does nothing with what arrives (these tests ack by hand, or never). */
const IDLE: StreamHandler = { data() {}, end() {}, reset() {}, drain() {} };

/** A relay session and a client session on one real WebSocket over 127.0.0.1. */
async function pair(
  flow: FlowSettings,
  extra: { relay?: Partial<SessionOptions>; client?: Partial<SessionOptions> } = {},
): Promise<{ relay: Session; client: Session; inbound: Stream[]; clientWs: WebSocket }> {
  const { server: serverWs, client: clientWs } = await socketPair(cleanup);
  const common = { localFlow: flow, remoteFlow: flow, heartbeatMs: 60_000, deadAfterMs: 120_000 };
  const inbound: Stream[] = [];
  const relay = new Session(serverWs, { role: 'relay', ...common, ...extra.relay });
  const client = new Session(clientWs, {
    role: 'client',
    ...common,
    onRequest: (stream) => {
      inbound.push(stream); // never acks: no credit goes back
      return IDLE;
    },
    ...extra.client,
  });
  cleanup.add(() => relay.terminate());
  cleanup.add(() => client.terminate());
  return { relay, client, inbound, clientWs };
}

/**
 * A ping from `session` and its pong: every frame the peer sent before the pong (Window credit included) has been
 * handled, so whatever that credit let `session` send is sent. Order, not a pause, says "nothing more is coming".
 */
async function roundTrip(session: Session): Promise<void> {
  session.rttMs = -1;
  session.ping();
  await waitFor(() => session.rttMs >= 0, 'a pong', 15_000);
}

const request: Omit<RequestFrame, 'type' | 'id'> = {
  method: 'POST',
  target: '/',
  headers: [],
  body: BodyKind.Chunked,
  upgrade: false,
  tunnel: 0,
};

const stats: Omit<StatsFrame, 'type'> = {
  requests: 3,
  bytesIn: 100,
  bytesOut: 2 ** 40,
  channels: 1,
  lastActivityMs: Date.now(),
  tunnel: 2,
  refused: 5,
};

it('Stats from the relay reach the client through onStats', async () => {
  const received: StatsFrame[] = [];
  const { relay } = await pair(
    { streamWindow: 65536, connWindow: 65536, maxData: 16384 },
    { client: { onStats: (f) => received.push(f) } },
  );
  relay.sendStats(stats);
  await waitFor(() => received.length === 1, 'the Stats frame');
  expect(received[0]).toEqual({ type: FrameType.Stats, ...stats });
});

it('a Stats frame sent to the relay is a fatal protocol error', async () => {
  const errors: { code: string; fatal: boolean }[] = [];
  const { client, clientWs } = await pair(
    { streamWindow: 65536, connWindow: 65536, maxData: 16384 },
    { relay: { onProtocolError: (err, fatal) => errors.push({ code: err.code, fatal }) } },
  );
  const closed = once(clientWs, 'close') as Promise<[number]>;
  client.sendStats(stats); // only a misbehaving client would
  const [code] = await closed;
  expect(code).toBe(CloseCode.ProtocolError);
  expect(errors).toEqual([{ code: 'protocol_error', fatal: true }]);
});

it('the writer reports a stall each time a stream or the connection runs out of credit with data queued', async () => {
  const stalls: string[] = [];
  // Stream windows of 8 KiB, a connection window of 16 KiB; the client returns connection credit only when
  // it consumes (soft limit 0), so nothing moves until it acks.
  const flow = { streamWindow: 8192, connWindow: 16384, maxData: 4096 };
  const { relay, inbound } = await pair(flow, {
    relay: { onFlowStall: (scope) => stalls.push(scope) },
    client: { bufferedSoftLimit: 0 },
  });
  const streams = [
    relay.openStream(request, IDLE),
    relay.openStream(request, IDLE),
    relay.openStream(request, IDLE),
  ];
  for (const s of streams) s.write(Buffer.alloc(10_000));
  // Round robin in 4 KiB frames: 1, 2, 3, 1; then the connection window is empty and stream 1's too.
  await waitFor(() => relay.stats.dataBytesOut === 16384, 'the connection window to be used up');
  await roundTrip(relay);
  expect(relay.stats.dataBytesOut).toBe(16384);
  expect(stalls.sort()).toEqual(['connection', 'stream']); // each counted once, not per waiting frame
  expect(relay.stats).toMatchObject({ connStalls: 1, streamStalls: 1 });

  // The client consumes what it got: the credit comes back and the rest (13 616 bytes) flows without a stall.
  await waitFor(() => inbound.length === 3, 'three streams on the client');
  for (const s of inbound) s.ack(s.buffered);
  await waitFor(() => relay.stats.dataBytesOut === 30_000, 'the rest after the acks');
  expect(relay.stats).toMatchObject({ connStalls: 1, streamStalls: 1 });

  // More on stream 1: the connection window (16 384 - 13 616 = 2 768 left) runs out again: a second stall.
  streams[0]!.write(Buffer.alloc(10_000));
  await waitFor(() => relay.stats.dataBytesOut === 30_000 + 2768, 'the last of the connection window');
  await roundTrip(relay);
  expect(relay.stats.dataBytesOut).toBe(30_000 + 2768);
  expect(relay.stats).toMatchObject({ connStalls: 2, streamStalls: 1 });
  expect(stalls).toHaveLength(3);
});

it('a stream that fits its window exactly, with nothing more queued, is not a stall', async () => {
  const stalls: string[] = [];
  const flow = { streamWindow: 8192, connWindow: 65536, maxData: 4096 };
  const { relay } = await pair(flow, { relay: { onFlowStall: (scope) => stalls.push(scope) } });
  relay.openStream(request, IDLE).write(Buffer.alloc(8192));
  await waitFor(() => relay.stats.dataBytesOut === 8192, 'the data to leave');
  await roundTrip(relay); // the client's credit for those bytes is back: still no stall
  expect(stalls).toEqual([]);
});
