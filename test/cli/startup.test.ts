// The CLI's start-up cost: `ggrok --version` and `ggrok http` never load the Vite plugin or Vite. A module loader
// hook in the child process writes down every module it resolves; the test reads the list.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, expect, test } from 'vitest';
import { BIN, Cleanup, runCli } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Runs the CLI with a resolve hook that appends every resolved URL to a file; returns a reader of that file. */
function tracedCli(args: string[]): { cli: ReturnType<typeof runCli>; loaded: () => string[] } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-startup-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'modules.txt');
  writeFileSync(
    path.join(dir, 'hooks.mjs'),
    [
      "import { appendFileSync } from 'node:fs';",
      'export async function resolve(specifier, context, next) {',
      '  const result = await next(specifier, context);',
      `  appendFileSync(${JSON.stringify(log)}, result.url + '\\n');`,
      '  return result;',
      '}',
    ].join('\n'),
  );
  writeFileSync(
    path.join(dir, 'register.mjs'),
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(path.join(dir, 'hooks.mjs')).href)});\n`,
  );
  const cli = runCli(cleanup, args, {
    NODE_OPTIONS: `--import=${pathToFileURL(path.join(dir, 'register.mjs')).href}`,
  });
  return {
    cli,
    loaded: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : []),
  };
}

const isVite = (url: string): boolean => /\/cli\/vite\.js$|\/node_modules\/vite\d*\//.test(url);

test('`ggrok --version` loads neither side of the CLI, nor the Vite plugin or Vite', async () => {
  const { cli, loaded } = tracedCli(['--version']);
  expect(await cli.exited).toBe(0);
  const urls = loaded();
  expect(urls).toContain(pathToFileURL(BIN).href); // the hook saw the program itself
  expect(urls.filter((u) => /\/dist\/(cli|relay)\/main\.js$/.test(u))).toEqual([]);
  expect(urls.filter(isVite)).toEqual([]);
});

test('`ggrok http` with its inspector, up to its first reconnect, never loads the Vite plugin or Vite', async () => {
  const { cli, loaded } = tracedCli([
    ...['http', '3000', '--server', 'http://127.0.0.1:1', '--token', 't'],
    ...['--log-format', 'json', '--inspect', '127.0.0.1:0'],
  ]);
  await cli.waitForOutput(/"event":"offline"/);
  const urls = loaded();
  // It did load the client side (so the list is complete enough to mean something) ...
  for (const file of ['cli/main.js', 'cli/client.js', 'cli/options.js', 'cli/inspector/index.js'])
    expect(
      urls.some((u) => u.endsWith(`/dist/${file}`)),
      file,
    ).toBe(true);
  // ... and nothing of Vite's, nor the API's entry point.
  expect(urls.filter(isVite)).toEqual([]);
  expect(urls.filter((u) => u.endsWith('/dist/cli/index.js'))).toEqual([]);
});
