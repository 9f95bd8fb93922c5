// What the relay reports: log events, metrics, webhooks, the access log and each tunnel's Stats frames.
import { CloseCode, RefuseCode } from '../protocol/errors.js';
import type { AuthKind, ThrottleReports } from './auth-failures.js';
import type { FinishedExchange } from './public-request.js';
import { WebhookSender, type HookEvent } from './hooks.js';
import type { RelayEvent } from './log.js';
import { RelayMetrics, type MetricsSource } from './metrics.js';
import type { ResolvedRelayOptions } from './options.js';
import type { TunnelStatus } from './pages.js';
import type { Tunnel } from './tunnel.js';

/** Words for the control socket's close codes, for logs and webhooks. */
const CLOSE_REASONS: Record<number, string> = {
  [CloseCode.Normal]: 'closed by the client',
  [CloseCode.GoingAway]: 'going away',
  1005: 'closed',
  1006: 'connection lost',
  [CloseCode.ProtocolError]: 'protocol error',
  [CloseCode.HeartbeatTimeout]: 'heartbeat timeout',
  [CloseCode.Replaced]: 'replaced by a new connection',
  [CloseCode.Overloaded]: 'the client stopped reading its control socket',
};

/** Longest the relay waits at shutdown for disconnect webhooks to go out. */
const HOOK_FLUSH_MAX_MS = 3000;

/** One tunnel as the status page, its JSON and Relay.tunnel() show it; never a token, only its label. */
export function tunnelStatus(t: Tunnel, now = Date.now()): TunnelStatus {
  return {
    name: t.name,
    url: t.url,
    owner: t.ownerLabel,
    agent: t.agent.slice(0, 200),
    connectedAt: new Date(t.connectedAt).toISOString(),
    uptimeSeconds: Math.round((now - t.connectedAt) / 1000),
    requests: t.requests,
    bytesIn: t.bytesIn,
    bytesOut: t.bytesOut,
    activeRequests: t.activeRequests,
    channels: t.activeChannels,
    lastActivityAt: t.lastActivityAt ? new Date(t.lastActivityAt).toISOString() : null,
    rttMs: t.session.rttMs,
    ...(t.pool
      ? {
          pool: {
            member: t.member,
            host: t.host,
            health: t.health.state,
            failures: t.health.failuresInARow,
          },
        }
      : {}),
  };
}

/** The relay's log, metrics, webhooks and Stats timer, behind one method per thing that happened. */
export class Telemetry implements ThrottleReports {
  readonly metrics: RelayMetrics;
  private readonly hooks: WebhookSender | undefined;
  private readonly statsTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: ResolvedRelayOptions,
    private readonly source: MetricsSource,
  ) {
    if (options.webhook) this.hooks = new WebhookSender({ ...options.webhook, log: (e) => this.log(e) });
    const hooks = this.hooks;
    this.metrics = new RelayMetrics(
      { ...source, webhooks: hooks ? () => hooks : undefined },
      options.metricsPerTunnel,
    );
    if (options.statsIntervalMs > 0) {
      this.statsTimer = setInterval(() => this.sendStats(), options.statsIntervalMs);
      this.statsTimer.unref();
    }
  }

  /** Hands one event to the configured log. */
  log(event: RelayEvent): void {
    this.options.log?.(event);
  }

  /** A client or visitor turned away for `reason`: counted and logged. */
  refused(reason: string, fields: Record<string, unknown>): void {
    this.metrics.refused(reason);
    this.log({ event: 'refused', reason, ...fields });
  }

  authFailed(kind: AuthKind, address: string, name?: string): void {
    this.metrics.authFailed(kind);
    this.log({ event: 'auth_failed', kind, peer: address, ...(name === undefined ? {} : { name }) });
  }

  throttled(address: string, waitMs: number): void {
    this.log({ event: 'refused', reason: RefuseCode.TooManyAttempts, peer: address, waitMs });
  }

  /** A tunnel went live: its bytes join the relay's totals; logged and sent to the webhook. */
  tunnelConnected(tunnel: Tunnel, details: { peer: string; reconnect: boolean }): void {
    this.metrics.attach(tunnel);
    if (details.reconnect) this.metrics.reconnected();
    this.log({
      event: 'connect',
      name: tunnel.name,
      url: tunnel.url,
      peer: details.peer,
      agent: tunnel.agent.slice(0, 100),
      owner: tunnel.ownerLabel,
      ...(details.reconnect ? { reconnect: true } : {}),
    });
    this.hook('connect', tunnel);
  }

  /** A tunnel's control connection closed with `code` and `reason`: logged with its totals, sent to the webhook. */
  tunnelDisconnected(tunnel: Tunnel, code: number, reason: string): void {
    this.log({
      event: 'disconnect',
      name: tunnel.name,
      code,
      reason,
      requests: tunnel.requests,
      bytesIn: tunnel.bytesIn,
      bytesOut: tunnel.bytesOut,
      uptimeSeconds: Math.round((Date.now() - tunnel.connectedAt) / 1000),
    });
    this.hook('disconnect', tunnel, `${reason || CLOSE_REASONS[code] || 'closed'} (${code})`);
  }

  /** A client broke the protocol on the connection of tunnel `name` (fatal: the connection was closed). */
  protocolError(name: string, err: { code: string; message: string }, fatal: boolean): void {
    this.metrics.protocolError(err.code, fatal);
    this.log({ event: 'protocol_error', name, code: err.code, message: err.message, fatal });
  }

  /** Records a finished public request or upgrade: metrics, the tunnel's counters, the access log. */
  exchangeDone(x: FinishedExchange): void {
    const { req, status, tunnel } = x;
    const seconds = x.seconds;
    tunnel?.countRequest();
    this.metrics.requestDone(status, x.upgrade ? undefined : seconds, tunnel);
    if (!this.options.accessLog) return;
    this.log({
      event: 'request',
      method: req.method,
      host: (req.headers.host ?? '').slice(0, 255),
      // The query string often carries secrets (tokens, signed URLs): never logged.
      path: (req.url ?? '/').split('?')[0]!,
      status,
      durationMs: Math.round(seconds * 1000),
      bytesIn: x.bytesIn,
      bytesOut: x.bytesOut,
      tunnel: tunnel?.name ?? null,
      ...(x.upgrade ? { upgrade: true } : {}),
    });
  }

  /** Shutdown: no more Stats frames. */
  stopStats(): void {
    clearInterval(this.statsTimer);
  }

  /**
   * Shutdown: gives the disconnect webhooks a moment to go out (sessions report their close a tick later, so this
   * first waits while `sessionsOpen()`), for at most `deadlineMs` and 3 s.
   */
  async flushHooks(deadlineMs: number, sessionsOpen: () => boolean): Promise<void> {
    if (!this.hooks) return;
    const until = Date.now() + Math.min(HOOK_FLUSH_MAX_MS, deadlineMs);
    while (Date.now() < until && sessionsOpen()) await new Promise((r) => setTimeout(r, 10));
    await this.hooks.drain(until - Date.now());
  }

  private hook(event: HookEvent['event'], tunnel: Tunnel, reason?: string): void {
    this.hooks?.send({
      event,
      name: tunnel.name,
      url: tunnel.url,
      at: new Date().toISOString(),
      ...(reason === undefined ? {} : { reason }),
      owner: tunnel.ownerLabel,
    });
  }

  /** Sends each tunnel whose counters changed since the last time a Stats frame. */
  private sendStats(): void {
    for (const tunnel of this.source.tunnels()) {
      const stats = {
        requests: tunnel.requests,
        bytesIn: tunnel.bytesIn,
        bytesOut: tunnel.bytesOut,
        channels: tunnel.activeChannels,
        lastActivityMs: tunnel.lastActivityAt,
        tunnel: tunnel.index,
        refused: tunnel.refused,
      };
      const key = `${stats.requests}/${stats.bytesIn}/${stats.bytesOut}/${stats.channels}/${stats.lastActivityMs}/${stats.refused}`;
      if (key === tunnel.statsSent) continue;
      tunnel.statsSent = key;
      tunnel.session.sendStats(stats);
    }
  }
}
