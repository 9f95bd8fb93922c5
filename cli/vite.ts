// The Vite plugin (`ggrok/vite`): `plugins: [ggrok({ server, subdomain })]` shares the dev server through a tunnel
// while it runs: opened when it listens, its host allowed by Vite's host check, printed beside Local/Network, closed
// with it. Vite is an optional peer: only its shape is described here, and the client loads once the server listens.
import type { AddressInfo } from 'node:net';
import type { ConnectOptions, Tunnel } from './index.js';

/** The parts of a Vite dev server the plugin uses (Vite 5.4.12+, 6, 7 and 8 have them). */
export interface ViteDevServerLike {
  config: {
    server: { allowedHosts?: string[] | true; https?: unknown };
    logger: {
      info(msg: string, options?: { timestamp?: boolean }): void;
      warn(msg: string, options?: { timestamp?: boolean }): void;
      error(msg: string, options?: { timestamp?: boolean }): void;
    };
  };
  httpServer: {
    once(event: 'listening' | 'close', listener: () => void): unknown;
    address(): AddressInfo | string | null;
  } | null;
  printUrls(): void;
  close(): Promise<void>;
}

/** What `ggrok()` returns: a Vite plugin object. */
export interface GgrokVitePlugin {
  name: 'ggrok';
  /** Only `vite` / `vite dev`: a build never opens a tunnel. */
  apply: 'serve';
  configureServer(server: ViteDevServerLike): void;
  /** For other plugins and tests: the tunnel once it is online (undefined before and after). */
  api: { readonly tunnel: Tunnel | undefined };
}

/** The plugin's options: connect()'s (every `ggrok http` option), the target defaulting to the dev server itself. */
export type GgrokViteOptions = Omit<ConnectOptions, 'port'>;

/** How long requests in flight get to finish when the dev server closes (it is closing its own sockets anyway). */
const CLOSE_DRAIN_MS = 2000;

/** The dev server's address as a tunnel target: wildcard binds are reached at localhost (both 127.0.0.1 and ::1). */
function targetOf(address: AddressInfo, https: boolean): string {
  const scheme = https ? 'https' : 'http';
  const wildcard = address.address === '::' || address.address === '0.0.0.0';
  const host = wildcard ? 'localhost' : address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${scheme}://${host}:${address.port}`;
}

/**
 * A Vite plugin that shares the dev server at a public URL through a ggrok relay. Token and relay default to
 * GGROK_TOKEN and GGROK_SERVER. HMR needs nothing: Vite's client opens its socket at the page's own host, port and
 * scheme (wss on an https tunnel), which is the tunnel.
 */
export function ggrok(options: GgrokViteOptions = {}): GgrokVitePlugin {
  let current: Tunnel | undefined;
  return {
    name: 'ggrok',
    apply: 'serve',
    api: {
      get tunnel() {
        return current;
      },
    },
    configureServer(server) {
      const logger = server.config.logger;
      const httpServer = server.httpServer;
      if (!httpServer) {
        logger.warn('ggrok: no HTTP server (middleware mode): nothing to share; use connect() from "ggrok"');
        return;
      }
      let state: 'idle' | 'opening' | 'open' | 'closed' = 'idle';
      let opening: Promise<Tunnel | undefined> | undefined;
      let urlsPrinted = false;
      const printUrl = (tunnel: Tunnel): void => logger.info(`  \u279c  Tunnel:  ${tunnel.url}/`);

      const open = async (): Promise<Tunnel | undefined> => {
        const address = httpServer.address();
        if (!address || typeof address === 'string') return undefined;
        const { connect } = await import('./index.js');
        const tunnel = await connect({
          ...options,
          target: options.target ?? targetOf(address, Boolean(server.config.server.https)),
        });
        // Vite's host check reads the list on every request: the tunnel's host passes without --host-header rewrite.
        const host = new URL(tunnel.url).hostname;
        const allowed = server.config.server.allowedHosts;
        try {
          if (Array.isArray(allowed) && !allowed.includes(host)) allowed.push(host);
        } catch {
          // A config whose list cannot grow (frozen by another plugin): say what to add rather than fail.
          logger.warn(`ggrok: could not add ${host} to server.allowedHosts; add it in vite.config.js`);
        }
        tunnel.on('offline', (o) =>
          logger.warn(`ggrok: tunnel offline (${o.reason}); retrying`, { timestamp: true }),
        );
        tunnel.on('online', () =>
          logger.info(`ggrok: tunnel back online at ${tunnel.url}/`, { timestamp: true }),
        );
        // Vite's own check passes now; another server behind it (a proxy target) may still refuse the host.
        tunnel.on('hint', (h) =>
          logger.warn(`ggrok: ${h.serverName} refused ${h.host}: ${h.fixes.join('; or ')}`),
        );
        tunnel.on('fatal', (err) => logger.error(`ggrok: tunnel down: ${err.message}`, { timestamp: true }));
        return tunnel;
      };

      const close = async (): Promise<void> => {
        const was = state;
        state = 'closed';
        if (was === 'idle') return;
        const tunnel = await opening?.catch(() => undefined);
        current = undefined;
        await tunnel?.close({ drainMs: CLOSE_DRAIN_MS });
      };

      httpServer.once('listening', () => {
        if (state !== 'idle') return;
        state = 'opening';
        opening = open();
        opening.then(
          (tunnel) => {
            if (!tunnel) return;
            if (state === 'closed') return void tunnel.close({ drainMs: 0 });
            state = 'open';
            current = tunnel;
            if (urlsPrinted) printUrl(tunnel);
          },
          (err: Error & { code?: string }) =>
            logger.error(`ggrok: no tunnel: ${err.message}${err.code ? ` (${err.code})` : ''}`, {
              timestamp: true,
            }),
        );
      });
      httpServer.once('close', () => void close());

      // Vite prints Local/Network once it listens; the tunnel line joins them (now, or when the tunnel is up).
      const printUrls = server.printUrls.bind(server);
      server.printUrls = () => {
        printUrls();
        urlsPrinted = true;
        if (current) printUrl(current);
      };
      const closeServer = server.close.bind(server);
      server.close = async () => {
        await Promise.all([closeServer(), close()]);
      };
    },
  };
}

export default ggrok;
