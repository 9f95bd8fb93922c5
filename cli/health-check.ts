// Active health checks of a pool tunnel's local service (--health-path): a GET every interval, the result reported.
import http from 'node:http';
import https from 'node:https';
import { describeTarget, type LocalTarget } from './target.js';
import { localConnectOptions } from './local-pool.js';

/** How often the local service is checked unless --health-interval says otherwise. */
export const HEALTH_INTERVAL_MS = 10_000;
/** Shortest interval allowed (a check must not become load). */
export const MIN_HEALTH_INTERVAL_MS = 1000;
/** A check without an answer within this long (or the interval, if shorter) failed. */
const HEALTH_TIMEOUT_MS = 5000;

/** The result of one check: ok, or why not. */
export interface HealthResult {
  ok: boolean;
  detail: string;
}

/**
 * GETs `path` on the local target every `intervalMs`; a 2xx or 3xx answer is healthy. Tells `report` the first
 * result and every change (the relay keeps the member out of its pool while the check fails).
 */
export class HealthCheck {
  /** The latest result; undefined before the first check finished. */
  last: HealthResult | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: http.ClientRequest | undefined;
  private stopped = false;

  constructor(
    private readonly target: LocalTarget,
    private readonly path: string,
    private readonly intervalMs: number,
    private readonly report: (result: HealthResult) => void,
  ) {}

  /** Checks now, then every interval until stop(). */
  start(): void {
    this.check();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.running?.destroy();
  }

  private check(): void {
    if (this.stopped) return;
    const t = this.target;
    const secure = t.protocol === 'https:';
    let settled = false;
    const done = (result: HealthResult): void => {
      if (settled) return;
      settled = true;
      this.running = undefined;
      req.destroy();
      const changed = this.last?.ok !== result.ok;
      this.last = result;
      if (changed && !this.stopped) this.report(result);
      if (!this.stopped) {
        this.timer = setTimeout(() => this.check(), this.intervalMs);
        this.timer.unref();
      }
    };
    const req = (secure ? https : http).request({
      // The local pool's connect rules (both loopback addresses for `localhost`), passed on to net.connect.
      ...localConnectOptions(t),
      protocol: t.protocol,
      path: this.path,
      method: 'GET',
      agent: false,
      rejectUnauthorized: !t.insecure,
      headers: { 'User-Agent': 'ggrok-health-check', Connection: 'close' },
      timeout: Math.min(HEALTH_TIMEOUT_MS, this.intervalMs),
    });
    this.running = req;
    const where = `${describeTarget(t)}${this.path}`;
    req.on('response', (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done(
        status >= 200 && status < 400
          ? { ok: true, detail: '' }
          : { ok: false, detail: `${where} answered ${status}` },
      );
    });
    req.on('timeout', () => done({ ok: false, detail: `${where} did not answer in time` }));
    req.on('error', (err: NodeJS.ErrnoException) =>
      done({ ok: false, detail: `${where}: ${err.code ?? err.message}` }),
    );
    req.end();
  }
}
