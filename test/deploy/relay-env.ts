// Which environment variables `ggrok relay` reads, from its sources: deploy files must name only those.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers.js';

/** The relay's TypeScript sources (relay/ and its subfolders), concatenated. */
function relaySources(): string {
  const dir = path.join(ROOT, 'relay');
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(path.join(dir, f), 'utf8'))
    .join('\n');
}

/** Environment variables the relay reads: its option definitions (`.env('X')`) and direct `process.env.X` reads. */
export function relayEnvVars(): Set<string> {
  const source = relaySources();
  return new Set(
    [
      ...source.matchAll(/\.env\('([A-Z0-9_]+)'\)/g),
      ...source.matchAll(/process\.env(?:\.|\[')([A-Z0-9_]+)/g),
    ].map((m) => m[1]!),
  );
}

/**
 * Variables of the relay cluster (issue 14) that the deploy files set before the relay on this branch reads them.
 * TODO(issue 14): the exemption ends by itself once a relay source mentions GGROK_REDIS_URL; then delete it.
 */
const CLUSTER_ENV_PENDING = [
  'GGROK_REDIS_URL',
  'GGROK_REDIS_TLS_INSECURE',
  'GGROK_INSTANCE_ID',
  'GGROK_PEER_URL',
];

/** A predicate: does the relay read `name` (or is it a cluster variable still on its way)? */
export function relayReads(): (name: string) => boolean {
  const known = relayEnvVars();
  const pending = relaySources().includes('GGROK_REDIS_URL') ? [] : CLUSTER_ENV_PENDING;
  return (name) => known.has(name) || pending.includes(name);
}
