// One tunnel stream <-> one request to the local service (plain HTTP, or an upgrade that becomes a raw channel).
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import { ResetCode } from '../protocol/errors.js';
import { BodyKind, type HeaderList, type RequestFrame } from '../protocol/frames.js';
import { setHeader, stripHopByHop, toPairs, withoutHeader } from '../protocol/headers.js';
import { pipeIntoStream, pipeStreamInto, type TunnelStream } from '../protocol/stream.js';

/** Where public requests are replayed. */
export interface LocalTarget {
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  /** Accept a self-signed certificate on an https target. */
  insecure: boolean;
}

/** Parses `3000`, `host:port`, `[::1]:8080` or a full `http(s)://host:port` URL. Throws with a one-line reason. */
export function parseTarget(spec: string, insecure = false): LocalTarget {
  const s = spec.trim();
  if (/^\d+$/.test(s))
    return { protocol: 'http:', host: 'localhost', port: checkPort(Number(s), spec), insecure };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new Error(`"${spec}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`"${spec}": only http:// and https:// targets are supported`);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return {
      protocol: url.protocol,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: checkPort(port, spec),
      insecure,
    };
  }
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`"${spec}" is not a port, host:port or URL`);
  return {
    protocol: 'http:',
    host: m[1]!.replace(/^\[|\]$/g, ''),
    port: checkPort(Number(m[2]), spec),
    insecure,
  };
}

function checkPort(port: number, spec: string): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${spec}": port must be 1-65535`);
  return port;
}

/** Human form of a target, e.g. http://localhost:3000. */
export function describeTarget(t: LocalTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.protocol}//${host}:${t.port}`;
}

const LOOPBACK = [
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
];

/**
 * `localhost` means both loopback addresses: apps listen on 127.0.0.1 or on ::1, and resolvers disagree
 * on which comes first. With autoSelectFamily, Node tries both in turn.
 */
export const lookupLocalhost = ((
  hostname: string,
  options: dns.LookupOptions,
  callback: (...args: unknown[]) => void,
) => {
  if (hostname.toLowerCase() !== 'localhost') return dns.lookup(hostname, options, callback as never);
  if (options.all) return callback(null, LOOPBACK);
  return callback(null, LOOPBACK[0]!.address, 4);
}) as unknown as LookupFunction;

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ETIMEDOUT',
]);

/** One line saying why the local service failed, naming the address, e.g. "ECONNREFUSED 127.0.0.1:3000". */
export function describeLocalError(err: unknown, target: LocalTarget): string {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number; errors?: unknown[] };
  if (Array.isArray(e.errors) && e.errors.length > 0)
    return e.errors.map((inner) => describeLocalError(inner, target)).join(', ');
  if (e.code && e.address)
    return `${e.code} ${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port ?? target.port}`;
  if (e.code) return `${e.code} ${describeTarget(target)}`;
  return e.message || String(err);
}

function isConnectFailure(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException & { errors?: unknown[] };
  if (Array.isArray(e.errors)) return e.errors.every(isConnectFailure);
  return (
    CONNECT_FAILURES.has(e.code ?? '') ||
    /^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(e.code ?? '')
  );
}

/** Header edits the client applies on the way to and from the local service. */
export interface HeaderRules {
  /** "rewrite": Host becomes the target's host:port (dev servers with host checks, e.g. Vite); another value replaces Host; absent keeps the public Host. */
  hostHeader?: string;
  requestAdd: HeaderList;
  requestRemove: string[];
  responseAdd: HeaderList;
  responseRemove: string[];
}

export const NO_HEADER_RULES: HeaderRules = {
  requestAdd: [],
  requestRemove: [],
  responseAdd: [],
  responseRemove: [],
};

/** Parses "Name: value" (for --request-header-add and friends). Throws with a one-line reason. */
export function parseHeaderArg(arg: string): [string, string] {
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):\s*(.*)$/.exec(arg);
  if (!m || /[\r\n\0]/.test(m[2]!)) throw new Error(`"${arg}" is not a header; use "Name: value"`);
  return [m[1]!, m[2]!];
}

function edit(headers: HeaderList, remove: string[], add: HeaderList): HeaderList {
  let out = headers;
  for (const name of remove) out = withoutHeader(out, name);
  return add.length > 0 ? [...out, ...add] : out;
}

/**
 * Watches one exchange for the inspector. Every method is optional and must be cheap: it runs on the
 * data path. Chunks are the same Buffers the tunnel carries; copy what you keep.
 */
export interface ExchangeObserver {
  requestData?(chunk: Buffer): void;
  /** The response head as sent back to the public client (also the 101 of an upgrade). */
  response?(status: number, reason: string, headers: HeaderList): void;
  responseData?(chunk: Buffer): void;
  /** Raw bytes of an upgraded channel: 'in' flows public -> local, 'out' local -> public. */
  channelData?(direction: 'in' | 'out', chunk: Buffer): void;
  /** The exchange is over (also for channels, when they close). */
  end?(summary: Exchange): void;
}

/** Called at the start of each exchange with its request head (as the local service receives it). */
export type Observe = (head: RequestFrame, localHeaders: HeaderList) => ExchangeObserver | undefined;

/** Wraps a stream's onData so the observer sees each chunk first. */
function tapData(stream: TunnelStream, see: ((chunk: Buffer) => void) | undefined): void {
  if (!see) return;
  const inner = stream.onData;
  stream.onData = (chunk) => {
    see(chunk);
    inner(chunk);
  };
}

/** One exchange being served: its stream, request head, the headers the local service gets, and its reporting. */
interface Job {
  stream: TunnelStream;
  head: RequestFrame;
  /** Request headers as the local service receives them (computed once; the observer sees the same list). */
  headers: HeaderList;
  report: (status: number, bytes: number, error?: string) => void;
  observer?: ExchangeObserver;
}

/** Summary of one finished exchange, for the terminal and the programmatic API. */
export interface Exchange {
  /** Name of the tunnel that carried it (filled in by the client). */
  tunnel?: string;
  method: string;
  target: string;
  status: number;
  durationMs: number;
  /** Response body bytes sent back. */
  bytes: number;
  upgrade: boolean;
  error?: string;
}

/** Replays tunnel streams against the local target. One per client; holds the keep-alive pool. */
export class LocalForwarder {
  private readonly agent: http.Agent;
  private readonly mod: typeof http | typeof https;

  constructor(
    readonly target: LocalTarget,
    private readonly onExchange: (x: Exchange) => void = () => {},
    private readonly rules: HeaderRules = NO_HEADER_RULES,
    private readonly observe?: Observe,
  ) {
    this.mod = target.protocol === 'https:' ? https : http;
    const agentOptions = { keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo' as const };
    this.agent =
      target.protocol === 'https:'
        ? new https.Agent({ ...agentOptions, rejectUnauthorized: !target.insecure })
        : new http.Agent(agentOptions);
  }

  /** Frees pooled connections. */
  close(): void {
    this.agent.destroy();
  }

  /** Serves one stream opened by the relay. */
  serve(stream: TunnelStream, head: RequestFrame): void {
    const started = Date.now();
    let reported = false;
    const headers = this.localHeaders(head);
    const observer = this.observe?.(head, headers);
    const report = (status: number, bytes: number, error?: string): void => {
      if (reported) return;
      reported = true;
      const summary: Exchange = {
        method: head.method,
        target: head.target,
        status,
        durationMs: Date.now() - started,
        bytes,
        upgrade: head.upgrade,
        error,
      };
      observer?.end?.(summary);
      this.onExchange(summary);
    };
    const job: Job = { stream, head, headers, report, observer };
    if (head.upgrade) this.serveUpgrade(job);
    else this.serveRequest(job, 0);
  }

  /** The request headers as the local service should see them. */
  private localHeaders(head: RequestFrame): HeaderList {
    let headers = edit(head.headers, this.rules.requestRemove, this.rules.requestAdd);
    const host = this.rules.hostHeader;
    if (host) {
      const value = host === 'rewrite' ? describeTarget(this.target).replace(/^https?:\/\//, '') : host;
      headers = [...headers];
      setHeader(headers, 'Host', value);
    }
    return head.body === BodyKind.Chunked ? [...headers, 'Transfer-Encoding', 'chunked'] : headers;
  }

  /** The response headers as the public client should see them. */
  private publicHeaders(rawHeaders: string[], upgrade = false): HeaderList {
    // Node's parser caps the local response head (maxHeaderSize 64 KiB, 2000 headers), inside the wire limits.
    return edit(stripHopByHop(rawHeaders, upgrade), this.rules.responseRemove, this.rules.responseAdd);
  }
  /** Opens the request to the local service; on a synchronous failure, fails the job and returns undefined. */
  private start(job: Job, upgrade: boolean): http.ClientRequest | undefined {
    try {
      return this.request(job, upgrade);
    } catch (err) {
      job.stream.reset(ResetCode.LocalError, (err as Error).message);
      job.report(502, 0, (err as Error).message);
      return undefined;
    }
  }

  /** The local service could not be reached or failed before answering: reset the stream with why. */
  private fail(job: Job, err: unknown): void {
    const message = describeLocalError(err, this.target);
    job.stream.reset(isConnectFailure(err) ? ResetCode.LocalUnreachable : ResetCode.LocalError, message);
    job.report(502, 0, message);
  }

  private request({ head, headers }: Job, upgrade: boolean): http.ClientRequest {
    return this.mod.request({
      host: this.target.host,
      port: this.target.port,
      method: head.method,
      path: head.target,
      headers,
      // Upgraded connections leave the pool; they get their own socket that may half-close.
      agent: upgrade ? false : this.agent,
      allowHalfOpen: upgrade,
      lookup: lookupLocalhost,
      autoSelectFamily: true,
      // Loopback connects succeed or fail at once; Node's 250 ms default abandons good ones when the loop lags.
      autoSelectFamilyAttemptTimeout: this.target.host.toLowerCase() === 'localhost' ? 5000 : undefined,
      rejectUnauthorized: !this.target.insecure,
      maxHeaderSize: 64 * 1024,
    } as http.RequestOptions);
  }

  private serveRequest(job: Job, attempt: number): void {
    const { stream, head, report, observer } = job;
    const req = this.start(job, false);
    if (!req) return;
    let responded = false;
    let bytes = 0;
    stream.onReset = () => {
      req.destroy();
      report(499, bytes, 'cancelled');
    };
    if (head.body === BodyKind.None) {
      // Nothing to stream: send the request now (and again, unchanged, if a stale pooled socket fails).
      stream.onData = (chunk) => stream.ack(chunk.length);
      req.end();
    } else {
      pipeStreamInto(stream, req);
      if (attempt === 0) tapData(stream, observer?.requestData?.bind(observer));
      stream.onEnd = (trailers) => {
        if (trailers.length > 0) req.addTrailers(toPairs(trailers));
        req.end();
      };
      req.flushHeaders(); // let the local service see the request (and answer 100-continue) before the body
    }
    req.on('information', (info: http.InformationEvent) =>
      stream.sendInfo(info.statusCode, info.statusMessage, info.rawHeaders),
    );
    req.on('response', (res) => {
      responded = true;
      const status = res.statusCode ?? 502;
      const headers = this.publicHeaders(res.rawHeaders);
      stream.sendResponse(status, res.statusMessage ?? '', headers);
      observer?.response?.(status, res.statusMessage ?? '', headers);
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        observer?.responseData?.(chunk);
      });
      res.on('end', () => report(status, bytes));
      pipeIntoStream(res, stream, {
        trailers: () => res.rawTrailers,
        abortCode: ResetCode.LocalError,
        abortMessage: () => 'the local service closed the connection mid-response',
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (responded) return; // the response's own close handling resets the stream
      // A pooled keep-alive socket the local server had just closed: retry once on a fresh one (no body was sent).
      if (
        attempt === 0 &&
        req.reusedSocket &&
        err.code === 'ECONNRESET' &&
        head.body === BodyKind.None &&
        !stream.closed
      )
        return this.serveRequest(job, 1);
      this.fail(job, err);
    });
  }

  private serveUpgrade(job: Job): void {
    const { stream, report, observer } = job;
    const req = this.start(job, true);
    if (!req) return;
    // Bytes the public client sent before the switch wait here (unacknowledged, so bounded by the window).
    const early: Buffer[] = [];
    let earlyEnd = false;
    let upgraded: Socket | undefined;
    stream.onData = (chunk) => early.push(chunk);
    stream.onEnd = () => (earlyEnd = true);
    stream.onReset = () => {
      req.destroy();
      upgraded?.resetAndDestroy(); // the channel was cut: the local server must not see a clean end
      report(499, 0, 'cancelled');
    };
    req.on('upgrade', (res, socket: Socket, upgradeHead: Buffer) => {
      upgraded = socket;
      socket.on('error', () => {});
      const headers = this.publicHeaders(res.rawHeaders, true);
      stream.sendResponse(101, res.statusMessage ?? 'Switching Protocols', headers);
      observer?.response?.(101, res.statusMessage ?? 'Switching Protocols', headers);
      // Bytes the local server sent in the same packet as its 101 must not be lost.
      if (upgradeHead.length > 0) {
        observer?.channelData?.('out', upgradeHead);
        stream.write(upgradeHead);
      }
      if (observer?.channelData) socket.on('data', (chunk: Buffer) => observer.channelData!('out', chunk));
      pipeIntoStream(socket, stream, {
        abortCode: ResetCode.LocalError,
        abortMessage: () => 'the local service closed the channel',
      });
      pipeStreamInto(stream, socket);
      tapData(stream, observer?.channelData && ((chunk) => observer.channelData!('in', chunk)));
      for (const chunk of early.splice(0)) stream.onData(chunk);
      stream.onEnd = () => socket.end();
      if (earlyEnd) socket.end();
      socket.on('close', () => report(101, 0));
    });
    req.on('response', (res) => {
      // The local server refused the upgrade: pass its answer back as it is.
      const status = res.statusCode ?? 502;
      const headers = this.publicHeaders(res.rawHeaders);
      stream.sendResponse(status, res.statusMessage ?? '', headers);
      observer?.response?.(status, res.statusMessage ?? '', headers);
      if (observer?.responseData) res.on('data', (chunk: Buffer) => observer.responseData!(chunk));
      stream.onData = (chunk) => stream.ack(chunk.length);
      for (const chunk of early.splice(0)) stream.ack(chunk.length);
      pipeIntoStream(res, stream, { abortCode: ResetCode.LocalError });
      res.on('end', () => report(status, 0));
    });
    req.on('error', (err) => {
      if (!upgraded) this.fail(job, err);
    });
    req.end();
  }
}
