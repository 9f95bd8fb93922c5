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

/** Maps names to live tunnels; after a disconnect, a name stays held for its owner for `graceMs`. */
export class Registry<T extends { owner: string; clientId: string }> {
  private readonly live = new Map<string, T>();
  private readonly held = new Map<string, Reservation>();

  constructor(private readonly graceMs: number) {}

  get size(): number {
    return this.live.size;
  }

  get(name: string): T | undefined {
    return this.live.get(name);
  }

  values(): IterableIterator<T> {
    return this.live.values();
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
   * Checks whether `owner` (from the same client process `clientId`) may take `name`.
   * The same client process may take over its own live tunnel (a reconnect racing the old socket's close).
   */
  check(name: string, owner: string, clientId: string): { problem?: ClaimProblem; replaces?: T } {
    if (!isValidName(name)) return { problem: 'invalid' };
    if (RESERVED_NAMES.has(name)) return { problem: 'reserved' };
    const current = this.live.get(name);
    if (current) {
      if (current.owner === owner && current.clientId === clientId) return { replaces: current };
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

  add(name: string, tunnel: T): void {
    this.held.delete(name);
    this.live.set(name, tunnel);
  }

  /** Holds `name` for `owner` until `expiresAt` (ms since the epoch) unless it is live: a hold read back after a restart. */
  hold(name: string, owner: string, expiresAt: number): void {
    if (!this.live.has(name) && expiresAt > Date.now()) this.held.set(name, { owner, expiresAt });
  }

  /** Removes a live tunnel (only if it is still the one registered) and holds its name for the owner. */
  remove(name: string, tunnel: T): void {
    if (this.live.get(name) !== tunnel) return;
    this.live.delete(name);
    if (this.graceMs > 0) this.held.set(name, { owner: tunnel.owner, expiresAt: Date.now() + this.graceMs });
    this.sweep();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [name, r] of this.held) if (r.expiresAt <= now) this.held.delete(name);
  }
}
