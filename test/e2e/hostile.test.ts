// A misbehaving client on the control socket is cut off with a code; the relay and other tunnels carry on.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, expect, test } from 'vitest';
import WebSocket from 'ws';
import { encodeData, encodeFrame } from '../../protocol/codec.js';
import { DEFAULT_FLOW, FrameType, PROTOCOL_VERSION, type Frame } from '../../protocol/frames.js';
import { Cleanup, rawRequest, reply, startTunnel, TOKEN, waitFor, type Tunnel } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Opens a raw control socket; with `hello`, completes the handshake as tunnel `name`. */
async function rawControl(
  port: number,
  hello?: { name: string; token?: string },
): Promise<{ ws: WebSocket; frames: Frame[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/_ggrok/connect`, { perMessageDeflate: false });
  cleanup.add(() => ws.terminate());
  ws.on('error', () => {});
  const frames: Frame[] = [];
  const { decodeMessage } = await import('../../protocol/codec.js');
  ws.on('message', (data: Buffer) => frames.push(...decodeMessage(data)));
  await once(ws, 'open');
  if (hello) {
    ws.send(
      encodeFrame({
        type: FrameType.Hello,
        version: PROTOCOL_VERSION,
        token: hello.token ?? TOKEN,
        name: hello.name,
        agent: 'hostile-test',
        clientId: 'hostile',
        flow: DEFAULT_FLOW,
      }),
    );
    await new Promise<void>((resolve) => {
      const check = (): void => (frames.length > 0 ? resolve() : void setTimeout(check, 10));
      check();
    });
  }
  return { ws, frames };
}

async function closeCode(ws: WebSocket): Promise<number> {
  if (ws.readyState === WebSocket.CLOSED) return -1;
  const [code] = (await once(ws, 'close')) as [number];
  return code;
}

async function stillServes(t: Tunnel): Promise<void> {
  const res = await t.request({ path: '/alive' });
  expect(res.body.toString()).toBe('alive');
}

test('garbage, text and wrong frames before the hello are refused without harm', async () => {
  const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'alive'));
  const payloads: (Buffer | string)[] = [
    Buffer.from([0xc1, 0xff, 0x00]),
    Buffer.alloc(1000, 0x91), // deep nesting
    'text frame',
    encodeFrame({ type: FrameType.Ping, nonce: 1 }),
    encodeData(1, Buffer.from('data before hello')),
  ];
  for (const payload of payloads) {
    const { ws, frames } = await rawControl(t.relay.port);
    ws.send(payload);
    expect(await closeCode(ws)).toBe(4001);
    expect(frames[0]).toMatchObject({ type: FrameType.Refuse, code: 'protocol_error' });
    await stillServes(t);
  }
  const wrongToken = await rawControl(t.relay.port, { name: 'intruder', token: 'nope' });
  expect(wrongToken.frames[0]).toMatchObject({ type: FrameType.Refuse, code: 'bad_token' });
  expect(t.relay.relay.tunnelCount).toBe(1);
});

test('protocol errors after the handshake close only the offending tunnel, with code 4000', async () => {
  const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'alive'));
  const attacks: { what: string; send: (ws: WebSocket) => void }[] = [
    { what: 'random bytes', send: (ws) => ws.send(Buffer.from([0x93, 0x63, 0x01, 0xff])) },
    { what: 'a text message', send: (ws) => ws.send('hello?') },
    {
      what: 'a second hello',
      send: (ws) => ws.send(encodeFrame({ type: FrameType.Refuse, code: 'x', message: 'y' })),
    },
    { what: 'a frame for a never-opened stream', send: (ws) => ws.send(encodeData(99, Buffer.from('x'))) },
    {
      what: 'a request from the client',
      send: (ws) =>
        ws.send(
          encodeFrame({
            type: FrameType.Request,
            id: 1,
            method: 'GET',
            target: '/',
            headers: [],
            body: 0,
            upgrade: false,
            tunnel: 0,
          }),
        ),
    },
    {
      what: 'a connection window overflow',
      send: (ws) => ws.send(encodeFrame({ type: FrameType.Window, id: 0, increment: 0x7fff_ffff })),
    },
  ];
  for (const [i, attack] of attacks.entries()) {
    const { ws, frames } = await rawControl(t.relay.port, { name: `bad${i}` });
    expect(frames[0]).toMatchObject({ type: FrameType.Welcome, name: `bad${i}` });
    attack.send(ws);
    expect({ what: attack.what, code: await closeCode(ws) }).toEqual({ what: attack.what, code: 4000 });
    await stillServes(t);
  }
  expect(t.relay.events.filter((e) => e.event === 'protocol_error' && e.fatal === true)).toHaveLength(
    attacks.length,
  );
});

test('a client that overruns a stream window loses that stream, not its tunnel', async () => {
  const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'alive'));
  const { ws, frames } = await rawControl(t.relay.port, { name: 'overrun' });
  // A public client that sends its request and then never reads: the relay stops granting credit
  // once the socket buffers are full, so the hostile client's unbounded sending overruns the window.
  const publicSocket = net.connect(t.relay.port, '127.0.0.1');
  cleanup.add(() => publicSocket.destroy());
  publicSocket.on('error', () => {});
  publicSocket.write(`GET /x HTTP/1.1\r\nHost: overrun.localhost:${t.relay.port}\r\n\r\n`);
  publicSocket.pause();
  await waitFor(
    () => frames.some((f) => f.type === FrameType.Request),
    'the request to reach the hostile client',
  );
  const id = (frames.find((f) => f.type === FrameType.Request) as { id: number }).id;
  ws.send(encodeFrame({ type: FrameType.Response, id, status: 200, reason: 'OK', headers: [] }));
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < 640 && ws.readyState === WebSocket.OPEN; i++) {
    ws.send(encodeData(id, chunk));
    if (ws.bufferedAmount > 8 * 1024 * 1024) await new Promise((r) => setTimeout(r, 5));
    if (frames.some((f) => f.type === FrameType.Reset)) break;
  }
  await waitFor(() => frames.some((f) => f.type === FrameType.Reset), 'the relay to reset the stream');
  expect(frames.find((f) => f.type === FrameType.Reset)).toMatchObject({ id, code: 'protocol_error' });
  expect(ws.readyState).toBe(WebSocket.OPEN);
  expect(t.relay.events.some((e) => e.event === 'protocol_error' && e.fatal === false)).toBe(true);
  await stillServes(t);
});

test('a flood of resets and window updates for finished streams is shrugged off', async () => {
  const t = await startTunnel(cleanup, (_req, res) => reply(res, 200, 'alive'));
  const { ws, frames } = await rawControl(t.relay.port, { name: 'flooder' });
  // Serve one real request so stream 1 exists and finishes; later frames for it are stale, not fatal.
  const served = rawRequest({ port: t.relay.port, headers: { Host: `flooder.localhost:${t.relay.port}` } });
  await waitFor(() => frames.some((f) => f.type === FrameType.Request), 'the request to arrive');
  ws.send(
    encodeFrame({
      type: FrameType.Response,
      id: 1,
      status: 200,
      reason: 'OK',
      headers: ['Content-Length', '2'],
    }),
  );
  ws.send(encodeData(1, Buffer.from('ok')));
  ws.send(encodeFrame({ type: FrameType.End, id: 1, trailers: [] }));
  expect((await served).body.toString()).toBe('ok');
  for (let i = 0; i < 20_000; i++) {
    ws.send(encodeFrame({ type: FrameType.Reset, id: 1, code: 'cancel', message: 'again' }));
    ws.send(encodeFrame({ type: FrameType.Window, id: 1, increment: 1 }));
  }
  ws.send(encodeFrame({ type: FrameType.Ping, nonce: 42 }));
  await waitFor(
    () => frames.some((f) => f.type === FrameType.Pong && f.nonce === 42),
    'the relay to get through the flood',
  );
  expect(ws.readyState).toBe(WebSocket.OPEN);
  await stillServes(t);
});
