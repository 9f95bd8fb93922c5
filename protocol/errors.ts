// The one catalogue of error codes (wire refusals and resets, relay pages, client failures) and close codes.

/**
 * Every error code ggrok uses, declared once. Codes travel on the wire (Refuse, Reset), in the relay's own pages
 * (`X-Ggrok-Error`), in logs and metrics, and as the `code` of the errors the CLI and `connect()` raise. Tests and
 * callers match on codes, never on messages.
 */
export const ErrorCode = {
  // Handshake refusals (Refuse frames); the CLI explains each.
  BadToken: 'bad_token',
  NameInUse: 'name_in_use',
  NameInvalid: 'name_invalid',
  NameReserved: 'name_reserved',
  UnsupportedVersion: 'unsupported_version',
  ProtocolError: 'protocol_error',
  RelayShuttingDown: 'relay_shutting_down',
  /** The token already has as many tunnels open as the relay allows. */
  TooManyTunnels: 'too_many_tunnels',
  /** The access rules in the hello are malformed (bad CIDR, credentials without a password). */
  AccessInvalid: 'access_invalid',
  /** Too many wrong secrets came from this address lately; it may try again after a few seconds. */
  TooManyAttempts: 'too_many_attempts',
  /** A cluster-aware client reached an instance it holds a socket to already (it dials again for another). */
  WrongInstance: 'wrong_instance',
  /** The relay cannot check names right now (its cluster store, Redis, is not answering). */
  ClusterUnavailable: 'cluster_unavailable',
  /** GoAway: another process of the same owner took the name over; this one must stop. */
  Superseded: 'superseded',
  /** GoAway from a client: this endpoint pool member is leaving; send it nothing new, its requests in flight finish. */
  ClientLeaving: 'client_leaving',

  // Stream resets (Reset frames).
  /** The other end lost interest (public client went away, response no longer needed). */
  Cancel: 'cancel',
  /** The client could not connect to the local service. */
  LocalUnreachable: 'local_unreachable',
  /** The local service failed or closed mid-exchange. */
  LocalError: 'local_error',
  /** Too many concurrent streams. */
  RefusedStream: 'refused_stream',
  /** The control connection closed under the stream. */
  TunnelClosed: 'tunnel_closed',
  Internal: 'internal_error',
  /** No data moved either way for the idle timeout. */
  IdleTimeout: 'idle_timeout',

  // The relay's own pages to visitors.
  TunnelNotFound: 'tunnel_not_found',
  TunnelOffline: 'tunnel_offline',
  TunnelBusy: 'tunnel_busy',
  RateLimited: 'rate_limited',
  AuthRequired: 'auth_required',
  IpNotAllowed: 'ip_not_allowed',
  HeadersTooLarge: 'headers_too_large',
  BadRequest: 'bad_request',
  NotFound: 'not_found',
  UpgradeRequired: 'upgrade_required',
  Unauthorized: 'unauthorized',
  MetricsFailed: 'metrics_failed',
  /** The tunnel's webhook inbox (or the relay's) holds all it may: the request was not kept. */
  InboxFull: 'inbox_full',
  /** A request for a webhook inbox whose body is over the relay's cap: not kept. */
  PayloadTooLarge: 'payload_too_large',
  /** `ggrok inbox replay|drop`: no kept request has that id (delivered, dropped or expired). */
  InboxNotFound: 'inbox_not_found',

  // The client's own failures (CLI exit messages, connect() rejections).
  RelayUnreachable: 'relay_unreachable',
  RelayUnavailable: 'relay_unavailable',
  RelayTls: 'relay_tls',
  NotARelay: 'not_a_relay',
  Disconnected: 'disconnected',
  /** The relay closed the control socket for good (a close the client does not retry). */
  RelayClosed: 'relay_closed',
  NoToken: 'no_token',
  BadConfig: 'bad_config',
  BadTarget: 'bad_target',
  BadServerUrl: 'bad_server_url',
  InspectorPortInUse: 'inspector_port_in_use',
  InspectorListen: 'inspector_listen',
  /** The inspector page's built files are missing (a broken install or build). */
  InspectorAssets: 'inspector_assets',
  /** A code from a newer peer that this version does not know; the message keeps the peer's code. */
  Unknown: 'unknown_error',
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

/** Whether a string from the network is a code this version knows. */
export function isErrorCode(code: string): code is ErrorCodeValue {
  return KNOWN_CODES.has(code);
}

/** Base error with a stable machine-readable `code`; tests and callers match on the code, never the text. */
export class GgrokError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GgrokError';
    this.code = code;
  }

  /** An error named by a peer (Refuse, Reset): an unknown code becomes `unknown_error`, the peer's code kept in the text. */
  static fromWire(code: string, message: string): GgrokError {
    if (isErrorCode(code)) return new GgrokError(code, message);
    return new GgrokError(ErrorCode.Unknown, `${code}${message ? `: ${message}` : ''}`);
  }
}

/** Reasons a relay refuses a client's hello (the subset of ErrorCode a Refuse frame carries). */
export const RefuseCode = {
  BadToken: ErrorCode.BadToken,
  NameInUse: ErrorCode.NameInUse,
  NameInvalid: ErrorCode.NameInvalid,
  NameReserved: ErrorCode.NameReserved,
  UnsupportedVersion: ErrorCode.UnsupportedVersion,
  ProtocolError: ErrorCode.ProtocolError,
  RelayShuttingDown: ErrorCode.RelayShuttingDown,
  TooManyTunnels: ErrorCode.TooManyTunnels,
  AccessInvalid: ErrorCode.AccessInvalid,
  TooManyAttempts: ErrorCode.TooManyAttempts,
  WrongInstance: ErrorCode.WrongInstance,
  ClusterUnavailable: ErrorCode.ClusterUnavailable,
} as const;
export type RefuseCodeValue = (typeof RefuseCode)[keyof typeof RefuseCode];

/** Reasons a stream is reset (the subset of ErrorCode a Reset frame carries). */
export const ResetCode = {
  Cancel: ErrorCode.Cancel,
  LocalUnreachable: ErrorCode.LocalUnreachable,
  LocalError: ErrorCode.LocalError,
  ProtocolError: ErrorCode.ProtocolError,
  RefusedStream: ErrorCode.RefusedStream,
  TunnelClosed: ErrorCode.TunnelClosed,
  Internal: ErrorCode.Internal,
  IdleTimeout: ErrorCode.IdleTimeout,
} as const;
export type ResetCodeValue = (typeof ResetCode)[keyof typeof ResetCode];

/**
 * The HTTP status a visitor gets for each code the relay can answer with (its pages, and resets before the response
 * head). Codes a visitor never sees have none.
 */
export const HTTP_STATUS: Partial<Record<ErrorCodeValue, number>> = {
  [ErrorCode.LocalUnreachable]: 502,
  [ErrorCode.LocalError]: 502,
  [ErrorCode.ProtocolError]: 502,
  [ErrorCode.TunnelClosed]: 502,
  [ErrorCode.Internal]: 502,
  [ErrorCode.Cancel]: 502,
  [ErrorCode.Unknown]: 502,
  [ErrorCode.RefusedStream]: 503,
  [ErrorCode.IdleTimeout]: 504,
  [ErrorCode.TunnelNotFound]: 404,
  [ErrorCode.TunnelOffline]: 503,
  [ErrorCode.TunnelBusy]: 503,
  [ErrorCode.RateLimited]: 429,
  [ErrorCode.TooManyAttempts]: 429,
  [ErrorCode.AuthRequired]: 401,
  [ErrorCode.Unauthorized]: 401,
  [ErrorCode.IpNotAllowed]: 403,
  [ErrorCode.HeadersTooLarge]: 431,
  [ErrorCode.BadRequest]: 400,
  [ErrorCode.NotFound]: 404,
  [ErrorCode.UpgradeRequired]: 426,
  [ErrorCode.MetricsFailed]: 500,
  [ErrorCode.ClusterUnavailable]: 503,
};

/** HTTP status the relay answers a public client with when a stream fails before its response head. */
export function statusForReset(code: ErrorCodeValue): number {
  return HTTP_STATUS[code] ?? 502;
}

/** WebSocket close codes used on the control socket (4000–4999 is the application range). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 4000,
  Refused: 4001,
  HeartbeatTimeout: 4002,
  HandshakeTimeout: 4003,
  Replaced: 4004,
  /** The peer let more unsent control data pile up than MAX_CONTROL_BACKLOG_BYTES: it stopped reading. */
  Overloaded: 4005,
} as const;
