// Header edits a tunnel's owner asked for (--host-header, --request-header-*, --response-header-*), applied by the
// client on the way to and from the local service. They can never change how a body is framed.
import { BodyKind, type HeaderList, type RequestFrame } from '../protocol/frames.js';
import {
  FIELD_VALUE,
  getHeader,
  setHeader,
  stripHopByHop,
  TOKEN,
  withoutHeader,
} from '../protocol/headers.js';
import { rewriteSameOrigin } from './host-check.js';
import { targetHost, type LocalTarget } from './target.js';

/** Header edits the client applies on the way to and from the local service. */
export interface HeaderRules {
  /** "rewrite": Host becomes the target's host:port (dev servers with host checks, e.g. Vite); another value replaces Host; absent keeps the public Host. */
  hostHeader?: string;
  requestAdd: HeaderList;
  requestRemove: string[];
  responseAdd: HeaderList;
  responseRemove: string[];
}

export const NO_HEADER_RULES: HeaderRules = {
  requestAdd: [],
  requestRemove: [],
  responseAdd: [],
  responseRemove: [],
};

/** Parses "Name: value" (for --request-header-add and friends). Throws with a one-line reason. */
export function parseHeaderArg(arg: string): [string, string] {
  const colon = arg.indexOf(':');
  const name = arg.slice(0, colon);
  const value = arg.slice(colon + 1).replace(/^\s+/, '');
  if (colon < 0 || !TOKEN.test(name) || !FIELD_VALUE.test(value))
    throw new Error(`"${arg}" is not a header; use "Name: value"`);
  return [name, value];
}

function edit(headers: HeaderList, remove: string[], add: HeaderList): HeaderList {
  let out = headers;
  for (const name of remove) out = withoutHeader(out, name);
  return add.length > 0 ? [...out, ...add] : out;
}

/** The Content-Length and Transfer-Encoding lines of a header list, to tell whether header rules touched them. */
function framingOf(headers: HeaderList): string {
  let out = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (name === 'content-length' || name === 'transfer-encoding') out += `${name}: ${headers[i + 1]!}\n`;
  }
  return out;
}

/** One tunnel's rules, compiled once: applies them to request and response heads. */
export class HeaderEditor {
  /** The rules remove or add Content-Length or Transfer-Encoding (the only way they can touch framing). */
  private readonly rulesNameFraming: boolean;

  /** The Host value `rewrite` stands for (the target's host:port). */
  private readonly rewrittenHost: string;

  constructor(
    private readonly rules: HeaderRules,
    private readonly target: LocalTarget,
  ) {
    this.rewrittenHost = targetHost(target);
    const added = rules.requestAdd.filter((_, i) => i % 2 === 0);
    this.rulesNameFraming = [...rules.requestRemove, ...added].some((name) =>
      /^(content-length|transfer-encoding)$/i.test(name),
    );
  }

  /** The request headers as the local service should see them (framing added for chunked bodies). */
  request(head: RequestFrame): HeaderList {
    const rules = this.rules;
    let headers = edit(head.headers, rules.requestRemove, rules.requestAdd);
    if (this.rulesNameFraming && framingOf(headers) !== framingOf(head.headers)) {
      // The body's framing belongs to the tunnel, not to header rules: a removed or added Content-Length would
      // make the local server read the body as the next request on this keep-alive connection.
      headers = withoutHeader(withoutHeader(headers, 'content-length'), 'transfer-encoding');
      const length = getHeader(head.headers, 'content-length');
      if (head.body === BodyKind.Length && length !== undefined) headers.push('Content-Length', length);
    }
    const host = rules.hostHeader;
    if (host) {
      const value = host === 'rewrite' ? this.rewrittenHost : host;
      headers = [...headers];
      setHeader(headers, 'Host', value);
      // Dev servers check Origin as well as Host on their hot-reload sockets (webpack-dev-server).
      rewriteSameOrigin(headers, getHeader(head.headers, 'host'), value, this.target);
    }
    return head.body === BodyKind.Chunked ? [...headers, 'Transfer-Encoding', 'chunked'] : headers;
  }

  /** The response headers as the public client should see them. */
  response(rawHeaders: HeaderList, upgrade = false): HeaderList {
    // The parser caps the local response head (64 KiB, 2000 headers), inside the wire limits.
    return edit(stripHopByHop(rawHeaders, upgrade), this.rules.responseRemove, this.rules.responseAdd);
  }
}
