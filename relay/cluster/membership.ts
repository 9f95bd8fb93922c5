// Cluster membership in Redis: each instance keeps a short lease with what it serves, and reads everyone else's.
import type { RedisLink } from './redis.js';

/** Set of the ids of instances that registered (dead ones are pruned when their lease is found gone). */
const MEMBERS_KEY = 'ggrok:members';
/** Prefix of an instance's lease: JSON MemberInfo that expires unless refreshed. */
const MEMBER_KEY = 'ggrok:member:';
/** Most members read (a bound on what a corrupted or hostile Redis can make us hold). */
const MAX_MEMBERS = 256;
/** Most names one member may announce. */
const MAX_NAMES_PER_MEMBER = 100_000;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** What an instance tells the others about itself. */
export interface MemberInfo {
  id: string;
  /** A private address other instances forward requests to (--peer-url), if any. */
  peerUrl?: string;
  /** A public URL that reaches this instance directly (--instance-url), for clients to dial. */
  instanceUrl?: string;
  /** Its Fly machine id, for fly-replay and fly-force-instance-id. */
  flyMachine?: string;
  /** Tunnel names it has a live control socket for. */
  names: string[];
}

/** Whether an id is safe to use as an instance id (also in Redis keys and headers). */
export function isValidInstanceId(id: string): boolean {
  return ID_PATTERN.test(id);
}

/** Parses a member's lease as read from Redis; undefined when it is not a well-formed MemberInfo. */
export function parseMemberInfo(text: unknown): MemberInfo | undefined {
  if (typeof text !== 'string' || text.length > 8 * 1024 * 1024) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.id !== 'string' || !isValidInstanceId(o.id)) return undefined;
  if (!Array.isArray(o.names) || o.names.length > MAX_NAMES_PER_MEMBER) return undefined;
  const names = o.names.filter((n): n is string => typeof n === 'string' && NAME_PATTERN.test(n));
  const url = (x: unknown): string | undefined =>
    typeof x === 'string' && /^(https?|wss?):\/\/[^\s]{1,2000}$/.test(x) ? x : undefined;
  const machine =
    typeof o.flyMachine === 'string' && isValidInstanceId(o.flyMachine) ? o.flyMachine : undefined;
  return {
    id: o.id,
    names,
    ...(url(o.peerUrl) ? { peerUrl: url(o.peerUrl) } : {}),
    ...(url(o.instanceUrl) ? { instanceUrl: url(o.instanceUrl) } : {}),
    ...(machine ? { flyMachine: machine } : {}),
  };
}

/** This instance's lease, and the others' as last read. */
export class Membership {
  /** Live members other than this one, by id, as of the last successful read. */
  private others = new Map<string, MemberInfo>();
  private names: string[] = [];

  constructor(
    private readonly link: RedisLink,
    private readonly self: Omit<MemberInfo, 'names'>,
    /** How long a lease lives unless refreshed. */
    private readonly leaseMs: number,
  ) {}

  /** The other live members. */
  get peers(): MemberInfo[] {
    return [...this.others.values()];
  }

  /** What this instance announces about itself. */
  get info(): MemberInfo {
    return { ...this.self, names: this.names };
  }

  /** The names this instance serves (announced at the next refresh). */
  setNames(names: string[]): void {
    this.names = names;
  }

  /** Refreshes this instance's lease and reads the others'. Throws when Redis cannot be asked. */
  async refresh(): Promise<void> {
    await this.link.command([
      'SET',
      MEMBER_KEY + this.self.id,
      JSON.stringify(this.info),
      'PX',
      this.leaseMs,
    ]);
    await this.link.command(['SADD', MEMBERS_KEY, this.self.id]);
    const ids = (await this.link.command<unknown>(['SMEMBERS', MEMBERS_KEY])) as unknown[];
    const others = (Array.isArray(ids) ? ids : [])
      .filter((id): id is string => typeof id === 'string' && isValidInstanceId(id) && id !== this.self.id)
      .slice(0, MAX_MEMBERS);
    const leases =
      others.length > 0
        ? ((await this.link.command<unknown>(['MGET', ...others.map((id) => MEMBER_KEY + id)])) as unknown[])
        : [];
    const next = new Map<string, MemberInfo>();
    const gone: string[] = [];
    others.forEach((id, i) => {
      const info = parseMemberInfo(Array.isArray(leases) ? leases[i] : undefined);
      if (info && info.id === id) next.set(id, info);
      else if (Array.isArray(leases) && leases[i] === null) gone.push(id);
    });
    this.others = next;
    if (gone.length > 0) await this.link.command(['SREM', MEMBERS_KEY, ...gone]);
  }

  /** Leaves the cluster at once (graceful shutdown): the others stop sending work here at their next read. */
  async leave(): Promise<void> {
    await this.link.command(['DEL', MEMBER_KEY + this.self.id]);
    await this.link.command(['SREM', MEMBERS_KEY, this.self.id]);
  }
}
