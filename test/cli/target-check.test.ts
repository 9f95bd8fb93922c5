// The start-up check of a local target: listening or not, an https certificate --insecure would accept, http on https.
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { parseTarget } from '../../cli/target.js';
import { checkTarget } from '../../cli/target-check.js';
import { testCertificate } from '../dev-server-fixtures.js';
import { Cleanup } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function listening(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.add(() => new Promise((r) => server.close(r)));
  return (server.address() as AddressInfo).port;
}

describe('checkTarget', () => {
  test('a listening http server (reached as localhost) is fine', async () => {
    const port = await listening(http.createServer((_req, res) => res.end()));
    expect(await checkTarget(parseTarget(String(port)))).toBeUndefined();
  });

  test('nothing listening: says so, and that the tunnel stays up', async () => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const free = (server.address() as AddressInfo).port;
    await new Promise((r) => server.close(r));
    const problem = await checkTarget(parseTarget(String(free)));
    expect(problem?.code).toBe('target_not_listening');
    expect(problem?.message).toContain(`nothing is listening on http://localhost:${free} yet`);
    expect(problem?.message).toContain('ECONNREFUSED 127.0.0.1');
    expect(problem?.message).toContain('The tunnel stays up');
  });

  test('a self-signed https target: names --insecure, and with it the check passes', async () => {
    const port = await listening(
      https.createServer(
        testCertificate(cleanup, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']),
        (_req, res) => res.end(),
      ),
    );
    const problem = await checkTarget(parseTarget(`https://localhost:${port}`));
    expect(problem?.code).toBe('target_untrusted_certificate');
    expect(problem?.message).toMatch(/DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED/);
    expect(problem?.message).toContain('--insecure (-k)');
    expect(await checkTarget(parseTarget(`https://localhost:${port}`, true))).toBeUndefined();
  });

  test('an https:// target that speaks plain http: suggests http://', async () => {
    const port = await listening(http.createServer((_req, res) => res.end()));
    const problem = await checkTarget(parseTarget(`https://127.0.0.1:${port}`));
    expect(problem?.code).toBe('target_not_tls');
    expect(problem?.message).toContain(`use http://127.0.0.1:${port}`);
  });

  test('a server that accepts but never answers the handshake: a timeout, not a hang', async () => {
    const sockets: net.Socket[] = [];
    const port = await listening(net.createServer((s) => void sockets.push(s.on('error', () => {}))));
    cleanup.add(() => sockets.forEach((s) => s.destroy()));
    const problem = await checkTarget(parseTarget(`https://127.0.0.1:${port}`), 300);
    expect(problem?.code).toBe('target_unreachable');
    expect(problem?.message).toContain('did not complete a TLS handshake within 0.3 s');
  });
});
