// `ggrok relay`: configuration from flags and environment, listening on $PORT, signals.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION as RELAY_VERSION } from '../protocol/version.js';
import { describeVisitorAddressSource } from './access.js';
import { formatEvent, LOG_FORMATS, type LogFormat, type RelayEvent } from './log.js';
import { flowProblem, RELAY_DEFAULTS, webhookUrlProblem } from './options.js';
import { createRelay } from './relay.js';
import { generateToken } from './tokens.js';

/** RELAY_DEFAULTS in the units the flags take (KiB windows, seconds of idle time). */
const FLAG_DEFAULTS = {
  streamWindowKiB: RELAY_DEFAULTS.flow.streamWindow / 1024,
  connWindowKiB: RELAY_DEFAULTS.flow.connWindow / 1024,
  idleTimeoutSeconds: RELAY_DEFAULTS.idleStreamMs / 1000,
} as const;

/** The flags that set each flow setting, for flowProblem()'s messages. */
const FLOW_FLAGS = {
  streamWindow: '--stream-window',
  connWindow: '--conn-window',
  maxData: 'the Data frame size',
} as const;

interface RelayFlags {
  port: number;
  host?: string;
  domain?: string;
  token: string[];
  trustProxy?: boolean;
  maxRequests: number;
  maxChannels: number;
  waitForClient: number;
  startupGrace: number;
  headersTimeout: number;
  tokensFile?: string;
  maxTunnelsPerToken: number;
  rateLimit: number;
  rateLimitPerVisitor: number;
  streamWindow: number;
  connWindow: number;
  maxHeaderBytes: number;
  idleTimeout: number;
  tlsCert?: string;
  tlsKey?: string;
  logFormat: LogFormat;
  accessLog: boolean;
  metricsToken?: string;
  metricsPerTunnel: boolean;
  webhook?: string;
  webhookSecret?: string;
  redis?: string;
  redisTlsInsecure?: boolean;
  instanceId?: string;
  nameHold?: number;
  peerUrl?: string;
  instanceUrl?: string;
  inboxStatus: number;
  inboxMaxBody: number;
  inboxMaxRequests: number;
  inboxMaxBytes: number;
  inboxMaxTotal: number;
  inboxTtl?: number;
  inboxDir?: string;
}

/** Parses a duration such as 90s, 10m, 2h or 7d (a bare number is seconds) into ms. */
export function parseDuration(value: string): number {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('must be a duration such as 90s, 10m, 2h or 7d.');
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
  return Number(m[1]) * unit;
}

/** The Redis URL when neither --redis nor GGROK_REDIS_URL gives one: REDIS_URL, as Heroku and Upstash set it. */
function redisFromEnv(): string | undefined {
  return process.env.REDIS_URL || undefined;
}

/** On Fly, other machines reach this one at <machine>.vm.<app>.internal on the private network. */
function flyPeerUrl(port: number): string | undefined {
  const { FLY_MACHINE_ID: machine, FLY_APP_NAME: app } = process.env;
  return machine && app ? `http://${machine}.vm.${app}.internal:${port}` : undefined;
}

function parsePort(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 0 || n > 65535)
    throw new InvalidArgumentError('must be a port number 0-65535.');
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1) throw new InvalidArgumentError('must be a whole number above 0.');
  return n;
}

function nonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number.');
  return Number(value);
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, ...splitTokens(value)];
const splitTokens = (value: string): string[] =>
  value
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);

/** Platforms whose proxy sets X-Forwarded-* headers we can trust. */
function behindPlatformProxy(): boolean {
  return Boolean(process.env.DYNO || process.env.FLY_APP_NAME);
}

/** A yes/no flag that also reads "false", "0", "no" and "off" (from the environment, for instance). */
const booleanFlag = (value: string): boolean => !/^(0|false|no|off)$/i.test(value.trim());

/** Builds the `relay` subcommand. */
export function relayCommand(): Command {
  return new Command('relay')
    .description('run the public relay server that clients connect to')
    .addOption(
      new Option('-p, --port <port>', 'port to listen on')
        .env('PORT')
        .argParser(parsePort)
        .default(RELAY_DEFAULTS.port),
    )
    .addOption(new Option('--host <addr>', 'address to bind (default: all interfaces)').env('GGROK_HOST'))
    .addOption(
      new Option(
        '-d, --domain <domain>',
        'serve tunnels at <name>.<domain>; without it, one tunnel at the relay host',
      ).env('GGROK_DOMAIN'),
    )
    .addOption(
      new Option('-t, --token <token>', 'client token (repeatable or comma-separated); generated when absent')
        .env('GGROK_TOKEN')
        .argParser(collect),
    )
    .addOption(
      new Option(
        '--trust-proxy [bool]',
        'trust X-Forwarded-* from a proxy in front (on by default on Heroku and Fly; "false" turns it off)',
      )
        .env('GGROK_TRUST_PROXY')
        .argParser(booleanFlag),
    )
    .addOption(
      new Option('--max-requests <n>', 'concurrent HTTP requests per tunnel (more get 503)')
        .env('GGROK_MAX_REQUESTS')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.maxRequestsPerTunnel),
    )
    .addOption(
      new Option('--max-channels <n>', 'concurrent WebSocket/upgrade channels per tunnel (more get 503)')
        .env('GGROK_MAX_CHANNELS')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.maxChannelsPerTunnel),
    )
    .addOption(
      new Option('--wait-for-client <ms>', 'how long requests wait for a reconnecting client before a 503')
        .env('GGROK_WAIT_FOR_CLIENT_MS')
        .argParser(nonNegativeInt)
        .default(RELAY_DEFAULTS.waitForClientMs),
    )
    .addOption(
      new Option('--headers-timeout <ms>', 'time a visitor has to send a complete request head (408 after)')
        .env('GGROK_HEADERS_TIMEOUT_MS')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.headersTimeoutMs),
    )
    .addOption(
      new Option(
        '--startup-grace <ms>',
        'after start, requests for unknown names wait for their client this long',
      )
        .env('GGROK_STARTUP_GRACE_MS')
        .argParser(nonNegativeInt)
        .default(RELAY_DEFAULTS.startupGraceMs),
    )
    .addOption(
      new Option('--tokens-file <path>', 'file with one client token per line (# comments allowed)').env(
        'GGROK_TOKENS_FILE',
      ),
    )
    .addOption(
      new Option('--max-tunnels-per-token <n>', 'live tunnels one token may hold')
        .env('GGROK_MAX_TUNNELS_PER_TOKEN')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.maxTunnelsPerToken),
    )
    .addOption(
      new Option(
        '--rate-limit <n>',
        'new requests per second per tunnel (bursts of 2n); more get 429; 0 = off',
      )
        .env('GGROK_RATE_LIMIT')
        .argParser(nonNegativeInt)
        .default(RELAY_DEFAULTS.streamsPerSecond),
    )
    .addOption(
      new Option(
        '--rate-limit-per-visitor <n>',
        'new requests per second per visitor address of a tunnel (bursts of 2n); more get 429; 0 = off',
      )
        .env('GGROK_RATE_LIMIT_PER_VISITOR')
        .argParser(nonNegativeInt)
        .default(RELAY_DEFAULTS.visitorStreamsPerSecond),
    )
    .addOption(
      new Option(
        '--stream-window <KiB>',
        'response bytes a client may send per request before the visitor reads them (speed vs relay memory)',
      )
        .env('GGROK_STREAM_WINDOW')
        .argParser(positiveInt)
        .default(FLAG_DEFAULTS.streamWindowKiB),
    )
    .addOption(
      new Option('--conn-window <KiB>', 'the same, for all requests of one client connection together')
        .env('GGROK_CONN_WINDOW')
        .argParser(positiveInt)
        .default(FLAG_DEFAULTS.connWindowKiB),
    )
    .addOption(
      new Option('--max-header-bytes <n>', 'largest public request head (431 beyond)')
        .env('GGROK_MAX_HEADER_BYTES')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.maxHeaderBytes),
    )
    .addOption(
      new Option(
        '--idle-timeout <s>',
        'reset a request or channel with no data either way for this long (0: never)',
      )
        .env('GGROK_IDLE_TIMEOUT')
        .argParser(nonNegativeInt)
        .default(FLAG_DEFAULTS.idleTimeoutSeconds),
    )
    .addOption(
      new Option('--tls-cert <path>', 'PEM certificate chain: terminate TLS on the relay').env(
        'GGROK_TLS_CERT',
      ),
    )
    .addOption(new Option('--tls-key <path>', 'PEM private key for --tls-cert').env('GGROK_TLS_KEY'))
    .addOption(
      new Option('--log-format <format>', 'log format: one line per event')
        .choices(LOG_FORMATS)
        .env('GGROK_LOG_FORMAT')
        .default(RELAY_DEFAULTS.logFormat),
    )
    .addOption(
      new Option(
        '--access-log [bool]',
        'log one line per public request (method, host, path without query, status, ms, bytes)',
      )
        .env('GGROK_ACCESS_LOG')
        .argParser(booleanFlag)
        .default(RELAY_DEFAULTS.accessLog),
    )
    .addOption(
      new Option(
        '--metrics-token <token>',
        'the only token /_ggrok/metrics and /_ggrok/status accept (default: any client token)',
      ).env('GGROK_METRICS_TOKEN'),
    )
    .addOption(
      new Option('--metrics-per-tunnel [bool]', 'add per-tunnel request and byte series to the metrics')
        .env('GGROK_METRICS_PER_TUNNEL')
        .argParser(booleanFlag)
        .default(RELAY_DEFAULTS.metricsPerTunnel),
    )
    .addOption(
      new Option('--webhook <url>', 'POST tunnel connect/disconnect events (JSON) to this URL').env(
        'GGROK_WEBHOOK_URL',
      ),
    )
    .addOption(
      new Option(
        '--webhook-secret <secret>',
        'sign webhook bodies: X-Ggrok-Signature: sha256=<HMAC-SHA256>',
      ).env('GGROK_WEBHOOK_SECRET'),
    )
    .addOption(
      new Option(
        '--redis <url>',
        'run as one instance of a cluster sharing this Redis (redis:// or rediss://; also REDIS_URL)',
      ).env('GGROK_REDIS_URL'),
    )
    .addOption(
      new Option(
        '--redis-tls-insecure [bool]',
        "accept Redis's self-signed TLS certificate (Heroku Key-Value Store)",
      )
        .env('GGROK_REDIS_TLS_INSECURE')
        .argParser(booleanFlag),
    )
    .addOption(
      new Option(
        '--instance-id <id>',
        "this instance's id in the cluster (default: FLY_MACHINE_ID, else DYNO, else host name + random)",
      ).env('GGROK_INSTANCE_ID'),
    )
    .addOption(
      new Option(
        '--name-hold <duration>',
        'how long a name stays with its owner after its client left (e.g. 90s, 10m, 7d; default 10m alone, 7d with --redis)',
      )
        .env('GGROK_NAME_HOLD')
        .argParser(parseDuration),
    )
    .addOption(
      new Option(
        '--peer-url <url>',
        "private address other instances forward requests to (default on Fly: the machine's .vm.<app>.internal)",
      ).env('GGROK_PEER_URL'),
    )
    .addOption(
      new Option(
        '--instance-url <url>',
        'public URL that reaches this one instance directly, for clients to dial',
      ).env('GGROK_INSTANCE_URL'),
    )
    .addOption(
      new Option(
        '--inbox-status <n>',
        "status of the answer to a request a tunnel's webhook inbox keeps (2xx)",
      )
        .env('GGROK_INBOX_STATUS')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.inboxStatus),
    )
    .addOption(
      new Option('--inbox-max-body <KiB>', 'largest request body a webhook inbox keeps (413 beyond)')
        .env('GGROK_INBOX_MAX_BODY')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.inboxMaxBodyBytes / 1024),
    )
    .addOption(
      new Option('--inbox-max-requests <n>', "requests one tunnel's webhook inbox keeps (503 beyond)")
        .env('GGROK_INBOX_MAX_REQUESTS')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.inboxMaxRequests),
    )
    .addOption(
      new Option('--inbox-max-bytes <MiB>', "bytes one tunnel's webhook inbox keeps (503 beyond)")
        .env('GGROK_INBOX_MAX_BYTES')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.inboxMaxTunnelBytes / 1024 ** 2),
    )
    .addOption(
      new Option(
        '--inbox-max-total <MiB>',
        'bytes all webhook inboxes of the relay keep together (503 beyond)',
      )
        .env('GGROK_INBOX_MAX_TOTAL')
        .argParser(positiveInt)
        .default(RELAY_DEFAULTS.inboxMaxTotalBytes / 1024 ** 2),
    )
    .addOption(
      new Option(
        '--inbox-ttl <duration>',
        'how long a kept request waits for its client (e.g. 90m, 24h; default 24h)',
      )
        .env('GGROK_INBOX_TTL')
        .argParser(parseDuration),
    )
    .addOption(
      new Option('--inbox-dir <path>', 'keep webhook inboxes in files here, so they survive a restart').env(
        'GGROK_INBOX_DIR',
      ),
    )
    .action(async (flags: RelayFlags) => {
      await runRelay(flags);
    });
}

/** A URL without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** Reads tokens from a file: one per line, blank lines and # comments ignored. */
function readTokensFile(path: string): string[] {
  return readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean);
}

/** Prints a one-line configuration error and exits 2. */
function configError(message: string): never {
  process.stderr.write(`ggrok relay: ${message}\n`);
  process.exit(2);
}

async function runRelay(flags: RelayFlags): Promise<void> {
  const configured = [...(flags.token ?? [])];
  if (flags.tokensFile) {
    try {
      configured.push(...readTokensFile(flags.tokensFile));
    } catch (err) {
      configError(
        `cannot read --tokens-file ${flags.tokensFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  }
  const generated = configured.length === 0;
  const tokens = generated ? [generateToken()] : configured;
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) configError('--tls-cert and --tls-key go together');
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (flags.tlsCert && flags.tlsKey) {
    try {
      tls = { cert: readFileSync(flags.tlsCert), key: readFileSync(flags.tlsKey) };
    } catch (err) {
      configError(`cannot read the TLS certificate or key: ${(err as Error).message}`);
    }
  }
  const write = (line: string): void => void process.stdout.write(`${line}\n`);
  const structured = flags.logFormat !== 'text';
  const logEvent = (e: RelayEvent): void => write(formatEvent(e, flags.logFormat));
  const webhookWrong = flags.webhook && webhookUrlProblem(flags.webhook);
  if (webhookWrong) configError(`--webhook ${webhookWrong}`);
  if (flags.webhookSecret && !flags.webhook) configError('--webhook-secret needs --webhook');
  const flow = {
    streamWindow: flags.streamWindow * 1024,
    connWindow: flags.connWindow * 1024,
    maxData: RELAY_DEFAULTS.flow.maxData,
  };
  const flowWrong = flowProblem(flow, FLOW_FLAGS);
  if (flowWrong) configError(flowWrong);
  const redisUrl = flags.redis ?? redisFromEnv();
  for (const [flag, url] of [
    ['--peer-url', flags.peerUrl],
    ['--instance-url', flags.instanceUrl],
  ] as const)
    if (url !== undefined && !/^https?:\/\/[^\s/]+/.test(url))
      configError(`${flag} must be an http:// or https:// URL`);
  let relay: ReturnType<typeof createRelay>;
  try {
    relay = createRelay({
      instanceId: flags.instanceId,
      nameGraceMs: flags.nameHold,
      cluster: redisUrl
        ? {
            redisUrl,
            redisTlsInsecure: flags.redisTlsInsecure ?? false,
            peerUrl: flags.peerUrl ?? flyPeerUrl(flags.port),
            instanceUrl: flags.instanceUrl,
            flyMachine: process.env.FLY_MACHINE_ID || undefined,
          }
        : undefined,
      tls,
      flow,
      maxTunnelsPerToken: flags.maxTunnelsPerToken,
      streamsPerSecond: flags.rateLimit,
      visitorStreamsPerSecond: flags.rateLimitPerVisitor,
      maxHeaderBytes: flags.maxHeaderBytes,
      idleStreamMs: flags.idleTimeout * 1000,
      domain: flags.domain,
      tokens,
      trustProxy: flags.trustProxy ?? behindPlatformProxy(),
      onFly: Boolean(process.env.FLY_APP_NAME),
      maxRequestsPerTunnel: flags.maxRequests,
      maxChannelsPerTunnel: flags.maxChannels,
      waitForClientMs: flags.waitForClient,
      startupGraceMs: flags.startupGrace,
      headersTimeoutMs: flags.headersTimeout,
      log: logEvent,
      accessLog: flags.accessLog,
      metricsToken: flags.metricsToken || undefined,
      metricsPerTunnel: flags.metricsPerTunnel,
      webhook: flags.webhook ? { url: flags.webhook, secret: flags.webhookSecret || undefined } : undefined,
      inboxStatus: flags.inboxStatus,
      inboxMaxBodyBytes: flags.inboxMaxBody * 1024,
      inboxMaxRequests: flags.inboxMaxRequests,
      inboxMaxTunnelBytes: flags.inboxMaxBytes * 1024 ** 2,
      inboxMaxTotalBytes: flags.inboxMaxTotal * 1024 ** 2,
      inboxTtlMs: flags.inboxTtl,
      inboxDir: flags.inboxDir,
    });
  } catch (err) {
    configError(`cannot start: ${(err as Error).message}`);
  }
  let port: number;
  try {
    port = await relay.listen(flags.port, flags.host);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ERR_OSSL_PEM_NO_START_LINE' || /key|certificate/i.test(e.message)
        ? `bad TLS certificate or key: ${e.message}`
        : e.code === 'EADDRINUSE'
          ? `port ${flags.port} is already in use; pass --port or set PORT`
          : e.code === 'EACCES'
            ? `no permission to listen on port ${flags.port}; use a port above 1023`
            : e.message;
    process.stderr.write(`ggrok relay: cannot listen: ${why}\n`);
    process.exit(1);
  }
  const scheme = tls ? 'https' : 'http';
  const local = `${scheme}://localhost:${port}`;
  if (structured) {
    // Machine-readable logs: start-up is events too, so every line parses.
    logEvent({
      event: 'listening',
      version: RELAY_VERSION,
      host: flags.host ?? '0.0.0.0',
      port,
      mode: flags.domain ? 'domain' : 'own-host',
      domain: flags.domain ?? null,
      tls: Boolean(tls),
      visitorAddress: relay.visitorAddressSource,
      instance: relay.instanceId,
      cluster: redisUrl ? redactUrl(redisUrl) : null,
    });
    // Printed once on purpose (the operator needs it): the one field the formatter is told not to redact.
    if (generated)
      write(
        formatEvent(
          { event: 'generated_token', token: tokens[0], note: 'set GGROK_TOKEN to keep one across restarts' },
          flags.logFormat,
          { reveal: ['token'] },
        ),
      );
  } else {
    write(`ggrok relay ${RELAY_VERSION} listening on ${flags.host ?? '0.0.0.0'}:${port}`);
    write(
      flags.domain
        ? `mode: subdomains — tunnels at ${scheme}://<name>.${flags.domain}:${port}${tls ? '' : ' (or https behind a TLS proxy)'}`
        : "mode: own-host — one tunnel served at this relay's own address",
    );
    write(`visitor addresses: ${describeVisitorAddressSource(relay.visitorAddressSource)}`);
    write(
      redisUrl
        ? `cluster: instance ${relay.instanceId}, names and members in ${redactUrl(redisUrl)}`
        : `instance ${relay.instanceId}, alone (add --redis to run several instances)`,
    );
    if (generated) write(`token: ${tokens[0]} (generated; set GGROK_TOKEN to keep one across restarts)`);
    write(
      `connect: ggrok http 3000 --server ${local}${generated ? ` --token ${tokens[0]}` : ' --token <token>'}`,
    );
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1); // second signal: do not wait any longer
    stopping = true;
    logEvent({ event: 'stopping', signal });
    relay.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
