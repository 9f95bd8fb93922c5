// deploy/Dockerfile: a two-stage build whose final stage runs the compiled relay as a non-root user, checked live.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, test } from 'vitest';
import { BIN, Cleanup, ROOT, runCli, startRelay } from '../helpers.js';

const execFileAsync = promisify(execFile);
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Splits a Dockerfile into stages of instructions: comments dropped, continuation lines joined. */
function parseDockerfile(text: string): { preamble: Instruction[]; stages: Stage[] } {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!pending && (line === '' || line.startsWith('#'))) continue;
    if (pending && line.startsWith('#')) continue; // comments may sit inside a continued instruction
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  if (pending) logical.push(pending.trim());
  const preamble: Instruction[] = [];
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`cannot parse Dockerfile line: ${l}`);
    const ins = { keyword: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (ins.keyword === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!f) throw new Error(`cannot parse FROM ${ins.args}`);
      stages.push({ from: f[1]!, name: f[2], instructions: [] });
    } else (stages.at(-1)?.instructions ?? preamble).push(ins);
  }
  return { preamble, stages };
}

/** `ENV A=1 B=2` (or the legacy `ENV A 1`) as a map. */
function envOf(stage: Stage): Map<string, string> {
  const env = new Map<string, string>();
  for (const { keyword, args } of stage.instructions) {
    if (keyword !== 'ENV') continue;
    if (!args.includes('=')) {
      const [k, ...v] = args.split(/\s+/);
      env.set(k!, v.join(' '));
    } else for (const m of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env.set(m[1]!, m[2]!.replace(/^"|"$/g, ''));
  }
  return env;
}

const all = (stage: Stage, keyword: string): string[] =>
  stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);
/** The JSON (exec) form of CMD / HEALTHCHECK CMD. */
const execForm = (args: string): string[] => JSON.parse(args) as string[];

const dockerfile = parseDockerfile(readFileSync(path.join(ROOT, 'deploy', 'Dockerfile'), 'utf8'));
const final = dockerfile.stages.at(-1)!;
const build = dockerfile.stages[0]!;

/** A port that was free a moment ago: something to point a health check at that must fail. */
async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

describe('deploy/Dockerfile', () => {
  test('the parser joins continuations and splits stages', () => {
    const p = parseDockerfile(
      'ARG V=1\nFROM a AS one\n# c\nRUN x \\\n  # inner\n  y\nFROM b\nENV P=1 Q="2 3"\n',
    );
    expect(p.preamble).toEqual([{ keyword: 'ARG', args: 'V=1' }]);
    expect(p.stages.map((s) => [s.from, s.name])).toEqual([
      ['a', 'one'],
      ['b', undefined],
    ]);
    expect(p.stages[0]!.instructions).toEqual([{ keyword: 'RUN', args: 'x y' }]);
    expect([...envOf(p.stages[1]!)]).toEqual([
      ['P', '1'],
      ['Q', '2 3'],
    ]);
  });

  test('is multi-stage on a slim Node 20+ image', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    const versionArg = dockerfile.preamble.find(
      (i) => i.keyword === 'ARG' && i.args.startsWith('NODE_VERSION='),
    );
    for (const stage of dockerfile.stages) {
      const image = stage.from.replace('${NODE_VERSION}', versionArg?.args.split('=')[1] ?? '');
      const m = /^node:(\d+)(?:[.\d]*)-(?:[a-z]+-)?slim$/.exec(image);
      expect([stage.from, m !== null]).toEqual([stage.from, true]);
      expect(Number(m![1])).toBeGreaterThanOrEqual(20);
    }
  });

  test('the build stage installs everything, copies every source folder tsconfig compiles, and builds', () => {
    const runs = all(build, 'RUN').join('\n');
    expect(runs).toMatch(/\bnpm ci\b/);
    expect(runs).not.toMatch(/--omit=dev/);
    expect(runs).toMatch(/\bnpm run build\b/);
    const copied = all(build, 'COPY').flatMap((a) =>
      a
        .split(/\s+/)
        .filter((w) => !w.startsWith('--'))
        .slice(0, -1),
    );
    const tsconfig = JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')) as {
      include: string[];
    };
    for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', ...tsconfig.include])
      expect(copied).toContain(f);
    // Whatever `npm run build` reads besides: other tsc projects (-p) and node scripts, or their folders.
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: { build: string };
    };
    const read = [...pkg.scripts.build.matchAll(/(?:\btsc -p|\bnode) (\S+)/g)].map((m) => m[1]!);
    expect(read.length).toBeGreaterThan(0);
    for (const f of read)
      expect([f, copied.some((c) => f === c || f.startsWith(`${c}/`))]).toEqual([f, true]);
    for (const f of copied) expect([f, existsSync(path.join(ROOT, f))]).toEqual([f, true]);
  });

  test('.dockerignore keeps local state out of the build context but not what the build copies', () => {
    const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', 'dist', '.git']) expect(ignored).toContain(p);
    const copied = all(build, 'COPY').flatMap((a) =>
      a
        .split(/\s+/)
        .filter((w) => !w.startsWith('--'))
        .slice(0, -1),
    );
    for (const f of copied) expect(ignored).not.toContain(f);
  });

  test('the final stage installs runtime dependencies only and copies the compiled output', () => {
    const runs = all(final, 'RUN').join('\n');
    expect(runs).toMatch(/\bnpm ci\b[^\n]*--omit=dev/);
    expect(runs).not.toMatch(/\bnpm run build\b/);
    expect(all(final, 'COPY')).toContainEqual(`--from=${build.name} /app/dist ./dist`);
  });

  test('the final stage runs as a non-root user, listens on $PORT, and stops on SIGTERM', () => {
    const users = all(final, 'USER');
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0', '0:0']).not.toContain(users.at(-1));
    // USER comes before CMD, so the relay itself does not run as root.
    const order = final.instructions.map((i) => i.keyword);
    expect(order.lastIndexOf('USER')).toBeLessThan(order.lastIndexOf('CMD'));
    const port = envOf(final).get('PORT');
    expect(port).toMatch(/^\d+$/);
    expect(all(final, 'EXPOSE')).toEqual([port]);
    expect(all(final, 'STOPSIGNAL')).toEqual(['SIGTERM']);
    expect(execForm(all(final, 'CMD').at(-1)!)).toEqual(['node', 'dist/bin/ggrok.js', 'relay']);
  });

  test('its CMD starts the relay and its HEALTHCHECK passes against it, and fails with nothing listening', async () => {
    const checks = all(final, 'HEALTHCHECK');
    expect(checks).toHaveLength(1);
    const m = /^((?:--\S+\s+)*)CMD\s+(\[.*\])$/.exec(checks[0]!);
    expect(m).not.toBeNull();
    const options = m![1]!;
    const timeoutSeconds = Number(/--timeout=(\d+)s/.exec(options)?.[1] ?? 30);
    const check = execForm(m![2]!);
    expect(check[0]).toBe('node'); // slim images have no curl or wget

    // The CMD, run from the repository root as WORKDIR /app would be (the compiled dist/ must exist).
    const cmd = execForm(all(final, 'CMD').at(-1)!);
    expect(cmd[0]).toBe('node');
    expect(path.join(ROOT, cmd[1]!)).toBe(BIN);
    const relay = runCli(cleanup, cmd.slice(2), {
      PORT: '0',
      GGROK_TOKEN: 'docker-test-token',
      NODE_ENV: 'production',
    });
    const port = Number((await relay.waitForOutput(/listening on \S+:(\d+)/, 30_000))[1]);
    expect(port).toBeGreaterThan(0);

    const runCheck = async (checkPort: number): Promise<number> => {
      try {
        await execFileAsync(process.execPath, check.slice(1), {
          env: { ...process.env, PORT: String(checkPort) },
          timeout: timeoutSeconds * 1000 + 10_000,
        });
        return 0;
      } catch (err) {
        return (err as { code?: number }).code ?? -1;
      }
    };
    expect(await runCheck(port)).toBe(0);
    expect(await runCheck(await closedPort())).not.toBe(0);
  });

  test('the HEALTHCHECK fails when the relay answers but is not healthy (wrong service on the port)', async () => {
    const m = /CMD\s+(\[.*\])$/.exec(all(final, 'HEALTHCHECK')[0]!);
    const check = execForm(m![1]!);
    // Something that answers HTTP on the port but with a 503 (a relay that is not ready, or another service).
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.once('data', () =>
        s.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'),
      );
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    cleanup.add(() => new Promise((r) => server.close(r)));
    const port = (server.address() as net.AddressInfo).port;
    const code = await execFileAsync(process.execPath, check.slice(1), {
      env: { ...process.env, PORT: String(port) },
      timeout: 20_000,
    }).then(
      () => 0,
      (err: { code?: number }) => err.code ?? -1,
    );
    expect(code).toBe(1);
    // And a healthy relay on the same terms passes (the stand-in is what made it fail).
    const relay = await startRelay(cleanup, { domain: undefined });
    const ok = await execFileAsync(process.execPath, check.slice(1), {
      env: { ...process.env, PORT: String(relay.port) },
      timeout: 20_000,
    }).then(
      () => 0,
      (err: { code?: number }) => err.code ?? -1,
    );
    expect(ok).toBe(0);
  });
});
