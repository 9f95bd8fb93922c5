// Replay: sends a recorded request (as it was, or edited) straight to its tunnel's local target and records the result.
import http from 'node:http';
import https from 'node:https';
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader, setHeader, stripHopByHop, TOKEN, withoutHeader } from '../../protocol/headers.js';
import { describeLocalError, describeTarget, lookupLocalhost, type LocalTarget } from '../local-request.js';
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

/** Headers a replay must not copy: the new request frames its own body and connection. */
const FRAMING = ['content-length', 'transfer-encoding', 'expect'];

/**
 * Starts replaying `source` against `target` with `edits` applied, recorded as a new exchange with
 * `replayOf` set. Returns the new exchange's id at once; the exchange completes in the store.
 */
export function startReplay(
  store: InspectorStore,
  source: ExchangeRecord,
  edits: ReplayEdits,
  target: LocalTarget,
  inflight: Set<http.ClientRequest>,
): number {
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
  let headers: HeaderList = edits.headers ? edits.headers.flat() : [...source.requestHeaders];
  const hadBody =
    source.requestBody.size > 0 ||
    getHeader(source.requestHeaders, 'content-length') !== undefined ||
    getHeader(source.requestHeaders, 'transfer-encoding') !== undefined;
  headers = stripHopByHop(headers);
  for (const name of FRAMING) headers = withoutHeader(headers, name);
  if (body.length > 0 || hadBody || edits.body !== undefined || edits.bodyBase64 !== undefined)
    headers.push('Content-Length', String(body.length));
  // HTTP/1.1 needs a Host; with an array of headers Node adds none itself.
  if (getHeader(headers, 'host') === undefined)
    setHeader(headers, 'Host', describeTarget(target).replace(/^https?:\/\//, ''));

  const recorder = store.begin({
    tunnel: source.tunnel,
    method,
    target: path,
    headers,
    upgrade: false,
    replayOf: source.id,
  });
  const started = Date.now();
  let finished = false;
  const finish = (status: number, error?: string): void => {
    if (finished) return;
    finished = true;
    recorder.end({ status, durationMs: Date.now() - started, error });
  };

  const mod = target.protocol === 'https:' ? https : http;
  let req: http.ClientRequest;
  try {
    req = mod.request({
      host: target.host,
      port: target.port,
      method,
      path,
      headers,
      agent: false,
      lookup: lookupLocalhost,
      autoSelectFamily: true,
      rejectUnauthorized: !target.insecure,
      maxHeaderSize: 64 * 1024,
    } as http.RequestOptions);
  } catch (err) {
    finish(0, `replay failed: ${(err as Error).message}`);
    return recorder.id;
  }
  inflight.add(req);
  req.setTimeout(REPLAY_IDLE_TIMEOUT_MS, () => req.destroy(new Error('no data for 15 minutes')));
  req.on('close', () => inflight.delete(req));
  req.on('response', (res) => {
    const status = res.statusCode ?? 0;
    recorder.response(status, res.statusMessage ?? '', stripHopByHop(res.rawHeaders));
    res.on('data', (chunk: Buffer) => recorder.responseData(chunk));
    res.on('end', () => finish(status));
    res.on('error', () => {});
    res.on('close', () => {
      if (!res.complete) finish(status, 'the local service closed the connection mid-response');
    });
  });
  req.on('error', (err) => finish(0, describeLocalError(err, target)));
  if (body.length > 0) recorder.requestData(body);
  req.end(body);
  return recorder.id;
}
