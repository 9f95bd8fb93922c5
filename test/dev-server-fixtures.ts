// Fixtures for tests that run real dev servers through a tunnel: throwaway projects, a certificate for a made-up
// domain (so a TLS relay stands in for a public one), and the Vite app whose module hot-updates.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Cleanup } from './helpers.js';

/** A temporary directory with these files, removed by `cleanup`. */
export function tempProject(cleanup: Cleanup, files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-devserver-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/**
 * A one-day self-signed certificate for `domain`, made with openssl; it also names `altNames` (default: `domain` and
 * `*.domain`), e.g. `['DNS:localhost', 'IP:127.0.0.1']`.
 */
export function testCertificate(
  cleanup: Cleanup,
  domain: string,
  altNames = [`DNS:${domain}`, `DNS:*.${domain}`],
): { cert: Buffer; key: Buffer } {
  const dir = tempProject(cleanup, {});
  const [key, cert] = [path.join(dir, 'key.pem'), path.join(dir, 'cert.pem')];
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  const subject = ['-subj', `/CN=${domain}`, '-addext', `subjectAltName=${altNames.join(',')}`];
  execFileSync(
    'openssl',
    ['req', '-x509', ...ec, '-nodes', '-days', '1', '-keyout', key, '-out', cert, ...subject],
    { stdio: 'ignore' },
  );
  return { cert: readFileSync(cert), key: readFileSync(key) };
}

/** A Vite app that renders msg.js's text and accepts hot updates of it (edit msg.js to 'two' to see one). */
export const VITE_HMR_APP: Record<string, string> = {
  'index.html':
    '<!doctype html><html><body><div id="app"></div><script type="module" src="/main.js"></script></body></html>\n',
  'main.js': [
    "import { text } from './msg.js';",
    "const render = (t) => { document.getElementById('app').textContent = t; };",
    'render(text);',
    "if (import.meta.hot) import.meta.hot.accept('./msg.js', (m) => m && render(m.text));",
    '',
  ].join('\n'),
  'msg.js': "export const text = 'one';\n",
};
