// Start-up check of a tunnel's local target: is anything listening, and does an https target's certificate verify?
import net from 'node:net';
import tls from 'node:tls';
import { describeLocalError } from './local-request.js';
import { lookupLocalhost } from './local-pool.js';
import { describeTarget, type LocalTarget } from './target.js';

/** How long the check waits for the target to accept a connection (and finish a TLS handshake). */
export const TARGET_CHECK_TIMEOUT_MS = 3000;

/** What the check found wrong; the tunnel runs anyway. */
export interface TargetProblem {
  /** Stable code, for --log-format json. */
  code: 'target_not_listening' | 'target_untrusted_certificate' | 'target_not_tls' | 'target_unreachable';
  message: string;
}

/** Certificate errors --insecure accepts (Node's codes for a self-signed, unknown-CA, expired or misnamed certificate). */
const CERT_ERRORS =
  /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_|ERR_TLS_CERT_ALTNAME_INVALID)/;

function codes(err: unknown): string[] {
  const e = err as NodeJS.ErrnoException & { errors?: unknown[] };
  if (Array.isArray(e.errors) && e.errors.length > 0) return e.errors.flatMap(codes);
  return [e.code ?? ''];
}

/**
 * Connects to the target once, the way the tunnel will (both loopback addresses for `localhost`; TLS with the same
 * certificate rule for https). Resolves with the problem to tell the user, or undefined when the target answers.
 */
export function checkTarget(
  target: LocalTarget,
  timeoutMs = TARGET_CHECK_TIMEOUT_MS,
): Promise<TargetProblem | undefined> {
  return new Promise((resolve) => {
    const where = describeTarget(target);
    const options: net.TcpNetConnectOpts = {
      host: target.host,
      port: target.port,
      lookup: lookupLocalhost,
      autoSelectFamily: true,
      autoSelectFamilyAttemptTimeout: 1000,
    };
    const secure = target.protocol === 'https:';
    const socket = secure
      ? tls.connect({
          ...options,
          servername: net.isIP(target.host) ? undefined : target.host,
          rejectUnauthorized: !target.insecure,
          ALPNProtocols: ['http/1.1'],
        })
      : net.connect(options);
    const done = (problem: TargetProblem | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(
      () =>
        done({
          code: 'target_unreachable',
          message: `${where} did not ${secure ? 'complete a TLS handshake' : 'accept a connection'} within ${timeoutMs / 1000} s; requests may fail with 502 until it does`,
        }),
      timeoutMs,
    );
    socket.once(secure ? 'secureConnect' : 'connect', () => done(undefined));
    socket.on('error', (err) => {
      const all = codes(err);
      if (all.every((c) => c === 'ECONNREFUSED'))
        return done({
          code: 'target_not_listening',
          message: `nothing is listening on ${where} yet (${describeLocalError(err, target)}). The tunnel stays up: visitors get a 502 until your server starts, then it is served at once`,
        });
      const cert = all.find((c) => CERT_ERRORS.test(c));
      if (cert)
        return done({
          code: 'target_untrusted_certificate',
          message: `${where} has a certificate this machine does not trust (${cert}); for a self-signed certificate pass --insecure (-k), or insecure: true in the config file`,
        });
      if (secure && /^(EPROTO|ERR_SSL_WRONG_VERSION_NUMBER|ECONNRESET)$/.test(all[0] ?? ''))
        return done({
          code: 'target_not_tls',
          message: `${where} did not answer TLS (${describeLocalError(err, target)}); if it is a plain http server, use http://${where.slice('https://'.length)}`,
        });
      done({
        code: 'target_unreachable',
        message: `cannot reach ${where} (${describeLocalError(err, target)})`,
      });
    });
  });
}
