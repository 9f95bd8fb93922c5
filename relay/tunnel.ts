// One connected client: the handshake on its control socket, then its session and bookkeeping.
import type WebSocket from 'ws';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { CloseCode, RefuseCode, type RefuseCodeValue } from '../protocol/errors.js';
import {
  FrameType,
  PROTOCOL_VERSION,
  type Frame,
  type HelloFrame,
  type WelcomeFrame,
} from '../protocol/frames.js';
import type { Session } from '../protocol/session.js';
import type { AccessPolicy } from './access.js';
import { findSecret, hashSecret } from './secrets.js';

/** Running totals of public body bytes: a relay's whole traffic, or one tunnel name's across reconnects. */
export interface TrafficTotals {
  bytesIn: number;
  bytesOut: number;
}

/** A live tunnel: a name, a public URL and the session that carries its streams. */
export class Tunnel {
  readonly connectedAt = Date.now();
  /** Public HTTP requests currently being served. */
  activeRequests = 0;
  /** Open upgraded channels (WebSockets and other protocols). */
  activeChannels = 0;
  /** Public requests and upgrades answered since this connection (any status, relay refusals included). */
  requests = 0;
  /** Body bytes from visitors into the tunnel, and from the tunnel back to visitors. */
  bytesIn = 0;
  bytesOut = 0;
  /** When a request or a body byte last moved (ms since the epoch); 0 before any. */
  lastActivityAt = 0;
  /** The label of the token that opened the tunnel, for people; never the token itself. */
  ownerLabel = '';
  /** Other totals this tunnel's bytes add to (the relay's, and its name's when metrics are per tunnel). */
  readonly sinks: TrafficTotals[] = [];
  /** The counters last sent in a Stats frame: a new one goes out only when they differ. */
  statsSent = '0/0/0/0/0';
  constructor(
    readonly name: string,
    readonly url: string,
    /** Hash of the token that opened the tunnel; used to hold its name across reconnects. */
    readonly owner: string,
    readonly clientId: string,
    readonly agent: string,
    readonly session: Session,
    /** Visitor restrictions the client asked for, if any. */
    readonly access: AccessPolicy | undefined,
    private readonly rate: { perSecond: number; burst: number },
    /** Position of this tunnel among those its connection carries (sent in every Request). */
    readonly index = 0,
  ) {
    this.tokens = rate.burst;
  }

  private tokens: number;
  private refilledAt = Date.now();

  /** Counts body bytes from a visitor into the tunnel. */
  countIn(bytes: number): void {
    this.bytesIn += bytes;
    for (const sink of this.sinks) sink.bytesIn += bytes;
    this.lastActivityAt = Date.now();
  }

  /** Counts body bytes from the tunnel back to a visitor. */
  countOut(bytes: number): void {
    this.bytesOut += bytes;
    for (const sink of this.sinks) sink.bytesOut += bytes;
    this.lastActivityAt = Date.now();
  }

  /** Counts one public request or upgrade the relay finished answering. */
  countRequest(): void {
    this.requests++;
    this.lastActivityAt = Date.now();
  }

  /** Token bucket for new streams: false when the tunnel opens streams faster than its rate allows. */
  allowNewStream(): boolean {
    const now = Date.now();
    this.tokens = Math.min(
      this.rate.burst,
      this.tokens + ((now - this.refilledAt) / 1000) * this.rate.perSecond,
    );
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Hashes a token; only hashes are kept in memory and compared. */
export function tokenId(token: string): string {
  return hashSecret(token).toString('hex');
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

/** How the relay answers a hello: refuse it, or welcome it and then start the tunnel. */
export type HelloDecision =
  { refuse: RefuseCodeValue; message: string } | { welcome: Omit<WelcomeFrame, 'type'>; start: () => void };

/**
 * Runs the relay side of the handshake on a freshly upgraded socket: waits for Hello (bounded in time),
 * asks `decide` what to do with it, then answers Welcome and calls `start`, or answers Refuse and closes.
 * Nothing about tunnels happens before `decide` has checked the token.
 */
export function acceptControlSocket(
  ws: WebSocket,
  timeoutMs: number,
  decide: (hello: HelloFrame) => HelloDecision,
  /** Told about sockets turned away before `decide` saw a hello: `handshake_timeout`, `protocol_error`, … */
  onEarlyRefusal?: (reason: string) => void,
): void {
  const timer = setTimeout(() => {
    onEarlyRefusal?.('handshake_timeout');
    closeNow(ws, CloseCode.HandshakeTimeout, 'no hello in time');
  }, timeoutMs);
  timer.unref();
  ws.on('error', () => {});
  ws.once('close', () => clearTimeout(timer));
  ws.once('message', (data: Buffer, isBinary: boolean) => {
    clearTimeout(timer);
    let frame: Frame | undefined;
    try {
      if (isBinary) frame = decodeFrame(data);
    } catch {
      frame = undefined;
    }
    if (!frame || frame.type !== FrameType.Hello) {
      onEarlyRefusal?.(RefuseCode.ProtocolError);
      return refuse(ws, RefuseCode.ProtocolError, 'expected a hello frame first');
    }
    if (frame.version !== PROTOCOL_VERSION) {
      onEarlyRefusal?.(RefuseCode.UnsupportedVersion);
      return refuse(
        ws,
        RefuseCode.UnsupportedVersion,
        `client speaks protocol v${frame.version}, relay speaks v${PROTOCOL_VERSION}`,
      );
    }
    const decision = decide(frame);
    if ('refuse' in decision) return refuse(ws, decision.refuse, decision.message);
    ws.send(encodeFrame({ type: FrameType.Welcome, ...decision.welcome }));
    decision.start();
  });
}

function refuse(ws: WebSocket, code: RefuseCodeValue, message: string): void {
  ws.send(encodeFrame({ type: FrameType.Refuse, code, message }));
  closeNow(ws, CloseCode.Refused, code);
}

/** How long a turned-away socket gets to complete the close handshake before its TCP connection is dropped. */
const CLOSE_GRACE_MS = 1000;

/**
 * Says why in a close frame, then drops the connection: a socket turned away must not hold a connection open for
 * ws's 30 s close timeout (a client that never answers the close, or never said hello, is not owed that).
 */
function closeNow(ws: WebSocket, code: number, reason: string): void {
  ws.close(code, reason);
  setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
}
