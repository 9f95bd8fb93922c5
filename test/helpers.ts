// Test harness: real relays, real clients and real local servers on 127.0.0.1, port 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TunnelClient, type ClientOptions } from '../cli/client.js';
import { parseTarget } from '../cli/target.js';
import { GgrokError } from '../protocol/errors.js';
import { createRelay, type Relay, type RelayEvent, type RelayOptions } from '../relay/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The compiled CLI (npm test builds it first). */
export const BIN = path.join(ROOT, 'dist', 'bin', 'ggrok.js');
export const TOKEN = 'test-token';

/** Closes servers, clients and processes registered during a test, in reverse order. */
export class Cleanup {
  private readonly tasks: (() => unknown)[] = [];
  add(task: () => unknown): void {
    this.tasks.push(task);
  }
  async run(): Promise<void> {
    for (const task of this.tasks.splice(0).reverse()) {
      try {
        await task();
      } catch {
        // best effort
      }
    }
  }
}

export interface TestRelay {
  relay: Relay;
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  events: RelayEvent[];
}

export async function startRelay(cleanup: Cleanup, options: Partial<RelayOptions> = {}): Promise<TestRelay> {
  const events: RelayEvent[] = [];
  const relay = createRelay({
    tokens: [TOKEN],
    domain: 'localhost',
    // Unknown names get their 404 at once (the restart grace has its own test).
    startupGraceMs: 0,
    log: (e) => events.push(e),
    ...options,
  });
  const port = await relay.listen(0, '127.0.0.1');
  cleanup.add(() => relay.close(0));
  return { relay, port, url: `http://127.0.0.1:${port}`, events };
}

/**
 * A raw `net` server on 127.0.0.1 port 0 for tests that write exact bytes: `onSocket` gets each accepted socket
 * (no delay, errors ignored). Its sockets are destroyed and it is closed at cleanup. Returns the port.
 */
export async function startRawServer(
  cleanup: Cleanup,
  onSocket: (socket: Socket) => void,
  options: net.ServerOpts = {},
): Promise<number> {
  const sockets = new Set<Socket>();
  const server = net.createServer(options, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    socket.on('error', () => {});
    onSocket(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.add(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

export interface LocalServer {
  server: http.Server;
  port: number;
  /** Every request the server saw, in order. */
  requests: IncomingMessage[];
}

/** A local HTTP server on 127.0.0.1 (or `host`) port 0. */
export async function startLocal(
  cleanup: Cleanup,
  handler: RequestListener,
  host = '127.0.0.1',
): Promise<LocalServer> {
  const requests: IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  server.listen(0, host);
  await once(server, 'listening');
  cleanup.add(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { server, port: (server.address() as AddressInfo).port, requests };
}

/** Connects a tunnel client (in-process) to a relay, exposing `target` (a port number or spec). */
export async function startClient(
  cleanup: Cleanup,
  relayUrl: string,
  target: number | string,
  options: Partial<ClientOptions> = {},
): Promise<TunnelClient> {
  const client = new TunnelClient({
    server: relayUrl,
    token: TOKEN,
    target: parseTarget(String(target)),
    minBackoffMs: 50,
    maxBackoffMs: 500,
    ...options,
  });
  cleanup.add(() => client.close());
  await client.start();
  return client;
}

export interface Tunnel {
  relay: TestRelay;
  local: LocalServer;
  client: TunnelClient;
  /** Host header that reaches the tunnel, e.g. demo.localhost:1234 */
  host: string;
  /** Sends a request to the relay with the tunnel's Host header. */
  request: (options?: RawRequestOptions) => Promise<RawResponse>;
}

/** Relay + local server + client, ready to use: the usual starting point of an e2e test. */
export async function startTunnel(
  cleanup: Cleanup,
  handler: RequestListener,
  options: { relay?: Partial<RelayOptions>; client?: Partial<ClientOptions>; subdomain?: string } = {},
): Promise<Tunnel> {
  const relay = await startRelay(cleanup, options.relay);
  const local = await startLocal(cleanup, handler);
  const client = await startClient(cleanup, relay.url, local.port, {
    subdomain: options.subdomain ?? 'demo',
    ...options.client,
  });
  const host = new URL(client.url).host;
  return {
    relay,
    local,
    client,
    host,
    request: (o = {}) => rawRequest({ port: relay.port, ...o, headers: o.headers ?? { Host: host } }),
  };
}

/** One request as a local service received it: head as raw lines, body as bytes. */
export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
}

export interface RawRequestOptions {
  port?: number;
  method?: string;
  path?: string;
  headers?: Record<string, string | string[]> | string[];
  body?: Buffer | string;
  agent?: http.Agent | false;
  /** Another loopback address (127.0.0.2, …) makes another visitor. */
  localAddress?: string;
}

export interface RawResponse {
  status: number;
  statusMessage: string;
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
  rawTrailers: string[];
  body: Buffer;
}

/** A plain http.request to 127.0.0.1 collecting the whole response (for small bodies). */
export function rawRequest(o: RawRequestOptions): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: o.port,
      method: o.method ?? 'GET',
      path: o.path ?? '/',
      headers: o.headers,
      agent: o.agent ?? false,
      localAddress: o.localAddress,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? '',
          rawHeaders: res.rawHeaders,
          headers: res.headers,
          rawTrailers: res.rawTrailers,
          body: Buffer.concat(chunks),
        }),
      );
    });
    req.end(o.body);
  });
}

/** Writes raw bytes to 127.0.0.1:port and collects everything until the server closes or `until` matches. */
export async function rawExchange(
  port: number,
  data: string | Buffer,
  until?: (text: string) => boolean,
  timeoutMs = 10_000,
): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(data);
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw exchange timed out; got: ${JSON.stringify(text.slice(0, 500))}`));
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (until?.(text)) done();
    });
    socket.on('end', done);
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Waits until `check` returns true, polling; fails with `what` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A running CLI process with its output collected. */
export interface CliProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  /** Resolves when stdout+stderr matches `pattern`. */
  waitForOutput: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
}

/** Spawns the built `ggrok` binary with arguments and extra environment. */
export function runCli(
  cleanup: Cleanup,
  args: string[],
  env: Record<string, string | undefined> = {},
): CliProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      NO_COLOR: '1',
      GGROK_TOKEN: undefined,
      GGROK_SERVER: undefined,
      GGROK_DOMAIN: undefined,
      PORT: undefined,
      // Never read the developer's own config file.
      GGROK_CONFIG: path.join(ROOT, 'test', 'no-such-config.yml'),
      // No inspector on 127.0.0.1:4040 unless a test asks for one.
      GGROK_INSPECT: 'off',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForOutput: async (pattern, timeoutMs = 15_000) => {
      let match: RegExpMatchArray | null = null;
      await waitFor(
        () => (match = (out + err).match(pattern)) !== null || child.exitCode !== null,
        `output ${pattern}`,
        timeoutMs,
      );
      if (!match)
        throw new Error(`process exited (${child.exitCode}) before printing ${pattern}:\n${out}\n${err}`);
      return match;
    },
  };
}

/** The GgrokError a connection attempt was refused with; fails if it was not refused. */
export async function refusal(promise: Promise<unknown>): Promise<GgrokError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof GgrokError) return err;
    throw err;
  }
  throw new Error('expected the connection to be refused');
}

/** Ends a response cleanly with a body (shorthand for local handlers). */
export function reply(
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export type { Socket };
