// Programmatic entry for running a relay in-process (tests, embedding): createRelay(options).listen(port).
export {
  createRelay,
  generateToken,
  Relay,
  RELAY_VERSION,
  type RelayEvent,
  type RelayOptions,
} from './relay.js';
