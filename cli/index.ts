// Programmatic API: `const tunnel = await connect({ port: 3000, server, token })` -> { url, close() } and events.
import { ErrorCode, GgrokError } from '../protocol/errors.js';
import { TunnelClient, type ClientEvents, type OfflineInfo, type OnlineInfo } from './client.js';
import type { HostCheckHint } from './host-check.js';
import { parseTarget, type Exchange, type LocalTarget } from './local-request.js';

export {
  GgrokError,
  TunnelClient,
  type ClientEvents,
  type Exchange,
  type HostCheckHint,
  type LocalTarget,
  type OfflineInfo,
  type OnlineInfo,
};

export interface ConnectOptions {
  /** Local port, "host:port" or URL to expose. */
  port?: number;
  target?: string;
  /** Relay URL; defaults to GGROK_SERVER or http://localhost:8080. */
  server?: string;
  /** Relay token; defaults to GGROK_TOKEN. */
  token?: string;
  subdomain?: string;
  /** Accept self-signed certificates (relay and https targets). */
  insecure?: boolean;
  /**
   * Webhook inbox: `true` (every path) or path patterns ("/webhooks/*"): while this client is away, the relay keeps
   * requests to them and delivers them when it is back (each with X-Ggrok-Inbox and X-Ggrok-Received-At).
   */
  inbox?: boolean | string[];
}

/**
 * Opens a tunnel and resolves once it is online. The returned client has `url`, `name`, `close()` and
 * emits 'request', 'hint' (a dev server refused the tunnel's host: which, why, the fix), 'offline', 'online'
 * (on reconnects) and 'fatal'. Rejects with a GgrokError whose
 * `code` says why (bad_token, name_in_use, relay_unreachable, …).
 */
export async function connect(options: ConnectOptions): Promise<TunnelClient> {
  const spec = options.target ?? (options.port !== undefined ? String(options.port) : undefined);
  if (!spec) throw new GgrokError(ErrorCode.BadTarget, 'connect() needs a port or a target');
  let target: LocalTarget;
  try {
    target = parseTarget(spec, options.insecure ?? false);
  } catch (err) {
    throw new GgrokError(ErrorCode.BadTarget, (err as Error).message);
  }
  const token = options.token ?? process.env.GGROK_TOKEN;
  if (!token) throw new GgrokError(ErrorCode.NoToken, 'connect() needs a token (or GGROK_TOKEN)');
  const client = new TunnelClient({
    server: options.server ?? process.env.GGROK_SERVER ?? 'http://localhost:8080',
    token,
    subdomain: options.subdomain,
    target,
    insecure: options.insecure,
    ...(options.inbox ? { inbox: options.inbox === true ? ['/*'] : options.inbox } : {}),
  });
  await client.start();
  return client;
}
