// The inspector page's built assets: in the npm package, found by the compiled CLI next to itself, inlined under the nonce.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect, test } from 'vitest';
import { ROOT } from '../helpers.js';

const PAGE_DIST = path.join(ROOT, 'dist', 'cli', 'inspector', 'page');

test('npm pack carries the page script and styles (files: ["dist"])', async () => {
  const out = await new Promise<string>((resolve, reject) =>
    execFile('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT }, (err, stdout) =>
      err ? reject(new Error(`npm pack failed: ${err.message}`)) : resolve(stdout),
    ),
  );
  const [pack] = JSON.parse(out) as [{ files: { path: string }[] }];
  const files = pack.files.map((f) => f.path);
  expect(files).toContain('dist/cli/inspector/page.js');
  expect(files).toContain('dist/cli/inspector/page/app.js');
  expect(files).toContain('dist/cli/inspector/page/style.css');
  // The browser script is built by its own program: no Node declarations or maps next to it.
  expect(files.filter((f) => f.startsWith('dist/cli/inspector/page/')).sort()).toEqual([
    'dist/cli/inspector/page/app.js',
    'dist/cli/inspector/page/style.css',
  ]);
});

test('the compiled page module finds its assets relative to its own URL and inlines them under the nonce', async () => {
  const compiled = pathToFileURL(path.join(ROOT, 'dist', 'cli', 'inspector', 'page.js')).href;
  const page = (await import(compiled)) as {
    PAGE_ASSETS_DIR: URL;
    inspectorPage: (nonce: string) => string;
  };
  expect(page.PAGE_ASSETS_DIR.href).toBe(pathToFileURL(PAGE_DIST).href + '/');
  const html = page.inspectorPage('n0nce');
  const script = readFileSync(path.join(PAGE_DIST, 'app.js'), 'utf8');
  const style = readFileSync(path.join(PAGE_DIST, 'style.css'), 'utf8');
  expect(html).toContain(`<script nonce="n0nce">\n${script}</script>`);
  expect(html).toContain(`<style nonce="n0nce">\n${style}</style>`);
  // The build output of page/app.ts: a classic script (no module syntax), as an inline script must be.
  expect(script).toContain("new EventSource('/api/events')");
  expect(script).not.toMatch(/^\s*(import|export)\b/m);
  expect(html.match(/<script\b/g)).toHaveLength(1);
});
