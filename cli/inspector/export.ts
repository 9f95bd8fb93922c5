// Exports: one exchange as a curl command line for its public URL, the whole session as HAR 1.2.
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader } from '../../protocol/headers.js';
import { VERSION } from '../../protocol/version.js';
import { describeTarget, type LocalTarget } from '../target.js';
import { formatBytes, mimeType, renderBody, type BodyView } from './body.js';
import type { ExchangeRecord } from './store.js';

/** A tunnel as the client reported it when it came online. */
export interface TunnelInfo {
  name: string;
  /** Public URL, e.g. https://demo.relay.example.com */
  url: string;
  target: LocalTarget;
}

/** The URL the exchange had (or would have) on the public side. */
export function publicUrl(record: ExchangeRecord, tunnel: TunnelInfo | undefined): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(record.target)) return record.target; // absolute-form target
  const path = record.target.startsWith('/') ? record.target : `/${record.target}`;
  if (tunnel?.url) return tunnel.url.replace(/\/+$/, '') + path;
  const headers = record.publicRequestHeaders ?? record.requestHeaders;
  const host = getHeader(headers, 'x-forwarded-host') ?? getHeader(headers, 'host');
  const proto = getHeader(headers, 'x-forwarded-proto') === 'https' ? 'https' : 'http';
  if (host) return `${proto}://${host}${path}`;
  return tunnel ? describeTarget(tunnel.target) + path : `http://localhost${path}`;
}

/** Quotes one word for POSIX shells: bare when safe, else in single quotes. */
export function shellQuote(s: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Request headers curl should not be given: it sets them itself, or the relay does. */
const CURL_SKIP = new Set([
  'host',
  'content-length',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'upgrade',
  'expect',
  'accept-encoding',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
]);
/** Longer bodies go through a pipe: one exec() argument is capped at 128 KiB on Linux. */
const MAX_INLINE_BODY_CHARS = 64 * 1024;

/**
 * A curl command line that sends the exchange's request again to its public URL, quoted for POSIX shells.
 * Text bodies go inline (or through printf for long ones), complete binary ones through `base64 -d`;
 * a body the inspector cut short is left out, with a note saying so.
 */
export function toCurl(record: ExchangeRecord, tunnel: TunnelInfo | undefined): string {
  const notes: string[] = [];
  const headers = record.publicRequestHeaders ?? record.requestHeaders;
  const body = record.requestBody;
  const view = renderBody(body.bytes(), body.size, undefined, 0);
  let pipe: string | undefined;
  let data: string[] = [];
  if (body.size > 0 && body.truncated) {
    notes.push(
      `# note: the request body (${formatBytes(body.size)}) was cut at ${formatBytes(body.captured)} by the inspector and is not included`,
    );
  } else if (body.size > 0 && view.kind !== 'binary' && !view.text!.includes('\0')) {
    const text = body.bytes().toString('utf8');
    if (text.length <= MAX_INLINE_BODY_CHARS) data = ['--data-raw', shellQuote(text)];
    else {
      pipe = `printf %s ${shellQuote(text)}`;
      data = ['--data-binary', '@-'];
    }
  } else if (body.size > 0) {
    pipe = `printf %s ${shellQuote(body.bytes().toString('base64'))} | base64 -d`;
    data = ['--data-binary', '@-'];
  }
  const sendsBody = data.length > 0;
  const method = record.method;
  const first = ['curl'];
  if (method === 'HEAD') first.push('--head');
  else if (!(method === 'GET' && !sendsBody) && !(method === 'POST' && sendsBody))
    first.push('-X', shellQuote(method));
  first.push(shellQuote(publicUrl(record, tunnel)));
  // One option (with its value) per line.
  const lines = [first.join(' ')];
  let compressed = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const lower = name.toLowerCase();
    if (lower === 'accept-encoding') compressed = true;
    if (CURL_SKIP.has(lower) || lower.startsWith('proxy-')) continue;
    const value = headers[i + 1]!;
    // "Name:" alone would remove the header; "Name;" sends it empty.
    lines.push(`-H ${shellQuote(value === '' ? `${name};` : `${name}: ${value}`)}`);
  }
  if (sendsBody && !getHeader(headers, 'content-type')) lines.push(`-H ${shellQuote('Content-Type:')}`); // no curl default
  if (compressed) lines.push('--compressed');
  if (sendsBody) lines.push(data.join(' '));
  const command = lines.join(' \\\n  ');
  return [...notes, pipe ? `${pipe} | ${command}` : command].join('\n') + '\n';
}

interface HarNameValue {
  name: string;
  value: string;
}

function pairs(headers: HeaderList | undefined): HarNameValue[] {
  const out: HarNameValue[] = [];
  if (headers)
    for (let i = 0; i < headers.length; i += 2) out.push({ name: headers[i]!, value: headers[i + 1]! });
  return out;
}

function requestCookies(headers: HeaderList): HarNameValue[] {
  const out: HarNameValue[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'cookie') continue;
    for (const part of headers[i + 1]!.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0) out.push({ name: part.slice(0, eq).trim(), value: part.slice(eq + 1).trim() });
    }
  }
  return out;
}

function responseCookies(headers: HeaderList | undefined): HarNameValue[] {
  const out: HarNameValue[] = [];
  if (!headers) return out;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'set-cookie') continue;
    const first = headers[i + 1]!.split(';')[0]!;
    const eq = first.indexOf('=');
    if (eq > 0) out.push({ name: first.slice(0, eq).trim(), value: first.slice(eq + 1).trim() });
  }
  return out;
}

function queryString(target: string): HarNameValue[] {
  const q = target.indexOf('?');
  if (q < 0) return [];
  const out: HarNameValue[] = [];
  try {
    for (const [name, value] of new URLSearchParams(target.slice(q + 1))) out.push({ name, value });
  } catch {
    // a malformed query string has no parameters to list
  }
  return out;
}

function truncationComment(view: BodyView): string | undefined {
  return view.truncated
    ? `truncated by the inspector: first ${view.captured} of ${view.size} bytes`
    : undefined;
}

/** One HAR entry for an exchange. */
function harEntry(record: ExchangeRecord, tunnel: TunnelInfo | undefined, maxBodyBytes: number): object {
  const reqView = renderBody(
    record.requestBody.bytes(),
    record.requestBody.size,
    record.requestHeaders,
    maxBodyBytes,
  );
  const resView = renderBody(
    record.responseBody.bytes(),
    record.responseBody.size,
    record.responseHeaders,
    maxBodyBytes,
  );
  const duration = record.durationMs ?? Math.max(0, Date.now() - record.startedAt);
  const wait = record.responseAt !== undefined ? Math.max(0, record.responseAt - record.startedAt) : duration;
  const request: Record<string, unknown> = {
    method: record.method,
    url: publicUrl(record, tunnel),
    httpVersion: 'HTTP/1.1',
    cookies: requestCookies(record.requestHeaders),
    headers: pairs(record.requestHeaders),
    queryString: queryString(record.target),
    headersSize: -1,
    bodySize: record.requestBody.size,
  };
  if (record.requestBody.size > 0) {
    const postData: Record<string, unknown> = {
      mimeType: reqView.contentType ?? '',
      text: reqView.text ?? reqView.base64 ?? '',
    };
    if (reqView.base64 !== undefined) postData._encoding = 'base64';
    const note = truncationComment(reqView);
    if (note) postData.comment = note;
    if (mimeType(reqView.contentType) === 'application/x-www-form-urlencoded' && reqView.text !== undefined)
      postData.params = [...new URLSearchParams(reqView.text)].map(([name, value]) => ({ name, value }));
    request.postData = postData;
  }
  const content: Record<string, unknown> = {
    size: resView.decodedSize ?? resView.size,
    mimeType: resView.contentType ?? 'x-unknown',
  };
  if (resView.text !== undefined) content.text = resView.text;
  else if (resView.base64 !== undefined) {
    content.text = resView.base64;
    content.encoding = 'base64';
  }
  if (resView.decodedSize !== undefined) content.compression = resView.decodedSize - resView.size;
  const note = truncationComment(resView);
  if (note) content.comment = note;
  const entry: Record<string, unknown> = {
    startedDateTime: new Date(record.startedAt).toISOString(),
    time: duration,
    request,
    response: {
      status: record.status ?? 0,
      statusText: record.reason ?? '',
      httpVersion: 'HTTP/1.1',
      cookies: responseCookies(record.responseHeaders),
      headers: pairs(record.responseHeaders),
      content,
      redirectURL: (record.responseHeaders && getHeader(record.responseHeaders, 'location')) ?? '',
      headersSize: -1,
      bodySize: record.upgrade ? 0 : record.responseBody.size,
    },
    cache: {},
    timings: {
      blocked: -1,
      dns: -1,
      connect: -1,
      ssl: -1,
      send: 0,
      wait,
      receive: Math.max(0, duration - wait),
    },
    _ggrok: {
      id: record.id,
      tunnel: record.tunnel,
      ...(record.replayOf ? { replayOf: record.replayOf } : {}),
    },
  };
  if (record.error) entry.comment = record.error;
  if (record.channel?.protocol === 'websocket' || (record.channel?.messages.length ?? 0) > 0) {
    // The same shape Chrome's DevTools writes for WebSocket frames.
    entry._webSocketMessages = record.channel!.messages.map((m) => ({
      type: m.direction === 'in' ? 'send' : 'receive',
      time: m.at / 1000,
      opcode: { text: 1, binary: 2, close: 8, ping: 9, pong: 10 }[m.type],
      data: m.type === 'text' ? m.data.toString('utf8') : m.data.toString('base64'),
    }));
  }
  if (record.sse) {
    entry._eventSourceMessages = record.sse.events.map((e) => ({
      time: e.at / 1000,
      eventName: e.event ?? 'message',
      eventId: e.id ?? '',
      data: e.data,
    }));
  }
  return entry;
}

/** The session as HAR 1.2, oldest exchange first. */
export function toHar(
  records: ExchangeRecord[],
  tunnels: ReadonlyMap<string, TunnelInfo>,
  maxBodyBytes: number,
): object {
  return {
    log: {
      version: '1.2',
      creator: { name: 'ggrok', version: VERSION },
      pages: [],
      entries: records.map((r) => harEntry(r, tunnels.get(r.tunnel), maxBodyBytes)),
    },
  };
}
