// The inspector's JSON API, declared once for the server that writes it and the page (page/app.ts) that reads it.
// Types only, no imports: the browser build type-checks against this file too.

/** One line per exchange in the list (and the data of each live `exchange` event). */
export interface ExchangeSummary {
  id: number;
  rev: number;
  tunnel: string;
  startedAt: number;
  method: string;
  target: string;
  status?: number;
  reason?: string;
  durationMs?: number;
  requestSize: number;
  responseSize: number;
  contentType?: string;
  error?: string;
  upgrade: boolean;
  replayOf?: number;
  /** A request the relay's webhook inbox kept while the client was away, being delivered now: its id. */
  inbox?: string;
  /** When the relay received that request (ms since the epoch), from X-Ggrok-Received-At. */
  receivedAt?: number;
  done: boolean;
  /** WebSocket messages seen (upgraded channels). */
  messages?: number;
  /** Server-sent events seen. */
  events?: number;
}

/** What a captured body holds, as the inspector shows it (not the wire framing, protocol BodyKind). */
export type BodyContent = 'json' | 'text' | 'binary' | 'empty';

/** A body as the API returns it. */
export interface BodyView {
  kind: BodyContent;
  /** Bytes the body had on the wire. */
  size: number;
  /** Bytes the inspector kept (the first ones). */
  captured: number;
  truncated: boolean;
  contentType?: string;
  contentEncoding?: string;
  /** The text or base64 is of the body decompressed from contentEncoding. */
  decoded?: boolean;
  /** Size after decompression. */
  decodedSize?: number;
  /** Pretty-printed JSON, or the text. */
  text?: string;
  /** The bytes of a binary body. */
  base64?: string;
  /** One line for a binary body, e.g. "PNG image 640×480, 12.1 KiB". */
  summary?: string;
}

/** What a WebSocket message is, by its opcode. */
export type WsMessageType = 'text' | 'binary' | 'close' | 'ping' | 'pong';

/** One WebSocket message. `in` flows from the public client to the local service. */
export interface WsMessageView {
  seq: number;
  direction: 'in' | 'out';
  /** When it was seen (ms since the epoch). */
  at: number;
  type: WsMessageType;
  size: number;
  truncated: boolean;
  compressed: boolean;
  note?: string;
  /** Text messages, close reasons, and ping/pong payloads that are printable. */
  text?: string;
  /** Binary messages and other ping/pong payloads. */
  base64?: string;
  closeCode?: number;
}

/** One server-sent event. */
export interface SseEventView {
  seq: number;
  /** When it was seen (ms since the epoch). */
  at: number;
  event?: string;
  id?: string;
  retry?: number;
  data: string;
  truncated: boolean;
}

/** Header fields as [name, value] pairs, raw case and order. */
export type HeaderPairs = [string, string][];

/** Everything about one exchange, bodies rendered: GET /api/exchanges/:id. */
export interface ExchangeDetails extends ExchangeSummary {
  /** The public URL of the request. */
  url: string;
  request: {
    /** As the local service got them. */
    headers: HeaderPairs;
    /** As the relay passed them on, when the client's header rules changed them. */
    publicHeaders?: HeaderPairs;
    body: BodyView;
  };
  response: { status: number; reason: string; headers: HeaderPairs; body: BodyView } | null;
  websocket?: {
    /** 'websocket' while the bytes parse as frames; 'other' for other protocols or once parsing failed. */
    protocol: 'websocket' | 'other';
    error?: string;
    deflate: boolean;
    /** Messages seen in all. */
    total: number;
    bytesIn: number;
    bytesOut: number;
    /** The last ones kept, in order. */
    messages: WsMessageView[];
  };
  sse?: { total: number; events: SseEventView[] };
}

/** GET /api/tunnels: each tunnel, where it forwards, and the relay's counters once it sent some. */
export interface TunnelView {
  name: string;
  url: string;
  target: { protocol: string; host: string; port: number };
  traffic: { requests: number; bytesIn: number; bytesOut: number; channels: number } | null;
}

/** A dev server's host-check refusal the client explained (GET /api/tunnels `hints`), shown above the list. */
export interface HintView {
  tunnel: string;
  /** The server's name for people, e.g. "Vite". */
  serverName: string;
  method: string;
  target: string;
  status: number;
  /** The public host name the server refused. */
  host: string;
  why: string;
  /** How to fix it, best first. */
  fixes: string[];
  note?: string;
}

/** POST /api/exchanges/:id/replay: changes to apply; absent fields keep the recorded value. */
export interface ReplayEdits {
  method?: string;
  target?: string;
  headers?: HeaderPairs;
  /** New body as text (UTF-8). */
  body?: string;
  /** New body as base64 (binary). */
  bodyBase64?: string;
}
