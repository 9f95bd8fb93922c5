// Replay is byte-faithful: a raw TCP local server records the exact bytes of a live request through the tunnel and of
// its replay from the inspector, which goes through the same local HTTP/1.1 client (cli/local-exchange.ts).
import type { Socket } from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { startInspector, type Inspector } from '../../cli/inspector/index.js';
import { NO_HEADER_RULES, type HeaderRules } from '../../cli/header-rules.js';
import { parseTarget } from '../../cli/target.js';
import {
  Cleanup,
  rawRequest,
  startClient,
  startRawServer,
  startRelay,
  waitFor,
  type RawRequestOptions,
} from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/**
 * Splits the bytes of one connection into requests (a head, then a Content-Length body or a chunked body up to its
 * last chunk, no trailers) and answers each with a small 200, keeping the connection open.
 */
function recordRequests(socket: Socket, requests: Buffer[]): void {
  let buffer = Buffer.alloc(0);
  socket.on('data', (data: Buffer) => {
    buffer = Buffer.concat([buffer, data]);
    for (;;) {
      const headEnd = buffer.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const head = buffer.toString('latin1', 0, headEnd);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      let end = headEnd + 4;
      if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
        const last = buffer.indexOf('\r\n0\r\n\r\n', headEnd);
        const empty = buffer.indexOf('0\r\n\r\n', headEnd + 4) === headEnd + 4;
        if (empty) end = headEnd + 9;
        else if (last < 0) return;
        else end = last + 7;
      } else if (length) end += Number(length[1]);
      if (buffer.length < end) return;
      requests.push(buffer.subarray(0, end));
      buffer = buffer.subarray(end);
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok');
    }
  });
}

interface Setup {
  inspector: Inspector;
  /** Every request the local server got, as bytes, in order. */
  requests: Buffer[];
  /** Sends a request to the tunnel (its Host header is set). */
  send: (o: RawRequestOptions & { headers: string[] }) => Promise<void>;
  /** Replays the newest exchange with `target`; waits for the local server to get it and returns its bytes. */
  replay: (target: string, edits?: object) => Promise<Buffer>;
}

async function setup(rules: HeaderRules): Promise<Setup> {
  const requests: Buffer[] = [];
  const localPort = await startRawServer(cleanup, (socket) => recordRequests(socket, requests));
  const inspector = await startInspector({ port: 0 });
  cleanup.add(() => inspector.close());
  const relay = await startRelay(cleanup);
  const client = await startClient(cleanup, relay.url, localPort, {
    subdomain: 'bytes',
    headerRules: rules,
    observe: inspector.observe,
  });
  const target = parseTarget(String(localPort));
  inspector.setTunnels([{ name: client.name, url: client.url, target }]);
  const host = new URL(client.url).host;
  return {
    inspector,
    requests,
    send: async (o) => {
      const res = await rawRequest({ port: relay.port, ...o, headers: ['Host', host, ...o.headers] });
      expect(res.status).toBe(200);
    },
    replay: async (path, edits = {}) => {
      let id: number | undefined;
      await waitFor(async () => {
        const list = (await (await fetch(`${inspector.url}/api/exchanges`)).json()) as {
          exchanges: { id: number; target: string; done: boolean; replayOf?: number }[];
        };
        id = list.exchanges.find((x) => x.target === path && x.done && x.replayOf === undefined)?.id;
        return id !== undefined;
      }, `the exchange ${path} to be recorded`);
      const before = requests.length;
      const res = await fetch(`${inspector.url}/api/exchanges/${id}/replay`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(edits),
      });
      expect(res.status).toBe(200);
      await waitFor(() => requests.length > before, 'the replay to reach the local server');
      return requests[before]!;
    },
  };
}

/** The body of a chunked message: its chunks' data joined. */
function dechunk(message: Buffer): Buffer {
  let at = message.indexOf('\r\n\r\n') + 4;
  const parts: Buffer[] = [];
  for (;;) {
    const eol = message.indexOf('\r\n', at);
    const size = parseInt(message.toString('latin1', at, eol), 16);
    if (size === 0) return Buffer.concat(parts);
    parts.push(message.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

function headOf(message: Buffer): string {
  return message.toString('latin1', 0, message.indexOf('\r\n\r\n') + 4);
}

test('a replay sends the bytes the tunnel sent: head (case, order, duplicates, header rules) and body', async () => {
  const s = await setup({
    ...NO_HEADER_RULES,
    hostHeader: 'app.internal',
    requestAdd: ['X-Added-By-Rule', 'yes'],
  });
  const body = Buffer.from('{"name":"caf\u00e9","n":[1,2,3]}');
  await s.send({
    method: 'POST',
    path: '/items?a=1&b=%20',
    headers: [
      'content-type',
      'application/json',
      'X-Dup',
      'one',
      'x-dup',
      'two',
      'X-Latin1',
      'caf\u00e9',
      'Content-Length',
      String(body.length),
    ],
    body,
  });
  expect(s.requests).toHaveLength(1);
  const live = s.requests[0]!;
  const replayed = await s.replay('/items?a=1&b=%20');
  // Nothing differs: not a header (none added, none dropped, none reordered), not a byte of the body.
  expect(replayed.toString('latin1')).toBe(live.toString('latin1'));
  expect(replayed.equals(live)).toBe(true);
  // What was compared is the request as the tunnel's rules made it.
  const head = headOf(live);
  expect(head).toMatch(/^POST \/items\?a=1&b=%20 HTTP\/1\.1\r\n/);
  expect(head).toContain('\r\nHost: app.internal\r\n');
  expect(head).toContain('\r\nX-Dup: one\r\nx-dup: two\r\n');
  expect(head).toContain('\r\nX-Latin1: caf\u00e9\r\n');
  expect(head).toContain('\r\nX-Added-By-Rule: yes\r\n');
  expect(live.subarray(head.length).equals(body)).toBe(true);

  // A bodiless GET as well, and a second replay on the pooled keep-alive connection.
  await s.send({ path: '/plain', headers: ['Accept', '*/*', 'Cookie', 'a=b'] });
  const getLive = s.requests.at(-1)!;
  expect((await s.replay('/plain')).equals(getLive)).toBe(true);
  expect((await s.replay('/plain')).equals(getLive)).toBe(true);
});

test('a chunked request is replayed chunked, with the same head; its body goes as one chunk', async () => {
  const s = await setup(NO_HEADER_RULES);
  const body = Buffer.from('part one, part two');
  await s.send({
    method: 'PUT',
    path: '/upload',
    headers: ['Content-Type', 'text/plain', 'Transfer-Encoding', 'chunked'],
    body,
  });
  const live = s.requests[0]!;
  const replayed = await s.replay('/upload');
  expect(headOf(live)).toContain('\r\nTransfer-Encoding: chunked\r\n');
  expect(headOf(replayed)).toBe(headOf(live));
  expect(dechunk(live).equals(body)).toBe(true);
  // The tunnel frames each piece of the body as it arrives; the replay has it whole. Chunk boundaries are the
  // only bytes that may differ (the inspector does not record them, nor request trailers).
  expect(replayed.subarray(headOf(replayed).length).toString('latin1')).toBe(
    `${body.length.toString(16)}\r\n${body.toString('latin1')}\r\n0\r\n\r\n`,
  );
});

test('edited replays frame their own body; a request left without Host gets the one live traffic carried', async () => {
  const s = await setup({ ...NO_HEADER_RULES, hostHeader: 'app.internal' });
  await s.send({
    method: 'POST',
    path: '/form',
    headers: ['Content-Type', 'text/plain', 'Content-Length', '5'],
    body: 'hello',
  });
  const edited = await s.replay('/form', {
    headers: [
      ['Content-Type', 'text/plain'],
      ['Content-Length', '999'],
      ['Connection', 'close'],
      ['X-Edited', '1'],
    ],
    body: 'changed body',
  });
  expect(edited.toString('latin1')).toBe(
    'POST /form HTTP/1.1\r\nContent-Type: text/plain\r\nX-Edited: 1\r\nContent-Length: 12\r\n' +
      'Host: app.internal\r\n\r\nchanged body',
  );
});
