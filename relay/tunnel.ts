// One connected client: the handshake on its control socket, then its session and bookkeeping.
import { createHash, timingSafeEqual } from 'node:crypto';
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

/** A live tunnel: a name, a public URL and the session that carries its streams. */
export class Tunnel {
  readonly connectedAt = Date.now();
  /** Public HTTP requests currently being served. */
  activeRequests = 0;
  /** Open upgraded channels (WebSockets and other protocols). */
  activeChannels = 0;
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
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time check of a presented token against the configured ones. */
export function tokenMatches(presented: string, allowed: readonly string[]): boolean {
  const p = createHash('sha256').update(presented).digest();
  let ok = false;
  for (const token of allowed) {
    const a = createHash('sha256').update(token).digest();
    ok = timingSafeEqual(p, a) || ok;
  }
  return ok;
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
): void {
  const timer = setTimeout(() => ws.close(CloseCode.HandshakeTimeout, 'no hello in time'), timeoutMs);
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
    if (!frame || frame.type !== FrameType.Hello)
      return refuse(ws, RefuseCode.ProtocolError, 'expected a hello frame first');
    if (frame.version !== PROTOCOL_VERSION)
      return refuse(
        ws,
        RefuseCode.UnsupportedVersion,
        `client speaks protocol v${frame.version}, relay speaks v${PROTOCOL_VERSION}`,
      );
    const decision = decide(frame);
    if ('refuse' in decision) return refuse(ws, decision.refuse, decision.message);
    ws.send(encodeFrame({ type: FrameType.Welcome, ...decision.welcome }));
    decision.start();
  });
}

function refuse(ws: WebSocket, code: RefuseCodeValue, message: string): void {
  ws.send(encodeFrame({ type: FrameType.Refuse, code, message }));
  ws.close(CloseCode.Refused, code);
}
