// Replay: sends a recorded request (as it was, or edited) straight to its tunnel's local target and records the result,
// through the same HTTP/1.1 client as live traffic (cli/local-exchange.ts), so an unedited replay is the same bytes.
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader, setHeader, stripHopByHop, TOKEN, withoutHeader } from '../../protocol/headers.js';
import {
  MID_RESPONSE_MESSAGE,
  sendLocalRequest,
  type LocalExchange,
  type LocalRequest,
} from '../local-exchange.js';
import { LocalPool } from '../local-pool.js';
import { describeLocalError } from '../local-request.js';
import { describeTarget, type LocalTarget } from '../target.js';
import type { ReplayEdits } from './api.js';
import type { ExchangeRecord, InspectorStore } from './store.js';

export type { ReplayEdits } from './api.js';

/** A replay that cannot start, with the HTTP status the API answers. */
export class ReplayError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_TARGET_CHARS = 16 * 1024;
const MAX_HEADERS = 1000;
/** A replay with no data either way for this long is cut (the tunnel's own idle timeout is 15 minutes). */
const REPLAY_IDLE_TIMEOUT_MS = 15 * 60_000;

function hasSpaceOrControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** Checks the JSON body of a replay request. Throws ReplayError(400) with a one-line reason. */
export function parseReplayEdits(input: unknown): ReplayEdits {
  if (input === undefined || input === null) return {};
  if (typeof input !== 'object' || Array.isArray(input)) throw new ReplayError(400, 'expected a JSON object');
  const o = input as Record<string, unknown>;
  const edits: ReplayEdits = {};
  for (const key of Object.keys(o))
    if (!['method', 'target', 'headers', 'body', 'bodyBase64'].includes(key))
      throw new ReplayError(400, `unknown field "${key}"`);
  if (o.method !== undefined) {
    if (typeof o.method !== 'string' || !TOKEN.test(o.method) || o.method.length > 64)
      throw new ReplayError(400, 'method must be an HTTP token, e.g. GET');
    edits.method = o.method;
  }
  if (o.target !== undefined) {
    if (
      typeof o.target !== 'string' ||
      o.target.length > MAX_TARGET_CHARS ||
      !(o.target.startsWith('/') || o.target === '*') ||
      hasSpaceOrControl(o.target)
    )
      throw new ReplayError(400, 'target must be a path starting with "/" (no spaces or control characters)');
    edits.target = o.target;
  }
  if (o.headers !== undefined) {
    if (!Array.isArray(o.headers) || o.headers.length > MAX_HEADERS)
      throw new ReplayError(400, `headers must be a list of at most ${MAX_HEADERS} [name, value] pairs`);
    edits.headers = o.headers.map((pair: unknown) => {
      if (
        !Array.isArray(pair) ||
        pair.length !== 2 ||
        typeof pair[0] !== 'string' ||
        typeof pair[1] !== 'string' ||
        !TOKEN.test(pair[0]) ||
        /[\r\n\0]/.test(pair[1])
      )
        throw new ReplayError(400, `bad header ${JSON.stringify(pair)}: expected ["Name", "value"]`);
      return [pair[0], pair[1]] as [string, string];
    });
  }
  if (o.body !== undefined && o.bodyBase64 !== undefined)
    throw new ReplayError(400, 'give body or bodyBase64, not both');
  if (o.body !== undefined) {
    if (typeof o.body !== 'string') throw new ReplayError(400, 'body must be a string');
    edits.body = o.body;
  }
  if (o.bodyBase64 !== undefined) {
    if (typeof o.bodyBase64 !== 'string' || !/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(o.bodyBase64))
      throw new ReplayError(400, 'bodyBase64 must be base64');
    edits.bodyBase64 = o.bodyBase64;
  }
  return edits;
}

/** Headers an edited replay does not copy: it frames its own body. */
const FRAMING = ['content-length', 'transfer-encoding', 'expect'];

/** How a header list frames a body; undefined for framings a replay does not reproduce (conflicting, other codings). */
type Framing = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | undefined;

function framingOf(headers: HeaderList): Framing {
  const lengths: string[] = [];
  const codings: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === 14 && name.toLowerCase() === 'content-length') lengths.push(headers[i + 1]!.trim());
    else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') codings.push(headers[i + 1]!);
  }
  if (codings.length > 0)
    return lengths.length === 0 && codings.length === 1 && codings[0]!.trim().toLowerCase() === 'chunked'
      ? { kind: 'chunked' }
      : undefined;
  if (lengths.length === 0) return { kind: 'none' };
  return lengths.length === 1 && /^\d{1,15}$/.test(lengths[0]!)
    ? { kind: 'length', length: Number(lengths[0]) }
    : undefined;
}

/** `body` as one chunk and the last chunk (no trailers: the inspector does not record request trailers). */
function chunked(body: Buffer): Buffer {
  if (body.length === 0) return Buffer.from('0\r\n\r\n', 'latin1');
  return Buffer.concat([
    Buffer.from(`${body.length.toString(16)}\r\n`, 'latin1'),
    body,
    Buffer.from('\r\n0\r\n\r\n', 'latin1'),
  ]);
}

/** What a replay sends: the request as it goes on the wire, and its body as recorded (unframed). */
export interface ReplayRequest {
  wire: LocalRequest;
  body: Buffer;
}

/**
 * The request a replay of `source` sends. Without edits of headers or body it is the recorded request itself: the
 * header list the local service got (Host as the tunnel's host rule made it, framing included) and the captured
 * body in the same framing, so the bytes are those the tunnel sent (a chunked body goes as one chunk). Edited
 * headers or body are framed anew with Content-Length; hop-by-hop headers given in an edit are dropped; a request
 * left without Host gets the recorded one, or the target's host:port.
 */
export function replayRequest(
  source: ExchangeRecord,
  edits: ReplayEdits,
  target: LocalTarget,
): ReplayRequest {
  if (source.upgrade)
    throw new ReplayError(409, 'upgrades (WebSocket and other channels) cannot be replayed');
  let body: Buffer;
  if (edits.body !== undefined) body = Buffer.from(edits.body, 'utf8');
  else if (edits.bodyBase64 !== undefined) body = Buffer.from(edits.bodyBase64, 'base64');
  else if (source.requestBody.truncated)
    throw new ReplayError(
      409,
      `the request body was cut at ${source.requestBody.captured} of ${source.requestBody.size} bytes; give a body to replay`,
    );
  else body = source.requestBody.bytes();
  const method = edits.method ?? source.method;
  const path = edits.target ?? source.target;

  const bodyEdited = edits.body !== undefined || edits.bodyBase64 !== undefined;
  if (!edits.headers && !bodyEdited) {
    const headers = [...source.requestHeaders];
    const framing = framingOf(headers);
    if (framing?.kind === 'chunked')
      return { wire: { method, target: path, headers, body: chunked(body) }, body };
    if (
      (framing?.kind === 'length' && framing.length === body.length) ||
      (framing?.kind === 'none' && body.length === 0)
    )
      return { wire: { method, target: path, headers, body }, body };
  }

  let headers: HeaderList = edits.headers ? stripHopByHop(edits.headers.flat()) : [...source.requestHeaders];
  const hadBody =
    source.requestBody.size > 0 ||
    getHeader(source.requestHeaders, 'content-length') !== undefined ||
    getHeader(source.requestHeaders, 'transfer-encoding') !== undefined;
  for (const name of FRAMING) headers = withoutHeader(headers, name);
  if (body.length > 0 || hadBody || bodyEdited) headers.push('Content-Length', String(body.length));
  // HTTP/1.1 needs a Host: the one live traffic carried (after the tunnel's host rule), else the target's.
  if (getHeader(headers, 'host') === undefined)
    setHeader(
      headers,
      'Host',
      getHeader(source.requestHeaders, 'host') ?? describeTarget(target).replace(/^https?:\/\//, ''),
    );
  return { wire: { method, target: path, headers, body }, body };
}

/** The inspector's side of replays: one keep-alive pool per local target (as each tunnel has), and what is in flight. */
export class Replayer {
  private readonly pools = new Map<string, LocalPool>();
  private readonly inflight = new Set<LocalExchange>();
  private closed = false;

  /**
   * Starts replaying `source` against `target` with `edits` applied, recorded as a new exchange with `replayOf`
   * set. Returns the new exchange's id at once; the exchange completes in the store. Throws ReplayError.
   */
  start(store: InspectorStore, source: ExchangeRecord, edits: ReplayEdits, target: LocalTarget): number {
    const { wire, body } = replayRequest(source, edits, target);
    const recorder = store.begin({
      tunnel: source.tunnel,
      method: wire.method,
      target: wire.target,
      headers: wire.headers,
      upgrade: false,
      replayOf: source.id,
    });
    if (body.length > 0) recorder.requestData(body);
    const started = Date.now();
    let status = 0;
    let finished = false;
    const finish = (error?: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(idle);
      if (exchange) this.inflight.delete(exchange);
      recorder.end({ status, durationMs: Date.now() - started, error });
    };
    const idle = setTimeout(() => {
      exchange?.cancel();
      finish('no data for 15 minutes');
    }, REPLAY_IDLE_TIMEOUT_MS);
    idle.unref();
    const exchange = this.closed
      ? undefined
      : sendLocalRequest(this.pool(target), wire, {
          onHead: (code, reason, headers, info) => {
            idle.refresh();
            if (info) return;
            status = code;
            recorder.response(code, reason, stripHopByHop(headers));
          },
          onBody: (chunk) => {
            idle.refresh();
            recorder.responseData(chunk);
          },
          onDone: () => finish(),
          onError: (err, responded) =>
            finish(responded ? MID_RESPONSE_MESSAGE : describeLocalError(err, target)),
        });
    if (!exchange) finish('the inspector is closing');
    else if (!finished) this.inflight.add(exchange);
    return recorder.id;
  }

  /** Cuts replays in flight and closes the pooled connections. */
  close(): void {
    this.closed = true;
    for (const exchange of this.inflight) exchange.cancel();
    this.inflight.clear();
    for (const pool of this.pools.values()) pool.close();
    this.pools.clear();
  }

  private pool(target: LocalTarget): LocalPool {
    const key = `${describeTarget(target)} ${target.insecure}`;
    let pool = this.pools.get(key);
    if (!pool) this.pools.set(key, (pool = new LocalPool(target)));
    return pool;
  }
}
