// Test infrastructure for the relay cluster (issue 14): a real redis-server, relay processes, and stand-ins for the fronts Heroku and Fly put before them.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BIN, ROOT, TOKEN, type Cleanup } from '../helpers.js';

/** How long a started process may take to be ready: two shared cores, other test files running alongside. */
const READY_TIMEOUT_MS = 20_000;
/** More than the relay's own drain (25 s), like the platforms' SIGKILL deadline. */
const STOP_TIMEOUT_MS = 35_000;
/** Fly's proxy cannot replay requests over 1 MB; the Fly front keeps this much of a body for replays. */
export const MAX_REPLAY_BODY_BYTES = 1024 * 1024;
/** A replay chain longer than this is a loop: the Fly front answers 502. */
const MAX_REPLAYS = 5;
/** How long a front waits for a machine's TCP connection when nothing says otherwise. */
const CONNECT_TIMEOUT_MS = 5_000;
/** Header the fronts put on answers they write themselves, so tests can tell them from the relay's. */
export const FRONT_ERROR_HEADER = 'X-Front-Error';

/** A port that was free a moment ago (for processes that must be given a port, e.g. to restart on it). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The items in random order (Fisher-Yates). */
function shuffle<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------------
// Child processes

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One run of a spawned process: output appended to `sink`, its exit awaited (Node reaps it, so no zombie stays). */
class Run {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  private done = false;

  constructor(
    file: string,
    args: string[],
    cwd: string,
    env: NodeJS.ProcessEnv,
    sink: (text: string) => void,
  ) {
    this.child = spawn(file, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => sink(c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => sink(c.toString()));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
      // A spawn failure emits 'error' and possibly no 'exit'.
      this.child.once('error', (err) => {
        sink(`[harness] spawn failed: ${err.message}\n`);
        resolve({ code: null, signal: null });
      });
    });
    void this.exited.then(() => (this.done = true));
  }

  get running(): boolean {
    return !this.done;
  }

  /** Sends `signal` (if still running) and waits for the exit. */
  async kill(signal: NodeJS.Signals): Promise<Exit> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** Linux process state from /proc (`T` = stopped), or undefined where there is no /proc. */
  state(): string | undefined {
    try {
      const stat = readFileSync(`/proc/${this.child.pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return undefined;
    }
  }
}

/** Waits until `check` holds, polling every 20 ms; throws `what()` after `timeoutMs`. */
async function poll(check: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(what());
    await sleep(20);
  }
}

/** The environment of a spawned process: the test runner's, minus anything that would steer a relay or Redis. */
function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^(GGROK_.*|FLY_.*|HEROKU_.*|DYNO|PORT|REDIS_URL|NODE_OPTIONS)$/.test(k)) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

// ---------------------------------------------------------------------------------------------------------------
// redis-server

/** A redis-server of the test's own on 127.0.0.1, without persistence. */
export interface RedisServer {
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  /** The current process id (a restart changes it); undefined if it never started. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Everything the server printed, across restarts. */
  output(): string;
  /** True when the server answers PING within `timeoutMs`. */
  ping(timeoutMs?: number): Promise<boolean>;
  /** SIGKILL, and wait until the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM (a clean shutdown), and wait until the process is gone. */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty (killing it first if it still runs); resolves once it answers PING. */
  restart(): Promise<void>;
}

/** Sends PING on a fresh connection; true when +PONG comes back within `timeoutMs`. */
export function pingRedis(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (c: Buffer) => {
      reply += c.toString('latin1');
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG'));
    });
    socket.on('error', () => finish(false));
    socket.on('close', () => finish(false));
  });
}

/** The path of an executable: `name` itself if it holds a slash, else the first match on PATH (and /usr/bin, /usr/sbin). */
function findExecutable(name: string): string | undefined {
  const dirs = name.includes('/')
    ? ['']
    : [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/bin', '/usr/sbin'];
  for (const dir of dirs) {
    const file = dir ? path.join(dir, name) : name;
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

class RedisProcess implements RedisServer {
  readonly url: string;
  private run: Run | undefined;
  private text = '';

  constructor(
    private readonly binary: string,
    readonly port: number,
    private readonly dir: string,
  ) {
    this.url = `redis://127.0.0.1:${port}`;
  }

  get pid(): number | undefined {
    return this.run?.child.pid;
  }
  get running(): boolean {
    return this.run?.running ?? false;
  }
  output(): string {
    return this.text;
  }
  ping(timeoutMs?: number): Promise<boolean> {
    return pingRedis(this.port, timeoutMs);
  }

  /** Spawns the server and waits for PING; throws with its output if it exits or stays silent. */
  async start(): Promise<void> {
    // --save '' and --appendonly no: nothing on disk, so every start is empty; --dir keeps stray files out of the repo.
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    args.push('--dir', this.dir, '--daemonize', 'no', '--loglevel', 'warning');
    const run = new Run(this.binary, args, this.dir, cleanEnv({}), (t) => (this.text += t));
    this.run = run;
    await poll(
      async () => {
        if (!run.running) throw new Error(`redis-server exited at start on port ${this.port}:\n${this.text}`);
        return pingRedis(this.port, 500);
      },
      READY_TIMEOUT_MS,
      () => `redis-server on port ${this.port} did not answer PING:\n${this.text}`,
    );
  }

  async kill(): Promise<void> {
    await this.run?.kill('SIGKILL');
  }
  async stop(): Promise<void> {
    await this.run?.kill('SIGTERM');
  }
  async restart(): Promise<void> {
    await this.kill();
    this.text += '[harness] restart\n';
    await this.start();
  }
}

/**
 * Starts Debian's redis-server on a free 127.0.0.1 port with no persistence (`--save '' --appendonly no`) and
 * waits until it answers PING. Stopped (SIGKILL) at cleanup. `options.binary` overrides the executable.
 */
export async function startRedis(cleanup: Cleanup, options: { binary?: string } = {}): Promise<RedisServer> {
  const name = options.binary ?? 'redis-server';
  const binary = findExecutable(name);
  if (!binary)
    throw new Error(
      `${name} not found (PATH=${process.env.PATH ?? ''}). The cluster tests start their own Redis: ` +
        "install Debian's package with `apt-get install -y redis-server` (or run `npm run test:setup`).",
    );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-redis-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  // The free port can be taken between the probe and redis-server's bind: try a few.
  for (let attempt = 1; ; attempt++) {
    const redis = new RedisProcess(binary, await freePort(), dir);
    cleanup.add(() => redis.kill());
    try {
      await redis.start();
      return redis;
    } catch (err) {
      await redis.kill();
      if (attempt >= 3 || !/Address already in use/i.test(redis.output())) throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Relay processes

/** Options of startRelayProcess. */
export interface RelayProcessOptions {
  /**
   * Environment on top of the runner's (GGROK_*, FLY_*, HEROKU_*, DYNO, PORT and REDIS_URL removed); undefined
   * unsets a variable. Defaults, as startRelay() in helpers: GGROK_TOKEN=TOKEN, GGROK_DOMAIN=localhost and
   * GGROK_STARTUP_GRACE_MS=0 (unknown names get their 404 at once). Flags in `args` win over all of them.
   */
  env?: Record<string, string | undefined>;
  /** The port to listen on; 0 (the default) lets the OS pick, and restarts reuse what it picked. */
  port?: number;
  /** How long to wait for the listening line (default 20 s). */
  readyTimeoutMs?: number;
}

/** A compiled `ggrok relay` running as a child process on 127.0.0.1. */
export interface RelayProcess {
  /** The port it listens on (the same after restarts). */
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** The current process id (a restart changes it). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Everything printed on stdout and stderr, across restarts (each restart adds a `[harness] restart` line). */
  output(): string;
  /** Resolves with the first match of `pattern` in the current run's output; fails if the process exits first. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` (default SIGKILL; a stopped process is continued for anything else) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM (the relay drains, then exits); resolves with the exit code. SIGKILLs and throws after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGSTOP, and waits until the kernel reports the process stopped. */
  pause(): Promise<void>;
  /** SIGCONT, and waits until the process runs again. */
  resume(): Promise<void>;
  /** Starts it again with the same port, arguments and environment, stopping it first (SIGTERM) if it runs. */
  restart(): Promise<void>;
}

/** The start-up line in each log format: `listening on <host>:<port>` (text), or the `listening` event. */
const LISTENING_PATTERNS = [
  /listening on \S+:(\d+)/,
  /"event":"listening"[^\n]*?"port":(\d+)/,
  /\bevent=listening\b[^\n]*?\bport=(\d+)/,
];

class RelayChild implements RelayProcess {
  private run: Run | undefined;
  private text = '';
  /** Where the current run's output starts in `text`. */
  private runStart = 0;
  private boundPort: number;

  constructor(
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    port: number,
    private readonly readyTimeoutMs: number,
  ) {
    this.boundPort = port;
  }

  get port(): number {
    return this.boundPort;
  }
  get url(): string {
    return `http://127.0.0.1:${this.boundPort}`;
  }
  get pid(): number | undefined {
    return this.run?.child.pid;
  }
  get running(): boolean {
    return this.run?.running ?? false;
  }
  output(): string {
    return this.text;
  }

  async waitForOutput(pattern: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<RegExpMatchArray> {
    let match: RegExpMatchArray | null = null;
    const run = this.run;
    await poll(
      () => {
        match = this.text.slice(this.runStart).match(pattern);
        if (!match && !run?.running)
          throw new Error(`relay exited before printing ${pattern}:\n${this.text.slice(this.runStart)}`);
        return match !== null;
      },
      timeoutMs,
      () => `relay did not print ${pattern} within ${timeoutMs} ms:\n${this.text.slice(this.runStart)}`,
    );
    return match!;
  }

  /** Spawns the relay on the current port and waits for its listening line. */
  async start(): Promise<void> {
    this.runStart = this.text.length;
    const argv = [BIN, 'relay', '--host', '127.0.0.1', '--port', String(this.boundPort), ...this.args];
    this.run = new Run(process.execPath, argv, ROOT, this.env, (t) => (this.text += t));
    let port = 0;
    await poll(
      () => {
        const out = this.text.slice(this.runStart);
        for (const p of LISTENING_PATTERNS) {
          const m = p.exec(out);
          if (m) port = Number(m[1]);
        }
        if (!port && !this.run?.running) throw new Error(`relay exited at start:\n${out}`);
        return port > 0;
      },
      this.readyTimeoutMs,
      () => `relay did not print its listening line:\n${this.text.slice(this.runStart)}`,
    );
    this.boundPort = port;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (signal === 'SIGSTOP' || signal === 'SIGCONT')
      throw new Error(`use pause() or resume(), not kill('${signal}')`);
    const run = this.run;
    if (!run?.running) return;
    run.child.kill(signal);
    if (signal !== 'SIGKILL') run.child.kill('SIGCONT'); // a stopped process acts on it only once continued
    await run.exited;
  }

  async stop(timeoutMs = STOP_TIMEOUT_MS): Promise<number | null> {
    const run = this.run;
    if (!run?.running) return run ? (await run.exited).code : null;
    run.child.kill('SIGTERM');
    run.child.kill('SIGCONT');
    const timer = sleep(timeoutMs).then(() => 'timeout' as const);
    const result = await Promise.race([run.exited, timer]);
    if (result === 'timeout') {
      await run.kill('SIGKILL');
      throw new Error(
        `relay did not exit within ${timeoutMs} ms of SIGTERM:\n${this.text.slice(this.runStart)}`,
      );
    }
    return result.code;
  }

  async pause(): Promise<void> {
    const run = this.requireRunning('pause');
    run.child.kill('SIGSTOP');
    await poll(
      () => run.state() === undefined || run.state() === 'T',
      5_000,
      () => 'the relay did not stop on SIGSTOP',
    );
  }

  async resume(): Promise<void> {
    const run = this.requireRunning('resume');
    run.child.kill('SIGCONT');
    await poll(
      () => run.state() !== 'T',
      5_000,
      () => 'the relay did not continue on SIGCONT',
    );
  }

  async restart(): Promise<void> {
    if (this.running) await this.stop();
    this.text += '[harness] restart\n';
    await this.start();
  }

  private requireRunning(what: string): Run {
    if (!this.run?.running) throw new Error(`cannot ${what}: the relay is not running`);
    return this.run;
  }
}

/**
 * Spawns the compiled relay (`node dist/bin/ggrok.js relay --host 127.0.0.1 --port <port> ...args`) and waits for
 * its listening line (text, json or logfmt). Whatever still runs is SIGKILLed (and reaped) at cleanup.
 */
export async function startRelayProcess(
  cleanup: Cleanup,
  args: string[] = [],
  opts: RelayProcessOptions = {},
): Promise<RelayProcess> {
  const env = cleanEnv({
    NO_COLOR: '1',
    GGROK_TOKEN: TOKEN,
    GGROK_DOMAIN: 'localhost',
    GGROK_STARTUP_GRACE_MS: '0',
    ...opts.env,
  });
  const relay = new RelayChild(args, env, opts.port ?? 0, opts.readyTimeoutMs ?? READY_TIMEOUT_MS);
  cleanup.add(() => relay.kill('SIGKILL'));
  await relay.start();
  return relay;
}

// ---------------------------------------------------------------------------------------------------------------
// Fronts

/** Tracks sockets so that a front's close() can destroy them all. */
class SocketSet {
  private readonly sockets = new Set<Socket>();
  add(socket: Socket): Socket {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    return socket;
  }
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/**
 * Joins two connected sockets byte for byte both ways (pipe: backpressure included). A half-close on one side is
 * passed on as a half-close; an error, or a close before that side ended its writing, destroys the other.
 */
function joinSockets(a: Socket, b: Socket): void {
  const destroyBoth = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', destroyBoth);
  b.on('error', destroyBoth);
  a.on('close', () => {
    if (!b.writableEnded) b.destroy();
  });
  b.on('close', () => {
    if (!a.writableEnded) a.destroy();
  });
  a.pipe(b);
  b.pipe(a);
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A random TCP load balancer in front of relay instances, as Heroku's router appears to a relay. */
export interface L4Front {
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections handed to each backend port so far. */
  readonly perBackend: ReadonlyMap<number, number>;
  /** Closes the listener and destroys every connection both sides. */
  close(): Promise<void>;
}

/**
 * Starts a TCP front: each accepted connection goes to a random port of `backends()` (read per connection); when
 * that connect fails, the others are tried in random order, and when all fail the client connection is destroyed.
 * Bytes are piped both ways with backpressure and half-closes. Closed at cleanup.
 */
export async function startL4Front(cleanup: Cleanup, backends: () => number[]): Promise<L4Front> {
  const sockets = new SocketSet();
  const perBackend = new Map<number, number>();
  let connections = 0;

  const connectAny = (client: Socket, ports: number[]): void => {
    const port = ports.shift();
    if (client.destroyed) return;
    if (port === undefined) {
      client.destroy();
      return;
    }
    const backend = sockets.add(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
    backend.setNoDelay(true);
    const abandon = (): void => void backend.destroy();
    const tryNext = (): void => {
      client.off('close', abandon);
      backend.destroy();
      connectAny(client, ports);
    };
    client.once('close', abandon);
    backend.once('error', tryNext);
    backend.setTimeout(CONNECT_TIMEOUT_MS, tryNext);
    backend.once('connect', () => {
      client.off('close', abandon);
      backend.off('error', tryNext);
      backend.setTimeout(0);
      perBackend.set(port, (perBackend.get(port) ?? 0) + 1);
      joinSockets(client, backend);
    });
  };

  // pauseOnConnect: the client's first bytes wait in the kernel until a backend is connected.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    connections++;
    sockets.add(client);
    client.setNoDelay(true);
    client.on('error', () => client.destroy());
    connectAny(client, shuffle(backends()));
  });
  const port = await listen(server);
  const close = (): Promise<void> => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    sockets.destroyAll();
    return closed;
  };
  cleanup.add(close);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    perBackend,
    close,
  };
}

/** Where the Fly front sent one request or upgrade. */
export interface FlyDelivery {
  method: string;
  url: string;
  upgrade: boolean;
  /** Machine ids tried, in order (including unreachable ones and replay targets). */
  machines: string[];
  /** The status the visitor got (101 for an accepted upgrade); undefined while it is in progress. */
  status?: number;
}

/** An HTTP front that routes like Fly's proxy: random machines, `fly-force-instance-id`, `fly-replay`. */
export interface FlyFront {
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Requests and upgrades received from visitors. */
  readonly requests: number;
  /** `fly-replay` answers acted on (the request was sent again, or failed as Fly would fail it). */
  readonly replays: number;
  /** The last 1000 deliveries, oldest first. */
  readonly deliveries: readonly FlyDelivery[];
  /** Closes the listener and destroys every connection both sides. */
  close(): Promise<void>;
}

/** A parsed `fly-replay` response header. */
interface Replay {
  instance?: string;
  preferInstance?: string;
  elsewhere: boolean;
  state?: string;
  timeoutMs?: number;
  fallback?: 'force_self' | 'prefer_self';
}

/** Parses `fly-replay: instance=<id>;timeout=2s;fallback=prefer_self` (fields Fly documents; others ignored). */
export function parseFlyReplay(value: string): Replay {
  const replay: Replay = { elsewhere: false };
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    const v = eq < 0 ? '' : part.slice(eq + 1).trim();
    if (key === 'instance') replay.instance = v;
    else if (key === 'prefer_instance') replay.preferInstance = v;
    else if (key === 'elsewhere') replay.elsewhere = v === 'true';
    else if (key === 'state') replay.state = v;
    else if (key === 'fallback' && (v === 'force_self' || v === 'prefer_self')) replay.fallback = v;
    else if (key === 'timeout') {
      const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v);
      if (m) replay.timeoutMs = Number(m[1]) * (m[2] === 'm' ? 60_000 : m[2] === 'ms' ? 1 : 1000);
    }
  }
  return replay;
}

/** One machine to try: a fallback carries the `fly-replay-failed` value Fly adds when it returns the request. */
interface Step {
  id: string;
  failed?: string;
  timeoutMs?: number;
}

/** The machines to try after `from` answered with `replay`, in order. */
function replayPlan(replay: Replay, from: string, ids: string[]): Step[] {
  const others = (...not: (string | undefined)[]): string[] => shuffle(ids.filter((id) => !not.includes(id)));
  if (replay.instance !== undefined) {
    const steps: Step[] = [{ id: replay.instance, timeoutMs: replay.timeoutMs }];
    const failed = `reason=unreachable;instance=${replay.instance}`;
    if (replay.fallback) steps.push({ id: from, failed });
    if (replay.fallback === 'prefer_self')
      steps.push(...others(from, replay.instance).map((id) => ({ id, failed })));
    return steps;
  }
  if (replay.preferInstance !== undefined)
    return [replay.preferInstance, ...others(replay.preferInstance)].map((id) => ({ id }));
  return (replay.elsewhere ? others(from) : others()).map((id) => ({ id }));
}

/** What came of sending a request or upgrade to one machine. */
type Outcome =
  { kind: 'unreachable' } | { kind: 'replay'; replay: Replay } | { kind: 'done'; status: number };

/** One visitor request or upgrade, as the routing loop sees it. */
interface Leg {
  /** Sends to the machine on `port` with `extra` raw headers appended. */
  send(port: number, extra: string[], connectTimeoutMs: number): Promise<Outcome>;
  /** Answers the visitor with the front's own error. */
  fail(status: number, reason: string): void;
}

/** Request headers Fly's proxy sets itself (a visitor's own values are dropped). */
const FRONT_SET = new Set([
  'fly-client-ip',
  'fly-replay-src',
  'fly-replay-failed',
  'x-forwarded-proto',
  'x-forwarded-port',
]);
/** Hop-by-hop request headers. Transfer-Encoding stays: Node frames the forwarded body by it. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'trailer']);
/** Headers a `Connection` token cannot remove: the request's routing and framing. */
const PROTECTED = new Set(['host', 'content-length', 'transfer-encoding']);

/** The visitor's raw headers as a machine should get them: case, order and duplicates kept, Fly's headers added. */
function forwardHeaders(req: IncomingMessage, frontPort: number, upgrade: boolean): string[] {
  const raw = req.rawHeaders;
  const named = new Set<string>();
  if (!upgrade)
    for (let i = 0; i < raw.length; i += 2)
      if (raw[i]!.toLowerCase() === 'connection')
        for (const token of raw[i + 1]!.split(',')) {
          const lower = token.trim().toLowerCase();
          if (!PROTECTED.has(lower)) named.add(lower);
        }
  const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
  const out: string[] = [];
  let forwardedFor = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (FRONT_SET.has(lower)) continue;
    if (
      upgrade
        ? lower === 'keep-alive' || lower === 'proxy-connection'
        : HOP_BY_HOP.has(lower) || named.has(lower)
    )
      continue;
    if (lower === 'x-forwarded-for' && !forwardedFor) {
      out.push(name, `${raw[i + 1]}, ${ip}`);
      forwardedFor = true;
    } else out.push(name, raw[i + 1]!);
  }
  if (!forwardedFor) out.push('X-Forwarded-For', ip);
  out.push('Fly-Client-IP', ip, 'X-Forwarded-Proto', 'http', 'X-Forwarded-Port', String(frontPort));
  return out;
}

/** Response headers for the visitor: hop-by-hop ones dropped (Node writes its own Connection). */
function responseHeaders(
  raw: string[],
  drop: readonly string[] = ['connection', 'keep-alive', 'proxy-connection'],
) {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2)
    if (!drop.includes(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

/** The `fly-replay` directive of a machine's answer, if it has one. */
function replayOf(res: IncomingMessage): Replay | undefined {
  const value = res.headers['fly-replay'];
  return typeof value === 'string' && value ? parseFlyReplay(value) : undefined;
}

/**
 * Sends one request to a machine with a connect timeout; `onConnect` runs when its TCP connection is up. The
 * caller handles 'response', 'upgrade' and 'error'.
 */
function machineRequest(
  req: IncomingMessage,
  port: number,
  headers: string[],
  connectTimeoutMs: number,
  sockets: SocketSet,
  onConnect: () => void,
): http.ClientRequest {
  const up = http.request({
    host: '127.0.0.1',
    port,
    method: req.method,
    path: req.url,
    headers, // an array: sent as they are, Host included, nothing added
    agent: false,
    timeout: connectTimeoutMs,
  });
  up.on('socket', (s) => {
    sockets.add(s);
    s.once('connect', () => {
      up.setTimeout(0);
      onConnect();
    });
  });
  up.on('timeout', () => up.destroy(new Error('connect timeout')));
  return up;
}

/** A plain HTTP request through the Fly front: its body streams to the machine and is kept (≤ 1 MiB) for replays. */
class HttpLeg implements Leg {
  private readonly copy: Buffer[] = [];
  private copied = 0;
  /** The body outgrew MAX_REPLAY_BODY_BYTES: it can no longer be sent again. */
  private overflow = false;
  private ended = false;
  /** The machine request the body streams into. */
  private current: http.ClientRequest | undefined;
  /** Set while a `fly-replay` answer waits for the body to end (or to outgrow the copy). */
  private waiting: ((complete: boolean) => void) | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly headers: string[],
    private readonly sockets: SocketSet,
  ) {
    req.on('data', (chunk: Buffer) => this.onData(chunk));
    req.on('end', () => {
      this.ended = true;
      this.current?.end();
      this.settle(true);
    });
    req.on('error', () => this.current?.destroy());
    res.on('close', () => {
      if (!res.writableFinished) {
        this.current?.destroy();
        this.settle(false);
      }
    });
  }

  private onData(chunk: Buffer): void {
    if (!this.overflow) {
      if (this.copied + chunk.length <= MAX_REPLAY_BODY_BYTES) {
        this.copy.push(chunk);
        this.copied += chunk.length;
      } else {
        this.overflow = true;
        this.copy.length = 0;
        this.settle(false);
      }
    }
    const up = this.current;
    if (!up || up.destroyed) return;
    // While a replay is being decided the machine may not read: keep reading the (bounded) body regardless.
    if (!up.write(chunk) && !this.waiting) {
      this.req.pause();
      up.once('drain', () => this.req.resume());
    }
  }

  private settle(complete: boolean): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(complete);
  }

  send(port: number, extra: string[], connectTimeoutMs: number): Promise<Outcome> {
    if (this.overflow) {
      this.fail(502, 'request body over 1 MiB cannot be sent to another machine');
      return Promise.resolve({ kind: 'done', status: 502 });
    }
    return new Promise((resolve) => {
      /** connecting -> sending -> (deciding: a fly-replay answer waits for the body) -> answered */
      let phase: 'connecting' | 'sending' | 'deciding' | 'answered' = 'connecting';
      const up = machineRequest(
        this.req,
        port,
        [...this.headers, ...extra],
        connectTimeoutMs,
        this.sockets,
        () => {
          phase = 'sending';
        },
      );
      this.current = up;
      up.on('error', (err: NodeJS.ErrnoException) => {
        // A machine that asked for a replay may close before it read the body: that is not a failure.
        if (phase === 'deciding') return;
        if (phase === 'answered') return void this.res.destroy(); // cut mid-response: the visitor must see it cut
        const wasConnecting = phase === 'connecting';
        phase = 'answered';
        if (wasConnecting && !this.overflow) return resolve({ kind: 'unreachable' });
        this.fail(502, `machine failed: ${err.code ?? err.message}`);
        resolve({ kind: 'done', status: 502 });
      });
      up.on('response', (upRes) => {
        const replay = replayOf(upRes);
        if (!replay || this.overflow) {
          phase = 'answered';
          return resolve(this.passThrough(upRes));
        }
        // Like Fly, replay only a body that was read whole and is small enough; wait for its end.
        phase = 'deciding';
        this.req.resume();
        const decide = (complete: boolean): void => {
          phase = 'answered';
          if (!complete) return resolve(this.passThrough(upRes));
          upRes.resume();
          up.destroy();
          resolve({ kind: 'replay', replay });
        };
        if (this.ended) decide(true);
        else this.waiting = decide;
      });
      for (const chunk of this.copy) up.write(chunk);
      if (this.ended) up.end();
      this.req.resume();
    });
  }

  private passThrough(upRes: IncomingMessage): Outcome {
    const { res } = this;
    const status = upRes.statusCode ?? 502;
    if (res.destroyed) {
      upRes.destroy();
      return { kind: 'done', status };
    }
    res.writeHead(status, upRes.statusMessage, responseHeaders(upRes.rawHeaders));
    upRes.on('error', () => res.destroy());
    upRes.on('close', () => {
      if (!upRes.complete) res.destroy();
    });
    upRes.pipe(res);
    return { kind: 'done', status };
  }

  fail(status: number, reason: string): void {
    const { res } = this;
    if (res.headersSent || res.destroyed) return void res.destroy();
    const body = `fly front: ${reason}\n`;
    res.writeHead(status, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
      [FRONT_ERROR_HEADER]: reason,
    });
    res.end(body);
  }
}

/** An upgrade (WebSocket) through the Fly front: the request is sent again on `fly-replay`, bytes are joined on 101. */
class UpgradeLeg implements Leg {
  constructor(
    private readonly req: IncomingMessage,
    private readonly socket: Socket,
    /** Visitor bytes that came after the request head: they go to the machine once it accepts. */
    private readonly head: Buffer,
    private readonly headers: string[],
    private readonly sockets: SocketSet,
  ) {
    socket.pause(); // later visitor bytes wait in the kernel until a machine accepts
  }

  send(port: number, extra: string[], connectTimeoutMs: number): Promise<Outcome> {
    return new Promise((resolve) => {
      let connected = false;
      let answered = false;
      const up = machineRequest(
        this.req,
        port,
        [...this.headers, ...extra],
        connectTimeoutMs,
        this.sockets,
        () => {
          connected = true;
        },
      );
      up.on('error', (err: NodeJS.ErrnoException) => {
        if (answered) return void this.socket.destroy();
        answered = true;
        if (!connected) return resolve({ kind: 'unreachable' });
        this.fail(502, `machine failed: ${err.code ?? err.message}`);
        resolve({ kind: 'done', status: 502 });
      });
      up.on('upgrade', (upRes: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
        answered = true;
        this.sockets.add(upSocket);
        upSocket.setTimeout(0);
        resolve({ kind: 'done', status: upRes.statusCode ?? 101 });
        if (this.socket.destroyed) return void upSocket.destroy();
        this.socket.write(statusLine(upRes) + headerLines(upRes.rawHeaders) + '\r\n');
        if (upHead.length > 0) this.socket.write(upHead);
        if (this.head.length > 0) upSocket.write(this.head);
        joinSockets(this.socket, upSocket);
      });
      up.on('response', (upRes) => {
        answered = true;
        const replay = replayOf(upRes);
        if (replay) {
          upRes.resume();
          up.destroy();
          return resolve({ kind: 'replay', replay });
        }
        resolve({ kind: 'done', status: upRes.statusCode ?? 502 });
        // A refused upgrade: pass the answer on and close (its body is close-delimited unless it has a length).
        const headers = responseHeaders(upRes.rawHeaders, ['connection', 'keep-alive', 'transfer-encoding']);
        this.socket.write(statusLine(upRes) + headerLines([...headers, 'Connection', 'close']) + '\r\n');
        upRes.on('error', () => this.socket.destroy());
        upRes.pipe(this.socket);
      });
      up.end();
    });
  }

  fail(status: number, reason: string): void {
    if (this.socket.destroyed) return;
    const body = `fly front: ${reason}\n`;
    const headers = ['Content-Type', 'text/plain', 'Content-Length', String(Buffer.byteLength(body))];
    headers.push(FRONT_ERROR_HEADER, reason, 'Connection', 'close');
    this.socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${headerLines(headers)}\r\n${body}`,
    );
  }
}

const statusLine = (res: IncomingMessage): string =>
  `HTTP/${res.httpVersion} ${res.statusCode ?? 502} ${res.statusMessage ?? ''}\r\n`;
const headerLines = (raw: string[]): string => {
  let text = '';
  for (let i = 0; i < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return text;
};

/**
 * Starts an HTTP front that routes like Fly's proxy, over the machines `machines()` names (id -> port, read per
 * attempt). A request goes to a random machine (others are tried if the connect fails), or with
 * `fly-force-instance-id: <id>` to exactly that one (503 if it is missing or refuses). When a machine answers with
 * `fly-replay`, the answer is discarded and the same request (method, target, raw headers, body up to 1 MiB) is sent
 * to the machine it names, with `fly-replay-src`; `timeout` and `fallback=force_self|prefer_self` (the request comes
 * back with `fly-replay-failed`) are honoured, as are `prefer_instance` and `elsewhere`. A body over 1 MiB cannot be
 * replayed: that answer is passed on as it is. Upgrades are routed and replayed the same way and joined byte for
 * byte after the 101. Machines get `Fly-Client-IP`, `X-Forwarded-For/-Proto/-Port`. Trailers and 1xx interim
 * responses are not forwarded; each attempt uses a new connection to the machine. Closed at cleanup.
 */
export async function startFlyFront(
  cleanup: Cleanup,
  machines: () => Map<string, number>,
): Promise<FlyFront> {
  const sockets = new SocketSet();
  const deliveries: FlyDelivery[] = [];
  let requests = 0;
  let replays = 0;
  let frontPort = 0;

  /** Routes one leg: the first plan, then replays, until an answer reaches the visitor. */
  const deliver = async (leg: Leg, req: IncomingMessage, upgrade: boolean): Promise<void> => {
    requests++;
    const record: FlyDelivery = { method: req.method ?? 'GET', url: req.url ?? '/', upgrade, machines: [] };
    deliveries.push(record);
    if (deliveries.length > 1000) deliveries.shift();
    const forced = req.headers['fly-force-instance-id'];
    const forcedId = typeof forced === 'string' ? forced.trim() : undefined;
    let plan: Step[] = forcedId ? [{ id: forcedId }] : shuffle([...machines().keys()]).map((id) => ({ id }));
    let source: { id: string; state?: string } | undefined;
    for (let hop = 0; ; hop++) {
      let outcome: Outcome | undefined;
      let from = '';
      for (const step of plan) {
        const port = machines().get(step.id);
        record.machines.push(step.id);
        if (port === undefined) continue;
        const extra: string[] = [];
        if (source) {
          const t = Date.now() * 1000;
          const state = source.state === undefined ? '' : `;state=${source.state}`;
          extra.push('fly-replay-src', `instance=${source.id};region=local;t=${t}${state}`);
        }
        if (step.failed) extra.push('fly-replay-failed', step.failed);
        outcome = await leg.send(port, extra, step.timeoutMs ?? CONNECT_TIMEOUT_MS);
        if (outcome.kind !== 'unreachable') {
          from = step.id;
          break;
        }
      }
      if (!outcome || outcome.kind === 'unreachable') {
        record.status = 503;
        // The first hop of a forced request, or a replay to one instance without fallback: name that machine.
        return leg.fail(
          503,
          plan.length === 1 ? `machine ${plan[0]!.id} unavailable` : 'no machine available',
        );
      }
      if (outcome.kind === 'done') {
        record.status = outcome.status;
        return;
      }
      if (hop >= MAX_REPLAYS) {
        record.status = 502;
        return leg.fail(502, 'fly-replay loop');
      }
      replays++;
      source = { id: from, state: outcome.replay.state };
      plan = replayPlan(outcome.replay, from, [...machines().keys()]);
    }
  };

  const server = http.createServer((req, res) => {
    const leg = new HttpLeg(req, res, forwardHeaders(req, frontPort, false), sockets);
    deliver(leg, req, false).catch((err: unknown) => leg.fail(500, String(err)));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.setNoDelay(true);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const leg = new UpgradeLeg(req, socket, head, forwardHeaders(req, frontPort, true), sockets);
    deliver(leg, req, true).catch((err: unknown) => leg.fail(500, String(err)));
  });
  frontPort = await listen(server);
  const close = (): Promise<void> => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    sockets.destroyAll();
    return closed;
  };
  cleanup.add(close);
  return {
    port: frontPort,
    url: `http://127.0.0.1:${frontPort}`,
    get requests() {
      return requests;
    },
    get replays() {
      return replays;
    },
    deliveries,
    close,
  };
}
