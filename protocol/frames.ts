// The one catalogue of ggrok frames: every message on the control WebSocket is one of these.

/** Wire protocol version carried in Hello; bump on any incompatible change. v2: Batch messages. */
export const PROTOCOL_VERSION = 2;

/** Numeric frame type, the first element of every encoded frame. Values are frozen by golden vectors. */
export const FrameType = {
  Hello: 1,
  Welcome: 2,
  Refuse: 3,
  Ping: 4,
  Pong: 5,
  GoAway: 6,
  Request: 10,
  Response: 11,
  Info: 12,
  Data: 13,
  End: 14,
  Reset: 15,
  Window: 16,
  Stats: 17,
  /**
   * Not a frame but a container: one message carrying several small frames sent in the same turn of the
   * event loop, as [18, bin(frame), bin(frame), …] (see codec.ts encodeBatch). Batches do not nest.
   */
  Batch: 18,
  /** Relay -> client (only to clients whose Hello had `attach`): the cluster's live instances changed. */
  Members: 19,
  /** Relay -> client (only for tunnels asked for with `pool`): this member's id and the pool's size now. */
  Pool: 20,
  /** Client -> relay (only for pool tunnels): the result of the client's own health check of its local service. */
  Health: 21,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Flat header list as in Node's rawHeaders: [name0, value0, name1, value1, …], case and order kept. */
export type HeaderList = string[];

/** How a request body is framed on the way to the local server. */
export const BodyKind = {
  None: 0,
  Length: 1,
  Chunked: 2,
} as const;
export type BodyKindValue = (typeof BodyKind)[keyof typeof BodyKind];

/** Receive-side limits a peer announces; the other side must stay within them. */
export interface FlowSettings {
  /** Initial credit per stream, in bytes. */
  streamWindow: number;
  /** Initial credit for the whole connection, in bytes. */
  connWindow: number;
  /** Largest Data payload the peer accepts, in bytes. */
  maxData: number;
}

/** Who may reach a tunnel, chosen by its client and enforced by the relay before anything is forwarded. */
export interface AccessRules {
  /** "user:password" pairs; when any is set, visitors must send matching Basic credentials (consumed by the relay). */
  basicAuth: string[];
  /** Addresses or CIDR ranges (IPv4 or IPv6); when any is set, other visitors get 403. */
  allowIp: string[];
  /** Let OPTIONS requests (CORS preflights) through without Basic credentials. */
  optionsWithoutAuth: boolean;
}

/** Client -> relay, first frame: who I am and what I want. */
export interface HelloFrame {
  type: typeof FrameType.Hello;
  version: number;
  token: string;
  /** Requested subdomain; empty for "pick one for me". */
  name: string;
  /** Free-form client identification, e.g. "ggrok/0.1.0 node/20". */
  agent: string;
  /** Random id of this client process, stable across its reconnects: a reconnect may replace its own stale tunnel. */
  clientId: string;
  flow: FlowSettings;
  /** Visitor restrictions; absent means open to everyone. Omitted from the wire when absent. */
  access?: AccessRules;
  /** Further tunnels on the same connection (tunnel 1, 2, …; the fields above are tunnel 0). Omitted when empty. */
  more?: TunnelRequest[];
  /**
   * Webhook inbox of tunnel 0: path patterns ("/*" = every path) whose requests the relay keeps while this client is
   * away and delivers when it is back. Omitted when off.
   */
  inbox?: string[];
  /**
   * Present when the client keeps one control socket per relay instance (a cluster): it is refused
   * `wrong_instance` by an instance in `avoid` (those it is attached to already) and receives Members frames.
   */
  attach?: AttachRequest;
  /** Tunnel 0 joins (or starts) the endpoint pool of its name; omitted when false. */
  pool?: boolean;
  /** The client machine's host name, shown to operators for pool members; omitted when absent. */
  host?: string;
}

/** A cluster-aware client's wish for this control socket. */
export interface AttachRequest {
  /** Ids of the instances this client already holds a socket to. */
  avoid: string[];
}

/** One relay instance of a cluster, as a client may dial it. */
export interface MemberRef {
  id: string;
  /** A URL that reaches this instance directly, when the operator configured one. */
  url?: string;
  /** Its Fly machine id: dial the relay's own URL with `fly-force-instance-id` set to it. */
  fly?: string;
}

/** One additional tunnel asked for in a Hello. */
export interface TunnelRequest {
  name: string;
  access?: AccessRules;
  /** Join (or start) the endpoint pool of this name; omitted when false. */
  pool?: boolean;
  /** Webhook inbox path patterns, as HelloFrame.inbox. */
  inbox?: string[];
}

/** What the relay kept for one tunnel while its client was away (in Welcome). */
export interface InboxNotice {
  /** The tunnel's index on the connection. */
  tunnel: number;
  /** Requests kept and about to be delivered. */
  kept: number;
  /** Requests refused since the last notice because the inbox was full (503). */
  refused: number;
  /** Requests whose delivery failed every attempt (kept, not retried on their own). */
  failed: number;
}

/** Relay -> client: the tunnel is up. */
export interface WelcomeFrame {
  type: typeof FrameType.Welcome;
  name: string;
  url: string;
  flow: FlowSettings;
  heartbeatMs: number;
  maxStreams: number;
  /** Names and URLs of the further tunnels, in the order asked for. Omitted when empty. */
  more?: { name: string; url: string }[];
  /** The id of the relay instance that answered (a cluster member, or a relay alone). Omitted by older relays. */
  instance?: string;
  /** The cluster's live instances, this one included; absent for a relay alone. */
  members?: MemberRef[];
  /** Tunnels whose webhook inbox holds or refused requests while the client was away. Omitted when none. */
  inbox?: InboxNotice[];
}

/** Relay -> client: the cluster's live instances now (sent when they change). */
export interface MembersFrame {
  type: typeof FrameType.Members;
  members: MemberRef[];
}

/**
 * Relay -> client: one of the connection's pool tunnels, its member id and how many members its pool has (on
 * joining, and whenever the count changes).
 */
export interface PoolFrame {
  type: typeof FrameType.Pool;
  /** Which of the connection's tunnels (0 = the first). */
  tunnel: number;
  /** This member's id in the pool (unique among the name's members). */
  member: string;
  /** Members serving the name now, this one included. */
  size: number;
}

/** Client -> relay: the client's own check of a pool tunnel's local service (--health-path) passed or failed. */
export interface HealthFrame {
  type: typeof FrameType.Health;
  tunnel: number;
  ok: boolean;
  /** Why it failed, for operators (empty when ok). */
  detail: string;
}

/** Relay -> client: the hello was refused; the socket closes after it. */
export interface RefuseFrame {
  type: typeof FrameType.Refuse;
  code: string;
  message: string;
}

export interface PingFrame {
  type: typeof FrameType.Ping;
  nonce: number;
}

export interface PongFrame {
  type: typeof FrameType.Pong;
  nonce: number;
}

/** Either side: I am going away, finish what you have and reconnect after the delay. */
export interface GoAwayFrame {
  type: typeof FrameType.GoAway;
  code: string;
  message: string;
  reconnectAfterMs: number;
}

/** Relay -> client: a public request (or upgrade) opens stream `id`. */
export interface RequestFrame {
  type: typeof FrameType.Request;
  id: number;
  method: string;
  /** Raw request target exactly as received (path and query, byte-exact). */
  target: string;
  headers: HeaderList;
  body: BodyKindValue;
  /** True when this is a protocol upgrade (e.g. WebSocket); the stream becomes a raw byte channel after 101. */
  upgrade: boolean;
  /** Which of the connection's tunnels the request is for (0 = the first; omitted on the wire when 0). */
  tunnel: number;
}

/** Client -> relay: the final response head for stream `id`. */
export interface ResponseFrame {
  type: typeof FrameType.Response;
  id: number;
  status: number;
  reason: string;
  headers: HeaderList;
  /**
   * The start of the body, carried in the same frame when it was already at hand (a small response in one
   * read): exactly as if a Data frame with these bytes followed, flow control included. Absent on the wire
   * when there is none.
   */
  body?: Buffer;
  /** The response also ends here (End with no trailers), after `body`. */
  end?: boolean;
}

/** Client -> relay: an informational (1xx, not 101) response for stream `id`. */
export interface InfoFrame {
  type: typeof FrameType.Info;
  id: number;
  status: number;
  reason: string;
  headers: HeaderList;
}

/** Either direction: body bytes (or raw channel bytes after an upgrade). */
export interface DataFrame {
  type: typeof FrameType.Data;
  id: number;
  data: Buffer;
}

/** Either direction: no more data from this side; optional trailers. */
export interface EndFrame {
  type: typeof FrameType.End;
  id: number;
  trailers: HeaderList;
}

/** Either direction: abandon the stream with a reason code. */
export interface ResetFrame {
  type: typeof FrameType.Reset;
  id: number;
  code: string;
  message: string;
}

/** Either direction: grant more send credit. id 0 is the whole connection. */
export interface WindowFrame {
  type: typeof FrameType.Window;
  id: number;
  increment: number;
}

/**
 * Relay -> client: traffic counters of one of the connection's tunnels since it connected, so the owner sees
 * what the relay sees. Sent at most every few seconds, and only when something changed; never to the relay.
 */
export interface StatsFrame {
  type: typeof FrameType.Stats;
  /** Public requests and upgrades answered, whatever the status (relay refusals included). */
  requests: number;
  /** Body bytes from visitors into the tunnel (request bodies, channel bytes towards the local service). */
  bytesIn: number;
  /** Body bytes from the tunnel back to visitors (response bodies, channel bytes from the local service). */
  bytesOut: number;
  /** Upgraded channels (WebSockets) open right now. */
  channels: number;
  /** When a request or body byte last moved (ms since the epoch, relay clock); 0 before any. */
  lastActivityMs: number;
  /** Which of the connection's tunnels the counters are for (0 = the first). */
  tunnel: number;
  /**
   * Public requests and upgrades the relay turned away for the tunnel's limits (rate, concurrency, fair share),
   * so the owner learns why visitors see 429/503. Absent from relays before 0.1.1: read as 0.
   */
  refused: number;
}

export type Frame =
  | HelloFrame
  | WelcomeFrame
  | RefuseFrame
  | PingFrame
  | PongFrame
  | GoAwayFrame
  | RequestFrame
  | ResponseFrame
  | InfoFrame
  | DataFrame
  | EndFrame
  | ResetFrame
  | WindowFrame
  | StatsFrame
  | MembersFrame
  | PoolFrame
  | HealthFrame;

/** Frames that belong to one stream. */
export type StreamFrame = RequestFrame | ResponseFrame | InfoFrame | DataFrame | EndFrame | ResetFrame;

/** Limits of the wire format itself (any peer, any version 1 session). */
export const WIRE_LIMITS = {
  /** Largest encoded message either side accepts (ws maxPayload). */
  MAX_MESSAGE_BYTES: 256 * 1024,
  /** Largest Data payload a peer may announce. */
  MAX_DATA_BYTES: 128 * 1024,
  /** Smallest Data payload a peer may announce. */
  MIN_DATA_BYTES: 1024,
  /** Total bytes of names and values in one header list. */
  MAX_HEADER_LIST_BYTES: 128 * 1024,
  /** Entries (name + value counts as 2) in one header list: Node's default maxHeadersCount (2000) plus room for X-Forwarded-*. */
  MAX_HEADER_LIST_ENTRIES: 2 * 2010,
  MAX_TARGET_BYTES: 64 * 1024,
  /** Characters of a reason phrase. */
  MAX_REASON_CHARS: 1024,
  MAX_STRING_BYTES: 4096,
  /** Entries in each list of access rules. */
  MAX_ACCESS_RULES: 100,
  /** Tunnels one control connection may carry. */
  MAX_TUNNELS_PER_CONNECTION: 32,
  /** Instances in a members list (and in a Hello's avoid list). */
  MAX_MEMBERS: 64,
  /** Characters of an instance id (and of a pool member id). */
  MAX_INSTANCE_ID_CHARS: 128,
  /** Characters of a client's host name in a Hello. */
  MAX_HOST_NAME_CHARS: 255,
  /** Path patterns in one tunnel's webhook inbox. */
  MAX_INBOX_PATTERNS: 32,
  /** Characters of one inbox path pattern. */
  MAX_INBOX_PATTERN_CHARS: 512,
  MAX_STREAM_ID: 0xffff_ffff,
  /** Largest window (and window increment) either side may use: 2^31 - 1 as in HTTP/2. */
  MAX_WINDOW_BYTES: 0x7fff_ffff,
} as const;

/** A webhook inbox path pattern as the wire allows it: an absolute path, printable ASCII, within its length. */
export function isInboxPattern(p: string): boolean {
  return p.length <= WIRE_LIMITS.MAX_INBOX_PATTERN_CHARS && /^\/[!-~]*$/.test(p);
}

/** Default flow-control settings announced by both the relay and the client. */
export const DEFAULT_FLOW: FlowSettings = {
  streamWindow: 1024 * 1024,
  connWindow: 16 * 1024 * 1024,
  maxData: 128 * 1024,
};
