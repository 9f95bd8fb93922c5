// The relay's link to Redis: one command connection and one subscriber, reconnecting fast, never queueing offline.
import { EventEmitter } from 'node:events';
import { createClient } from '@redis/client';

/** Reconnect delays grow to this at most: a Redis restart is noticed within about a second. */
const MAX_RECONNECT_DELAY_MS = 1000;
/** A command that gets no answer in this long fails (a stalled Redis must not stall the relay's ticks). */
const COMMAND_TIMEOUT_MS = 3000;

/** How to reach Redis. */
export interface RedisSettings {
  url: string;
  /** Accept a self-signed TLS certificate (rediss:// on Heroku's Key-Value Store). */
  tlsInsecure?: boolean;
}

interface RedisLinkEvents {
  /** Connected (again) and answering: state must be re-registered, since Redis may have restarted empty. */
  ready: [];
  /** The connection dropped; commands fail until `ready`. */
  down: [Error];
  /** A message on a subscribed channel. */
  message: [channel: string, message: string];
}

type Client = ReturnType<typeof createClient>;

/**
 * Commands and pub/sub over two Redis connections. Commands made while Redis is away fail at once (no offline
 * queue): the relay decides what that means (keep serving, refuse new claims).
 */
export class RedisLink extends EventEmitter<RedisLinkEvents> {
  private readonly commands: Client;
  private readonly subscriber: Client;
  private closed = false;
  private up = false;
  private subscribedNow = false;
  /** The first subscription went through (node-redis renews it on its own after reconnects). */
  private everSubscribed = false;

  constructor(
    settings: RedisSettings,
    private readonly channels: string[],
  ) {
    super();
    const options = {
      url: settings.url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: COMMAND_TIMEOUT_MS,
        reconnectStrategy: (retries: number) =>
          Math.min(50 * 2 ** Math.min(retries, 5), MAX_RECONNECT_DELAY_MS),
        ...(settings.url.startsWith('rediss:') && settings.tlsInsecure
          ? { tls: true as const, rejectUnauthorized: false }
          : {}),
      },
    };
    this.commands = createClient(options);
    this.subscriber = createClient(options);
    this.commands.on('error', (err: Error) => this.wentDown(err));
    this.commands.on('end', () => this.wentDown(new Error('connection closed')));
    this.commands.on('ready', () => {
      this.up = true;
      this.emit('ready');
    });
    this.subscriber.on('error', () => {}); // the command connection reports; the subscriber follows it
    this.subscriber.on('ready', () => {
      // node-redis subscribes again by itself after a reconnect; until then messages may be missed (pub/sub is
      // at most once), which the regular checks of served names cover.
      this.subscribedNow = this.everSubscribed;
    });
    this.subscriber.on('end', () => (this.subscribedNow = false));
  }

  /** Whether the subscriber is connected and subscribed (messages published now reach us). */
  get subscribed(): boolean {
    return this.subscribedNow && this.subscriber.isReady;
  }

  /** Whether commands can be sent now. */
  get ready(): boolean {
    return this.up && this.commands.isReady;
  }

  /** Starts connecting (in the background: the relay serves without Redis until it answers). */
  start(): void {
    this.commands.connect().catch(() => {});
    this.subscriber
      .connect()
      .then(() =>
        this.subscriber.subscribe(this.channels, (message: string, channel: string) =>
          this.emit('message', channel, message),
        ),
      )
      .then(() => (this.everSubscribed = this.subscribedNow = true))
      .catch(() => {});
  }

  /** One command; rejects when Redis is away or does not answer in time. */
  async command<T>(args: (string | number)[]): Promise<T> {
    if (this.closed) throw new Error('redis link closed');
    const reply: unknown = await withTimeout(this.commands.sendCommand(args.map(String)), COMMAND_TIMEOUT_MS);
    return reply as T;
  }

  /** Runs a Lua script (EVAL); rejects like command(). */
  eval<T>(script: string, keys: string[], args: (string | number)[]): Promise<T> {
    return this.command<T>(['EVAL', script, keys.length, ...keys, ...args]);
  }

  /** Closes both connections. */
  async close(): Promise<void> {
    this.closed = true;
    this.up = false;
    await Promise.allSettled([this.commands.close(), this.subscriber.close()]);
  }

  private wentDown(err: Error): void {
    if (!this.up) return;
    this.up = false;
    if (!this.closed) this.emit('down', err);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis did not answer in ${ms} ms`)), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
