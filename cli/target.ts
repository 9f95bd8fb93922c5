// The local target a tunnel forwards to: parsing `3000`, `host:port` or a URL, and its human form.
import type { LocalTarget } from './local-pool.js';

export type { LocalTarget } from './local-pool.js';

/** Parses `3000`, `host:port`, `[::1]:8080` or a full `http(s)://host:port` URL. Throws with a one-line reason. */
export function parseTarget(spec: string, insecure = false): LocalTarget {
  const s = spec.trim();
  if (/^\d+$/.test(s))
    return { protocol: 'http:', host: 'localhost', port: checkPort(Number(s), spec), insecure };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new Error(`"${spec}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`"${spec}": only http:// and https:// targets are supported`);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return {
      protocol: url.protocol,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: checkPort(port, spec),
      insecure,
    };
  }
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`"${spec}" is not a port, host:port or URL`);
  return {
    protocol: 'http:',
    host: m[1]!.replace(/^\[|\]$/g, ''),
    port: checkPort(Number(m[2]), spec),
    insecure,
  };
}

function checkPort(port: number, spec: string): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"${spec}": port must be 1-65535`);
  return port;
}

/** Human form of a target, e.g. http://localhost:3000. */
export function describeTarget(t: LocalTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.protocol}//${host}:${t.port}`;
}

/** The target as a Host header value (`host:port`), what `--host-header rewrite` sends. */
export function targetHost(t: LocalTarget): string {
  return describeTarget(t).replace(/^https?:\/\//, '');
}
