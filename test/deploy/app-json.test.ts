// The Heroku button: app.json says what the relay reads, and package.json gives Heroku's Node buildpack what it needs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { Cleanup, rawRequest, ROOT, startRelay } from '../helpers.js';
import { relayEnvVars, relayReads } from './relay-env.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface AppEnvVar {
  description?: string;
  value?: string;
  required?: boolean;
  generator?: string;
}
interface AppJson {
  name?: unknown;
  description?: unknown;
  repository?: unknown;
  keywords?: unknown;
  success_url?: unknown;
  env?: Record<string, AppEnvVar>;
  buildpacks?: { url?: string }[];
  addons?: (string | { plan?: string; as?: string })[];
  formation?: Record<string, { quantity?: number; size?: string }>;
}
interface PackageJson {
  engines?: { node?: string };
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

const readJson = <T>(file: string): T => JSON.parse(readFileSync(path.join(ROOT, file), 'utf8')) as T;
const app = readJson<AppJson>('app.json');
const pkg = readJson<PackageJson>('package.json');

const addonPlans = (): string[] =>
  (app.addons ?? []).map((a) => (typeof a === 'string' ? a : (a.plan ?? '')));

describe('app.json', () => {
  test('describes the app for the button page', () => {
    expect(typeof app.name).toBe('string');
    // Heroku limits the template name to 30 characters.
    expect((app.name as string).length).toBeGreaterThan(0);
    expect((app.name as string).length).toBeLessThanOrEqual(30);
    expect(typeof app.description).toBe('string');
    expect((app.description as string).length).toBeGreaterThan(20);
    expect(app.repository).toMatch(/^https:\/\/github\.com\/[^/]+\/[^/]+$/);
    expect(Array.isArray(app.keywords)).toBe(true);
    expect((app.keywords as unknown[]).length).toBeGreaterThan(0);
    for (const k of app.keywords as unknown[]) expect(typeof k).toBe('string');
  });

  test('generates the client token and leaves the domain optional', () => {
    const env = app.env ?? {};
    expect(env.GGROK_TOKEN?.generator).toBe('secret');
    expect(env.GGROK_TOKEN?.value).toBeUndefined(); // the generator fills it; a fixed value would be shared by every deploy
    expect(env.GGROK_TOKEN?.description?.length).toBeGreaterThan(10);
    expect(env.GGROK_DOMAIN?.required).toBe(false);
    expect(env.GGROK_DOMAIN?.value ?? '').toBe(''); // empty means own-host mode at <app>.herokuapp.com
    expect(env.GGROK_DOMAIN?.description).toMatch(/wildcard/i);
    expect(env.GGROK_LOG_FORMAT?.required).toBe(false);
    expect(['text', 'json', undefined]).toContain(env.GGROK_LOG_FORMAT?.value);
  });

  test('names only variables the relay reads', () => {
    const known = relayEnvVars();
    expect(known).toContain('GGROK_TOKEN'); // the scan itself works
    expect(known).toContain('PORT');
    const reads = relayReads();
    expect(reads('GGROK_TOKENS')).toBe(false);
    for (const name of Object.keys(app.env ?? {})) expect([name, reads(name)]).toEqual([name, true]);
  });

  test('adds the Key-Value Store, whose REDIS_URL lets several dynos share names, and accepts its certificate', () => {
    const plans = addonPlans();
    const kvs = plans.filter((p) => /^heroku-redis:/.test(p));
    expect(kvs).toHaveLength(1);
    // Attached as REDIS, it sets REDIS_URL: the variable the relay reads when GGROK_REDIS_URL is unset.
    const addon = (app.addons ?? []).find((a) => typeof a !== 'string' && a.plan === kvs[0]);
    expect(typeof addon === 'object' ? (addon.as ?? 'REDIS') : 'REDIS').toBe('REDIS');
    const env = app.env ?? {};
    expect(env.REDIS_URL).toBeUndefined(); // the add-on sets it; a value here would point every deploy at one Redis
    expect(env.GGROK_REDIS_URL).toBeUndefined();
    // The store's rediss:// certificate is self-signed: without this the relay would refuse to connect.
    expect(env.GGROK_REDIS_TLS_INSECURE).toMatchObject({ value: 'true', required: false });
    expect(env.GGROK_REDIS_TLS_INSECURE?.description).toMatch(/self-signed/);
    // deploy/README.md tells the same story: the same plan, and how to scale out.
    const readme = readFileSync(path.join(ROOT, 'deploy', 'README.md'), 'utf8');
    expect(readme).toContain(kvs[0]);
    expect(readme).toContain('heroku features:enable preboot');
    expect(readme).toMatch(/heroku ps:scale web=2/);
  });

  test('builds with the Node buildpack and starts one web dyno that never sleeps', () => {
    expect(app.buildpacks?.map((b) => b.url)).toContain('heroku/nodejs');
    // One basic dyno to start with (basic runs one dyno per process type); more take standard dynos and Redis,
    // which deploy/README.md walks through. Eco dynos sleep and drop every tunnel.
    expect(app.formation?.web?.quantity).toBe(1);
    expect(['basic', 'standard-1x', 'standard-2x']).toContain(app.formation?.web?.size);
  });

  test('success_url is the relay health endpoint, and an own-host relay answers it', async () => {
    expect(app.success_url).toBe('/_ggrok/health');
    const relay = await startRelay(cleanup, { domain: undefined });
    const res = await rawRequest({
      port: relay.port,
      path: app.success_url as string,
      headers: { Host: 'myapp.herokuapp.com' },
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(res.body.toString())).toMatchObject({ ok: true, mode: 'own-host' });
  });
});

describe('package.json for the Heroku Node buildpack', () => {
  test('declares the Node version and a build script', () => {
    expect(pkg.engines?.node).toMatch(/\d/);
    // The buildpack runs `build` after installing; it must compile what the Procfile starts.
    expect(pkg.scripts?.build).toMatch(/\btsc\b/);
  });

  test('runtime dependencies do not need the compiler or other devDependencies', () => {
    const runtime = { ...pkg.dependencies, ...pkg.optionalDependencies };
    expect(Object.keys(runtime).length).toBeGreaterThan(0);
    expect(runtime).not.toHaveProperty('typescript');
    expect(runtime).not.toHaveProperty('tsx');
    expect(runtime).not.toHaveProperty('ts-node');
    expect(pkg.devDependencies).toHaveProperty('typescript');
    for (const name of Object.keys(runtime)) expect(pkg.devDependencies ?? {}).not.toHaveProperty(name);
  });
});
