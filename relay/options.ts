// Relay options: the one declaration of every default, and their validation for flags and the programmatic API.
import { DEFAULT_FLOW, WIRE_LIMITS, type FlowSettings } from '../protocol/frames.js';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { isValidInstanceId } from './cluster/membership.js';
import type { LogFormat, RelayEvent } from './log.js';

/** Everything the relay can be configured with; main.ts fills it from flags and environment. */
export interface RelayOptions {
  /** Tunnels are served at <name>.<domain>; without it the relay serves one tunnel at its own host. */
  domain?: string;
  /** Accepted client tokens; at least one. `label=token` gives a token a label people see instead of it. */
  tokens: string[];
  /** Trust X-Forwarded-Proto/Host/Port from a proxy in front (Heroku router, Fly proxy, Caddy). */
  trustProxy?: boolean;
  /**
   * The relay runs on Fly.io (main.ts: FLY_APP_NAME is set): with trustProxy, visitor addresses come from
   * Fly-Client-IP. Elsewhere that header is the visitor's to forge, and the right-most X-Forwarded-For counts.
   */
  onFly?: boolean;
  /** How often the relay pings each control socket. */
  heartbeatMs?: number;
  /** A control socket silent for this long is closed (4002). */
  deadAfterMs?: number;
  /** Time a new control socket has to send its hello. */
  handshakeTimeoutMs?: number;
  /** How long a disconnected tunnel's name stays reserved for its owner. */
  nameGraceMs?: number;
  /** How long a public request waits for a tunnel whose client is reconnecting before the offline page. */
  waitForClientMs?: number;
  /**
   * After start, requests for names the relay does not know yet also wait (waitForClientMs) for their client:
   * after a restart (Heroku restarts dynos daily) clients are still reconnecting.
   */
  startupGraceMs?: number;
  /** New streams (requests + channels) per second per tunnel, sustained; above it 429. Burst is twice that. 0 = off. */
  streamsPerSecond?: number;
  /** The same per visitor address (IPv6: per /64) of each tunnel. 0 = off. */
  visitorStreamsPerSecond?: number;
  /** Live tunnels one token may hold at once. */
  maxTunnelsPerToken?: number;
  /** Largest public request head in bytes (431 beyond). */
  maxHeaderBytes?: number;
  /** A stream with no data either way for this long is reset (0 = never). */
  idleStreamMs?: number;
  /** Terminate TLS on the relay itself (a VPS without a proxy in front): PEM certificate chain and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Concurrent HTTP requests per tunnel; more get 503 with Retry-After. */
  maxRequestsPerTunnel?: number;
  /** Concurrent upgraded channels (WebSockets) per tunnel; more get 503 with Retry-After. */
  maxChannelsPerTunnel?: number;
  /** The flow-control windows the relay announces (checked by flowProblem()). */
  flow?: FlowSettings;
  /** Node's keep-alive timeout for public connections; it must outlive platform routers' idle pools. */
  keepAliveTimeoutMs?: number;
  /** Time a visitor has to send a complete request head (408 after). */
  headersTimeoutMs?: number;
  /** Receives one structured event per notable thing (connect, disconnect, refusal, protocol error). */
  log?: (event: RelayEvent) => void;
  /** Also log one `request` event per public request or upgrade (method, host, path without query, status…). */
  accessLog?: boolean;
  /** The only token /_ggrok/metrics and /_ggrok/status accept; without it, any client token does. */
  metricsToken?: string;
  /** Add per-tunnel-name request and byte series to the metrics. */
  metricsPerTunnel?: boolean;
  /** POST tunnel connect and disconnect events here (JSON, signed with `secret` when set; see hooks.ts). */
  webhook?: { url: string; secret?: string; timeoutMs?: number; maxPending?: number };
  /** How often changed traffic counters go to clients as Stats frames (0 = never). */
  statsIntervalMs?: number;
  /** The clock for time-based limits (failed-secret throttling); tests inject one. */
  now?: () => number;
  /** This relay's id: in Welcome, /_ggrok/health and the metrics; in a cluster, unique among its instances. */
  instanceId?: string;
  /**
   * Run as one instance of a cluster sharing this Redis: names, holds and membership live there, and clients
   * keep a control socket to every instance. Without it the relay runs alone, as it always did.
   */
  cluster?: ClusterOptions;
  /** Webhook inbox: the status a kept request is answered with (202 Accepted by default). */
  inboxStatus?: number;
  /** Largest request body the inbox keeps (413 beyond, not kept). */
  inboxMaxBodyBytes?: number;
  /** Requests one tunnel's inbox holds at most (503 beyond). */
  inboxMaxRequests?: number;
  /** Bytes (bodies and heads) one tunnel's inbox holds at most (503 beyond). */
  inboxMaxTunnelBytes?: number;
  /** Bytes every inbox of this relay holds together at most (503 beyond). */
  inboxMaxTotalBytes?: number;
  /** How long a kept request waits for its client before it is dropped. */
  inboxTtlMs?: number;
  /** First pause before a failed delivery is tried again; it doubles with each attempt. */
  inboxRetryMs?: number;
  /** Delivery attempts per request before it is kept as failed. */
  inboxMaxAttempts?: number;
  /** Keep inboxes in files under this directory, so that they survive a relay restart. */
  inboxDir?: string;
}

/** How this relay joins a cluster. */
export interface ClusterOptions {
  /** redis:// or rediss:// URL. */
  redisUrl: string;
  /** Accept a self-signed TLS certificate from Redis (Heroku's Key-Value Store). */
  redisTlsInsecure?: boolean;
  /** A private address the other instances forward requests to when this one holds the tunnel (e.g. Fly's 6PN). */
  peerUrl?: string;
  /** A public URL that reaches this one instance directly, for clients to dial. */
  instanceUrl?: string;
  /** This instance's Fly machine id (FLY_MACHINE_ID): fly-replay and fly-force-instance-id name it. */
  flyMachine?: string;
}

/**
 * Every relay default, declared once. The option names carry their units (`…Ms`, `…Bytes`, `…PerSecond`);
 * `ggrok relay`'s flags, createRelay() and (checked by test/relay/options.test.ts) the README read them here.
 */
export const RELAY_DEFAULTS = {
  /** `ggrok relay --port`: the one port for public traffic and control sockets (createRelay takes it in listen()). */
  port: 8080,
  /** `ggrok relay --log-format` (createRelay takes a `log` function instead). */
  logFormat: 'text' as LogFormat,
  /** Relay.close(): how long in-flight requests may take to finish after SIGTERM (Heroku kills after 30 s). */
  closeDeadlineMs: 25_000,
  trustProxy: false,
  onFly: false,
  /** Pings every 2 s: a dead instance or client is noticed in about 6 s, well inside platforms' idle limits. */
  heartbeatMs: 2000,
  deadAfterMs: 6000,
  handshakeTimeoutMs: 10_000,
  nameGraceMs: 10 * 60_000,
  /** `--name-hold` in a cluster: names survive restarts and deploys, so they are kept for a week by default. */
  clusterNameGraceMs: 7 * 24 * 60 * 60_000,
  waitForClientMs: 5000,
  startupGraceMs: 30_000,
  /**
   * No request rate limits by default: a load test through a tunnel must not meet 429s. Concurrency limits and
   * the fair share (admission.ts) keep one visitor from taking a tunnel; operators can add rates.
   */
  streamsPerSecond: 0,
  visitorStreamsPerSecond: 0,
  maxTunnelsPerToken: 20,
  maxHeaderBytes: 16 * 1024,
  idleStreamMs: 15 * 60_000,
  maxRequestsPerTunnel: 1000,
  maxChannelsPerTunnel: 10_000,
  /** Bytes: 1 MiB per stream, 16 MiB per connection, 128 KiB Data frames. */
  flow: DEFAULT_FLOW,
  /** Outlives Heroku's router, which keeps idle connections to dynos for 90 s. */
  keepAliveTimeoutMs: 100_000,
  headersTimeoutMs: 30_000,
  accessLog: false,
  metricsPerTunnel: false,
  statsIntervalMs: 5000,
  /** webhook.timeoutMs: one delivery, from connecting to the end of the answer. */
  webhookTimeoutMs: 3000,
  /** webhook.maxPending: deliveries waiting beyond this are dropped (counted and logged). */
  webhookMaxPending: 1000,
  /** Webhook deliveries in flight at once. */
  webhookConcurrency: 4,
  /** Webhook inbox (a tunnel's `--inbox`): what a kept request is answered with. */
  inboxStatus: 202,
  inboxMaxBodyBytes: 1024 * 1024,
  inboxMaxRequests: 1000,
  inboxMaxTunnelBytes: 64 * 1024 * 1024,
  inboxMaxTotalBytes: 256 * 1024 * 1024,
  inboxTtlMs: 24 * 60 * 60_000,
  /** 1 s, 2 s, 4 s, 8 s between the 5 attempts: about 15 s before a delivery is kept as failed. */
  inboxRetryMs: 1000,
  inboxMaxAttempts: 5,
} as const;

/** Options with every default filled in and checked: what the relay's modules read. */
export interface ResolvedRelayOptions
  extends
    Required<
      Omit<RelayOptions, 'domain' | 'log' | 'tls' | 'metricsToken' | 'webhook' | 'cluster' | 'inboxDir'>
    >,
    Pick<RelayOptions, 'domain' | 'log' | 'tls' | 'metricsToken' | 'webhook' | 'cluster' | 'inboxDir'> {}

/** The words flowProblem() uses for each setting: the option's own names, or the command line's flags. */
export type FlowSettingNames = Record<keyof FlowSettings, string>;

const OPTION_NAMES: FlowSettingNames = {
  streamWindow: 'flow.streamWindow',
  connWindow: 'flow.connWindow',
  maxData: 'flow.maxData',
};

const kib = (bytes: number): string => `${bytes / 1024} KiB`;

/**
 * Why the relay cannot announce these flow settings, or undefined. The rules a peer's codec applies to them
 * (whole numbers, Data frames of 1–128 KiB, windows of at least one Data frame and below 2 GiB), plus the relay's
 * own: a connection window at least as large as a stream's.
 */
export function flowProblem(flow: FlowSettings, names: FlowSettingNames = OPTION_NAMES): string | undefined {
  for (const key of ['maxData', 'streamWindow', 'connWindow'] as const)
    if (!Number.isSafeInteger(flow[key]) || flow[key] <= 0)
      return `${names[key]} must be a whole number of bytes`;
  const { streamWindow, connWindow, maxData } = flow;
  if (maxData < WIRE_LIMITS.MIN_DATA_BYTES || maxData > WIRE_LIMITS.MAX_DATA_BYTES)
    return `${names.maxData} must be ${kib(WIRE_LIMITS.MIN_DATA_BYTES)} to ${kib(WIRE_LIMITS.MAX_DATA_BYTES)}`;
  if (streamWindow < maxData) return `${names.streamWindow} must be at least ${kib(maxData)}`;
  if (connWindow < streamWindow) return `${names.connWindow} must be at least ${names.streamWindow}`;
  if (connWindow > WIRE_LIMITS.MAX_WINDOW_BYTES) return `${names.connWindow} is too large (less than 2 GiB)`;
  return undefined;
}

/** Why a webhook URL cannot be used, or undefined. */
export function webhookUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'must be an http:// or https:// URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    return 'must be an http:// or https:// URL';
  return undefined;
}

/**
 * This instance's id when none is given: Fly's machine id (stable across restarts), else Heroku's dyno name
 * (web.1) or the host name, with a random suffix (two relays on one host, or a dyno and its preboot twin, must not
 * share an id).
 */
export function defaultInstanceId(env: NodeJS.ProcessEnv = process.env): string {
  const machine = env.FLY_MACHINE_ID;
  if (machine && isValidInstanceId(machine)) return machine;
  const suffix = randomBytes(3).toString('hex');
  // Heroku's preboot runs the old and the new dyno side by side under the same DYNO name for minutes.
  if (env.DYNO && isValidInstanceId(env.DYNO)) return `${env.DYNO}-${suffix}`;
  const host =
    hostname()
      .replace(/[^A-Za-z0-9._-]/g, '')
      .slice(0, 40) || 'relay';
  return `${/^[A-Za-z0-9]/.test(host) ? host : `r${host}`}-${suffix}`;
}

/** Checks options and fills in RELAY_DEFAULTS; throws an Error saying what is wrong. */
export function resolveRelayOptions(options: RelayOptions): ResolvedRelayOptions {
  if (options.tokens.length === 0) throw new Error('at least one token is required');
  const flow = options.flow ?? RELAY_DEFAULTS.flow;
  const flowWrong = flowProblem(flow);
  if (flowWrong) throw new Error(flowWrong);
  const webhookWrong = options.webhook && webhookUrlProblem(options.webhook.url);
  if (webhookWrong) throw new Error(`the webhook URL ${webhookWrong}`);
  if (options.instanceId !== undefined && !isValidInstanceId(options.instanceId))
    throw new Error(
      `instance id "${options.instanceId.slice(0, 80)}": use letters, digits, '.', '_', ':' or '-'`,
    );
  if (options.cluster && !/^rediss?:\/\//.test(options.cluster.redisUrl))
    throw new Error('the Redis URL must start with redis:// or rediss://');
  const status = options.inboxStatus;
  if (status !== undefined && (!Number.isInteger(status) || status < 200 || status > 299))
    throw new Error('the inbox status must be a 2xx status (e.g. 202 or 200)');
  const d = RELAY_DEFAULTS;
  return {
    domain: options.domain?.toLowerCase().replace(/^\.+|\.+$/g, '') || undefined,
    tokens: options.tokens,
    trustProxy: options.trustProxy ?? d.trustProxy,
    onFly: options.onFly ?? d.onFly,
    heartbeatMs: options.heartbeatMs ?? d.heartbeatMs,
    deadAfterMs: options.deadAfterMs ?? d.deadAfterMs,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? d.handshakeTimeoutMs,
    nameGraceMs: options.nameGraceMs ?? (options.cluster ? d.clusterNameGraceMs : d.nameGraceMs),
    waitForClientMs: options.waitForClientMs ?? d.waitForClientMs,
    startupGraceMs: options.startupGraceMs ?? d.startupGraceMs,
    streamsPerSecond: options.streamsPerSecond ?? d.streamsPerSecond,
    visitorStreamsPerSecond: options.visitorStreamsPerSecond ?? d.visitorStreamsPerSecond,
    maxTunnelsPerToken: options.maxTunnelsPerToken ?? d.maxTunnelsPerToken,
    maxHeaderBytes: options.maxHeaderBytes ?? d.maxHeaderBytes,
    idleStreamMs: options.idleStreamMs ?? d.idleStreamMs,
    tls: options.tls,
    maxRequestsPerTunnel: options.maxRequestsPerTunnel ?? d.maxRequestsPerTunnel,
    maxChannelsPerTunnel: options.maxChannelsPerTunnel ?? d.maxChannelsPerTunnel,
    flow,
    keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? d.keepAliveTimeoutMs,
    headersTimeoutMs: options.headersTimeoutMs ?? d.headersTimeoutMs,
    log: options.log,
    accessLog: options.accessLog ?? d.accessLog,
    metricsToken: options.metricsToken,
    metricsPerTunnel: options.metricsPerTunnel ?? d.metricsPerTunnel,
    webhook: options.webhook,
    statsIntervalMs: options.statsIntervalMs ?? d.statsIntervalMs,
    now: options.now ?? Date.now,
    instanceId: options.instanceId ?? defaultInstanceId(),
    cluster: options.cluster,
    inboxStatus: options.inboxStatus ?? d.inboxStatus,
    inboxMaxBodyBytes: options.inboxMaxBodyBytes ?? d.inboxMaxBodyBytes,
    inboxMaxRequests: options.inboxMaxRequests ?? d.inboxMaxRequests,
    inboxMaxTunnelBytes: options.inboxMaxTunnelBytes ?? d.inboxMaxTunnelBytes,
    inboxMaxTotalBytes: options.inboxMaxTotalBytes ?? d.inboxMaxTotalBytes,
    inboxTtlMs: options.inboxTtlMs ?? d.inboxTtlMs,
    inboxRetryMs: options.inboxRetryMs ?? d.inboxRetryMs,
    inboxMaxAttempts: options.inboxMaxAttempts ?? d.inboxMaxAttempts,
    inboxDir: options.inboxDir,
  };
}
