// The relay's own pages on its own host: health, the TLS "ask" check, metrics, status and the landing page.
import { ErrorCode } from '../protocol/errors.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { INBOX_PATH } from './inbox-api.js';
import { landingPage, sendErrorPage, sendJson, statusPage, type RelayStatus } from './pages.js';

/** Paths under this prefix on the relay's own host belong to the relay. */
export const RELAY_PATH_PREFIX = '/_ggrok/';
/** Where clients open their control WebSocket. */
export const CONNECT_PATH = '/_ggrok/connect';
const HEALTH_PATH = '/_ggrok/health';
/** Caddy's on-demand TLS asks here whether to issue a certificate for ?domain=. */
const ASK_PATH = '/_ggrok/ask';
const METRICS_PATH = '/_ggrok/metrics';
const STATUS_PATH = '/_ggrok/status';

/** What the endpoints need to know about the relay. */
export interface RelaySelf {
  /** The body of /_ggrok/health. */
  health(): Record<string, unknown>;
  /** What /_ggrok/status shows; never a token, only its label. */
  statusReport(): RelayStatus;
  renderMetrics(): Promise<{ contentType: string; body: string }>;
  /** Whether a TLS certificate may be issued for this host name. */
  certificateAllowed(host: string): boolean | Promise<boolean>;
  /**
   * Whether a request presenting `token` (or none) may read metrics and status. An address that presented too
   * many wrong tokens lately is told to wait, whatever it presents now.
   */
  observerAccess(
    req: IncomingMessage,
    token: string | undefined,
  ): 'allowed' | 'denied' | { retryAfterSeconds: number };
  /** The relay's address as this request reached it, and a few words on what it serves (the landing page). */
  landing(req: IncomingMessage): { url: string; serves: string };
  /** The webhook inbox API (`ggrok inbox`): checks the client token, then answers. */
  inbox(req: IncomingMessage, res: ServerResponse, path: string): void;
}

/** Answers a request for the relay's own host. */
export function serveRelayEndpoint(req: IncomingMessage, res: ServerResponse, self: RelaySelf): void {
  const path = (req.url ?? '/').split('?')[0]!;
  if (path === HEALTH_PATH) return sendJson(res, 200, self.health());
  if (path === ASK_PATH) {
    const domain = new URL(req.url ?? '/', 'http://relay').searchParams.get('domain') ?? '';
    const answer = (allowed: boolean): void => {
      res.writeHead(allowed ? 200 : 404, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' });
      res.end(allowed ? 'ok\n' : 'no such tunnel\n');
    };
    return void Promise.resolve(self.certificateAllowed(domain)).then(answer, () => answer(false));
  }
  if (path === METRICS_PATH) return serveMetrics(req, res, self);
  if (path === STATUS_PATH) return serveStatus(req, res, self);
  if (path === INBOX_PATH || path.startsWith(`${INBOX_PATH}/`)) return self.inbox(req, res, path);
  if (path === CONNECT_PATH)
    return sendErrorPage(res, {
      status: 426,
      code: ErrorCode.UpgradeRequired,
      title: 'Upgrade Required',
      detail: 'This endpoint takes a WebSocket from the ggrok client.',
    });
  if (path === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
    const { url, serves } = self.landing(req);
    const body = landingPage(url, serves);
    res.writeHead(200, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    return void res.end(body);
  }
  sendErrorPage(res, {
    status: 404,
    code: ErrorCode.NotFound,
    title: 'Not found',
    detail: `Nothing at ${path} on this relay.`,
  });
}

/** The token of an Authorization: Bearer header, if any. */
export function bearerToken(req: IncomingMessage): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
}

/** The observer token from Authorization: Bearer (or, where a browser must open the page, ?token=), checked. */
function observerAccess(
  req: IncomingMessage,
  self: RelaySelf,
  allowQuery: boolean,
): 'allowed' | 'denied' | { retryAfterSeconds: number } {
  const header = bearerToken(req);
  const query = allowQuery
    ? (new URL(req.url ?? '/', 'http://relay').searchParams.get('token') ?? undefined)
    : undefined;
  return self.observerAccess(req, header ?? query);
}

/** 429 for an address that must wait after too many wrong tokens. */
function sendTooManyAttempts(res: ServerResponse, retryAfterSeconds: number): void {
  sendErrorPage(res, {
    status: 429,
    code: ErrorCode.TooManyAttempts,
    title: 'Too many attempts',
    detail: 'Too many wrong tokens came from your address. Wait a few seconds and try again.',
    retryAfterSeconds,
  });
}

function serveMetrics(req: IncomingMessage, res: ServerResponse, self: RelaySelf): void {
  const access = observerAccess(req, self, false);
  if (typeof access === 'object') return sendTooManyAttempts(res, access.retryAfterSeconds);
  if (access === 'denied') {
    res.writeHead(401, {
      'Content-Type': 'text/plain; charset=utf-8',
      'WWW-Authenticate': 'Bearer realm="ggrok"',
      'Cache-Control': 'no-store',
    });
    return void res.end('401 Unauthorized: send Authorization: Bearer <token>\n');
  }
  self.renderMetrics().then(
    ({ contentType, body }) => {
      res.writeHead(200, {
        'Content-Type': contentType,
        'Content-Length': Buffer.byteLength(body),
        'Cache-Control': 'no-store',
      });
      res.end(body);
    },
    (err: Error) =>
      sendErrorPage(res, {
        status: 500,
        code: ErrorCode.MetricsFailed,
        title: 'Metrics failed',
        detail: err.message,
      }),
  );
}

function serveStatus(req: IncomingMessage, res: ServerResponse, self: RelaySelf): void {
  const format = new URL(req.url ?? '/', 'http://relay').searchParams.get('format');
  const json =
    format === 'json' || (format !== 'html' && /\bapplication\/json\b/i.test(req.headers.accept ?? ''));
  const access = observerAccess(req, self, true);
  if (typeof access === 'object') return sendTooManyAttempts(res, access.retryAfterSeconds);
  if (access === 'denied') {
    if (json) return sendJson(res, 401, { error: 'unauthorized' });
    return sendErrorPage(res, {
      status: 401,
      code: ErrorCode.Unauthorized,
      title: 'Unauthorized',
      detail:
        "This page needs the relay's token: add ?token=<token> to the address, or send Authorization: Bearer <token>.",
    });
  }
  if (json) return sendJson(res, 200, self.statusReport());
  const body = statusPage(self.statusReport());
  res.writeHead(200, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    // The address may hold ?token=: never send it along to the tunnels the page links to.
    'Referrer-Policy': 'no-referrer',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(body);
}
