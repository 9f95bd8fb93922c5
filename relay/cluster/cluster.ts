// One relay instance's view of the cluster: its lease, the other members and what they serve, name claims with
// fencing, and the checks that keep a stalled or cut-off instance from serving a name it no longer owns.
import { EventEmitter } from 'node:events';
import { Membership, type MemberInfo } from './membership.js';
import {
  NameRecords,
  parseSuperseded,
  SUPERSEDED_CHANNEL,
  type ClaimOutcome,
  type HeldName,
} from './names.js';
import { RedisLink, type RedisSettings } from './redis.js';

/** A lease lives this long unless refreshed: a silently dead instance leaves the others' view within it. */
export const MEMBER_LEASE_MS = 5000;
/** The lease is refreshed (and the others read) this often. */
const TICK_MS = Math.floor(MEMBER_LEASE_MS / 3);
/** The fences of the names this instance serves are checked against Redis at least this often. */
const VERIFY_EVERY_MS = 5000;

/** Settings of one instance of the cluster. */
export interface ClusterSettings {
  redis: RedisSettings;
  /** This instance's id (unique in the cluster). */
  instanceId: string;
  peerUrl?: string;
  instanceUrl?: string;
  flyMachine?: string;
  /** How long a name stays with its owner after its client left (refreshed while it is served). */
  holdMs: number;
  /** The clock (tests inject one). */
  now?: () => number;
}

/** What the cluster needs to know about this instance's live tunnels. */
export interface ClusterHost {
  /** Every name this instance serves now, as claimed. */
  served(): HeldName[];
}

interface ClusterEvents {
  /** A name this instance serves was taken over (fence) or lost: sockets with an older fence must go. */
  superseded: [name: string, fence: number];
  /** The set of live members (or how to reach them) changed. */
  members: [];
  /** Redis answers again, or stopped answering. */
  redis: [up: boolean];
}

/** The answer to a claim. */
export type Claim = Exclude<ClaimOutcome, { kind: 'settling' }> | { kind: 'unavailable'; why: string };

/**
 * This instance in the cluster. Redis is on the coordination path only: claims, leases, takeovers. A public
 * request's path never waits for Redis; it asks `stale()` (an in-memory check) and the directory of who serves what.
 */
export class Cluster extends EventEmitter<ClusterEvents> {
  private readonly link: RedisLink;
  private readonly membership: Membership;
  private readonly records: NameRecords;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  /** When the tick last ran: a tick far later than planned means the process stalled (SIGSTOP, a long pause). */
  private lastTickAt: number;
  /** When this instance last refreshed its lease successfully. */
  private lastLeaseAt = 0;
  private lastVerifiedAt = 0;
  private lastNamesRefreshAt = 0;
  /** The names it serves must be checked against Redis before it serves them again. */
  private mustVerify = false;
  private verifying: Promise<void> | undefined;
  private waiters: (() => void)[] = [];
  private membersKey = '';
  /** Resolves when the lease was first refreshed and the others read. */
  private readonly firstSync: Promise<void>;
  private markSynced: () => void = () => {};
  private closed = false;
  /** Names some instance served lately, and when it was last seen serving them: requests for them may wait. */
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly settings: ClusterSettings,
    private readonly host: ClusterHost,
  ) {
    super();
    this.now = settings.now ?? Date.now;
    this.firstSync = new Promise((resolve) => (this.markSynced = resolve));
    this.lastTickAt = this.now();
    this.link = new RedisLink(settings.redis, [SUPERSEDED_CHANNEL]);
    this.membership = new Membership(
      this.link,
      {
        id: settings.instanceId,
        ...(settings.peerUrl ? { peerUrl: settings.peerUrl } : {}),
        ...(settings.instanceUrl ? { instanceUrl: settings.instanceUrl } : {}),
        ...(settings.flyMachine ? { flyMachine: settings.flyMachine } : {}),
      },
      MEMBER_LEASE_MS,
    );
    this.records = new NameRecords(this.link, settings.holdMs);
    this.link.on('ready', () => {
      // Redis may have restarted empty: re-register the lease and every name served, and check them.
      this.mustVerify = true;
      this.emit('redis', true);
      this.tick();
    });
    this.link.on('down', () => this.emit('redis', false));
    this.link.on('message', (channel, message) => {
      if (channel !== SUPERSEDED_CHANNEL) return;
      const takeover = parseSuperseded(message);
      if (takeover) this.emit('superseded', takeover.name, takeover.fence);
    });
  }

  /** This instance's id. */
  get instanceId(): string {
    return this.settings.instanceId;
  }

  /** Whether Redis answers (claims are possible). */
  get redisUp(): boolean {
    return this.link.ready;
  }

  /** This instance and the other live members, as this instance last saw them. */
  get members(): MemberInfo[] {
    return [this.membership.info, ...this.membership.peers];
  }

  /** Connects to Redis and starts the lease. */
  start(): void {
    this.link.start();
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  /** Resolves once the cluster was read for the first time, or after `timeoutMs` (Redis may be away). */
  synced(timeoutMs: number): Promise<void> {
    return Promise.race([this.firstSync, new Promise<void>((r) => setTimeout(r, timeoutMs).unref())]);
  }

  /** Whether takeovers announced by other instances reach this one now (its subscription is up). */
  get listening(): boolean {
    return this.link.subscribed;
  }

  /** Claims a name for (owner, client), joining its endpoint pool when `pool`; `unavailable` when Redis cannot be asked. */
  async claim(name: string, owner: string, client: string, pool = false): Promise<Claim> {
    if (!this.link.ready) return { kind: 'unavailable', why: 'the cluster store (Redis) is not answering' };
    try {
      let outcome = await this.records.claim(name, owner, client, this.whereIs(name).length > 0, pool);
      // An empty store settles once: wait it out, then ask again with what the leases say now (twice at most, in
      // case Redis's clock steps).
      for (let tries = 0; outcome.kind === 'settling' && tries < 2; tries++) {
        const { waitMs } = outcome;
        await new Promise((r) => setTimeout(r, waitMs));
        outcome = await this.records.claim(name, owner, client, this.whereIs(name).length > 0, pool);
      }
      if (outcome.kind === 'settling')
        return { kind: 'unavailable', why: 'the cluster store (Redis) is settling' };
      return outcome;
    } catch (err) {
      return { kind: 'unavailable', why: `the cluster store (Redis) failed: ${(err as Error).message}` };
    }
  }

  /** The other members that serve `name` now (from their leases). */
  whereIs(name: string): MemberInfo[] {
    return this.membership.peers.filter((m) => m.names.includes(name));
  }

  /**
   * Whether some instance served `name` within the hold: its client may be reconnecting, so a request for it waits
   * instead of getting 404. An in-memory answer, from the leases read.
   */
  recentlyServed(name: string): boolean {
    const seen = this.recent.get(name);
    return seen !== undefined && this.now() - seen < this.settings.holdMs;
  }

  /** Whether `name` is held for some owner in Redis (the store's answer; false when it cannot be asked). */
  async isHeld(name: string): Promise<boolean> {
    if (!this.link.ready) return false;
    return this.records.isHeld(name).catch(() => false);
  }

  /** The names this instance serves changed: announced with the next lease refresh (at once here). */
  servedChanged(): void {
    this.membership.setNames([...new Set(this.host.served().map((h) => h.name))]);
    if (this.link.ready) this.membership.refresh().catch(() => {});
  }

  /**
   * True when this instance may have missed a takeover (its lease lapsed: the process stalled, or it was cut off
   * from Redis): the names it serves are checked before it serves them again. An in-memory check for the hot path.
   */
  stale(): boolean {
    return this.mustVerify || this.verifying !== undefined || this.now() - this.lastTickAt > MEMBER_LEASE_MS;
  }

  /** Calls back once the names served were checked (or at once when nothing needs checking). */
  afterVerification(callback: () => void): void {
    if (!this.stale()) return callback();
    this.waiters.push(callback);
    this.tick();
  }

  /** Graceful shutdown: leaves the membership at once, so the others stop counting on this instance. */
  async leave(): Promise<void> {
    this.membership.setNames([]);
    if (this.link.ready) await this.membership.leave().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.releaseWaiters();
    await this.link.close();
  }

  /** Refreshes the lease, reads the others, keeps served names held, and checks fences when due. */
  private tick(): void {
    if (this.closed) return;
    const now = this.now();
    if (now - this.lastTickAt > MEMBER_LEASE_MS) this.mustVerify = true; // the process stalled past its lease
    this.lastTickAt = now;
    if (!this.link.ready) {
      // Redis is away: open tunnels keep serving from their sockets. Nothing can be checked, so a stalled
      // instance serves on rather than going dark; it checks as soon as Redis answers.
      if (!this.mustVerify) return;
      this.mustVerify = false;
      this.releaseWaiters();
      return;
    }
    this.membership.setNames([...new Set(this.host.served().map((h) => h.name))]);
    const before = this.membersKey;
    this.membership
      .refresh()
      .then(() => {
        // A lease renewed after it had lapsed: others may have seen this instance gone and taken over names.
        if (this.lastLeaseAt > 0 && this.now() - this.lastLeaseAt > MEMBER_LEASE_MS) this.mustVerify = true;
        this.lastLeaseAt = this.now();
        const key = this.membership.peers
          .map((m) => `${m.id}|${m.instanceUrl ?? ''}|${m.flyMachine ?? ''}`)
          .sort()
          .join(',');
        this.membersKey = key;
        if (key !== before) this.emit('members');
        this.noteServed();
        this.markSynced();
      })
      .catch(() => {})
      .finally(() => {
        if (this.mustVerify || this.now() - this.lastVerifiedAt >= VERIFY_EVERY_MS) this.verify();
        this.refreshNames();
      });
  }

  /** Checks every served name against Redis; names taken over or lost are reported as superseded. */
  private verify(): void {
    if (this.verifying) return;
    this.mustVerify = false;
    const served = this.host.served();
    this.verifying = Promise.all(
      served.map(async (held) => {
        const result = await this.records.reassert(held);
        if (result !== 'ok') this.emit('superseded', held.name, Number.MAX_SAFE_INTEGER);
      }),
    )
      .then(() => {
        this.lastVerifiedAt = this.now();
      })
      .catch(() => {
        this.mustVerify = !this.link.ready ? false : true; // Redis failed mid-check: try again next tick
      })
      .finally(() => {
        this.verifying = undefined;
        if (!this.mustVerify) this.releaseWaiters();
      });
  }

  /** Keeps the records of served names alive (their hold counts from the last refresh). */
  private refreshNames(): void {
    const now = this.now();
    if (now - this.lastNamesRefreshAt < Math.min(this.settings.holdMs / 3, 60_000)) return;
    this.lastNamesRefreshAt = now;
    const names = [...new Set(this.host.served().map((h) => h.name))];
    this.records.refresh(names).catch(() => {});
  }

  /** Remembers which names the members serve now; forgets those not seen for the whole hold. */
  private noteServed(): void {
    const now = this.now();
    for (const member of this.members) for (const name of member.names) this.recent.set(name, now);
    if (this.recent.size > 10_000)
      for (const [name, seen] of this.recent)
        if (now - seen >= this.settings.holdMs) this.recent.delete(name);
  }

  private releaseWaiters(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}
