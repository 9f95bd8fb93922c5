// Tunnel names: validation, random names, and the name <-> live tunnel map with a reconnect grace period.
import { randomInt } from 'node:crypto';

/** Subdomain rules: a DNS label in lowercase (RFC 1123), 1–63 characters, no leading or trailing hyphen. */
const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Labels nobody may claim: they name the relay itself or are commonly used for other services. */
export const RESERVED_NAMES = new Set([
  'www',
  'relay',
  'ggrok',
  'api',
  'admin',
  'status',
  'health',
  'metrics',
  'mail',
  'smtp',
  'ftp',
  'ns1',
  'ns2',
  'localhost',
  'dashboard',
  'static',
  'assets',
  'cdn',
]);

/** The name under which the single tunnel of own-host mode (no --domain) is registered. */
export const OWN_HOST_NAME = 'default';

/** Whether `name` may be a tunnel's subdomain (reserved names included). */
export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

const ADJECTIVES = [
  'amber',
  'brave',
  'calm',
  'clever',
  'cosmic',
  'crisp',
  'dusty',
  'eager',
  'fancy',
  'gentle',
  'golden',
  'happy',
  'jolly',
  'keen',
  'lively',
  'lucky',
  'mellow',
  'misty',
  'nimble',
  'proud',
  'quiet',
  'rapid',
  'rosy',
  'shiny',
  'silent',
  'sunny',
  'swift',
  'tidy',
  'vivid',
  'witty',
  'zesty',
  'bold',
];
const NOUNS = [
  'otter',
  'falcon',
  'badger',
  'panda',
  'comet',
  'river',
  'maple',
  'cedar',
  'harbor',
  'meadow',
  'pebble',
  'canyon',
  'lynx',
  'heron',
  'koala',
  'walrus',
  'tiger',
  'orca',
  'raven',
  'fox',
  'moose',
  'bison',
  'gecko',
  'lemur',
  'quokka',
  'yak',
  'zebra',
  'ibis',
  'puffin',
  'marmot',
  'newt',
  'wombat',
];

/** A short readable random name such as "brave-otter-42". */
export function randomName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${NOUNS[randomInt(NOUNS.length)]}-${randomInt(10, 100)}`;
}

interface Reservation {
  /** Hash identifying the token that claimed the name. */
  owner: string;
  expiresAt: number;
}

/** Why a name cannot be claimed, or undefined when it can. */
export type ClaimProblem = 'invalid' | 'reserved' | 'in_use' | 'held';

/** What the registry needs of a tunnel: who owns it, which client process opened it, and whether it pools. */
export interface Registered {
  owner: string;
  clientId: string;
  /** Asked for with --pool: other clients of the same owner may serve the name alongside it. */
  pool?: boolean;
}

/** The live tunnels of one name: one, or the members of its pool, and whose turn it is. */
interface LiveName<T> {
  members: T[];
  /** Advanced on every pick: ties between equally busy members go round-robin. */
  turn: number;
}

/**
 * Maps names to live tunnels (several for an endpoint pool); after the last one disconnects, a name stays held for
 * its owner for `graceMs`.
 */
export class Registry<T extends Registered> {
  private readonly live = new Map<string, LiveName<T>>();
  private readonly held = new Map<string, Reservation>();
  private count = 0;

  constructor(private readonly graceMs: number) {}

  /** Live tunnels, every member of every pool counted. */
  get size(): number {
    return this.count;
  }

  /** A live tunnel of `name` (the first member of a pool). */
  get(name: string): T | undefined {
    return this.live.get(name)?.members[0];
  }

  /** Every live tunnel of `name`: one, or the members of its pool in the order they joined. */
  members(name: string): readonly T[] {
    return this.live.get(name)?.members ?? [];
  }

  /** A number that grows with every call for `name`: where a pick starts among its members. */
  nextTurn(name: string): number {
    const entry = this.live.get(name);
    if (!entry) return 0;
    entry.turn = (entry.turn + 1) % 0x4000_0000;
    return entry.turn;
  }

  *values(): IterableIterator<T> {
    for (const entry of this.live.values()) yield* entry.members;
  }

  /** Names with a live tunnel. */
  names(): IterableIterator<string> {
    return this.live.keys();
  }

  /** True while a disconnected tunnel's name is kept for its owner. */
  isHeld(name: string): boolean {
    const r = this.held.get(name);
    if (r && r.expiresAt <= Date.now()) this.held.delete(name);
    return this.held.has(name);
  }

  /** The owner a disconnected tunnel's name is still held for, if any. */
  heldFor(name: string): string | undefined {
    return this.isHeld(name) ? this.held.get(name)?.owner : undefined;
  }

  /**
   * Checks whether `owner` (from the same client process `clientId`) may take `name`, joining its pool when `pool`.
   * The same client process may take over its own live tunnel (a reconnect racing the old socket's close). A pool
   * takes a new member only when every member asked for the pool and has the same owner.
   */
  check(
    name: string,
    owner: string,
    clientId: string,
    pool = false,
  ): { problem?: ClaimProblem; replaces?: T } {
    if (!isValidName(name)) return { problem: 'invalid' };
    if (RESERVED_NAMES.has(name)) return { problem: 'reserved' };
    const current = this.live.get(name)?.members;
    if (current) {
      const own = current.find((t) => t.owner === owner && t.clientId === clientId);
      if (own && (current.length === 1 || pool)) return { replaces: own };
      if (pool && current.every((t) => t.pool === true && t.owner === owner)) return {};
      return { problem: 'in_use' };
    }
    const r = this.held.get(name);
    if (r && r.expiresAt > Date.now() && r.owner !== owner) return { problem: 'held' };
    return {};
  }

  /** A free random name. */
  pickName(): string {
    for (;;) {
      const name = randomName();
      if (!this.live.has(name) && !this.isHeld(name)) return name;
    }
  }

  /**
   * Registers a live tunnel: the name's only one, or one more member of its pool. It takes the place of a tunnel of
   * the same client process (a reconnect): one client is never two members of a name.
   */
  add(name: string, tunnel: T): void {
    this.held.delete(name);
    const entry = this.live.get(name);
    if (!entry) {
      this.live.set(name, { members: [tunnel], turn: 0 });
      this.count++;
      return;
    }
    const own = entry.members.findIndex((t) => t.owner === tunnel.owner && t.clientId === tunnel.clientId);
    if (own >= 0) entry.members[own] = tunnel;
    else {
      entry.members.push(tunnel);
      this.count++;
    }
  }

  /** Holds `name` for `owner` until `expiresAt` (ms since the epoch) unless it is live: a hold read back after a restart. */
  hold(name: string, owner: string, expiresAt: number): void {
    if (!this.live.has(name) && expiresAt > Date.now()) this.held.set(name, { owner, expiresAt });
  }

  /**
   * Removes a live tunnel (only if it is still registered). When it was the name's last, the name is held for the
   * owner.
   */
  remove(name: string, tunnel: T): void {
    const entry = this.live.get(name);
    const at = entry ? entry.members.indexOf(tunnel) : -1;
    if (!entry || at < 0) return;
    entry.members.splice(at, 1);
    this.count--;
    if (entry.members.length > 0) return;
    this.live.delete(name);
    if (this.graceMs > 0) this.held.set(name, { owner: tunnel.owner, expiresAt: Date.now() + this.graceMs });
    this.sweep();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [name, r] of this.held) if (r.expiresAt <= now) this.held.delete(name);
  }
}
