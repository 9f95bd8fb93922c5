// Prometheus metrics of one relay, in a registry of its own (several relays may share a process).
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { VERSION } from '../protocol/version.js';
import type { Tunnel, TrafficTotals } from './tunnel.js';

/** What the metrics read from the relay when scraped. */
export interface MetricsSource {
  tunnels(): Iterable<Tunnel>;
  /** Control WebSockets open, including those still in the handshake. */
  controlSockets(): number;
  /** Whether a name is live or held for its owner; per-tunnel series of other names are dropped. */
  nameKnown(name: string): boolean;
  mode: string;
  /** The relay's instance id: every series carries it, so a cluster's instances can be told apart. */
  instance: string;
  webhooks?: () => { delivered: number; failed: number; dropped: number };
  /** What the webhook inboxes hold now. */
  inbox?: () => { requests: number; bytes: number };
}

/** Seconds; from sub-millisecond local answers to long downloads. */
const DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];
/** Refusal reasons shown at 0 from the start, so dashboards and alerts see them before the first one. */
const REFUSAL_REASONS = [
  'bad_token',
  'name_in_use',
  'name_invalid',
  'name_reserved',
  'too_many_tunnels',
  'access_invalid',
  'auth_required',
  'ip_not_allowed',
  'tunnel_busy',
  'rate_limited',
  'too_many_attempts',
];

/** `2xx` for 204; a nonstandard status of 600 or more keeps its own class (`6xx` …). */
export function statusClass(status: number): string {
  return `${Math.min(9, Math.max(1, Math.floor(status / 100)))}xx`;
}

/** One tunnel name's counters across its connections (only with per-tunnel metrics). */
interface NameTotals extends TrafficTotals {
  requests: Map<string, number>;
}

/** The relay's metrics. Cheap on the data path: bytes are plain additions, read when scraped. */
export class RelayMetrics {
  readonly registry = new Registry();
  /** Body bytes through every tunnel of the relay; tunnels add to it as bytes pass. */
  readonly totals: TrafficTotals = { bytesIn: 0, bytesOut: 0 };
  private readonly names = new Map<string, NameTotals>();
  private defaultsStarted = false;
  private readonly requestCounts = new Map<string, number>();
  private readonly duration: Histogram;
  private readonly stalls: Counter<'scope'>;
  private readonly protocolErrors: Counter<'code' | 'fatal'>;
  private readonly refusals: Counter<'reason'>;
  private readonly reconnects: Counter;
  private readonly poolRetries: Counter;
  /** Requests an endpoint pool sent to another member after one failed them (also in the counter). */
  retries = 0;
  private readonly authFailures: Counter<'kind'>;

  constructor(
    private readonly source: MetricsSource,
    /** Adds ggrok_tunnel_* series labelled by tunnel name. */
    readonly perTunnel: boolean,
  ) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ instance: source.instance });
    const totals = this.totals;
    new Gauge({
      name: 'ggrok_relay_info',
      help: 'Always 1; the labels describe the relay.',
      labelNames: ['version', 'mode'],
      registers,
    }).set({ version: VERSION, mode: source.mode }, 1);
    new Gauge({
      name: 'ggrok_tunnels_connected',
      help: 'Tunnels connected now.',
      registers,
      collect() {
        this.set([...source.tunnels()].length);
      },
    });
    new Gauge({
      name: 'ggrok_control_sockets_open',
      help: 'Control WebSockets open now, including those still in the handshake.',
      registers,
      collect() {
        this.set(source.controlSockets());
      },
    });
    new Gauge({
      name: 'ggrok_streams_open',
      help: 'Public requests (kind=request) and upgraded channels (kind=channel) in progress.',
      labelNames: ['kind'],
      registers,
      collect() {
        let requests = 0;
        let channels = 0;
        for (const t of source.tunnels()) {
          requests += t.activeRequests;
          channels += t.activeChannels;
        }
        this.set({ kind: 'request' }, requests);
        this.set({ kind: 'channel' }, channels);
      },
    });
    // One control connection may carry several tunnels: each session counts once.
    const sessions = (): Set<Tunnel['session']> => new Set([...source.tunnels()].map((t) => t.session));
    new Gauge({
      name: 'ggrok_buffered_bytes',
      help: 'Body bytes received from clients and not yet taken by visitors (held for slow or stalled visitors).',
      registers,
      collect() {
        let n = 0;
        for (const s of sessions()) n += s.bufferedBytes;
        this.set(n);
      },
    });
    new Gauge({
      name: 'ggrok_receive_window_bytes',
      help: 'Receive windows, which grow on long paths: summed over connections (scope=connections), largest stream (scope=largest_stream).',
      labelNames: ['scope'],
      registers,
      collect() {
        let conns = 0;
        let largest = 0;
        for (const s of sessions()) {
          conns += s.connWindowSize;
          for (const stream of s.streams.values()) largest = Math.max(largest, stream.recvWindow.size);
        }
        this.set({ scope: 'connections' }, conns);
        this.set({ scope: 'largest_stream' }, largest);
      },
    });
    // Counted in plain numbers on the request path and handed to prom-client only when scraped.
    const requestCounts = this.requestCounts;
    for (const c of STATUS_CLASSES) requestCounts.set(c, 0);
    new Counter({
      name: 'ggrok_requests_total',
      help: 'Public requests and upgrades answered, by the class of the status the relay sent (its own pages included; 499 = the visitor left first).',
      labelNames: ['status_class'],
      registers,
      collect() {
        this.reset();
        for (const [status_class, n] of requestCounts) this.inc({ status_class }, n);
      },
    });
    new Counter({
      name: 'ggrok_bytes_total',
      help: 'Public body bytes through tunnels: in = from visitors into tunnels, out = back to visitors.',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        this.inc({ direction: 'in' }, totals.bytesIn);
        this.inc({ direction: 'out' }, totals.bytesOut);
      },
    });
    this.duration = new Histogram({
      name: 'ggrok_request_duration_seconds',
      help: 'Time from a public HTTP request arriving to its response ending (upgrades are not included).',
      buckets: DURATION_BUCKETS_S,
      registers,
    });
    this.stalls = new Counter({
      name: 'ggrok_flow_control_stalls_total',
      help: "Times the relay's writer waited for flow-control credit with data queued: a stream's window or a whole connection's.",
      labelNames: ['scope'],
      registers,
    });
    for (const scope of ['stream', 'connection']) this.stalls.inc({ scope }, 0);
    this.protocolErrors = new Counter({
      name: 'ggrok_protocol_errors_total',
      help: 'Protocol errors by clients, by code; fatal="true" when the whole control connection was closed.',
      labelNames: ['code', 'fatal'],
      registers,
    });
    this.refusals = new Counter({
      name: 'ggrok_refusals_total',
      help: 'Clients refused at the handshake and visitors refused before forwarding, by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REFUSAL_REASONS) this.refusals.inc({ reason }, 0);
    this.authFailures = new Counter({
      name: 'ggrok_auth_failures_total',
      help: "Secrets presented and rejected: client tokens, metrics/status bearer tokens, visitors' Basic credentials.",
      labelNames: ['kind'],
      registers,
    });
    for (const kind of ['client_token', 'observer_token', 'basic_auth']) this.authFailures.inc({ kind }, 0);
    this.reconnects = new Counter({
      name: 'ggrok_reconnects_total',
      help: 'Tunnels that came back under a name held for their owner, or replaced their own stale connection.',
      registers,
    });
    this.poolRetries = new Counter({
      name: 'ggrok_pool_retries_total',
      help: 'Requests an endpoint pool sent to another member after the first failed them before any answer.',
      registers,
    });
    if (source.inbox) {
      const inbox = source.inbox;
      new Gauge({
        name: 'ggrok_inbox_requests',
        help: 'Requests webhook inboxes keep now for tunnels whose clients are away (failed ones included).',
        registers,
        collect() {
          this.set(inbox().requests);
        },
      });
      new Gauge({
        name: 'ggrok_inbox_bytes',
        help: 'Bytes webhook inboxes hold now (bodies, heads, and requests still arriving); see --inbox-max-total.',
        registers,
        collect() {
          this.set(inbox().bytes);
        },
      });
    }
    if (source.webhooks) {
      const webhooks = source.webhooks;
      new Counter({
        name: 'ggrok_webhooks_total',
        help: 'Webhook deliveries by result: delivered, failed (error, timeout or non-2xx) or dropped (queue full).',
        labelNames: ['result'],
        registers,
        collect() {
          const w = webhooks();
          this.reset();
          this.inc({ result: 'delivered' }, w.delivered);
          this.inc({ result: 'failed' }, w.failed);
          this.inc({ result: 'dropped' }, w.dropped);
        },
      });
    }
    new Counter({
      name: 'ggrok_pool_member_requests_total',
      help: 'Public requests and upgrades answered by each member of an endpoint pool (while it is connected).',
      labelNames: ['tunnel', 'member'],
      registers,
      collect() {
        this.reset();
        for (const t of source.tunnels())
          if (t.pool) this.inc({ tunnel: t.name, member: t.member }, t.requests);
      },
    });
    if (perTunnel) this.registerPerTunnel();
  }

  private registerPerTunnel(): void {
    const registers = [this.registry];
    const names = this.names;
    const prune = (): void => {
      for (const name of names.keys()) if (!this.source.nameKnown(name)) names.delete(name);
    };
    new Counter({
      name: 'ggrok_tunnel_requests_total',
      help: 'Like ggrok_requests_total, per tunnel name (kept while the name is live or held).',
      labelNames: ['tunnel', 'status_class'],
      registers,
      collect() {
        prune();
        this.reset();
        for (const [tunnel, totals] of names)
          for (const [status_class, n] of totals.requests) this.inc({ tunnel, status_class }, n);
      },
    });
    new Counter({
      name: 'ggrok_tunnel_bytes_total',
      help: 'Like ggrok_bytes_total, per tunnel name (kept while the name is live or held).',
      labelNames: ['tunnel', 'direction'],
      registers,
      collect() {
        prune();
        this.reset();
        for (const [tunnel, totals] of names) {
          this.inc({ tunnel, direction: 'in' }, totals.bytesIn);
          this.inc({ tunnel, direction: 'out' }, totals.bytesOut);
        }
      },
    });
  }

  /** Wires a new tunnel's byte counts into the relay's totals (and its name's). */
  attach(tunnel: Tunnel): void {
    tunnel.sinks.push(this.totals);
    if (this.perTunnel) tunnel.sinks.push(this.nameTotals(tunnel.name));
  }

  private nameTotals(name: string): NameTotals {
    let totals = this.names.get(name);
    if (!totals) this.names.set(name, (totals = { bytesIn: 0, bytesOut: 0, requests: new Map() }));
    return totals;
  }

  /** One public request or upgrade answered; `seconds` only for plain HTTP requests. */
  requestDone(status: number, seconds: number | undefined, tunnel: Tunnel | undefined): void {
    const status_class = statusClass(status);
    this.requestCounts.set(status_class, (this.requestCounts.get(status_class) ?? 0) + 1);
    if (seconds !== undefined) this.duration.observe(seconds);
    if (tunnel && this.perTunnel) {
      const counts = this.nameTotals(tunnel.name).requests;
      counts.set(status_class, (counts.get(status_class) ?? 0) + 1);
    }
  }

  flowStall(scope: 'stream' | 'connection'): void {
    this.stalls.inc({ scope });
  }

  protocolError(code: string, fatal: boolean): void {
    this.protocolErrors.inc({ code, fatal: String(fatal) });
  }

  refused(reason: string): void {
    this.refusals.inc({ reason });
  }

  authFailed(kind: string): void {
    this.authFailures.inc({ kind });
  }

  reconnected(): void {
    this.reconnects.inc();
  }

  poolRetried(): void {
    this.retries++;
    this.poolRetries.inc();
  }

  /** The text exposition. Process metrics start with the first scrape, so relays nobody scrapes pay nothing. */
  async render(): Promise<{ contentType: string; body: string }> {
    if (!this.defaultsStarted) {
      this.defaultsStarted = true;
      collectDefaultMetrics({ register: this.registry });
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
