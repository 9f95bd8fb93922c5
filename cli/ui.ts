// All terminal output of `ggrok http`: the header, one line per request, status changes, errors.
import { formatBytes } from '../protocol/units.js';
import { Chalk, type ChalkInstance } from 'chalk';
import type { HostCheckHint } from './host-check.js';
import type { Exchange } from './local-request.js';

export interface UiOptions {
  format: 'text' | 'json';
  quiet: boolean;
  /** Colour on a TTY unless NO_COLOR is set. */
  color: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

const pad = (n: number): string => String(n).padStart(2, '0');
const clock = (d: Date): string => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

/** Renders client events for people (text) or machines (one JSON object per line). */
export class Ui {
  private readonly c: ChalkInstance;
  private readonly out: NodeJS.WritableStream;
  private readonly err: NodeJS.WritableStream;
  /** Refusals already reported per tunnel name, so each warning says what is new. */
  private readonly refusedSeen = new Map<string, number>();

  constructor(private readonly opts: UiOptions) {
    this.c = new Chalk({ level: opts.color ? 1 : 0 });
    this.out = opts.out ?? process.stdout;
    this.err = opts.err ?? process.stderr;
  }

  private json(event: string, fields: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
  }

  online(info: {
    tunnels: { url: string; target: string }[];
    server: string;
    rttMs: number;
    reconnected: boolean;
    inspector?: string;
  }): void {
    if (this.opts.format === 'json') return this.json(info.reconnected ? 'reconnected' : 'online', info);
    const c = this.c;
    if (info.reconnected) {
      for (const t of info.tunnels) this.out.write(`${c.green('back online')}  ${t.url} -> ${t.target}\n`);
      return;
    }
    this.out.write(`${c.bold('ggrok')}  ${c.green('online')}\n`);
    for (const t of info.tunnels) this.out.write(`Forwarding  ${c.cyan(t.url)} -> ${t.target}\n`);
    this.out.write(`Relay       ${info.server}${info.rttMs >= 0 ? `  (${info.rttMs} ms)` : ''}\n`);
    if (info.inspector) this.out.write(`Inspector   ${info.inspector}\n`);
    if (!this.opts.quiet) this.out.write('\n');
  }

  offline(reason: string, retryInMs: number): void {
    if (this.opts.format === 'json') return this.json('offline', { reason, retryInMs });
    this.err.write(
      `${this.c.yellow('reconnecting…')} ${reason}; next try in ${(retryInMs / 1000).toFixed(1)} s\n`,
    );
  }

  /** One line per finished exchange; with several tunnels the line names the tunnel. */
  request(x: Exchange, showTunnel = false): void {
    if (this.opts.quiet) return;
    if (this.opts.format === 'json') return this.json('request', { ...x });
    const c = this.c;
    const status = x.status;
    const colour = status >= 500 ? c.red : status >= 400 ? c.yellow : status >= 300 ? c.cyan : c.green;
    const line = [
      c.dim(clock(new Date())),
      ...(showTunnel ? [c.magenta((x.tunnel ?? '').padEnd(12))] : []),
      x.method.padEnd(7),
      x.target.length > 60 ? `${x.target.slice(0, 59)}…` : x.target.padEnd(30),
      colour(String(status)),
      `${x.durationMs} ms`.padStart(8),
      x.upgrade ? 'channel' : formatBytes(x.bytes).padStart(9),
      x.error ? c.red(x.error) : '',
      x.member ? c.dim(`@${x.member}`) : '',
      x.inbox ? c.magenta(`(kept while away, ${x.inbox})`) : '',
    ];
    this.out.write(`${line.join(' ').trimEnd()}\n`);
  }

  /** The relay kept requests for a tunnel while the client was away: how many, and how many it had to refuse. */
  inbox(r: { name: string; kept: number; refused: number; failed: number }): void {
    if (this.opts.format === 'json') return this.json('inbox', { ...r });
    const c = this.c;
    const n = (k: number, what: string): string => `${k} ${what}${k === 1 ? '' : 's'}`;
    if (r.kept > 0)
      this.out.write(
        `${c.magenta('inbox')}  ${n(r.kept, 'request')} ${r.kept === 1 ? 'was' : 'were'} kept while you were away, delivering…\n`,
      );
    if (r.refused > 0)
      this.out.write(
        `${c.magenta('inbox')}  ${n(r.refused, 'request')} ${r.refused === 1 ? 'was' : 'were'} refused: the inbox was full (503)\n`,
      );
    if (r.failed > 0)
      this.out.write(
        `${c.magenta('inbox')}  ${n(r.failed, 'request')} failed every delivery attempt: see \`ggrok inbox list\`\n`,
      );
  }

  /** A pool tunnel joined its pool, or the pool's size changed. */
  pool(p: { name: string; member: string; size: number }): void {
    if (this.opts.format === 'json') return this.json('pool', { ...p });
    this.out.write(
      `${this.c.dim(clock(new Date()))} pool ${p.name}: ${p.size} member${p.size === 1 ? '' : 's'} (this one: ${p.member})\n`,
    );
  }

  /** A pool tunnel's health check passed or failed (the first result, then each change). */
  health(h: { name: string; ok: boolean; detail: string }): void {
    if (this.opts.format === 'json') return this.json('health', { ...h });
    if (h.ok) this.out.write(`${this.c.dim(clock(new Date()))} pool ${h.name}: health check passes\n`);
    else
      this.err.write(`${this.c.yellow('unhealthy:')} ${h.detail}; the relay sends this member nothing new\n`);
  }

  /**
   * Relay-side traffic counters (only in JSON output; the text output prints a summary on exit), and a warning
   * when the relay turned visitors away for the tunnel's limits since the last counters.
   */
  stats(stats: {
    name: string;
    requests: number;
    bytesIn: number;
    bytesOut: number;
    channels: number;
    refused: number;
  }): void {
    if (this.opts.format === 'json') this.json('stats', { ...stats });
    const before = this.refusedSeen.get(stats.name) ?? 0;
    if (stats.refused <= before) return;
    this.refusedSeen.set(stats.name, stats.refused);
    if (this.opts.format !== 'json')
      this.warn(
        `the relay turned away ${stats.refused - before} request(s) to ${stats.name} (429 rate limit or 503 tunnel busy; ${stats.refused} in all): see the relay's --max-requests and --rate-limit`,
      );
  }

  /** The closing line: what went through the tunnels, as the relay counted it. */
  summary(all: { name: string; requests: number; bytesIn: number; bytesOut: number }[]): void {
    if (this.opts.format === 'json' || all.length === 0) return;
    for (const t of all)
      this.out.write(
        `${t.name}: ${t.requests} requests, ${formatBytes(t.bytesIn)} in, ${formatBytes(t.bytesOut)} out\n`,
      );
  }

  /** A dev server refused a visitor with its host check: why, and the fixes (the client reports it once per tunnel). */
  hint(h: HostCheckHint): void {
    if (this.opts.format === 'json') return this.json('hint', { ...h });
    const c = this.c;
    const target = h.target.length > 60 ? `${h.target.slice(0, 59)}…` : h.target;
    let text = `${c.yellow('hint:')} ${h.serverName} refused ${h.host} (${h.method} ${target} ${h.status}, tunnel ${h.tunnel}): ${h.why}\n`;
    h.fixes.forEach((fix, i) => (text += `  ${i === 0 ? 'fix:' : 'or: '} ${fix}\n`));
    if (h.note) text += `  note: ${h.note}\n`;
    this.err.write(text);
  }

  /** Something the user should know that does not stop the command. */
  warn(message: string, fields: Record<string, unknown> = {}): void {
    if (this.opts.format === 'json') return this.json('warning', { message, ...fields });
    this.err.write(`${this.c.yellow('warning:')} ${message}\n`);
  }

  /** An error that ends the command. */
  fatal(message: string): void {
    if (this.opts.format === 'json') return this.json('fatal', { message });
    this.err.write(`${this.c.red('ggrok:')} ${message}\n`);
  }
}
