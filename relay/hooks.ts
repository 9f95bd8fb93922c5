// Webhooks: tunnel connect/disconnect POSTed as signed JSON, off the data path, through a bounded queue.
import { createHmac } from 'node:crypto';
import { VERSION } from '../protocol/version.js';
import type { RelayEvent } from './log.js';
import { RELAY_DEFAULTS } from './options.js';

/** What a webhook receives as its JSON body. */
export interface HookEvent {
  event: 'connect' | 'disconnect';
  name: string;
  url: string;
  /** ISO 8601 time of the event on the relay. */
  at: string;
  /** Why a tunnel disconnected. */
  reason?: string;
  /** Label of the token that opened the tunnel (never the token). */
  owner?: string;
}

export interface WebhookOptions {
  url: string;
  /** Signs each body: X-Ggrok-Signature: sha256=<hex HMAC-SHA256 of the body>. */
  secret?: string;
  /** Deadline for one delivery, from connecting to the end of the answer. */
  timeoutMs?: number;
  /** Deliveries waiting beyond this are dropped (and counted, and logged). */
  maxPending?: number;
  /** Deliveries in flight at once. */
  concurrency?: number;
  log?: (event: RelayEvent) => void;
  /** Called once per dropped or failed delivery, for metrics. */
  onDropped?: () => void;
  onFailed?: () => void;
}

/** The signature header value for a body: `sha256=` and the hex HMAC-SHA256 with the secret. */
export function signBody(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * Delivers hook events in the background. send() only queues and returns at once: a slow or dead receiver
 * can delay other deliveries, never a tunnel or a request. Failures are logged and not retried.
 */
export class WebhookSender {
  private readonly queue: HookEvent[] = [];
  private inFlight = 0;
  private readonly idle = new Set<() => void>();
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly concurrency: number;
  /** Deliveries dropped because the queue was full. */
  dropped = 0;
  /** Deliveries that failed (network error, timeout, or a status other than 2xx). */
  failed = 0;
  delivered = 0;

  constructor(private readonly opts: WebhookOptions) {
    this.timeoutMs = opts.timeoutMs ?? RELAY_DEFAULTS.webhookTimeoutMs;
    this.maxPending = opts.maxPending ?? RELAY_DEFAULTS.webhookMaxPending;
    this.concurrency = opts.concurrency ?? RELAY_DEFAULTS.webhookConcurrency;
  }

  /** Deliveries queued or in flight. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** Queues one event; drops it when too many are pending. Never throws, never waits. */
  send(event: HookEvent): void {
    if (this.queue.length >= this.maxPending) {
      this.dropped++;
      this.opts.onDropped?.();
      this.opts.log?.({
        event: 'webhook_dropped',
        hook: event.event,
        name: event.name,
        pending: this.pending,
      });
      return;
    }
    this.queue.push(event);
    this.pump();
  }

  /** Resolves when nothing is pending, or after `timeoutMs`, whichever comes first. */
  drain(timeoutMs: number): Promise<void> {
    if (this.pending === 0 || timeoutMs <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.idle.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.idle.add(done);
    });
  }

  private pump(): void {
    while (this.inFlight < this.concurrency && this.queue.length > 0) {
      const event = this.queue.shift()!;
      this.inFlight++;
      void this.deliver(event).finally(() => {
        this.inFlight--;
        this.pump();
        if (this.pending === 0) for (const done of [...this.idle]) done();
      });
    }
  }

  private async deliver(event: HookEvent): Promise<void> {
    const body = JSON.stringify(event);
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'User-Agent': `ggrok-relay/${VERSION}`,
      'X-Ggrok-Event': event.event,
    };
    if (this.opts.secret) headers['X-Ggrok-Signature'] = signBody(body, this.opts.secret);
    let problem: string | undefined;
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers,
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      // Read (and discard) the answer so the connection is released; the deadline covers it too.
      await res.arrayBuffer();
      if (res.status < 200 || res.status > 299) problem = `HTTP ${res.status}`;
    } catch (err) {
      problem = describe(err);
    }
    if (problem === undefined) {
      this.delivered++;
      return;
    }
    this.failed++;
    this.opts.onFailed?.();
    // The hook URL is not logged: it may carry a secret of its own (many services put one in the path).
    this.opts.log?.({ event: 'webhook_failed', hook: event.event, name: event.name, error: problem });
  }
}

function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timeout';
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
