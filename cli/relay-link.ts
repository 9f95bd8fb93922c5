// One control socket from the client to one relay instance: dial, hello, then a session that serves its streams.
import WebSocket from 'ws';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { CloseCode, ErrorCode, GgrokError } from '../protocol/errors.js';
import {
  DEFAULT_FLOW,
  FrameType,
  PROTOCOL_VERSION,
  WIRE_LIMITS,
  type FlowSettings,
  type GoAwayFrame,
  type HelloFrame,
  type MembersFrame,
  type PoolFrame,
  type RequestFrame,
  type StatsFrame,
  type WelcomeFrame,
} from '../protocol/frames.js';
import { Session } from '../protocol/session.js';
import type { Stream, StreamHandler } from '../protocol/stream.js';
import { VERSION } from '../protocol/version.js';
import { describeRefusal, isRetryableRefusal } from './advice.js';

const TLS_ERRORS = /^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_SSL)/;

/** A client declares a relay dead after this many heartbeat intervals of silence. */
const DEAD_AFTER_HEARTBEATS = 3;

/** Where a link dials, and how. */
export interface LinkTarget {
  /** The control socket URL (ws:// or wss://). */
  url: string;
  /** Extra request headers, e.g. `fly-force-instance-id` to reach one Fly machine. */
  headers?: Record<string, string>;
}

/** Why a link failed before its welcome, and whether trying again later can help. */
export interface LinkFailure {
  err: GgrokError;
  retryable: boolean;
}

/** What a link tells its client, in order. */
export interface LinkHandler {
  /** The relay welcomed the hello; the link's session is running. */
  welcomed(link: RelayLink, welcome: WelcomeFrame): void;
  /** The link ended before a welcome. */
  failed(link: RelayLink, failure: LinkFailure): void;
  /** A welcomed link's socket closed. */
  closed(link: RelayLink, code: number, reason: string): void;
  goAway(link: RelayLink, frame: GoAwayFrame): void;
  members(link: RelayLink, frame: MembersFrame): void;
  stats(link: RelayLink, frame: StatsFrame): void;
  pool(link: RelayLink, frame: PoolFrame): void;
  /** A public request arrived on this link: its owner. */
  request(stream: Stream, head: RequestFrame): StreamHandler;
}

/** A control socket to one relay instance. */
export class RelayLink {
  /** The instance that welcomed it (undefined before the welcome). */
  instance: string | undefined;
  /** The running session, after the welcome. */
  session: Session | undefined;
  private readonly ws: WebSocket;
  private welcomed = false;
  /** Our receive limits, announced in Hello. */
  private readonly flow: FlowSettings;
  private failure: LinkFailure | undefined;

  constructor(
    target: LinkTarget,
    hello: Omit<HelloFrame, 'type' | 'version' | 'agent' | 'flow'>,
    private readonly handler: LinkHandler,
    options: { insecure?: boolean; server: string; flow?: FlowSettings },
  ) {
    this.flow = options.flow ?? DEFAULT_FLOW;
    const ws = new WebSocket(target.url, {
      perMessageDeflate: false,
      maxPayload: WIRE_LIMITS.MAX_MESSAGE_BYTES,
      // An all-zero mask makes ws skip masking and unmasking (two passes over every byte sent). Masking guards
      // browsers' sockets against cache poisoning by page scripts; this client runs no untrusted code.
      generateMask: (mask: Buffer) => void mask.fill(0),
      handshakeTimeout: 15_000,
      rejectUnauthorized: !options.insecure,
      headers: { 'User-Agent': `ggrok/${VERSION}`, ...target.headers },
    });
    this.ws = ws;
    ws.on('open', () => {
      ws.send(
        encodeFrame({
          type: FrameType.Hello,
          version: PROTOCOL_VERSION,
          agent: `ggrok/${VERSION} node/${process.versions.node}`,
          flow: this.flow,
          ...hello,
        }),
      );
    });
    ws.once('message', (data: Buffer, isBinary: boolean) => this.onFirstMessage(data, isBinary));
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      this.failure ??=
        status >= 500
          ? {
              err: new GgrokError(
                ErrorCode.RelayUnavailable,
                `the relay answered ${status}; it may be starting or overloaded`,
              ),
              retryable: true,
            }
          : {
              err: new GgrokError(
                ErrorCode.NotARelay,
                `${options.server} answered ${status} instead of accepting a tunnel; is --server the URL of a ggrok relay?`,
              ),
              retryable: false,
            };
      res.resume();
      ws.terminate();
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (this.failure) return;
      this.failure = TLS_ERRORS.test(err.code ?? '')
        ? {
            err: new GgrokError(
              ErrorCode.RelayTls,
              `cannot verify the relay's TLS certificate (${err.code}); fix the certificate or pass --insecure for a self-signed relay`,
            ),
            retryable: false,
          }
        : {
            err: new GgrokError(
              ErrorCode.RelayUnreachable,
              `cannot reach the relay at ${options.server} (${err.code ?? err.message})`,
              { cause: err },
            ),
            retryable: true,
          };
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.session = undefined;
      if (this.welcomed) return this.handler.closed(this, code, reason.toString());
      this.handler.failed(
        this,
        this.failure ?? {
          err: new GgrokError(
            ErrorCode.RelayClosed,
            `the relay closed the connection during the handshake (${code} ${reason.toString()})`,
          ),
          retryable: true,
        },
      );
    });
  }

  /** Closes the link after what is queued; its streams are reset. */
  close(reason = 'client closed'): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    const closed = new Promise<void>((r) => this.ws.once('close', () => r()));
    if (this.session) this.session.close(CloseCode.Normal, reason);
    else this.ws.terminate();
    return closed;
  }

  /** Drops the socket at once, without a close handshake (as a dead network would). */
  terminate(): void {
    this.ws.terminate();
  }

  private onFirstMessage(data: Buffer, isBinary: boolean): void {
    let frame;
    try {
      frame = isBinary ? decodeFrame(data) : undefined;
    } catch {
      frame = undefined;
    }
    if (frame?.type === FrameType.Welcome) return this.start(frame);
    if (frame?.type === FrameType.Refuse) {
      const named = GgrokError.fromWire(frame.code, frame.message);
      this.failure = {
        err: new GgrokError(named.code, describeRefusal(named.code, named.message)),
        retryable: isRetryableRefusal(named.code),
      };
      return;
    }
    this.failure = {
      err: new GgrokError(
        ErrorCode.ProtocolError,
        'the relay sent something other than a welcome; is --server a ggrok relay?',
      ),
      retryable: false,
    };
  }

  private start(welcome: WelcomeFrame): void {
    this.welcomed = true;
    this.instance = welcome.instance;
    const handler = this.handler;
    this.session = new Session(this.ws, {
      role: 'client',
      localFlow: this.flow,
      remoteFlow: welcome.flow,
      heartbeatMs: welcome.heartbeatMs,
      deadAfterMs: welcome.heartbeatMs * DEAD_AFTER_HEARTBEATS,
      maxInboundStreams: welcome.maxStreams,
      onRequest: (stream, head) => handler.request(stream, head),
      onGoAway: (frame) => handler.goAway(this, frame),
      onMembers: (frame) => handler.members(this, frame),
      onStats: (frame) => handler.stats(this, frame),
      onPool: (frame) => handler.pool(this, frame),
    });
    this.session.ping();
    handler.welcomed(this, welcome);
  }
}
