// Connections to the local service: open (plain or TLS), keep idle ones for reuse, and hand each read to the
// response parser of the exchange that owns the connection. Listeners are installed once per socket, not per request.
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import dns from 'node:dns';
import { ResponseParser, type ResponseHandler } from './http1-response.js';

/** Where public requests are replayed. */
export interface LocalTarget {
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  /** Accept a self-signed certificate on an https target. */
  insecure: boolean;
}

/** The exchange currently using a connection. */
export interface ConnectionUser extends ResponseHandler {
  /** The connection failed or closed before the exchange let go of it; `err` says why. */
  onConnectionLost(err: Error): void;
  /** The socket's write buffer drained. */
  onWritable(): void;
}

const LOOPBACK = [
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
];

/**
 * `localhost` means both loopback addresses: apps listen on 127.0.0.1 or on ::1, and resolvers disagree
 * on which comes first. With autoSelectFamily, Node tries both in turn.
 */
export const lookupLocalhost = ((
  hostname: string,
  options: dns.LookupOptions,
  callback: (...args: unknown[]) => void,
) => {
  if (hostname.toLowerCase() !== 'localhost') return dns.lookup(hostname, options, callback as never);
  if (options.all) return callback(null, LOOPBACK);
  return callback(null, LOOPBACK[0]!.address, 4);
}) as unknown as net.LookupFunction;

/** Message of the error for a server that closed the connection before sending any byte of a response. */
export const HANG_UP_MESSAGE = 'the local service closed the connection without answering';

/** An error like Node's own "socket hang up" (code ECONNRESET) for a server that closed without answering. */
function hangUp(): Error {
  return Object.assign(new Error(HANG_UP_MESSAGE), { code: 'ECONNRESET' });
}

/** One socket to the local service and its response parser. */
export class LocalConnection {
  readonly parser: ResponseParser;
  /** The exchange using the connection; undefined while it sits idle in the pool. */
  user: ConnectionUser | undefined;
  /** The connection served an exchange before the current one (a stale keep-alive socket may fail at once). */
  reused = false;
  /** When it went idle (ms since epoch), for the pool's idle timeout. */
  idleSince = 0;
  /** When the pool stops offering it (ms since epoch): our idle timeout, or sooner if the server said so. */
  expiresAt = 0;
  /**
   * Reading stopped during the exchange (a slow visitor). The server may then have finished its response, and started
   * its keep-alive timer, long before we read the end of it: how long it has really been idle is unknown.
   */
  wasPaused = false;
  private lastError: Error | undefined;

  constructor(
    readonly socket: Socket,
    private readonly pool: LocalPool,
  ) {
    this.parser = new ResponseParser({
      onHead: (status, reason, headers, info) => this.user?.onHead(status, reason, headers, info),
      onBody: (chunk) => this.user?.onBody(chunk),
      onDone: (trailers) => this.user?.onDone(trailers),
      onUpgrade: (status, reason, headers, rest) => this.user?.onUpgrade(status, reason, headers, rest),
    });
    socket.on('data', (data: Buffer) => {
      if (!this.user) return void this.socket.destroy(); // bytes while idle: not a usable HTTP/1.1 connection
      try {
        this.parser.execute(data);
      } catch (err) {
        this.socket.destroy(err as Error);
      }
    });
    socket.on('end', () => {
      // Idle and the server hung up: close now, so the pool never hands this socket out in the moment before 'close'.
      if (!this.user) return void this.socket.destroy();
      // Not a byte of a response yet: the server hung up (a closed keep-alive socket, or a crash before answering).
      if (!this.parser.started) return void this.socket.destroy(hangUp());
      try {
        this.parser.finish();
      } catch (err) {
        this.socket.destroy(err as Error); // also for upgrade sockets, which allow half-open
      }
    });
    socket.on('error', (err) => (this.lastError = err));
    socket.on('close', () => {
      this.pool.forget(this);
      const user = this.user;
      this.user = undefined;
      user?.onConnectionLost(this.lastError ?? hangUp());
    });
    socket.on('drain', () => this.user?.onWritable());
  }

  /** Starts an exchange: the parser expects the response to `method`. */
  begin(user: ConnectionUser, method: string, upgrade: boolean): void {
    this.user = user;
    this.wasPaused = false;
    this.parser.expect(method, upgrade);
  }

  /** Stops reading the response until the visitor catches up (backpressure). */
  pauseReading(): void {
    this.wasPaused = true;
    this.socket.pause();
  }

  /** The exchange is over: back to the pool if the connection can carry another request, else closed. */
  release(): void {
    this.user = undefined;
    if (this.parser.keepAlive && this.parser.done && !this.socket.destroyed) this.pool.keep(this);
    else this.socket.destroy();
  }

  /** The exchange gives up on the connection (cancelled, or left in an unknown state). */
  discard(): void {
    this.user = undefined;
    this.socket.destroy();
  }

  /** Hands the socket over (an upgrade became a raw channel): the connection's own listeners come off. */
  detach(): Socket {
    this.user = undefined;
    for (const event of ['data', 'end', 'close', 'drain'] as const) this.socket.removeAllListeners(event);
    this.pool.forget(this); // a raw channel now, no longer the pool's
    return this.socket;
  }
}

/** Idle connections are closed after this long: shorter than the 5 s keep-alive timeout of Node servers, so the
 * local server rarely closes a socket just as it is reused. */
export const LOCAL_IDLE_TIMEOUT_MS = 4000;
/** Idle connections kept at most (Node's Agent keeps 256 too). Fewer than the requests in flight would close and
 * reopen a connection for every request once that many run at once. */
const MAX_IDLE_CONNECTIONS = 256;
/** Requests with a body only reuse connections idle for less than this (ms); see take(). */
const BODY_REUSE_MAX_IDLE_MS = 1000;

/** How to reach the local target: `localhost` on both loopback addresses, whichever answers (also for health checks). */
export function localConnectOptions(t: LocalTarget): net.TcpNetConnectOpts {
  const options: net.TcpNetConnectOpts = {
    host: t.host,
    port: t.port,
    lookup: lookupLocalhost,
    autoSelectFamily: true,
  };
  // Loopback connects succeed or fail at once; Node's 250 ms default abandons good ones when the loop lags.
  if (t.host.toLowerCase() === 'localhost') options.autoSelectFamilyAttemptTimeout = 5000;
  return options;
}

/** Opens connections to one local target and keeps idle ones for reuse (most recently used first). */
export class LocalPool {
  private readonly idle: LocalConnection[] = [];
  /** Connections opened and not yet closed (idle ones included). */
  private openCount = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(readonly target: LocalTarget) {}

  /** Connections serving an exchange right now. */
  get busy(): number {
    return this.openCount - this.idle.length;
  }

  /**
   * The most recently used idle connection, or undefined. A request with a body cannot be retried once its body has
   * gone to a socket the server was closing, so for one (`forBody`) only a connection known to have been idle for
   * under a second will do: a server with a short keep-alive timeout (gunicorn's is 2 s) could otherwise close it
   * just as the body goes out, and the visitor would get a 502. Bodiless requests are retried instead.
   */
  take(forBody = false): LocalConnection | undefined {
    const now = Date.now();
    let conn = this.idle.pop();
    // Skipped and closed: a socket the server already ended (its 'close' still to come), and one past its time.
    while (conn && (conn.socket.destroyed || conn.socket.readableEnded || now >= conn.expiresAt)) {
      conn.socket.destroy();
      conn = this.idle.pop();
    }
    if (!conn) return undefined;
    if (forBody && (conn.wasPaused || now - conn.idleSince >= BODY_REUSE_MAX_IDLE_MS)) {
      this.idle.push(conn); // the others went idle earlier still
      return undefined;
    }
    conn.reused = true;
    conn.socket.ref();
    return conn;
  }

  /** A new connection. Upgrades get half-close support and never come back to the pool. */
  open(upgrade: boolean): LocalConnection {
    const t = this.target;
    const options: net.TcpNetConnectOpts = {
      ...localConnectOptions(t),
      noDelay: true,
      allowHalfOpen: upgrade,
    };
    const socket =
      t.protocol === 'https:'
        ? tls.connect({
            ...options,
            servername: net.isIP(t.host) ? undefined : t.host,
            rejectUnauthorized: !t.insecure,
            ALPNProtocols: ['http/1.1'],
          })
        : net.connect(options);
    this.openCount++;
    return new LocalConnection(socket, this);
  }

  /** Keeps an idle connection (called by LocalConnection.release). */
  keep(conn: LocalConnection): void {
    // A server's `Keep-Alive: timeout=N` is honoured with a second to spare (as undici does); under that, not kept.
    const serverIdleMs = conn.parser.idleTimeoutMs;
    const keepMs =
      serverIdleMs === undefined
        ? LOCAL_IDLE_TIMEOUT_MS
        : Math.min(LOCAL_IDLE_TIMEOUT_MS, serverIdleMs - 1000);
    if (this.closed || keepMs <= 0) return void conn.socket.destroy();
    // Full: the connection idle longest goes, so the pool keeps the fresh ones that requests with a body can use.
    if (this.idle.length >= MAX_IDLE_CONNECTIONS) this.idle.shift()!.socket.destroy();
    conn.idleSince = Date.now();
    conn.expiresAt = conn.idleSince + keepMs;
    conn.socket.unref(); // an idle pool must not keep the process alive
    if (conn.socket.isPaused()) conn.socket.resume(); // a paused socket would not notice the server closing it
    this.idle.push(conn);
    this.sweeper ??= setInterval(() => this.sweep(), 1000).unref();
  }

  /** A connection closed: drop it from the count and the idle list. */
  forget(conn: LocalConnection): void {
    this.openCount--;
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** Closes every idle connection; connections in use close when their exchange ends. */
  close(): void {
    this.closed = true;
    for (const conn of this.idle.splice(0)) conn.socket.destroy();
    this.stopSweeper();
  }

  private sweep(): void {
    const now = Date.now();
    for (const conn of this.idle.filter((c) => c.expiresAt <= now)) {
      this.idle.splice(this.idle.indexOf(conn), 1);
      conn.socket.destroy();
    }
    if (this.idle.length === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
