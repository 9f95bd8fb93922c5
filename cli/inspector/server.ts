// The inspector's HTTP server: the page, the JSON API, live events, replay, curl and HAR exports.
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader } from '../../protocol/headers.js';
import type { HostCheckHint } from '../host-check.js';
import type {
  ExchangeDetails,
  ExchangeSummary,
  HeaderPairs,
  HintView,
  TunnelView,
  WsMessageView,
} from './api.js';
import { renderBody } from './body.js';
import { publicUrl, toCurl, toHar, type TunnelInfo } from './export.js';
import { inspectorPage } from './page.js';
import { parseReplayEdits, ReplayError, Replayer } from './replay.js';
import type { ExchangeRecord, InspectorStore, StoreEvent, WsMessage } from './store.js';

/** What the server needs from the inspector around it. */
export interface ServerContext {
  store: InspectorStore;
  tunnels: () => ReadonlyMap<string, TunnelInfo>;
  /** The relay's traffic counters per tunnel name (empty until the relay reports). */
  traffic?: () => ReadonlyMap<
    string,
    { requests: number; bytesIn: number; bytesOut: number; channels: number }
  >;
  /** Dev servers' host-check refusals the client explained (shown above the list). */
  hints?: () => readonly HostCheckHint[];
  /** The address the server is bound to (its own name is an accepted Host). */
  host: string;
  /** The port it listens on, once known. */
  port: () => number;
}

export type { ExchangeSummary } from './api.js';

/** Seconds between comments on the live event stream, so proxies and browsers keep it open. */
const EVENTS_HEARTBEAT_MS = 15_000;
/** A live-events client this far behind is dropped (its EventSource reconnects and reloads). */
const MAX_EVENTS_BACKLOG_BYTES = 1024 * 1024;

/** The list line of a record. */
export function summarize(r: ExchangeRecord): ExchangeSummary {
  const s: ExchangeSummary = {
    id: r.id,
    rev: r.rev,
    tunnel: r.tunnel,
    startedAt: r.startedAt,
    method: r.method,
    target: r.target,
    requestSize: r.requestBody.size,
    responseSize: r.responseBody.size,
    upgrade: r.upgrade,
    done: r.done,
  };
  if (r.status !== undefined) s.status = r.status;
  if (r.reason !== undefined) s.reason = r.reason;
  if (r.durationMs !== undefined) s.durationMs = r.durationMs;
  const type = r.responseHeaders && getHeader(r.responseHeaders, 'content-type');
  if (type) s.contentType = type;
  if (r.error) s.error = r.error;
  if (r.replayOf !== undefined) s.replayOf = r.replayOf;
  if (r.inbox !== undefined) s.inbox = r.inbox;
  if (r.receivedAt !== undefined) s.receivedAt = r.receivedAt;
  if (r.channel) s.messages = r.channel.total;
  if (r.sse) s.events = r.sse.total;
  return s;
}

function pairs(headers: HeaderList | undefined): HeaderPairs {
  const out: HeaderPairs = [];
  if (headers) for (let i = 0; i < headers.length; i += 2) out.push([headers[i]!, headers[i + 1]!]);
  return out;
}

function messageView(m: WsMessage): WsMessageView {
  const v: WsMessageView = {
    seq: m.seq,
    direction: m.direction,
    at: m.at,
    type: m.type,
    size: m.size,
    truncated: m.truncated,
    compressed: m.compressed,
  };
  if (m.note) v.note = m.note;
  if (m.type === 'text') v.text = m.data.toString('utf8');
  else if (m.type === 'close') {
    if (m.data.length >= 2) v.closeCode = m.data.readUInt16BE(0);
    v.text = m.data.subarray(2).toString('utf8');
  } else if (m.type === 'binary') v.base64 = m.data.toString('base64');
  else {
    // Ping and pong payloads are often short text; show them as text when they are.
    const text = m.data.toString('utf8');
    const printable = [...m.data].every((c) => c >= 0x20 || c === 9 || c === 10 || c === 13);
    if (printable && Buffer.from(text, 'utf8').equals(m.data)) v.text = text;
    else v.base64 = m.data.toString('base64');
  }
  return v;
}

/** Everything about one exchange, bodies rendered. */
export function details(
  r: ExchangeRecord,
  tunnel: TunnelInfo | undefined,
  maxBodyBytes: number,
): ExchangeDetails {
  return {
    ...summarize(r),
    url: publicUrl(r, tunnel),
    request: {
      headers: pairs(r.requestHeaders),
      ...(r.publicRequestHeaders ? { publicHeaders: pairs(r.publicRequestHeaders) } : {}),
      body: renderBody(r.requestBody.bytes(), r.requestBody.size, r.requestHeaders, maxBodyBytes),
    },
    response:
      r.status === undefined || r.responseHeaders === undefined
        ? null
        : {
            status: r.status,
            reason: r.reason ?? '',
            headers: pairs(r.responseHeaders),
            body: renderBody(r.responseBody.bytes(), r.responseBody.size, r.responseHeaders, maxBodyBytes),
          },
    ...(r.channel
      ? {
          websocket: {
            protocol: r.channel.protocol,
            ...(r.channel.error ? { error: r.channel.error } : {}),
            deflate: r.channel.deflate,
            total: r.channel.total,
            bytesIn: r.channel.bytesIn,
            bytesOut: r.channel.bytesOut,
            messages: r.channel.messages.map(messageView),
          },
        }
      : {}),
    ...(r.sse ? { sse: { total: r.sse.total, events: r.sse.events } } : {}),
  };
}

/**
 * True for a Host that names this server: localhost, an IP literal or the bound name, with our port.
 * Anything else is a DNS-rebinding attempt (a page on evil.example whose name now points at 127.0.0.1).
 */
export function hostAllowed(host: string | undefined, port: number, ownHost: string): boolean {
  if (!host) return false;
  const m = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(host) ?? /^([^:[\]]+)(?::(\d+))?$/.exec(host);
  if (!m) return false;
  const name = m[1]!.toLowerCase();
  const p = m[2] === undefined ? 80 : Number(m[2]);
  if (p !== port) return false;
  return name === 'localhost' || net.isIP(name) !== 0 || name === ownHost.toLowerCase();
}

function send(
  res: ServerResponse,
  status: number,
  body: string | Buffer,
  type: string,
  extra: Record<string, string> = {},
): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    ...extra,
  });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, JSON.stringify(value), 'application/json; charset=utf-8');
}

function sendError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: message });
}

/** Reads a request body up to `limit` bytes; rejects with ReplayError(413) beyond. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new ReplayError(413, `request body over ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Creates the inspector's http.Server (not yet listening). `close()` ends live-event clients and replays. */
export function createInspectorServer(ctx: ServerContext): {
  server: http.Server;
  close: () => void;
} {
  const { store } = ctx;
  const maxBody = store.limits.maxBodyBytes;
  const replayer = new Replayer();
  const eventClients = new Set<ServerResponse>();

  let unsubscribe: (() => void) | undefined;
  /** One write per batch of changes for every live-events client (the store batches them, BATCH_INTERVAL_MS). */
  const onChanges = (e: StoreEvent): void => {
    let text = '';
    if (e.kind === 'clear') text = 'event: clear\ndata: {}\n\n';
    else {
      for (const r of e.records) text += `event: exchange\ndata: ${JSON.stringify(summarize(r))}\n\n`;
      if (e.evicted.length > 0) text += `event: evict\ndata: ${JSON.stringify(e.evicted)}\n\n`;
    }
    if (text === '') return;
    for (const res of eventClients) {
      if (res.writableLength > MAX_EVENTS_BACKLOG_BYTES) {
        dropClient(res);
        res.destroy();
        continue;
      }
      res.write(text);
    }
  };
  /** Forgets a live-events client; the store stops collecting changes once nobody listens. */
  const dropClient = (res: ServerResponse): void => {
    if (!eventClients.delete(res) || eventClients.size > 0) return;
    unsubscribe?.();
    unsubscribe = undefined;
  };
  const heartbeat = setInterval(() => {
    for (const res of eventClients) res.write(': keep-alive\n\n');
  }, EVENTS_HEARTBEAT_MS);
  heartbeat.unref();

  const record = (res: ServerResponse, idText: string): ExchangeRecord | undefined => {
    const r = /^\d{1,15}$/.test(idText) ? store.get(Number(idText)) : undefined;
    if (!r) sendError(res, 404, `no exchange ${idText} (it may have been evicted)`);
    return r;
  };

  async function replay(req: IncomingMessage, res: ServerResponse, idText: string): Promise<void> {
    const raw = await readBody(req, Math.max(4 * maxBody, 1024 * 1024) + 64 * 1024);
    const source = record(res, idText);
    if (!source) return;
    let input: unknown;
    try {
      input = raw.length === 0 ? undefined : JSON.parse(raw.toString('utf8'));
    } catch {
      throw new ReplayError(400, 'the body is not valid JSON');
    }
    const edits = parseReplayEdits(input);
    const tunnel = ctx.tunnels().get(source.tunnel);
    if (!tunnel)
      throw new ReplayError(
        409,
        `the local target of tunnel "${source.tunnel}" is not known (is the tunnel online?)`,
      );
    const id = replayer.start(store, source, edits, tunnel.target);
    sendJson(res, 200, { id });
  }

  function events(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      Connection: 'keep-alive',
    });
    res.write('retry: 1000\n\n');
    unsubscribe ??= store.subscribe(onChanges);
    eventClients.add(res);
    const drop = (): void => dropClient(res);
    req.on('close', drop);
    res.on('close', drop);
    res.on('error', drop);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!hostAllowed(req.headers.host, ctx.port(), ctx.host))
      return sendError(res, 403, 'forbidden Host: open the inspector at 127.0.0.1 or localhost');
    const url = new URL(req.url ?? '/', 'http://inspector.invalid');
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (method === 'POST') {
      // Cross-site pages cannot send application/json without a preflight, which this server never grants.
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json')
        return sendError(res, 415, 'POST requests must have Content-Type: application/json');
      const origin = req.headers.origin;
      if (origin !== undefined) {
        let originHost: string | undefined;
        try {
          originHost = new URL(origin).host;
        } catch {
          originHost = undefined;
        }
        if (!hostAllowed(originHost, ctx.port(), ctx.host))
          return sendError(res, 403, 'cross-origin requests are not allowed');
      }
      if (req.headers['sec-fetch-site'] === 'cross-site')
        return sendError(res, 403, 'cross-site requests are not allowed');
      const m = /^\/api\/exchanges\/([^/]+)\/replay$/.exec(path);
      if (m) return replay(req, res, m[1]!);
      if (path === '/api/clear') {
        req.resume();
        store.clear();
        return sendJson(res, 200, { cleared: true });
      }
      req.resume();
      return sendError(res, 404, 'not found');
    }
    if (method !== 'GET' && method !== 'HEAD') {
      req.resume();
      return sendError(res, 405, 'method not allowed');
    }

    if (path === '/') {
      const nonce = randomBytes(16).toString('base64');
      return send(res, 200, inspectorPage(nonce), 'text/html; charset=utf-8', {
        'Content-Security-Policy': [
          "default-src 'none'",
          `script-src 'nonce-${nonce}'`,
          `style-src 'nonce-${nonce}'`,
          "connect-src 'self'",
          "img-src 'self' data:",
          "base-uri 'none'",
          "form-action 'none'",
          "frame-ancestors 'none'",
        ].join('; '),
      });
    }
    if (path === '/api/exchanges') return sendJson(res, 200, { exchanges: store.list().map(summarize) });
    if (path === '/api/events') return events(req, res);
    if (path === '/api/tunnels') {
      const list = [...ctx.tunnels().values()].map((t): TunnelView => ({
        name: t.name,
        url: t.url,
        target: t.target,
        traffic: ctx.traffic?.().get(t.name) ?? null,
      }));
      const hints: readonly HintView[] = ctx.hints?.() ?? [];
      return sendJson(res, 200, { tunnels: list, hints });
    }
    if (path === '/api/har') {
      const har = toHar(store.chronological(), ctx.tunnels(), maxBody);
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      return send(res, 200, JSON.stringify(har, null, 2), 'application/json; charset=utf-8', {
        'Content-Disposition': `attachment; filename="ggrok-${stamp}.har"`,
      });
    }
    let m = /^\/api\/exchanges\/([^/]+)$/.exec(path);
    if (m) {
      const r = record(res, m[1]!);
      if (r) sendJson(res, 200, details(r, ctx.tunnels().get(r.tunnel), maxBody));
      return;
    }
    m = /^\/api\/exchanges\/([^/]+)\/curl$/.exec(path);
    if (m) {
      const r = record(res, m[1]!);
      if (r) send(res, 200, toCurl(r, ctx.tunnels().get(r.tunnel)), 'text/plain; charset=utf-8');
      return;
    }
    return sendError(res, 404, 'not found');
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      if (err instanceof ReplayError) return sendError(res, err.status, err.message);
      sendError(res, 500, err instanceof Error ? err.message : String(err));
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  return {
    server,
    close: () => {
      unsubscribe?.();
      unsubscribe = undefined;
      clearInterval(heartbeat);
      for (const res of eventClients) res.destroy();
      eventClients.clear();
      replayer.close();
    },
  };
}
