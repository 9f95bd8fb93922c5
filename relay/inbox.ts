// Webhook inbox: requests kept for a tunnel whose client is away, bounded per tunnel and relay-wide, until delivered.
import { randomBytes } from 'node:crypto';
import type { AccessRules, BodyKindValue, HeaderList, InboxNotice } from '../protocol/frames.js';
import { AccessPolicy } from './access.js';
import type { AdmittedTunnel } from './admission.js';
import { StreamRates } from './rate-limit.js';
import type { RelayEvent } from './log.js';
import type { ResolvedRelayOptions } from './options.js';
import type { Tunnel } from './tunnel.js';

/** One request kept for delivery: everything needed to replay it byte for byte. */
export interface StoredRequest {
  readonly id: string;
  /** The tunnel name it was sent to. */
  readonly name: string;
  /** Hash of the token owning the name when it arrived: only that owner's client gets it. */
  readonly owner: string;
  /** Arrival order over the relay's life (restored requests keep theirs). */
  readonly seq: number;
  /** When its head arrived (ms since the epoch, relay clock). */
  readonly receivedAt: number;
  readonly method: string;
  readonly target: string;
  /** The head as a live request would have reached the tunnel (hop-by-hop removed, X-Forwarded-* added). */
  readonly headers: HeaderList;
  readonly body: BodyKindValue;
  readonly data: Buffer;
  /** Delivery attempts made so far. */
  attempts: number;
  /** Queued for delivery, or kept after every attempt failed (delivered again only on replay). */
  state: 'queued' | 'failed';
  /** Why the last attempt failed (status or reset), for `ggrok inbox list`. */
  lastError?: string;
}

/** Bytes a kept request's head counts against the limits: method, target and headers. */
export function headSize(r: Pick<StoredRequest, 'method' | 'target' | 'headers'>): number {
  let n = r.method.length + r.target.length;
  for (const h of r.headers) n += h.length;
  return n;
}

/** Bytes a kept request counts against the limits: its body and head. */
export function storedSize(r: Pick<StoredRequest, 'method' | 'target' | 'headers' | 'data'>): number {
  return r.data.length + headSize(r);
}

/** Whether an inbox path pattern covers `path`: "/*" everything, "/a/*" everything under /a/, else exactly. */
export function inboxMatches(patterns: readonly string[], target: string): boolean {
  const path = target.split('?')[0]!;
  for (const p of patterns) {
    if (p === '*' || p === '/*') return true;
    if (p.endsWith('*') ? path.startsWith(p.slice(0, -1)) : path === p) return true;
  }
  return false;
}

/** A tunnel whose client is away, as its inbox remembers it (and --inbox-dir keeps across restarts). */
export interface HoldRecord {
  name: string;
  /** Hash of the owner's token. */
  owner: string;
  /** The inbox's path patterns. */
  patterns: string[];
  /** The tunnel's visitor rules, as its client sent them: they still decide who may leave a request. */
  access?: AccessRules;
  /** When the name's hold ends (ms since the epoch): nothing is kept after it. */
  heldUntil: number;
}

/**
 * An away tunnel as admission sees it: its rules, and the rates of a live tunnel of its own (off by default; a
 * flood is bounded by the inbox's caps). Nothing is open on it, so the fair share never applies.
 */
export class Away implements AdmittedTunnel {
  readonly activeRequests = 0;
  readonly activeChannels = 0;
  readonly access: AccessPolicy | undefined;
  /** Requests turned away for the rates (an away tunnel has no Stats; counted for symmetry). */
  refused = 0;
  private readonly rates: StreamRates;

  constructor(
    readonly record: HoldRecord,
    rate: { perTunnel: number; perVisitor: number },
    private readonly now: () => number,
  ) {
    this.access = record.access ? new AccessPolicy(record.access) : undefined;
    this.rates = new StreamRates(rate, now());
  }

  get name(): string {
    return this.record.name;
  }

  openBy(): number {
    return 0;
  }

  /** The same rates as a live tunnel's. */
  rateExceeded(visitor: string): 'visitor' | 'tunnel' | undefined {
    return this.rates.exceeded(visitor, this.now());
  }
}

/** What the owner is told about one name's inbox. */
export interface InboxCounts {
  kept: number;
  refused: number;
  failed: number;
}

/** Delivers a name's queue through its live tunnel (inbox-delivery.ts); stopped when the tunnel goes. */
export interface Deliverer {
  /** The live tunnel it delivers through. */
  readonly tunnel: Tunnel;
  /** Something new was queued or replayed: deliver it if idle. */
  poke(): void;
  stop(): void;
}

/** One tunnel name's inbox: its owner, what it matches, its requests and its client's whereabouts. */
class Box {
  /** In arrival order (seq). */
  readonly items: StoredRequest[] = [];
  /** Bytes held and reserved by requests still arriving. */
  bytes = 0;
  /** Requests still arriving (each holds a place against the count limit). */
  arriving = 0;
  /** Requests refused for lack of room since the owner was last told. */
  refused = 0;
  /** The tunnel as it was when its client left (access rules, patterns), while the name is held. */
  absent: Away | undefined;
  deliverer: Deliverer | undefined;

  constructor(
    readonly name: string,
    public owner: string,
  ) {}

  get count(): number {
    return this.items.length + this.arriving;
  }
}

/** Why a request cannot be kept: no room (503) or a body over the cap (413). */
export type InboxRefusal = 'full' | 'too_large';

/** A place held in an inbox for a request whose body is still arriving. */
export interface Reservation {
  /** Counts `n` more body bytes; false (and nothing counted) when they do not fit. */
  grow(n: number): InboxRefusal | undefined;
  /** The request arrived whole: it is queued and gets its id. */
  commit(
    r: Omit<StoredRequest, 'id' | 'seq' | 'attempts' | 'state' | 'name' | 'owner' | 'receivedAt'>,
  ): StoredRequest;
  /** The visitor left, or the request was refused: its place and bytes are free again. */
  cancel(): void;
}

/** What the inbox needs from the relay. */
export interface InboxDeps {
  options: Pick<
    ResolvedRelayOptions,
    | 'inboxMaxBodyBytes'
    | 'inboxMaxRequests'
    | 'inboxMaxTunnelBytes'
    | 'inboxMaxTotalBytes'
    | 'inboxTtlMs'
    | 'nameGraceMs'
    | 'streamsPerSecond'
    | 'visitorStreamsPerSecond'
    | 'now'
  >;
  /** The owner a disconnected tunnel's name is held for now, if any. */
  heldFor(name: string): string | undefined;
  /** Holds `name` for `owner` until `until` (a hold read back from --inbox-dir after a restart). */
  hold(name: string, owner: string, until: number): void;
  /** Starts delivering `box`'s queue through a live tunnel. */
  deliverer(inbox: Inbox, name: string, tunnel: Tunnel): Deliverer;
  /** Persists kept requests (--inbox-dir), when configured. */
  store?: InboxStore;
  log(event: RelayEvent): void;
}

/** Where kept requests survive a restart (inbox-files.ts). */
export interface InboxStore {
  saved(r: StoredRequest): void;
  removed(r: StoredRequest): void;
  /** A tunnel with an inbox is away: its hold. */
  held(h: HoldRecord): void;
  /** Its client is back, or the hold ended. */
  released(name: string): void;
}

/** How often expired requests are swept even when nothing else happens. */
const SWEEP_INTERVAL_MS = 60_000;

/** Every tunnel's webhook inbox on this relay: intake decisions, limits, the queues, and their delivery. */
export class Inbox {
  private readonly boxes = new Map<string, Box>();
  /** Bytes held over all inboxes, reservations included. */
  private totalBytes = 0;
  private seq = 0;
  private readonly sweeper: NodeJS.Timeout;
  /** Shut down: connections closing now change nothing (their holds were written by close()). */
  private closed = false;

  constructor(private readonly deps: InboxDeps) {
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  /** Bytes held over every inbox now. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Requests held over every inbox now. */
  get count(): number {
    let n = 0;
    for (const box of this.boxes.values()) n += box.items.length;
    return n;
  }

  /** A tunnel's client left: with an inbox, requests for its name are kept while the name is held. */
  away(tunnel: Tunnel): void {
    if (this.closed) return;
    const box = this.boxes.get(tunnel.name);
    // A newer connection of the same client took over already: its delivery goes on.
    if (box?.deliverer && box.deliverer.tunnel !== tunnel) return;
    if (box?.deliverer) {
      box.deliverer.stop();
      box.deliverer = undefined;
    }
    if (tunnel.inbox.length === 0) return;
    const o = this.deps.options;
    const b = box ?? this.box(tunnel.name, tunnel.owner);
    b.owner = tunnel.owner;
    b.absent = this.awayFrom({
      name: tunnel.name,
      owner: tunnel.owner,
      patterns: [...tunnel.inbox],
      ...(tunnel.access ? { access: tunnel.access.rules } : {}),
      heldUntil: o.now() + o.nameGraceMs,
    });
    this.deps.store?.held(b.absent.record);
  }

  /** A hold read back after a restart: requests for the name are kept again, and the name stays its owner's. */
  restoreHold(h: HoldRecord): boolean {
    const o = this.deps.options;
    if (h.heldUntil <= o.now()) return false;
    const box = this.boxes.get(h.name) ?? this.box(h.name, h.owner);
    box.owner = h.owner;
    box.absent = this.awayFrom(h);
    this.deps.hold(h.name, h.owner, h.heldUntil);
    return true;
  }

  /**
   * A tunnel went live: delivery of what its owner's inbox holds starts. Requests kept for another owner of the
   * name (the hold ran out and someone else took it) are never given to this one.
   */
  back(tunnel: Tunnel): void {
    const box = this.boxes.get(tunnel.name);
    if (!box) return;
    if (box.absent) this.deps.store?.released(box.name);
    box.absent = undefined;
    if (box.owner !== tunnel.owner) {
      // The hold ran out and another owner took the name: what was kept for the first one is never given to it.
      box.owner = tunnel.owner;
    }
    box.refused = 0;
    box.deliverer?.stop();
    box.deliverer = this.deps.deliverer(this, tunnel.name, tunnel);
    box.deliverer.poke();
  }

  /**
   * What `owner`'s inboxes for the tunnels of one hello (`names`, in the hello's order) hold and refused: a Welcome's
   * notices, for the tunnels with anything to say. Expired requests are swept first, once.
   */
  notices(names: readonly string[], owner: string): InboxNotice[] {
    this.sweep();
    const out: InboxNotice[] = [];
    names.forEach((name, tunnel) => {
      const box = this.boxes.get(name);
      if (!box) return;
      const c = this.counts(box, owner);
      if (c.kept + c.refused + c.failed > 0) out.push({ tunnel, ...c });
    });
    return out;
  }

  /**
   * The absent tunnel whose inbox keeps this request, or undefined: the name must be held for the owner who
   * turned the inbox on, and the path must match.
   */
  keeps(name: string, target: string): Away | undefined {
    const box = this.boxes.get(name);
    const away = box?.absent;
    if (!box || !away) return undefined;
    if (this.deps.heldFor(name) !== box.owner) {
      this.release(box); // the hold ran out: nothing more is kept for it
      return undefined;
    }
    return inboxMatches(away.record.patterns, target) ? away : undefined;
  }

  /**
   * Holds a place for a request to `name` whose head takes `headBytes` and whose body is announced as
   * `declared` bytes (undefined when chunked). Over a limit: 'full' (counted for the owner) or 'too_large'.
   */
  reserve(name: string, headBytes: number, declared: number | undefined): Reservation | InboxRefusal {
    const o = this.deps.options;
    const box = this.boxes.get(name);
    if (!box) return 'full';
    if (declared !== undefined && declared > o.inboxMaxBodyBytes) return 'too_large';
    if (box.count >= o.inboxMaxRequests || !this.fits(box, headBytes)) {
      box.refused++;
      return 'full';
    }
    box.arriving++;
    // Arrival is when the head came: a long upload does not fall behind requests sent after it.
    const seq = ++this.seq;
    const receivedAt = o.now();
    let held = headBytes;
    let body = 0;
    this.hold(box, headBytes);
    let open = true;
    const release = (): void => {
      if (!open) return;
      open = false;
      box.arriving--;
      this.hold(box, -held);
    };
    return {
      grow: (n) => {
        if (body + n > o.inboxMaxBodyBytes) return 'too_large';
        if (!this.fits(box, n)) {
          box.refused++;
          return 'full';
        }
        body += n;
        held += n;
        this.hold(box, n);
        return undefined;
      },
      commit: (r) => {
        release();
        const stored: StoredRequest = {
          ...r,
          id: newId(),
          name,
          owner: box.owner,
          seq,
          receivedAt,
          attempts: 0,
          state: 'queued',
        };
        this.add(box, stored);
        return stored;
      },
      cancel: release,
    };
  }

  /** Puts a request back after a restart (files read from --inbox-dir); false when it no longer fits or expired. */
  restore(r: StoredRequest): boolean {
    const o = this.deps.options;
    if (r.receivedAt + o.inboxTtlMs <= o.now()) return false;
    const box = this.boxes.get(r.name) ?? this.box(r.name, r.owner);
    if (box.count >= o.inboxMaxRequests || !this.fits(box, storedSize(r))) return false;
    this.seq = Math.max(this.seq, r.seq);
    this.add(box, r, false);
    return true;
  }

  /** The requests kept for `owner` (every name), oldest first. */
  list(owner: string): StoredRequest[] {
    const out: StoredRequest[] = [];
    for (const box of this.boxes.values()) for (const r of box.items) if (r.owner === owner) out.push(r);
    return out.sort((a, b) => a.seq - b.seq);
  }

  /** The request `id` of `owner`, if kept. */
  find(owner: string, id: string): StoredRequest | undefined {
    for (const box of this.boxes.values()) {
      const r = box.items.find((i) => i.id === id && i.owner === owner);
      if (r) return r;
    }
    return undefined;
  }

  /** The first request of `name` kept for `owner` and waiting for delivery, if any. */
  next(name: string, owner: string): StoredRequest | undefined {
    return this.boxes.get(name)?.items.find((r) => r.state === 'queued' && r.owner === owner);
  }

  /** A delivery succeeded (or the owner dropped the request): it is gone for good. */
  remove(r: StoredRequest): void {
    const box = this.boxes.get(r.name);
    const at = box?.items.indexOf(r) ?? -1;
    if (!box || at < 0) return;
    box.items.splice(at, 1);
    this.hold(box, -storedSize(r));
    this.deps.store?.removed(r);
    if (box.items.length === 0 && box.arriving === 0 && !box.absent && !box.deliverer && box.refused === 0)
      this.boxes.delete(box.name);
  }

  /** Every attempt failed: the request stays, marked, until replayed, dropped or expired. */
  failed(r: StoredRequest, why: string): void {
    if (!this.holds(r)) return; // dropped while it was being delivered
    r.state = 'failed';
    r.lastError = why;
    this.deps.store?.saved(r);
  }

  /** An attempt failed; it will be tried again. */
  attempted(r: StoredRequest, why: string): void {
    r.lastError = why;
  }

  /** Queues a failed (or queued) request again with fresh attempts and wakes its delivery. */
  replay(r: StoredRequest): void {
    if (!this.holds(r)) return;
    r.state = 'queued';
    r.attempts = 0;
    this.deps.store?.saved(r);
    this.boxes.get(r.name)?.deliverer?.poke();
  }

  /**
   * Shutdown, before the live tunnels' connections close: they count as away now (their holds are written, so a
   * restarted relay keeps their requests while their clients come back), and from here on nothing changes.
   */
  close(live: Iterable<Tunnel> = []): void {
    for (const tunnel of live) this.away(tunnel);
    this.closed = true;
    clearInterval(this.sweeper);
    for (const box of this.boxes.values()) box.deliverer?.stop();
  }

  private awayFrom(h: HoldRecord): Away {
    const { streamsPerSecond, visitorStreamsPerSecond } = this.deps.options;
    return new Away(
      h,
      { perTunnel: streamsPerSecond, perVisitor: visitorStreamsPerSecond },
      this.deps.options.now,
    );
  }

  private release(box: Box): void {
    if (!box.absent) return;
    box.absent = undefined;
    this.deps.store?.released(box.name);
  }

  private holds(r: StoredRequest): boolean {
    return this.boxes.get(r.name)?.items.includes(r) ?? false;
  }

  private box(name: string, owner: string): Box {
    const box = new Box(name, owner);
    this.boxes.set(name, box);
    return box;
  }

  private add(box: Box, r: StoredRequest, save = true): void {
    // Arrival order is the order heads arrived: a long upload does not jump ahead of a short one sent after it.
    let at = box.items.length;
    while (at > 0 && box.items[at - 1]!.seq > r.seq) at--;
    box.items.splice(at, 0, r);
    this.hold(box, storedSize(r));
    if (save) this.deps.store?.saved(r);
    box.deliverer?.poke();
  }

  private fits(box: Box, n: number): boolean {
    const o = this.deps.options;
    return box.bytes + n <= o.inboxMaxTunnelBytes && this.totalBytes + n <= o.inboxMaxTotalBytes;
  }

  private hold(box: Box, n: number): void {
    box.bytes += n;
    this.totalBytes += n;
  }

  private counts(box: Box, owner: string): InboxCounts {
    let kept = 0;
    let failed = 0;
    for (const r of box.items)
      if (r.owner !== owner) continue;
      else if (r.state === 'failed') failed++;
      else kept++;
    return { kept, refused: box.owner === owner ? box.refused : 0, failed };
  }

  /** Drops requests older than the time to live. */
  private sweep(): void {
    const o = this.deps.options;
    const oldest = o.now() - o.inboxTtlMs;
    for (const box of [...this.boxes.values()]) {
      if (box.absent && this.deps.heldFor(box.name) !== box.owner) this.release(box);
      for (const r of [...box.items])
        if (r.receivedAt <= oldest) {
          this.deps.log({ event: 'inbox_expired', name: r.name, id: r.id });
          this.remove(r);
        }
      if (box.items.length === 0 && box.arriving === 0 && !box.absent && !box.deliverer)
        this.boxes.delete(box.name);
    }
  }
}

/** A kept request's id: random, URL-safe, unguessable (ids are also how `ggrok inbox drop` names them). */
function newId(): string {
  return `ib_${randomBytes(12).toString('base64url')}`;
}
