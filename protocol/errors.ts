// Error codes shared by relay and client, and their translation to HTTP statuses and WebSocket close codes.

/** Base error with a stable machine-readable `code`; tests and callers match on the code, never the text. */
export class GgrokError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GgrokError';
    this.code = code;
  }
}

/** Reasons a relay refuses a client's hello. The CLI turns each into a message and a non-zero exit. */
export const RefuseCode = {
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
  /** Too many wrong tokens came from this address lately; it may try again after a few seconds. */
  TooManyAttempts: 'too_many_attempts',
} as const;
export type RefuseCodeValue = (typeof RefuseCode)[keyof typeof RefuseCode];

/** Reasons a stream is reset. */
export const ResetCode = {
  /** The other end lost interest (public client went away, response no longer needed). */
  Cancel: 'cancel',
  /** The client could not connect to the local service. */
  LocalUnreachable: 'local_unreachable',
  /** The local service failed or closed mid-exchange. */
  LocalError: 'local_error',
  /** The stream broke the protocol (bad frame order, window overrun, …). */
  ProtocolError: 'protocol_error',
  /** Too many concurrent streams. */
  RefusedStream: 'refused_stream',
  /** The control connection closed under the stream. */
  TunnelClosed: 'tunnel_closed',
  Internal: 'internal_error',
  /** No data moved either way for the idle timeout. */
  IdleTimeout: 'idle_timeout',
} as const;
export type ResetCodeValue = (typeof ResetCode)[keyof typeof ResetCode];

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

/** HTTP status the relay answers a public client with when a stream fails before its response head. */
export function statusForReset(code: string): number {
  switch (code) {
    case ResetCode.LocalUnreachable:
    case ResetCode.LocalError:
    case ResetCode.ProtocolError:
    case ResetCode.TunnelClosed:
    case ResetCode.Internal:
      return 502;
    case ResetCode.RefusedStream:
      return 503;
    case ResetCode.IdleTimeout:
      return 504;
    default:
      return 502;
  }
}

/** One sentence for a person, per refusal code, saying what happened and what to do. */
export function describeRefusal(code: string, relayMessage: string): string {
  switch (code) {
    case RefuseCode.BadToken:
      return 'The relay rejected the token. Pass the token the relay printed at start-up with --token or GGROK_TOKEN.';
    case RefuseCode.NameInUse:
      return `${relayMessage}. Choose another --subdomain, or stop the other client using it.`;
    case RefuseCode.NameInvalid:
      return `${relayMessage}. A subdomain is 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen.`;
    case RefuseCode.NameReserved:
      return `${relayMessage}. That name is reserved by the relay; choose another --subdomain.`;
    case RefuseCode.UnsupportedVersion:
      return `${relayMessage}. Upgrade ggrok on this machine or on the relay so both speak the same protocol.`;
    case RefuseCode.RelayShuttingDown:
      return 'The relay is shutting down. Try again in a few seconds.';
    case RefuseCode.TooManyTunnels:
      return `${relayMessage}. Close another tunnel that uses this token, or ask the relay's operator for a higher limit.`;
    case RefuseCode.AccessInvalid:
      return `Invalid access rule: ${relayMessage}.`;
    case RefuseCode.TooManyAttempts:
      return `${relayMessage}. Check the token; ggrok tries again in a few seconds.`;
    default:
      return relayMessage || `The relay refused the connection (${code}).`;
  }
}

/** Whether retrying the same hello later could succeed. */
export function isRetryableRefusal(code: string): boolean {
  return code === RefuseCode.RelayShuttingDown || code === RefuseCode.TooManyAttempts;
}
