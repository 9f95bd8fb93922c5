// One live tunnel on the relay: its name, owner and session, its traffic counters and its new-stream rate.
import type { Session } from '../protocol/session.js';
import type { AccessPolicy } from './access.js';

/** Running totals of public body bytes: a relay's whole traffic, or one tunnel name's across reconnects. */
export interface TrafficTotals {
  bytesIn: number;
  bytesOut: number;
}

/** What a tunnel is opened with (hello.ts decides all of it). */
export interface TunnelInit {
  name: string;
  url: string;
  /** Hash of the token that opened the tunnel; used to hold its name across reconnects. */
  owner: string;
  /** The label of that token, for people; never the token itself. */
  ownerLabel: string;
  clientId: string;
  agent: string;
  session: Session;
  /** Visitor restrictions the client asked for, if any. */
  access: AccessPolicy | undefined;
  /** New streams per second, sustained, and the burst allowed above it. */
  rate: { perSecond: number; burst: number };
  /** Position of this tunnel among those its connection carries (sent in every Request). */
  index: number;
  /** The name's fencing counter when it was claimed (cluster; 0 alone): a takeover raises it. */
  fence: number;
  /** Webhook inbox path patterns (empty: off): requests kept while the client is away. */
  inbox?: readonly string[];
}

/** A live tunnel: a name, a public URL and the session that carries its streams. */
export class Tunnel {
  readonly connectedAt = Date.now();
  readonly name: string;
  readonly url: string;
  readonly owner: string;
  readonly ownerLabel: string;
  readonly clientId: string;
  readonly agent: string;
  readonly session: Session;
  readonly access: AccessPolicy | undefined;
  readonly index: number;
  readonly fence: number;
  /** Webhook inbox path patterns; empty when the inbox is off. */
  readonly inbox: readonly string[];
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
  /** Other totals this tunnel's bytes add to (the relay's, and its name's when metrics are per tunnel). */
  readonly sinks: TrafficTotals[] = [];
  /** The counters last sent in a Stats frame: a new one goes out only when they differ. */
  statsSent = '0/0/0/0/0';
  private readonly rate: { perSecond: number; burst: number };
  private tokens: number;
  private refilledAt = Date.now();

  constructor(init: TunnelInit) {
    this.name = init.name;
    this.url = init.url;
    this.owner = init.owner;
    this.ownerLabel = init.ownerLabel;
    this.clientId = init.clientId;
    this.agent = init.agent;
    this.session = init.session;
    this.access = init.access;
    this.index = init.index;
    this.fence = init.fence;
    this.inbox = init.inbox ?? [];
    this.rate = init.rate;
    this.tokens = init.rate.burst;
  }

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
