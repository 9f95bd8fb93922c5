// The YAML config file: where it lives, what it accepts, clear errors with line numbers, safe edits.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { defaultConfigPath, loadConfig, setConfigValue } from '../../cli/config.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempFile(content?: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ggrok-config-'));
  dirs.push(dir);
  const file = path.join(dir, 'ggrok.yml');
  if (content !== undefined) writeFileSync(file, content);
  return file;
}

describe('defaultConfigPath', () => {
  test('follows each platform and GGROK_CONFIG', () => {
    expect(defaultConfigPath({ GGROK_CONFIG: '/x/y.yml' }, 'linux', '/home/u')).toBe('/x/y.yml');
    expect(defaultConfigPath({}, 'linux', '/home/u')).toBe('/home/u/.config/ggrok/ggrok.yml');
    expect(defaultConfigPath({ XDG_CONFIG_HOME: '/xdg' }, 'linux', '/home/u')).toBe('/xdg/ggrok/ggrok.yml');
    expect(defaultConfigPath({}, 'darwin', '/Users/u')).toBe(
      '/Users/u/Library/Application Support/ggrok/ggrok.yml',
    );
    expect(defaultConfigPath({ APPDATA: 'C:\\AppData' }, 'win32', 'C:\\Users\\u')).toBe(
      path.join('C:\\AppData', 'ggrok', 'ggrok.yml'),
    );
  });
});

describe('loadConfig', () => {
  test('a missing file is an empty config', () => {
    expect(loadConfig(tempFile())).toMatchObject({ tunnels: [] });
  });

  test('reads server, token and tunnels with every option, and the `name: port` shorthand', () => {
    const file = tempFile(`version: 1
server: https://relay.example.com
token: abc123
tunnels:
  web:
    addr: 3000
    subdomain: myapp
    basic_auth: ["alice:pw"]
    allow_ip: [10.0.0.0/8]
    options_without_auth: true
    host_header: rewrite
    request_header: { add: ["X-A: 1"], remove: [Cookie] }
    response_header: { add: ["X-Frame-Options: DENY"] }
    insecure: true
    inbox: ["/webhooks/*", /stripe]
    pool: true
    health_path: /healthz
    health_interval: 5
  api: 192.168.1.5:8080
  hooks:
    addr: 4000
    inbox: true
`);
    const config = loadConfig(file);
    expect(config.server).toBe('https://relay.example.com');
    expect(config.token).toBe('abc123');
    expect(config.tunnels).toEqual([
      {
        name: 'web',
        addr: '3000',
        subdomain: 'myapp',
        basicAuth: ['alice:pw'],
        allowIp: ['10.0.0.0/8'],
        optionsWithoutAuth: true,
        hostHeader: 'rewrite',
        requestHeaderAdd: ['X-A: 1'],
        requestHeaderRemove: ['Cookie'],
        responseHeaderAdd: ['X-Frame-Options: DENY'],
        responseHeaderRemove: [],
        insecure: true,
        pool: true,
        healthPath: '/healthz',
        healthInterval: 5,
        inbox: ['/webhooks/*', '/stripe'],
      },
      expect.objectContaining({
        name: 'api',
        addr: '192.168.1.5:8080',
        basicAuth: [],
        inbox: [],
        pool: false,
      }),
      expect.objectContaining({ name: 'hooks', addr: '4000', inbox: ['/*'] }),
    ]);
  });

  test('mistakes are reported with the file, the line and the key', () => {
    const cases: [string, RegExp][] = [
      ['tunnels:\n  web:\n    adr: 3000\n', /ggrok\.yml:3: unknown key "adr" in tunnels\.web/],
      ['servr: x\n', /ggrok\.yml:1: unknown key "servr"/],
      ['tunnels:\n  web:\n    subdomain: x\n', /ggrok\.yml:3: tunnels\.web needs an addr/],
      [
        'tunnels:\n  web:\n    addr: 1\n    insecure: maybe\n',
        /ggrok\.yml:4: tunnels\.web\.insecure must be true or false/,
      ],
      [
        'tunnels:\n  web:\n    addr: 1\n    health_interval: soon\n',
        /ggrok\.yml:4: tunnels\.web\.health_interval must be a whole number/,
      ],
      ['version: 2\n', /version must be 1/],
      ['tunnels: [a, b]\n', /tunnels must map names/],
      ['token: [1, 2\n', /ggrok\.yml: /],
    ];
    for (const [content, message] of cases) {
      const file = tempFile(content);
      expect(() => loadConfig(file), content).toThrow(message);
    }
  });
});

describe('setConfigValue', () => {
  test('creates the file owner-only, and later edits keep comments and tunnels', () => {
    const file = tempFile();
    setConfigValue(file, 'token', 'first');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadConfig(file).token).toBe('first');
    writeFileSync(file, '# my relay\ntoken: first\ntunnels:\n  web: 3000 # the app\n');
    setConfigValue(file, 'token', 'second');
    setConfigValue(file, 'server', 'https://r.example.com');
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('# my relay');
    expect(text).toContain('# the app');
    expect(loadConfig(file)).toMatchObject({
      token: 'second',
      server: 'https://r.example.com',
      tunnels: [{ name: 'web', addr: '3000' }],
    });
  });
});
