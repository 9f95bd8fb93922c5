// Programmatic API: `const tunnel = await connect({ port: 3000, server, token, basicAuth: 'me:pw' })` -> a Tunnel
// with url, counters, events and close(). Its options are `ggrok http`'s flags in camelCase (cli/options.ts).
import { EventEmitter } from 'node:events';
import { ErrorCode, GgrokError } from '../protocol/errors.js';
import {
  CLOSE_DRAIN_MS,
  TunnelClient,
  type ClientEvents,
  type OfflineInfo,
  type OnlineInfo,
  type InboxReport,
  type PoolInfo,
  type TunnelStats,
} from './client.js';
import { loadConfig, type Config, type TunnelConfig } from './config.js';
import type { HealthResult } from './health-check.js';
import type { HostCheckHint } from './host-check.js';
import type { Inspector } from './inspector/index.js';
import type { Exchange } from './local-request.js';
import { parseTarget, type LocalTarget } from './target.js';
import {
  apiName,
  DEFAULT_SERVER,
  HTTP_OPTIONS,
  pickTunnelSettings,
  readApiOptions,
  tunnelSpec,
  type HttpOptions,
} from './options.js';

export {
  CLOSE_DRAIN_MS,
  GgrokError,
  HTTP_OPTIONS,
  loadConfig,
  TunnelClient,
  type ClientEvents,
  type Config,
  type TunnelConfig,
  type Exchange,
  type HostCheckHint,
  type HttpOptions,
  type LocalTarget,
  type OfflineInfo,
  type OnlineInfo,
  type PoolInfo,
  type InboxReport,
  type HealthResult,
  type TunnelStats,
};

/** connect()'s options: every option of `ggrok http` (same names, camelCase) and the local service to share. */
export interface ConnectOptions extends HttpOptions {
  /** The local service, as `ggrok http <target>` takes it: a port (3000), "host:port" or a URL. */
  target?: string | number;
  /** Shorthand for `target` when it is a local port. */
  port?: number;
}

/** The names connect() takes besides HTTP_OPTIONS'. */
const OWN_OPTIONS = ['target', 'port'] as const;

/** A tunnel's traffic: the relay's counters (every few seconds while something changes) and this process's own. */
export interface TunnelCounters {
  /** Requests and upgrades the relay has sent this tunnel, over its instances. */
  requests: number;
  /** Request body bytes in, response body bytes out, as the relay counts them. */
  bytesIn: number;
  bytesOut: number;
  /** Upgraded channels (WebSockets) open, as the relay counts them. */
  channels: number;
  /** Plain requests being served by this process right now. */
  inFlight: number;
  /** Streams (requests and channels) open on the control connections right now. */
  openStreams: number;
}

/** What a Tunnel emits. */
export interface TunnelEvents {
  /** One finished exchange (a channel when it closes). */
  request: [Exchange];
  /** Online again after a drop (the first 'online' happened before connect() resolved). */
  online: [OnlineInfo];
  /** The connection dropped; the tunnel reconnects by itself (same name) after `retryInMs`. */
  offline: [OfflineInfo];
  /** A dev server refused a visitor with its host check: which server, why and the fix (once per tunnel). */
  hint: [HostCheckHint];
  /** The relay's counters changed (see `counters`). */
  stats: [TunnelStats];
  /** An endpoint-pool tunnel joined its pool, or the pool's size changed. */
  pool: [PoolInfo];
  /** A pool tunnel's own health check (--health-path) passed or failed: the first result, then each change. */
  health: [{ name: string } & HealthResult];
  /** The relay kept requests while this client was away (webhook inbox): delivering them now. */
  inbox: [InboxReport];
  /** Something retrying cannot fix (another process took the name over, the relay refused us); the tunnel is down. */
  fatal: [GgrokError];
  /** close() finished. */
  closed: [];
}

/** An open tunnel, as connect() resolves it. */
export class Tunnel extends EventEmitter<TunnelEvents> {
  /** The low-level client, for what this class does not expose (several tunnels, instances, dropConnection()). */
  readonly client: TunnelClient;
  /** Where the request inspector is served (undefined when off, the default for the API). */
  readonly inspectorUrl: string | undefined;
  private closed: Promise<void> | undefined;

  constructor(
    client: TunnelClient,
    private readonly inspector: Inspector | undefined,
  ) {
    super();
    this.client = client;
    this.inspectorUrl = inspector?.url;
    client.on('request', (x) => this.emit('request', x));
    client.on('online', (info) => this.emit('online', info));
    client.on('offline', (info) => this.emit('offline', info));
    client.on('hint', (hint) => this.emit('hint', hint));
    client.on('stats', (stats) => this.emit('stats', stats));
    client.on('pool', (pool) => this.emit('pool', pool));
    client.on('health', (h) => this.emit('health', h));
    client.on('inbox', (r) => this.emit('inbox', r));
    client.on('fatal', (err) => this.emit('fatal', err));
  }

  /** The public URL, e.g. https://myapp.relay.example. */
  get url(): string {
    return this.client.url;
  }

  /** The name the relay gave the tunnel (the subdomain). */
  get name(): string {
    return this.client.name;
  }

  /** Latest heartbeat round trip to the relay in ms (-1 before the first). */
  get rttMs(): number {
    return this.client.rttMs;
  }

  /** Live traffic counters. */
  get counters(): TunnelCounters {
    const relay = this.client.stats.get(0);
    return {
      requests: relay?.requests ?? 0,
      bytesIn: relay?.bytesIn ?? 0,
      bytesOut: relay?.bytesOut ?? 0,
      channels: relay?.channels ?? 0,
      inFlight: this.client.requestsInFlight(),
      openStreams: this.client.openStreams,
    };
  }

  /**
   * Takes the tunnel down: new requests are refused at once, those in flight get `drainMs` (10 s by default) to
   * finish, then the connection and the inspector close. Calling it again returns the same promise.
   */
  close(options: { drainMs?: number } = {}): Promise<void> {
    this.closed ??= (async () => {
      await this.client.close(options.drainMs ?? CLOSE_DRAIN_MS);
      await this.inspector?.close();
      this.emit('closed');
    })();
    return this.closed;
  }
}

/** Starts the inspector the options ask for: `true` the CLI's default address, a string that one, else none. */
async function maybeInspector(spec: string | boolean | undefined): Promise<Inspector | undefined> {
  if (spec === undefined || spec === false || (typeof spec === 'string' && /^(off|false|no|0)$/i.test(spec)))
    return undefined;
  // Loaded only when asked for: most embedders never serve the page.
  const { parseInspectAddress, startInspector } = await import('./inspector/index.js');
  const explicit = typeof spec === 'string';
  let addr: { host: string; port: number };
  try {
    addr = parseInspectAddress(explicit ? spec : '127.0.0.1:4040');
  } catch (err) {
    throw new GgrokError(ErrorCode.BadConfig, `inspect: ${(err as Error).message}`);
  }
  try {
    return await startInspector({ ...addr, portAttempts: explicit ? 0 : 20 });
  } catch (err) {
    // As the CLI does: a port the caller chose is not silently replaced; the default range all taken is no failure.
    if (explicit) throw err;
    return undefined;
  }
}

/**
 * Opens a tunnel and resolves once it is online. Takes every option of `ggrok http` in camelCase (basicAuth,
 * allowIp, hostHeader, requestHeaderAdd, inspect, …), with the same defaults, environment variables and checks,
 * except that the inspector is off unless `inspect` asks for it. Rejects with a GgrokError whose `code` says why
 * (bad_config, bad_target, no_token, bad_token, name_in_use, relay_unreachable, …).
 */
export async function connect(options: ConnectOptions): Promise<Tunnel> {
  const given = readApiOptions(options as Record<string, unknown>, OWN_OPTIONS);
  const spec = options.target ?? options.port;
  if (spec === undefined) throw new GgrokError(ErrorCode.BadTarget, 'connect() needs a port or a target');
  const settings = pickTunnelSettings(given);
  try {
    parseTarget(String(spec), settings.insecure);
  } catch (err) {
    throw new GgrokError(ErrorCode.BadTarget, (err as Error).message);
  }
  let tunnel;
  try {
    tunnel = tunnelSpec(String(spec), settings, apiName);
  } catch (err) {
    throw new GgrokError(ErrorCode.BadConfig, (err as Error).message);
  }
  // Precedence as in the CLI: the option, its environment variable, the config file, the default.
  const config = typeof given.config === 'string' ? loadConfig(given.config) : undefined;
  const token = (given.token as string | undefined) ?? config?.token;
  if (!token)
    throw new GgrokError(
      ErrorCode.NoToken,
      `connect() needs a token (the token option, ${HTTP_OPTIONS.token.env} or a config file)`,
    );
  const inspector = await maybeInspector(given.inspect as string | boolean | undefined);
  let client: TunnelClient;
  try {
    client = new TunnelClient({
      server: (given.server as string | undefined) ?? config?.server ?? DEFAULT_SERVER,
      token,
      ...tunnel,
      insecure: settings.insecure,
      observe: inspector?.observe,
    });
  } catch (err) {
    await inspector?.close();
    throw err;
  }
  if (inspector) {
    client.on('online', (info) => inspector.setTunnels(info.tunnels));
    client.on('hint', (hint) => inspector.addHint(hint));
    client.on('stats', (stats) => inspector.setStats(stats));
  }
  const out = new Tunnel(client, inspector);
  try {
    await client.start();
  } catch (err) {
    await inspector?.close();
    throw err;
  }
  return out;
}
