// What the CLI tells a person about a refusal from the relay, and whether trying again later can help.
import { ErrorCode, type ErrorCodeValue } from '../protocol/errors.js';

/** One sentence per refusal code, from the relay's own message, saying what happened and what to do. */
const REFUSAL_ADVICE: Partial<Record<ErrorCodeValue, (relayMessage: string) => string>> = {
  [ErrorCode.BadToken]: () =>
    'The relay rejected the token. Pass the token the relay printed at start-up with --token or GGROK_TOKEN.',
  [ErrorCode.NameInUse]: (m) => `${m}. Choose another --subdomain, or stop the other client using it.`,
  [ErrorCode.NameInvalid]: (m) =>
    `${m}. A subdomain is 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen.`,
  [ErrorCode.NameReserved]: (m) => `${m}. That name is reserved by the relay; choose another --subdomain.`,
  [ErrorCode.UnsupportedVersion]: (m) =>
    `${m}. Upgrade ggrok on this machine or on the relay so both speak the same protocol.`,
  [ErrorCode.RelayShuttingDown]: () => 'The relay is shutting down. Try again in a few seconds.',
  [ErrorCode.TooManyTunnels]: (m) =>
    `${m}. Close another tunnel that uses this token, or ask the relay's operator for a higher limit.`,
  [ErrorCode.AccessInvalid]: (m) => `Invalid access rule: ${m}.`,
  [ErrorCode.TooManyAttempts]: (m) => `${m}. Check the token; ggrok tries again in a few seconds.`,
  [ErrorCode.ClusterUnavailable]: (m) =>
    `${m}. The relay's operator should check its Redis; ggrok keeps trying.`,
  [ErrorCode.WrongInstance]: (m) => m,
};

/** One sentence for a person, per refusal code, saying what happened and what to do. */
export function describeRefusal(code: ErrorCodeValue, relayMessage: string): string {
  return (
    REFUSAL_ADVICE[code]?.(relayMessage) ?? (relayMessage || `The relay refused the connection (${code}).`)
  );
}

/** Refusals that may go away by themselves: the client keeps trying instead of exiting. */
const RETRYABLE_REFUSALS = new Set<ErrorCodeValue>([
  ErrorCode.RelayShuttingDown,
  ErrorCode.TooManyAttempts,
  ErrorCode.ClusterUnavailable,
  ErrorCode.WrongInstance,
]);

/** Whether retrying the same hello later could succeed. */
export function isRetryableRefusal(code: ErrorCodeValue): boolean {
  return RETRYABLE_REFUSALS.has(code);
}
