// The Heroku way, for real: copy the app, npm ci, build, prune devDependencies, start the Procfile's web command.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, test } from 'vitest';
import { Cleanup, rawRequest, ROOT, startClient, startLocal, waitFor } from '../helpers.js';

const execFileAsync = promisify(execFile);
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** npm ci, a TypeScript build and a prune on two shared cores: minutes, not seconds, on a bad day. */
const HEROKU_BUILD_TIMEOUT_MS = 300_000;

/** The Procfile's process types and their commands. */
function readProcfile(): Map<string, string> {
  const types = new Map<string, string>();
  for (const line of readFileSync(path.join(ROOT, 'Procfile'), 'utf8').split('\n')) {
    if (!line.trim() || line.trimStart().startsWith('#')) continue;
    const m = /^([A-Za-z0-9_-]+):\s*(.+)$/.exec(line);
    if (!m) throw new Error(`not a Procfile line: ${line}`);
    types.set(m[1]!, m[2]!.trim());
  }
  return types;
}

/** The environment of a clean build: nothing inherited from an npm script or vitest that would steer npm. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (
      /^npm_/i.test(k) ||
      /^(NODE_ENV|NODE_OPTIONS|INIT_CWD|VITEST.*|GGROK_.*|PORT|DYNO|FLY_APP_NAME)$/.test(k)
    )
      continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Copies what Heroku would receive: tracked and untracked-but-not-ignored files, as they are in the work tree. */
async function copyApp(dest: string): Promise<number> {
  const { stdout } = await execFileAsync(
    'git',
    ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    {
      cwd: ROOT,
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  let copied = 0;
  for (const file of new Set(stdout.split('\0').filter(Boolean))) {
    if (/^(node_modules|dist)\//.test(file)) continue;
    const from = path.join(ROOT, file);
    if (!existsSync(from) || !lstatSync(from).isFile()) continue; // deleted in the work tree, or a symlink
    mkdirSync(path.dirname(path.join(dest, file)), { recursive: true });
    copyFileSync(from, path.join(dest, file));
    copied++;
  }
  return copied;
}

/** Runs a build step; on failure, throws with the end of its output so the reason is in the test report. */
async function step(cwd: string, file: string, args: string[], timeoutMs: number): Promise<void> {
  try {
    await execFileAsync(file, args, {
      cwd,
      env: cleanEnv(),
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    const lines = `${e.stderr ?? ''}\n${e.stdout ?? ''}`
      .split('\n')
      .filter((l) => l.replace(/^npm error\s*/, '') && !/Unknown user config/.test(l));
    // npm follows a usage error with its whole help text: keep what comes before it.
    const usage = lines.findIndex((l) => /^npm error (Usage:|Clean install a project)/.test(l));
    const reason = (usage > 0 ? lines.slice(0, usage) : lines.slice(-25)).join('\n') || e.message;
    throw new Error(`\`${file} ${args.join(' ')}\` failed:\n${reason}`);
  }
}

/** A port that was free a moment ago; Heroku likewise hands the dyno a port in $PORT. */
async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

const NPM_CI_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund'];
/** How `npm ci` refuses a package-lock.json that does not match package.json. */
const LOCK_OUT_OF_SYNC = /can only install packages when your package\.json and package-lock\.json/;

/** A fresh copy of the app in a temp dir, removed after the test. */
async function tempApp(): Promise<string> {
  const app = mkdtempSync(path.join(os.tmpdir(), 'ggrok-heroku-'));
  cleanup.add(() => rmSync(app, { recursive: true, force: true }));
  expect(await copyApp(app)).toBeGreaterThan(10);
  expect(existsSync(path.join(app, 'Procfile'))).toBe(true);
  return app;
}

describe('Procfile', () => {
  test('declares one web process that runs the compiled relay with node', () => {
    const types = readProcfile();
    expect([...types.keys()]).toEqual(['web']);
    const web = types.get('web')!;
    expect(web).toMatch(/^node dist\/bin\/ggrok\.js relay\b/);
    // No TypeScript at runtime (devDependencies are pruned), and the port comes from $PORT, never a fixed number.
    expect(web).not.toMatch(/\b(tsx|ts-node|tsc|npx)\b|\.ts\b/);
    expect(web).not.toMatch(/(--port|-p)[ =]?\d/);
  });

  test(
    'package-lock.json is complete enough for `npm ci` (Heroku and the Dockerfile both run it)',
    async () => {
      const app = await tempApp();
      // --dry-run still checks package.json against the lock file, which is where `npm ci` refuses to start.
      await step(app, 'npm', ['ci', '--dry-run', ...NPM_CI_FLAGS], 180_000);
    },
    HEROKU_BUILD_TIMEOUT_MS,
  );

  test(
    'built and pruned like Heroku does, it serves one tunnel at its own host and refuses a second',
    async () => {
      const app = await tempApp();

      // Heroku's Node buildpack: install everything, run `build`, prune devDependencies.
      try {
        await step(app, 'npm', ['ci', ...NPM_CI_FLAGS], 180_000);
      } catch (err) {
        if (!LOCK_OUT_OF_SYNC.test(String(err))) throw err;
        // The lock file test above reports this; install from package.json so the rest of the path is still checked.
        await step(app, 'npm', ['install', ...NPM_CI_FLAGS], 180_000);
      }
      await step(app, 'npm', ['run', 'build'], 180_000);
      await step(app, 'npm', ['prune', '--omit=dev', '--no-audit', '--no-fund'], 120_000);
      expect(existsSync(path.join(app, 'dist', 'bin', 'ggrok.js'))).toBe(true);
      expect(existsSync(path.join(app, 'node_modules', 'ws'))).toBe(true);
      expect(existsSync(path.join(app, 'node_modules', 'typescript'))).toBe(false); // really pruned

      // The dyno: bash runs the web command with PORT, the config vars, DYNO, and NODE_ENV=production.
      const port = await freePort();
      const token = `heroku-${createHash('sha256').update(app).digest('hex').slice(0, 16)}`;
      const dyno: ChildProcess = spawn('bash', ['-c', readProcfile().get('web')!], {
        cwd: app,
        env: cleanEnv({
          PORT: String(port),
          GGROK_TOKEN: token,
          DYNO: 'web.1',
          NODE_ENV: 'production',
          NO_COLOR: '1',
        }),
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // its own process group, so a signal reaches everything the command started
      });
      let output = '';
      dyno.stdout!.on('data', (c: Buffer) => (output += c.toString()));
      dyno.stderr!.on('data', (c: Buffer) => (output += c.toString()));
      const exited = new Promise<number | null>((resolve) => dyno.on('exit', (code) => resolve(code)));
      cleanup.add(async () => {
        if (dyno.exitCode === null && dyno.signalCode === null) {
          process.kill(-dyno.pid!, 'SIGKILL');
          await exited;
        }
      });

      // Heroku allows 60 s to bind $PORT.
      let health: Record<string, unknown> | undefined;
      await waitFor(
        async () => {
          if (dyno.exitCode !== null)
            throw new Error(`the web process exited with ${dyno.exitCode}:\n${output}`);
          const res = await rawRequest({
            port,
            path: '/_ggrok/health',
            headers: { Host: 'myapp.herokuapp.com' },
          }).catch(() => undefined);
          if (res?.status !== 200) return false;
          expect(res.headers['content-type']).toMatch(/^application\/json/);
          health = JSON.parse(res.body.toString()) as Record<string, unknown>;
          return true;
        },
        'the relay to answer on $PORT',
        60_000,
      );
      expect(health).toMatchObject({ ok: true, mode: 'own-host', domain: null, tunnels: 0 });
      expect(output).toContain(`:${port}`);
      expect(output).not.toMatch(/generated/); // it used GGROK_TOKEN rather than inventing a token

      // A real local server behind a real tunnel client.
      const local = await startLocal(cleanup, (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const body = Buffer.concat(chunks);
          const answer = JSON.stringify({
            method: req.method,
            url: req.url,
            host: req.headers.host,
            proto: req.headers['x-forwarded-proto'],
            sha256: createHash('sha256').update(body).digest('hex'),
          });
          res.writeHead(200, { 'Content-Type': 'application/json', 'X-Local': 'yes' });
          res.end(answer);
        });
      });
      const client = await startClient(cleanup, `http://127.0.0.1:${port}`, local.port, { token });
      expect(client.url).toBe(`http://127.0.0.1:${port}`);

      // Whatever Host the router sends (the app's herokuapp.com name), the one tunnel gets the request.
      const body = Buffer.alloc(200_000, 'heroku');
      const res = await rawRequest({
        port,
        method: 'POST',
        path: '/hello?x=1',
        headers: {
          Host: 'myapp.herokuapp.com',
          'X-Forwarded-Proto': 'https',
          'X-Forwarded-For': '203.0.113.7',
          'X-Request-Id': 'req-1',
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(body.length),
        },
        body,
      });
      expect(res.status).toBe(200);
      expect(res.headers['x-local']).toBe('yes');
      expect(JSON.parse(res.body.toString())).toEqual({
        method: 'POST',
        url: '/hello?x=1',
        host: 'myapp.herokuapp.com',
        // DYNO is set, so the relay trusts the router's X-Forwarded-Proto instead of overwriting it with http.
        proto: 'https',
        sha256: createHash('sha256').update(body).digest('hex'),
      });
      expect(local.requests).toHaveLength(1);

      // Own-host mode serves one tunnel: a second client is refused.
      await expect(
        startClient(cleanup, `http://127.0.0.1:${port}`, local.port, { token }),
      ).rejects.toMatchObject({ code: 'name_in_use' });
      // ... and the first one still works.
      const again = await rawRequest({ port, path: '/again', headers: { Host: 'other-name.herokuapp.com' } });
      expect(again.status).toBe(200);
      expect(JSON.parse(again.body.toString())).toMatchObject({
        url: '/again',
        host: 'other-name.herokuapp.com',
      });

      // A dyno restart: SIGTERM to the process group, then a clean exit well within Heroku's 30 s.
      process.kill(-dyno.pid!, 'SIGTERM');
      const code = await Promise.race([
        exited,
        new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000)),
      ]);
      expect(code).toBe(0);
      expect(output).toMatch(/stopping/);
    },
    HEROKU_BUILD_TIMEOUT_MS,
  );
});
