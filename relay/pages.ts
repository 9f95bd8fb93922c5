// Error and landing pages the relay itself answers with (everything else comes from the local service).
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** Builds a small self-contained HTML page. */
function page(status: number, title: string, detail: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${status} ${escapeHtml(title)} · ggrok</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}small{color:#777}</style></head>
<body><h1>${status} · ${escapeHtml(title)}</h1><p>${detail}</p><p><small>ggrok relay</small></p></body></html>
`;
}

export interface ErrorPage {
  status: number;
  /** Stable machine-readable code, also sent as X-Ggrok-Error. */
  code: string;
  title: string;
  /** Plain text detail; escaped into the page. */
  detail: string;
  retryAfterSeconds?: number;
  /** Extra response headers (e.g. WWW-Authenticate). */
  headers?: Record<string, string>;
}

/** Sends an error page on a response that has not started yet. */
export function sendErrorPage(res: ServerResponse, p: ErrorPage): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = page(p.status, p.title, escapeHtml(p.detail));
  const headers: Record<string, string | number> = {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Ggrok-Error': p.code,
  };
  if (p.retryAfterSeconds !== undefined) headers['Retry-After'] = p.retryAfterSeconds;
  Object.assign(headers, p.headers);
  res.writeHead(p.status, headers);
  res.end(body);
}

/** Writes an error page straight onto a raw socket (upgrade requests have no ServerResponse) and closes it. */
export function writeRawErrorPage(socket: Duplex, p: ErrorPage): void {
  const body = page(p.status, p.title, escapeHtml(p.detail));
  const lines = [
    `HTTP/1.1 ${p.status} ${p.title}`,
    'Content-Type: text/html; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    `X-Ggrok-Error: ${p.code}`,
    'Connection: close',
  ];
  if (p.retryAfterSeconds !== undefined) lines.push(`Retry-After: ${p.retryAfterSeconds}`);
  for (const [name, value] of Object.entries(p.headers ?? {})) lines.push(`${name}: ${value}`);
  if (socket.writable) socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  else socket.destroy();
}

/** Sends JSON with no caching. */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

/** The page at the relay's own host. */
export function landingPage(connectUrl: string, mode: string): string {
  return page(
    200,
    'ggrok relay',
    `This is a ggrok relay (${escapeHtml(mode)}). Share a local port through it with ` +
      `<code>ggrok http 3000 --server ${escapeHtml(connectUrl)} --token &lt;token&gt;</code>.`,
  );
}
