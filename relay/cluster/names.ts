// Tunnel names in Redis: who owns each, held for its owner for a while, with a fencing counter bumped on takeovers.
import type { RedisLink } from './redis.js';

/**
 * Key prefix of a name's record: a hash {owner, client, fence, pool} that expires `holdMs` after its last refresh.
 * `pool` is '1' for an endpoint pool: clients of the owner that ask for the pool join it (same fence, no takeover);
 * `client` is then the client that started it.
 */
const NAME_KEY = 'ggrok:name:';
/** Channel on which a takeover is announced as "<fence> <name>". */
export const SUPERSEDED_CHANNEL = 'ggrok:superseded';
/**
 * When the store was first asked for a new name (Redis time, ms). Its absence means the store is empty: new, or
 * restarted without its data.
 */
const STORE_SINCE_KEY = 'ggrok:store-since';
/**
 * For this long after an empty store is first asked for a new name, new names wait: instances that served names
 * before Redis restarted empty are reconnecting (1 s at most apart) and register them again, and until they have,
 * another owner must not get one of those names.
 */
export const STORE_SETTLE_MS = 3000;

/** The outcome of a claim. */
export type ClaimOutcome =
  /** Nobody had the name (or the hold had expired): it is the owner's now. */
  | { kind: 'new'; fence: number }
  /** The same client process claims again (another instance, or a reconnect), or joins the pool: same fence. */
  | { kind: 'same'; fence: number }
  /** Another process of the same owner takes over: the fence went up, older sockets must go. */
  | { kind: 'takeover'; fence: number }
  /** Another owner holds the name. */
  | { kind: 'held' }
  /** Another process of the same owner serves it live on some instance: refused, as on a relay alone. */
  | { kind: 'in_use' }
  /** A new name while an empty store settles (see STORE_SETTLE_MS): ask again in `waitMs`. */
  | { kind: 'settling'; waitMs: number };

/**
 * Claims `name` for (owner, client) atomically. Another owner's record refuses it; the same client gets it back
 * with the same fence, and so does a client of the owner asking to join the pool the record is (ARGV[7]); another
 * process of the same owner takes it over (fence + 1, announced) unless it is served live somewhere (ARGV[6]). A
 * record whose hold expired is claimed afresh, keeping the counter going so that an old fence can never match a new
 * owner's. A new name asked for while an empty store settles (ARGV[8] ms after its first new name) gets
 * {'settling', ms to wait}.
 */
const CLAIM = `
local r = redis.call('HMGET', KEYS[1], 'owner', 'client', 'fence', 'pool')
local owner, client, fence, pool = r[1], r[2], tonumber(r[3]) or 0, r[4]
if not owner then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local since = tonumber(redis.call('GET', KEYS[2]))
  if not since then
    since = now
    redis.call('SET', KEYS[2], since)
  end
  local wait = since + tonumber(ARGV[8]) - now
  if wait > 0 then return {'settling', wait} end
end
if owner and owner ~= ARGV[1] then return {'held', fence} end
if owner and (client == ARGV[2] or (pool == '1' and ARGV[7] == '1')) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'same', fence}
end
if owner and ARGV[6] == '1' then return {'in_use', fence} end
fence = fence + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'client', ARGV[2], 'fence', fence, 'pool', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if owner then
  redis.call('PUBLISH', ARGV[4], fence .. ' ' .. ARGV[5])
  return {'takeover', fence}
end
return {'new', fence}
`;

/**
 * Re-registers a name an instance serves (after Redis came back, possibly empty, or after the instance stalled):
 * recreates a missing record with the instance's fence, refreshes its own, and says whether it was superseded
 * (a higher fence, or another owner, holds the name now).
 */
const REASSERT = `
local r = redis.call('HMGET', KEYS[1], 'owner', 'client', 'fence', 'pool')
local owner, client, fence, pool = r[1], r[2], tonumber(r[3]), r[4]
local mine = tonumber(ARGV[3])
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'client', ARGV[2], 'fence', mine, 'pool', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 'ok'
end
if owner ~= ARGV[1] then return 'lost' end
local member = pool == '1' and ARGV[5] == '1'
if fence > mine or (fence == mine and client ~= ARGV[2] and not member) then return 'superseded' end
if fence < mine then redis.call('HSET', KEYS[1], 'client', ARGV[2], 'fence', mine) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 'ok'
`;

/** A name this instance serves, as it claimed it. */
export interface HeldName {
  name: string;
  owner: string;
  client: string;
  fence: number;
  /** Served as a member of the name's endpoint pool (absent: not). */
  pool?: boolean;
}

/** Claims, refreshes and checks names in Redis. Every answer from Redis is checked before it is believed. */
export class NameRecords {
  constructor(
    private readonly link: RedisLink,
    /** How long a name stays with its owner after its last refresh. */
    private readonly holdMs: number,
    /** How long new names wait after an empty store is first asked for one (see STORE_SETTLE_MS). */
    private readonly settleMs: number = STORE_SETTLE_MS,
  ) {}

  /**
   * Claims `name` for (owner, client); `live` says whether some instance serves it right now (then only the same
   * client, or a client joining the name's pool when `pool`, may claim it). Throws when Redis cannot be asked.
   */
  async claim(
    name: string,
    owner: string,
    client: string,
    live: boolean,
    pool = false,
  ): Promise<ClaimOutcome> {
    const [kind, fence] = await this.claimOnce(name, owner, client, live, pool);
    if (kind === 'settling') {
      if (!(Number.isSafeInteger(fence) && fence > 0 && fence <= this.settleMs))
        throw new Error('unexpected settling time from redis');
      return { kind, waitMs: fence };
    }
    if (!Number.isSafeInteger(fence) || fence < 0) throw new Error('unexpected fence from redis');
    switch (kind) {
      case 'new':
      case 'same':
      case 'takeover':
        return { kind, fence };
      case 'held':
      case 'in_use':
        return { kind };
      default:
        throw new Error('unexpected claim reply from redis');
    }
  }

  /** One run of the claim script: its kind (unchecked yet) and its number (a fence, or ms to wait when settling). */
  private async claimOnce(
    name: string,
    owner: string,
    client: string,
    live: boolean,
    pool: boolean,
  ): Promise<[unknown, number]> {
    const reply = await this.link.eval<unknown>(
      CLAIM,
      [NAME_KEY + name, STORE_SINCE_KEY],
      [
        owner,
        client,
        this.holdMs,
        SUPERSEDED_CHANNEL,
        name,
        live ? '1' : '0',
        pool ? '1' : '0',
        this.settleMs,
      ],
    );
    if (!Array.isArray(reply) || reply.length !== 2) throw new Error('unexpected claim reply from redis');
    return [reply[0], Number(reply[1])];
  }

  /** Re-registers a name this instance serves: 'ok', or 'superseded'/'lost' when its socket must go. */
  async reassert(held: HeldName): Promise<'ok' | 'superseded' | 'lost'> {
    const reply = await this.link.eval<unknown>(
      REASSERT,
      [NAME_KEY + held.name],
      [held.owner, held.client, held.fence, this.holdMs, held.pool ? '1' : '0'],
    );
    if (reply === 'ok' || reply === 'superseded' || reply === 'lost') return reply;
    throw new Error('unexpected reassert reply from redis');
  }

  /** Keeps the records of names this instance serves from expiring (their hold runs from their last refresh). */
  async refresh(names: string[]): Promise<void> {
    await Promise.all(names.map((name) => this.link.command(['PEXPIRE', NAME_KEY + name, this.holdMs])));
  }

  /** Whether a record holds `name` (for someone, any owner). */
  async isHeld(name: string): Promise<boolean> {
    return (await this.link.command<number>(['EXISTS', NAME_KEY + name])) === 1;
  }
}

/** Parses a takeover announcement "<fence> <name>"; undefined when it is not one. */
export function parseSuperseded(message: string): { name: string; fence: number } | undefined {
  const m = /^(\d{1,15}) ([a-z0-9-]{1,63})$/.exec(message);
  return m ? { fence: Number(m[1]), name: m[2]! } : undefined;
}
