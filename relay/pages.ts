// Error and landing pages the relay itself answers with (everything else comes from the local service).
import type { ServerResponse } from 'node:http';
import type { ErrorCodeValue } from '../protocol/errors.js';
import { formatBytes } from '../protocol/units.js';
import type { Duplex } from 'node:stream';

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** Builds a small self-contained HTML page. */
function page(status: number, title: string, detail: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${status} ${escapeHtml(title)} · ggrok</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}small{color:#777}</style></head>
<body><h1>${status} · ${escapeHtml(title)}</h1><p>${detail}</p><p><small>ggrok relay</small></p></body></html>
`;
}

export interface ErrorPage {
  status: number;
  /** Stable machine-readable code, also sent as X-Ggrok-Error. */
  code: ErrorCodeValue;
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

/** One tunnel as the status page and its JSON show it. */
export interface TunnelStatus {
  name: string;
  url: string;
  /** The owner's token label; never the token. */
  owner: string;
  agent: string;
  connectedAt: string;
  uptimeSeconds: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  activeRequests: number;
  channels: number;
  /** ISO time, or null before any activity. */
  lastActivityAt: string | null;
  rttMs: number;
  /** Present for a member of an endpoint pool: its id, its client's host name and its health. */
  pool?: PoolMemberStatus;
}

/** One endpoint pool member as the status page shows it. */
export interface PoolMemberStatus {
  member: string;
  host: string;
  /** healthy, out (taken out for a back-off), probing (one request on trial) or draining (leaving). */
  health: string;
  /** Failures in a row since it last served. */
  failures: number;
}

/** One instance of a relay cluster as this instance last saw it. */
export interface MemberStatus {
  id: string;
  /** Whether it is the instance answering. */
  self: boolean;
  /** Tunnel names it has a live control socket for. */
  tunnels: number;
  instanceUrl: string | null;
  flyMachine: string | null;
}

export interface RelayStatus {
  version: string;
  mode: string;
  domain: string | null;
  /** The instance answering (its id also alone). */
  instance: string;
  uptimeSeconds: number;
  shuttingDown: boolean;
  tunnels: TunnelStatus[];
  /** A cluster's Redis and live instances; absent for a relay alone. */
  cluster?: { redis: 'up' | 'down'; members: MemberStatus[] };
}

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** The cluster part of the status page: Redis, and each live instance with the tunnels it carries. */
function clusterSection(cluster: NonNullable<RelayStatus['cluster']>): string {
  const rows = cluster.members
    .map(
      (m) =>
        `<tr><td>${escapeHtml(m.id)}${m.self ? ' <small>(this one)</small>' : ''}</td><td class="n">${m.tunnels}</td>` +
        `<td>${escapeHtml(m.instanceUrl ?? m.flyMachine ?? '—')}</td></tr>`,
    )
    .join('\n');
  return `<h2>Cluster</h2>
<p>Redis ${cluster.redis} · ${cluster.members.length} instance${cluster.members.length === 1 ? '' : 's'}</p>
<table><thead><tr><th>Instance</th><th>Tunnels</th><th>Reached at</th></tr></thead>
<tbody>
${rows}
</tbody></table>`;
}

/** The relay's status page for people: every value escaped, no scripts, links that send no Referer. */
export function statusPage(status: RelayStatus, now = Date.now()): string {
  const rows = status.tunnels
    .map((t) => {
      const last = t.lastActivityAt
        ? `${formatDuration((now - Date.parse(t.lastActivityAt)) / 1000)} ago`
        : '—';
      const cells = [
        `<td>${escapeHtml(t.name)}${
          t.pool
            ? `<br><small>pool member ${escapeHtml(t.pool.member)}${t.pool.host ? ` · ${escapeHtml(t.pool.host)}` : ''} · ${escapeHtml(t.pool.health)}</small>`
            : ''
        }</td>`,
        `<td><a href="${escapeHtml(t.url)}" rel="noreferrer noopener">${escapeHtml(t.url)}</a></td>`,
        `<td>${escapeHtml(t.owner)}</td>`,
        `<td>${escapeHtml(t.agent)}</td>`,
        `<td>${formatDuration(t.uptimeSeconds)}</td>`,
        `<td class="n">${t.requests}</td>`,
        `<td class="n">${formatBytes(t.bytesIn)}</td>`,
        `<td class="n">${formatBytes(t.bytesOut)}</td>`,
        `<td class="n">${t.channels}</td>`,
        `<td>${escapeHtml(last)}</td>`,
      ];
      return `<tr>${cells.join('')}</tr>`;
    })
    .join('\n');
  const empty = '<tr><td colspan="10">No tunnel is connected.</td></tr>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Status · ggrok relay</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;
border-bottom:1px solid #ddd;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
small{color:#777}</style></head>
<body><h1>ggrok relay ${escapeHtml(status.version)}</h1>
<p>${escapeHtml(status.mode === 'domain' ? `Tunnels at *.${status.domain ?? ''}` : 'One tunnel at this host')} ·
up ${formatDuration(status.uptimeSeconds)} · ${status.tunnels.length} tunnel${status.tunnels.length === 1 ? '' : 's'}${status.shuttingDown ? ' · shutting down' : ''}</p>
<table><thead><tr><th>Name</th><th>URL</th><th>Owner</th><th>Client</th><th>Up</th><th>Requests</th>
<th>In</th><th>Out</th><th>Channels</th><th>Last activity</th></tr></thead>
<tbody>
${rows || empty}
</tbody></table>
${status.cluster ? clusterSection(status.cluster) : ''}
<p><small>JSON: add <code>?format=json</code> or send <code>Accept: application/json</code>.</small></p>
</body></html>
`;
}
