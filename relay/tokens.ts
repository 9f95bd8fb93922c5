// Client and observer tokens: `label=secret` entries, their owners, and constant-time matching.
import { randomBytes } from 'node:crypto';
import { findSecret, hashSecret } from './secrets.js';

/** Hashes a token; only hashes are kept in memory and compared. */
export function tokenId(token: string): string {
  return hashSecret(token).toString('hex');
}

/** A random token for relays started without one. */
export function generateToken(): string {
  return randomBytes(18).toString('base64url');
}

/** One accepted client token: the secret, and the label people see instead of it. */
export interface TokenEntry {
  label: string;
  /** tokenId() of the secret: identifies the owner of a tunnel (name holds, tunnel limits). */
  owner: string;
  /** Strings a client may present for it: the secret, and for `label=secret` the whole entry as well. */
  accepted: string[];
}

const TOKEN_LABEL = /^[A-Za-z0-9][\w.@+-]{0,63}$/;

/**
 * Reads configured tokens. `label=secret` gives the secret a label (shown on the status page and in logs);
 * anything else is a plain token labelled `token#` and the first 6 hex digits of its SHA-256. A value that
 * merely ends in `=` (base64 padding) stays a plain token; a labelled entry is also accepted whole, so a
 * token that happened to contain `=` before this syntax existed keeps working.
 */
export function parseTokens(tokens: readonly string[]): TokenEntry[] {
  return tokens.map((raw) => {
    const at = raw.indexOf('=');
    const label = raw.slice(0, at);
    const secret = raw.slice(at + 1);
    if (at > 0 && TOKEN_LABEL.test(label) && /[^=]/.test(secret))
      return { label, owner: tokenId(secret), accepted: [secret, raw] };
    return { label: `token#${tokenId(raw).slice(0, 6)}`, owner: tokenId(raw), accepted: [raw] };
  });
}

/** The configured token a presented one matches, compared in constant time against every entry. */
export function matchToken(presented: string, entries: readonly TokenEntry[]): TokenEntry | undefined {
  const owners = entries.flatMap((entry) => entry.accepted.map(() => entry));
  const hashes = entries.flatMap((entry) => entry.accepted.map(hashSecret));
  return owners[findSecret(presented, hashes)];
}

/** Constant-time check of a presented token against the configured ones. */
export function tokenMatches(presented: string, allowed: readonly string[]): boolean {
  return findSecret(presented, allowed.map(hashSecret)) >= 0;
}

/** The relay's tokens: which open tunnels (clients) and which read metrics and status (observers). */
export class Credentials {
  private readonly entries: TokenEntry[];
  /** Strings /_ggrok/metrics and /_ggrok/status accept as a bearer token. */
  private readonly observerTokens: string[];

  constructor(tokens: readonly string[], metricsToken: string | undefined) {
    this.entries = parseTokens(tokens);
    this.observerTokens = metricsToken ? [metricsToken] : this.entries.flatMap((t) => t.accepted);
  }

  /** The client token entry `presented` matches, or undefined. */
  client(presented: string): TokenEntry | undefined {
    return matchToken(presented, this.entries);
  }

  /** The owners (token hashes) of every configured token: what all instances of a cluster share. */
  get owners(): string[] {
    return this.entries.map((e) => e.owner);
  }

  /** Whether `presented` may read metrics and status. */
  observer(presented: string): boolean {
    return tokenMatches(presented, this.observerTokens);
  }
}
