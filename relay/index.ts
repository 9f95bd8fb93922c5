// Programmatic entry for running a relay in-process (tests, embedding): createRelay(options).listen(port).
export { VERSION as RELAY_VERSION } from '../protocol/version.js';
export type { RelayEvent } from './log.js';
export { flowProblem, RELAY_DEFAULTS, type RelayOptions } from './options.js';
export { createRelay, Relay, type RelayCounts, type StreamView, type TunnelView } from './relay.js';
export { generateToken } from './tokens.js';
