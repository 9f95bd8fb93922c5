// Dev servers' host checks: recognise their refusals from a response's status and first bytes, word the fix
// with the tunnel's host filled in, and keep a same-origin Origin consistent with a rewritten Host.
import type { HeaderList, RequestFrame } from '../protocol/frames.js';
import { getHeader, setHeader } from '../protocol/headers.js';
import type { Exchange, ExchangeObserver } from './local-request.js';
import type { LocalTarget } from './target.js';

/**
 * Bytes of a refusal's body looked at. Django's and Rails's debug pages carry 4-6 KiB of CSS before their message
 * (Django's "Invalid HTTP_HOST header" starts at 4.6 KiB, Rails's "Blocked hosts" near 6 KiB), so 4 KiB is not enough.
 */
export const HOST_CHECK_PREFIX_BYTES = 16 * 1024;

/** The dev servers whose refusals are recognised. */
export const DevServer = {
  Vite: 'vite',
  Angular: 'angular',
  Webpack: 'webpack-dev-server',
  Next: 'next',
  Django: 'django',
  Rails: 'rails',
} as const;
export type DevServerId = (typeof DevServer)[keyof typeof DevServer];

const NAMES: Record<DevServerId, string> = {
  vite: 'Vite',
  angular: 'Angular CLI (ng serve)',
  'webpack-dev-server': 'webpack-dev-server',
  next: 'Next.js (dev)',
  django: 'Django',
  rails: 'Rails',
};

/** What the terminal, the inspector, `--log-format json` and the API's 'hint' event report, once per tunnel. */
export interface HostCheckHint {
  /** Name of the tunnel whose visitor was refused. */
  tunnel: string;
  server: DevServerId;
  /** The server's name for people, e.g. "Vite". */
  serverName: string;
  /** The refused request and the status it got. */
  method: string;
  target: string;
  status: number;
  /** The public host name the server refused (no port). */
  host: string;
  /** Why the server refused, in one sentence that follows "<serverName> refused <host>: ". */
  why: string;
  /** How to fix it, best first, each with the value to use. */
  fixes: string[];
  /** What else the fix needs for this server (hot reload through the tunnel), if anything. */
  note?: string;
}

/** Which server refused, read from the response alone. Exported for the unit tests. */
export interface Refusal {
  server: DevServerId;
  /** Vite's `vite preview` names preview.allowedHosts instead of server.allowedHosts. */
  preview?: boolean;
}

/** The response facts recognition looks at. */
export interface RefusalInput {
  status: number;
  /** The request target (Next.js only refuses its own /_next/ resources). */
  target: string;
  /** The first bytes of the body (at most HOST_CHECK_PREFIX_BYTES). */
  body: Buffer;
}

/**
 * True when a response could be a host-check refusal, so its first bytes are worth keeping: 400 (Django) or 403
 * (Vite, Angular, webpack-dev-server 4+, Next.js, Rails). Compressed bodies are not read. Runs for every response
 * until the tunnel's hint is given: the status test comes first.
 */
export function mayBeRefusal(status: number, headers: HeaderList): boolean {
  if (status !== 400 && status !== 403) return false;
  const coding = getHeader(headers, 'content-encoding');
  return coding === undefined || coding.trim().toLowerCase() === 'identity';
}

/** Recognises a dev server's host-check refusal, or returns undefined. Ordinary 400s and 403s never match. */
export function recogniseRefusal(r: RefusalInput): Refusal | undefined {
  const { status } = r;
  const text = r.body.toString('latin1');
  if (status === 403) {
    // Vite >= 5.4.12 / 6.0.9: `Blocked request. This host ("x") is not allowed.\nTo allow this host, add "x" to
    // `server.allowedHosts` in vite.config.js.` (the second sentence is missing where the shared middleware's
    // default message is used).
    if (/^Blocked request\. This host \(".*"\) is not allowed\./.test(text))
      return { server: DevServer.Vite, preview: /`preview\.allowedHosts`/.test(text) };
    // Angular CLI's dev server (Vite inside) puts Vite's sentence in an HTML page that points at angular.json.
    if (
      /<h1>Blocked request\. This host \(".*"\) is not allowed\.<\/h1>/.test(text) &&
      text.includes('angular.json')
    )
      return { server: DevServer.Angular };
    // Next.js dev with allowedDevOrigins set answers cross-origin requests for its own resources with this word.
    if (text === 'Unauthorized' && /\/(_next\/|__nextjs)/.test(r.target)) return { server: DevServer.Next };
    // Rails 6+ (ActionDispatch::HostAuthorization, with detailed exceptions): HTML or, for XHR, text.
    if (/Blocked hosts?: /.test(text) && /config\.hosts (&lt;&lt;|<<) /.test(text))
      return { server: DevServer.Rails };
    // webpack-dev-server 4+ (and Create React App 5): exactly this body, no Content-Type.
    if (text.trim() === 'Invalid Host header') return { server: DevServer.Webpack };
  }
  // Django with DEBUG: the technical 400 page names the exception in its title (or first line, for non-HTML clients).
  if (
    status === 400 &&
    (/<title>\s*DisallowedHost\s+at\s/.test(text) || /^DisallowedHost\s+at\s/.test(text)) &&
    /Invalid HTTP_HOST header/.test(text)
  )
    return { server: DevServer.Django };
  return undefined;
}

/** The tunnel facts the wording needs. */
export interface HintContext {
  tunnel: string;
  /**
   * The tunnel's public URL as the relay announced it. The hint names its host, not the refused request's Host: a
   * visitor chooses that one, and must not choose what the hint tells the user to allow.
   */
  url: string;
  target: LocalTarget;
  /** The tunnel's --host-header value, if any ("rewrite" or a host). */
  hostHeader?: string;
}

/** host:port the local service sees with --host-header rewrite. */
export function rewrittenHost(target: LocalTarget): string {
  return `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
}

/** The host (with port) of a public URL, or undefined when there is none yet. */
function publicHostOf(url: string): string | undefined {
  try {
    return new URL(url).host || undefined;
  } catch {
    return undefined;
  }
}

/** The host name of a Host header value (no port, no IPv6 brackets), lowercased. */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  const v6 = /^\[([^\]]*)\]/.exec(h);
  return v6 ? v6[1]! : h.replace(/:\d*$/, '');
}

/**
 * The pattern to allow: the relay's domain with a leading dot (`.relay.example`, which every tunnel name under it
 * matches) when the host is `<tunnel name>.<domain>`, else the exact host (a relay serving one tunnel at its own name).
 */
function allowed(host: string, tunnel: string): { domain: string; exact: boolean } {
  const prefix = `${tunnel.toLowerCase()}.`;
  if (tunnel && host.startsWith(prefix) && host.length > prefix.length)
    return { domain: host.slice(prefix.length), exact: false };
  return { domain: host, exact: true };
}

/** Words the hint for a recognised refusal: why, and the fixes with this tunnel's host and target filled in. */
export function hintFor(
  refusal: Refusal,
  request: { method: string; target: string; status: number; publicHost: string },
  ctx: HintContext,
): HostCheckHint {
  const host = hostName(publicHostOf(ctx.url) ?? request.publicHost);
  const { domain, exact } = allowed(host, ctx.tunnel);
  const dotted = exact ? host : `.${domain}`;
  const local = rewrittenHost(ctx.target);
  const rewriteOn = ctx.hostHeader === 'rewrite';
  const rewrite =
    `restart ggrok with --host-header rewrite (config file: host_header: rewrite); the server then sees Host: ${local}, ` +
    `so redirects and absolute URLs it builds from Host name ${local} (X-Forwarded-Host still carries ${host})`;
  let why: string;
  let fixes: string[];
  let note: string | undefined;
  switch (refusal.server) {
    case DevServer.Vite: {
      const option = refusal.preview ? 'preview' : 'server';
      why = `its host check (DNS-rebinding protection) only answers localhost, IP addresses and ${option}.allowedHosts`;
      fixes = [`in vite.config.js set ${option}: { allowedHosts: ['${dotted}'] } and restart Vite`];
      if (!rewriteOn) fixes.unshift(rewrite);
      break;
    }
    case DevServer.Angular:
      why = `its host check (Vite's, inside ng serve) only answers localhost, IP addresses and allowedHosts`;
      fixes = [
        `in angular.json, under projects.<app>.architect.serve.options, set "allowedHosts": ["${dotted}"] and restart ng serve`,
      ];
      if (!rewriteOn) fixes.unshift(rewrite);
      break;
    case DevServer.Webpack:
      why = `"Invalid Host header": its host check only answers localhost, IP addresses and devServer.allowedHosts`;
      fixes = [
        `in webpack.config.js set devServer: { allowedHosts: ['${dotted}'] } (Create React App: use --host-header rewrite)`,
      ];
      if (!rewriteOn) fixes.unshift(rewrite);
      // Its client is built with the dev server's own port in the hot-reload socket's URL, not the page's.
      note = `for hot reload through the tunnel also set devServer: { client: { webSocketURL: 'auto://0.0.0.0:0/ws' } } (Create React App: WDS_SOCKET_PORT=0)`;
      break;
    case DevServer.Next:
      why = request.target.includes('hmr')
        ? `it refused the hot-reload socket: Next.js dev answers page origins not in allowedDevOrigins with a bare "Unauthorized" (blocked by default since Next.js 16)`
        : `it blocks requests for its /_next/ resources from page origins not in allowedDevOrigins`;
      fixes = [
        `in next.config.js add allowedDevOrigins: ['${exact ? host : `*.${domain}`}'] and restart next dev`,
      ];
      if (!rewriteOn)
        fixes.push(
          `restart ggrok with --host-header rewrite against a localhost target: ggrok then also rewrites the page's own Origin to http://${local}`,
        );
      break;
    case DevServer.Django:
      why = `DisallowedHost: the host is not in ALLOWED_HOSTS`;
      fixes = [`in settings.py set ALLOWED_HOSTS = ['${dotted}', 'localhost', '127.0.0.1']`];
      if (!rewriteOn) fixes.unshift(rewrite);
      break;
    case DevServer.Rails:
      why = `the host is not in config.hosts (Rails checks X-Forwarded-Host too, so --host-header rewrite alone does not help)`;
      fixes = [`in config/environments/development.rb add config.hosts << "${dotted}" and restart Rails`];
      if (!rewriteOn)
        fixes.push(`restart ggrok with --host-header rewrite --request-header-remove X-Forwarded-Host`);
      break;
  }
  return {
    tunnel: ctx.tunnel,
    server: refusal.server,
    serverName: NAMES[refusal.server],
    method: request.method,
    target: request.target,
    status: request.status,
    host,
    why,
    fixes,
    ...(note ? { note } : {}),
  };
}

/** Keeps the first `limit` bytes of a body, copied (the tunnel's chunks are not ours to keep). */
class Prefix {
  private readonly chunks: Buffer[] = [];
  size = 0;
  constructor(private readonly limit: number) {}
  /** Adds what fits; true once the prefix is full. */
  add(chunk: Buffer): boolean {
    const room = this.limit - this.size;
    if (room > 0 && chunk.length > 0) {
      const kept = Buffer.from(chunk.subarray(0, Math.min(room, chunk.length)));
      this.chunks.push(kept);
      this.size += kept.length;
    }
    return this.size >= this.limit;
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

/**
 * Watches one tunnel's exchanges for a dev server's host-check refusal and reports the first one (then stops
 * watching). Per exchange it costs one small object; bodies are only copied, up to HOST_CHECK_PREFIX_BYTES, for
 * 400/403 responses, and never held back or delayed.
 */
export class HostCheckWatch {
  private told = false;

  constructor(
    private readonly ctx: () => HintContext,
    private readonly report: (hint: HostCheckHint) => void,
  ) {}

  /** An observer for one exchange (none once the tunnel's hint was given). */
  observe(head: RequestFrame): ExchangeObserver | undefined {
    if (this.told) return undefined;
    return new RefusalWatch(this, head);
  }

  /** Called by an exchange's watch with a recognised refusal. */
  found(
    refusal: Refusal,
    request: { method: string; target: string; status: number; publicHost: string },
  ): void {
    if (this.told) return;
    this.told = true;
    const hint = hintFor(refusal, request, this.ctx());
    // After the exchange's own report, so the terminal shows the refused request's line first.
    queueMicrotask(() => this.report(hint));
  }
}

/** One exchange's watch: keeps the first bytes of a candidate refusal and decides once. */
class RefusalWatch implements ExchangeObserver {
  private prefix: Prefix | undefined;
  private status = 0;
  private decided = false;

  constructor(
    private readonly watch: HostCheckWatch,
    private readonly head: RequestFrame,
  ) {}

  response(status: number, _reason: string, headers: HeaderList): void {
    if (!mayBeRefusal(status, headers)) return void (this.decided = true);
    this.status = status;
    this.prefix = new Prefix(HOST_CHECK_PREFIX_BYTES);
  }

  responseData(chunk: Buffer): void {
    if (this.prefix && !this.decided && this.prefix.add(chunk)) this.decide();
  }

  end(summary: Exchange): void {
    if (this.prefix && !this.decided) return this.decide();
    const { head } = this;
    if (head.upgrade && recogniseUpgradeFailure(head.target, summary))
      this.watch.found(
        { server: DevServer.Next },
        { method: head.method, target: head.target, status: summary.status, publicHost: hostOf(head) },
      );
  }

  private decide(): void {
    this.decided = true;
    const body = this.prefix!.bytes();
    this.prefix = undefined;
    const { head } = this;
    let refusal: Refusal | undefined;
    try {
      refusal = recogniseRefusal({ status: this.status, target: head.target, body });
    } catch {
      return; // a bystander: never let recognition get in the way of the exchange
    }
    if (refusal)
      this.watch.found(refusal, {
        method: head.method,
        target: head.target,
        status: this.status,
        publicHost: hostOf(head),
      });
  }
}

/** The Host the visitor sent. */
function hostOf(head: RequestFrame): string {
  return getHeader(head.headers, 'host') ?? '';
}

/**
 * True for Next.js dev refusing its hot-reload socket to a page origin not in allowedDevOrigins (the default since
 * Next.js 16): it writes a bare "Unauthorized" on the socket instead of an HTTP response, which the client reports as
 * an invalid response. Nothing else answers an upgrade of /_next/hmr or /_next/webpack-hmr that way.
 */
export function recogniseUpgradeFailure(target: string, summary: Exchange): boolean {
  return (
    /\/_next\/(webpack-)?hmr(\?|$)/.test(target) &&
    summary.status === 502 &&
    (summary.error ?? '').startsWith('invalid response from ')
  );
}

/** One observer that feeds two (the host-check watch and the inspector); either may be missing. */
export function bothObservers(
  a: ExchangeObserver | undefined,
  b: ExchangeObserver | undefined,
): ExchangeObserver | undefined {
  if (!a) return b;
  if (!b) return a;
  const out: ExchangeObserver = {};
  // Only the methods one of them has, so the exchange skips the taps neither needs (channel bytes, for one).
  if (a.requestData || b.requestData)
    out.requestData = (chunk) => {
      a.requestData?.(chunk);
      b.requestData?.(chunk);
    };
  if (a.response || b.response)
    out.response = (status, reason, headers) => {
      a.response?.(status, reason, headers);
      b.response?.(status, reason, headers);
    };
  if (a.responseData || b.responseData)
    out.responseData = (chunk) => {
      a.responseData?.(chunk);
      b.responseData?.(chunk);
    };
  if (a.channelData || b.channelData)
    out.channelData = (direction, chunk) => {
      a.channelData?.(direction, chunk);
      b.channelData?.(direction, chunk);
    };
  if (a.end || b.end)
    out.end = (summary) => {
      a.end?.(summary);
      b.end?.(summary);
    };
  return out;
}

/** The authority of an Origin value with the scheme's default port dropped, lowercased; undefined if not a URL. */
function originAuthority(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.host.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * With the Host rewritten, an Origin that names the public host (the tunnel's own pages: their fetches, module
 * scripts and HMR WebSockets) is rewritten to match, so servers that compare Origin with Host or with their own
 * address (webpack-dev-server's HMR socket, Next.js dev, CSRF checks) see a same-origin request again. A foreign
 * Origin is left as it is: the server's protection against other sites keeps working. Edits `headers` in place.
 */
export function rewriteSameOrigin(
  headers: HeaderList,
  publicHost: string | undefined,
  newHost: string,
  target: LocalTarget,
): void {
  const origin = getHeader(headers, 'origin');
  if (!origin || !publicHost) return;
  const authority = originAuthority(origin);
  if (authority === undefined) return;
  const host = publicHost.trim().toLowerCase();
  // The visitor's Host may carry a default port the Origin leaves out (or the other way round).
  const bare = (h: string): string => h.replace(/:(80|443)$/, '');
  if (authority !== host && bare(authority) !== bare(host)) return;
  setHeader(headers, 'Origin', `${target.protocol}//${newHost}`);
}
