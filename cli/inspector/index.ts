// The local inspector: records what the tunnel carries and serves a live web UI on 127.0.0.1:4040.
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, GgrokError } from '../../protocol/errors.js';
import type { HeaderList, RequestFrame } from '../../protocol/frames.js';
import type { HostCheckHint } from '../host-check.js';
import type { ExchangeObserver } from '../local-request.js';
import type { LocalTarget } from '../target.js';
import type { TunnelInfo } from './export.js';
import { createInspectorServer } from './server.js';
import { InspectorStore } from './store.js';

export interface InspectorOptions {
  /** Bind address; default 127.0.0.1. Anything else exposes the captured traffic to the network. */
  host?: string;
  /** Default 4040; when taken, the next ports are tried (up to +portAttempts). 0 picks a free port. */
  port?: number;
  /** How many ports after `port` to try when it is taken; default 20 (0: exactly `port`, e.g. one the user chose). */
  portAttempts?: number;
  /** Exchanges kept, oldest evicted first; default 500. */
  maxExchanges?: number;
  /** Bytes kept of each body; default 1 MiB. */
  maxBodyBytes?: number;
  /** Bytes kept over all exchanges; default 64 MiB, oldest evicted first. */
  maxTotalBytes?: number;
}

export interface Inspector {
  /** Where the UI is, e.g. http://127.0.0.1:4040 */
  url: string;
  /** Pass as TunnelClient's `observe` option. */
  observe: (tunnel: string, head: RequestFrame, localHeaders: HeaderList) => ExchangeObserver;
  /** Call on every 'online': public URLs (for curl and HAR) and local targets (for replay). */
  setTunnels(tunnels: { name: string; url: string; target: LocalTarget }[]): void;
  /** Call on every 'stats' event: the relay's traffic counters for one tunnel, shown in the page header. */
  setStats(stats: TunnelTraffic): void;
  /** Call on every 'hint' event: a dev server's host-check refusal, shown above the list. */
  addHint(hint: HostCheckHint): void;
  close(): Promise<void>;
}

/** A tunnel's traffic as the relay counts it. */
export interface TunnelTraffic {
  name: string;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  channels: number;
}

export const DEFAULT_INSPECTOR_PORT = 4040;
/** How many ports after the first one are tried when it is taken. */
const PORT_ATTEMPTS = 20;
/** Hints kept (the client gives at most one per tunnel). */
const MAX_HINTS = 20;

/**
 * Parses the --inspect value: `4040`, `host:port`, `[::1]:4040` or a bare host (port 4040).
 * Throws with a one-line reason.
 */
export function parseInspectAddress(spec: string): { host: string; port: number } {
  const s = spec.trim();
  const m =
    /^(\d+)$/.exec(s) ??
    /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(s) ??
    /^([A-Za-z0-9.-]+)(?::(\d+))?$/.exec(s);
  if (!m) throw new Error(`"${spec}" is not a port, host or host:port for the inspector`);
  const [host, portText] = /^\d+$/.test(s) ? ['127.0.0.1', m[1]!] : [m[1]!, m[2]];
  const port = portText === undefined ? DEFAULT_INSPECTOR_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`"${spec}": the inspector port must be 0-65535`);
  return { host, port };
}

function listenOn(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/** Starts the inspector's store and web server. Rejects with GgrokError `inspector_port_in_use` or `inspector_listen`. */
export async function startInspector(options: InspectorOptions = {}): Promise<Inspector> {
  const host = options.host ?? '127.0.0.1';
  const firstPort = options.port ?? DEFAULT_INSPECTOR_PORT;
  const store = new InspectorStore({
    ...(options.maxExchanges !== undefined ? { maxExchanges: options.maxExchanges } : {}),
    ...(options.maxBodyBytes !== undefined ? { maxBodyBytes: options.maxBodyBytes } : {}),
    ...(options.maxTotalBytes !== undefined ? { maxTotalBytes: options.maxTotalBytes } : {}),
  });
  let tunnels = new Map<string, TunnelInfo>();
  const traffic = new Map<string, TunnelTraffic>();
  const hints: HostCheckHint[] = [];
  let port = 0;
  const { server, close: closeServer } = createInspectorServer({
    store,
    tunnels: () => tunnels,
    traffic: () => traffic,
    hints: () => hints,
    host,
    port: () => port,
  });

  const attempts = Math.max(0, options.portAttempts ?? PORT_ATTEMPTS);
  const lastPort = firstPort === 0 ? 0 : Math.min(65535, firstPort + attempts);
  for (let p = firstPort; ; p++) {
    try {
      await listenOn(server, p, host);
      break;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE' && p < lastPort) continue;
      store.close();
      closeServer();
      if (e.code === 'EADDRINUSE')
        throw new GgrokError(
          ErrorCode.InspectorPortInUse,
          `the inspector could not listen: ${lastPort > firstPort ? `ports ${firstPort}-${lastPort}` : `port ${firstPort}`} on ${host} ${lastPort > firstPort ? 'are' : 'is'} taken (use --inspect host:port or --no-inspect)`,
          { cause: err },
        );
      throw new GgrokError(
        ErrorCode.InspectorListen,
        `the inspector could not listen on ${host}:${p} (${e.code ?? e.message})`,
        {
          cause: err,
        },
      );
    }
  }
  port = (server.address() as AddressInfo).port;
  server.on('error', () => {}); // nothing after listening is worth crashing the tunnel for
  const shownHost =
    host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;

  let closed: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${port}`,
    observe: (tunnel, head, localHeaders) => {
      try {
        return store.begin({
          tunnel,
          method: head.method,
          target: head.target,
          headers: localHeaders,
          publicHeaders: head.headers,
          upgrade: head.upgrade,
        });
      } catch {
        return {}; // the inspector never gets in the way of the exchange it watches
      }
    },
    setTunnels(list) {
      tunnels = new Map(list.map((t) => [t.name, { name: t.name, url: t.url, target: t.target }]));
    },
    setStats(stats) {
      const { name, requests, bytesIn, bytesOut, channels } = stats;
      traffic.set(name, { name, requests, bytesIn, bytesOut, channels });
    },
    addHint(hint) {
      if (hints.length < MAX_HINTS) hints.push(hint);
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        closeServer();
        store.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
