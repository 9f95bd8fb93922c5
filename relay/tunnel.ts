// One live tunnel on the relay: its name, owner and session, its traffic counters and its new-stream rate.
import type { Session } from '../protocol/session.js';
import type { AccessPolicy } from './access.js';
import { StreamRates } from './rate-limit.js';
import { MemberHealth } from './pool.js';

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
  /** New streams per second allowed, sustained (bursts of twice that); 0 = no limit. */
  rate: { perTunnel: number; perVisitor: number };
  /** Position of this tunnel among those its connection carries (sent in every Request). */
  index: number;
  /** The name's fencing counter when it was claimed (cluster; 0 alone): a takeover raises it. */
  fence: number;
  /** Asked for with --pool: one member of the name's endpoint pool. */
  pool: boolean;
  /** This member's id (unique among the name's members; shown to its client, on the status page, in metrics). */
  member: string;
  /** The client's host name as its hello said, or ''. */
  host: string;
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
  readonly pool: boolean;
  readonly member: string;
  readonly host: string;
  /** Whether the pool may send it requests (passive checks, the client's own checks, its leaving). */
  readonly health = new MemberHealth();
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
  statsSent = '0/0/0/0/0/0';
  /** Public requests and upgrades turned away for the tunnel's limits (rate, concurrency, fair share). */
  refused = 0;
  private readonly rates: StreamRates;
  /** Open requests and channels per visitor (address group): what the fair share looks at. */
  private readonly openByVisitor = {
    requests: new Map<string, number>(),
    channels: new Map<string, number>(),
  };

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
    this.pool = init.pool;
    this.member = init.member;
    this.host = init.host;
    this.rates = new StreamRates(init.rate, Date.now());
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

  /** Which rate a new stream from `visitor` would exceed now, if any; otherwise it takes its tokens. */
  rateExceeded(visitor: string, now = Date.now()): 'visitor' | 'tunnel' | undefined {
    return this.rates.exceeded(visitor, now);
  }

  /** Requests or channels `visitor` has open on this tunnel right now. */
  openBy(what: 'requests' | 'channels', visitor: string): number {
    return this.openByVisitor[what].get(visitor) ?? 0;
  }

  /** A visitor's request or channel was admitted. */
  opened(what: 'requests' | 'channels', visitor: string): void {
    if (what === 'requests') this.activeRequests++;
    else this.activeChannels++;
    const counts = this.openByVisitor[what];
    counts.set(visitor, (counts.get(visitor) ?? 0) + 1);
  }

  /** An admitted request or channel ended. */
  closed(what: 'requests' | 'channels', visitor: string): void {
    if (what === 'requests') this.activeRequests--;
    else this.activeChannels--;
    const counts = this.openByVisitor[what];
    const left = (counts.get(visitor) ?? 1) - 1;
    if (left > 0) counts.set(visitor, left);
    else counts.delete(visitor);
  }
}
