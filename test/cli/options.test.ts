// HTTP_OPTIONS is the one declaration: the flags of `ggrok http`, the config file's keys and connect()'s options
// all follow from it, so an entry added there shows up everywhere with the same name.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { ROOT } from '../helpers.js';
import { loadConfig } from '../../cli/config.js';
import type { ConnectOptions } from '../../cli/index.js';
import { httpCommand, startCommand } from '../../cli/main.js';
import {
  fileKey,
  flagName,
  HTTP_OPTIONS,
  OPTION_ENTRIES,
  pickTunnelSettings,
  readApiOptions,
  type OptionName,
  type TunnelSettings,
} from '../../cli/options.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

test("every flag of `ggrok http` is an entry, named as commander names the flag's value", () => {
  const flags = httpCommand()
    .options.filter((o) => !o.negate)
    .map((o) => o.attributeName());
  expect(flags).toEqual(Object.keys(HTTP_OPTIONS));
  for (const o of httpCommand().options.filter((o) => !o.negate))
    expect(HTTP_OPTIONS[o.attributeName() as OptionName].flags).toBe(o.flags);
  // `start` takes the connection's options; a tunnel's come from the config file.
  const start = startCommand()
    .options.filter((o) => !o.negate && o.long !== '--all')
    .map((o) => o.attributeName());
  expect(start).toEqual(OPTION_ENTRIES.filter(([, s]) => s.scope === 'connection').map(([n]) => n));
});

test("every tunnel option is a config file key, read into the API's name", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-options-'));
  dirs.push(dir);
  const lines = ['tunnels:', '  web:', '    addr: 3000'];
  const expected: Record<string, unknown> = { name: 'web', addr: '3000' };
  const nested = new Map<string, string[]>();
  for (const [name, spec] of OPTION_ENTRIES) {
    if (spec.file === 'top' || spec.file === 'none') continue;
    const value =
      spec.kind === 'list'
        ? ['v1', 'v2']
        : spec.kind === 'paths'
          ? ['/v1', '/v2/*']
          : spec.kind === 'boolean'
            ? true
            : spec.kind === 'int'
              ? 7
              : 'v';
    expected[name] = value;
    const [key, sub] = fileKey(name);
    const yaml = JSON.stringify(value);
    if (sub) nested.set(key!, [...(nested.get(key!) ?? []), `      ${sub}: ${yaml}`]);
    else lines.push(`    ${key}: ${yaml}`);
  }
  for (const [key, subs] of nested) lines.push(`    ${key}:`, ...subs);
  const file = path.join(dir, 'ggrok.yml');
  writeFileSync(file, `server: https://r.example\ntoken: t0\n${lines.join('\n')}\n`);
  const config = loadConfig(file);
  expect(config.tunnels).toEqual([expected]);
  expect([config.server, config.token]).toEqual(['https://r.example', 't0']);
});

test("connect()'s options fall back to the flags' environment variables; the terminal's own are not options", () => {
  const env = { GGROK_SERVER: 'https://env.example', GGROK_TOKEN: 'env-token', GGROK_SUBDOMAIN: 'envname' };
  expect(readApiOptions({ token: 'given', basicAuth: 'a:b' }, [], env)).toEqual({
    server: 'https://env.example',
    token: 'given',
    subdomain: 'envname',
    basicAuth: ['a:b'],
  });
  expect(() => readApiOptions({ quiet: true }, [], {})).toThrow(/unknown option "quiet"/);
  expect(readApiOptions({ port: 3 }, ['port'], {})).toEqual({});
});

test("connect()'s option types follow the declaration (checked when the tests compile: npm run lint)", () => {
  const ok: ConnectOptions = {
    port: 3000,
    basicAuth: 'a:b',
    allowIp: ['10.0.0.0/8'],
    optionsWithoutAuth: true,
    hostHeader: 'rewrite',
    requestHeaderAdd: ['X-A: 1'],
    inspect: false,
    insecure: true,
    config: '/dev/null',
  };
  // @ts-expect-error the terminal's own flags are not options
  const quiet: ConnectOptions = { quiet: true };
  // @ts-expect-error a list takes strings
  const wrong: ConnectOptions = { basicAuth: 3 };
  const settings: TunnelSettings = pickTunnelSettings({});
  expect([ok.port, quiet, wrong, settings.basicAuth, settings.insecure]).toEqual([
    3000,
    { quiet: true },
    { basicAuth: 3 },
    [],
    false,
  ]);
});

test("the README's `ggrok http` table lists every option with its environment variable", () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const lines = readme.slice(readme.indexOf('`ggrok http <port | host:port | url> [options]`')).split('\n');
  const start = lines.findIndex((line) => line.startsWith('| flag'));
  const rest = lines.slice(start + 2);
  const rows = rest
    .slice(
      0,
      rest.findIndex((line) => !line.startsWith('|')),
    )
    .map((line) => line.split(/(?<!\\)\|/));
  const documented = new Map<string, string>();
  for (const cells of rows)
    for (const flag of cells[1]!.match(/--[\w-]+/g) ?? []) documented.set(flag, cells[2]!.trim());
  const expected = new Map<string, string>();
  for (const [name, spec] of OPTION_ENTRIES) {
    expected.set(flagName(name), spec.env ? `\`${spec.env}\`` : '—');
    if (spec.negate) expected.set(`--no-${flagName(name).slice(2)}`, '—');
  }
  expect(documented).toEqual(expected);
});
