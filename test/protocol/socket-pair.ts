// For session tests: a connected WebSocket pair on 127.0.0.1, configured like the relay and the client, and the
// Request frame most of them send.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { BodyKind, FrameType, WIRE_LIMITS, type RequestFrame } from '../../protocol/frames.js';
import type { Cleanup } from '../helpers.js';

/** Opens a server and a client WebSocket connected to each other; `cleanup` closes both. */
export async function socketPair(cleanup: Cleanup): Promise<{ server: WebSocket; client: WebSocket }> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
  });
  await once(wss, 'listening');
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close(() => resolve());
      }),
  );
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/_ggrok/connect`, {
    perMessageDeflate: false,
    maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
  });
  client.on('error', () => {});
  cleanup.add(() => client.terminate());
  const [[server]] = await Promise.all([accepted, once(client, 'open')]);
  server.on('error', () => {});
  return { server, client };
}

/** A bodiless GET of `/r<id>` on stream `id`. */
export const getRequest = (id: number): RequestFrame => ({
  type: FrameType.Request,
  id,
  method: 'GET',
  target: `/r${id}`,
  headers: ['Host', 'demo.example.com'],
  body: BodyKind.None,
  upgrade: false,
  tunnel: 0,
});
