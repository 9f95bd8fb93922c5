// The ggrok config file (YAML): relay, token and named tunnels, kept in the platform's config directory.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { ErrorCode, GgrokError } from '../protocol/errors.js';

/** One named tunnel as written in the config file. */
export interface TunnelConfig {
  name: string;
  /** Port, host:port or URL of the local service. */
  addr: string;
  subdomain?: string;
  basicAuth: string[];
  allowIp: string[];
  optionsWithoutAuth: boolean;
  hostHeader?: string;
  requestHeaderAdd: string[];
  requestHeaderRemove: string[];
  responseHeaderAdd: string[];
  responseHeaderRemove: string[];
  insecure: boolean;
  /** Webhook inbox path patterns (`inbox: true` is every path, "/*"); empty when off. */
  inbox: string[];
}

export interface Config {
  /** Where it was read from (it may not exist yet). */
  path: string;
  server?: string;
  token?: string;
  tunnels: TunnelConfig[];
}

/**
 * The config file's path: $GGROK_CONFIG, else ggrok/ggrok.yml in the platform's config directory
 * ($XDG_CONFIG_HOME or ~/.config on Linux, ~/Library/Application Support on macOS, %APPDATA% on Windows).
 */
export function defaultConfigPath(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  home: string = os.homedir(),
): string {
  if (env.GGROK_CONFIG) return env.GGROK_CONFIG;
  let base: string;
  if (platform === 'win32') base = env.APPDATA ?? path.join(home, 'AppData', 'Roaming');
  else if (platform === 'darwin') base = path.join(home, 'Library', 'Application Support');
  else base = env.XDG_CONFIG_HOME || path.join(home, '.config');
  return path.join(base, 'ggrok', 'ggrok.yml');
}

const TOP_KEYS = new Set(['version', 'server', 'token', 'tunnels']);
const TUNNEL_KEYS = new Set([
  'addr',
  'subdomain',
  'basic_auth',
  'allow_ip',
  'options_without_auth',
  'host_header',
  'request_header',
  'response_header',
  'insecure',
  'inbox',
]);

/** What error messages need to point at a line of the file. */
interface Ctx {
  file: string;
  lines: LineCounter;
}

/** A config problem, located in the file: "ggrok.yml:7: tunnels.web needs an addr …". */
function configError(ctx: Ctx, node: unknown, message: string): GgrokError {
  const range = (node as { range?: [number, number] } | undefined)?.range;
  const where = range ? `${ctx.file}:${ctx.lines.linePos(range[0]).line}` : ctx.file;
  return new GgrokError(ErrorCode.BadConfig, `${where}: ${message}`);
}

/** Reads and validates the config file; a missing file is an empty config. */
export function loadConfig(file: string = defaultConfigPath()): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path: file, tunnels: [] };
    throw new GgrokError(
      ErrorCode.BadConfig,
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length > 0)
    throw new GgrokError(ErrorCode.BadConfig, `${file}: ${doc.errors[0]!.message.split('\n')[0]}`);
  const ctx: Ctx = { file, lines };
  const root: unknown = doc.contents;
  if (root === null || root === undefined) return { path: file, tunnels: [] };
  if (!isMap(root)) throw configError(ctx, root, 'the file must be a mapping (key: value)');
  const config: Config = { path: file, tunnels: [] };
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (!TOP_KEYS.has(key))
      throw configError(ctx, pair.key, `unknown key "${key}" (expected ${[...TOP_KEYS].join(', ')})`);
    const value: unknown = pair.value;
    if (key === 'version') {
      if (!isScalar(value) || String(value.value) !== '1') throw configError(ctx, value, 'version must be 1');
    } else if (key === 'server' || key === 'token') {
      config[key] = scalarString(ctx, value, key);
    } else {
      if (value === null) continue;
      if (!isMap(value)) throw configError(ctx, value, 'tunnels must map names to tunnel settings');
      for (const t of value.items) config.tunnels.push(readTunnel(ctx, t.key, t.value));
    }
  }
  return config;
}

function scalarString(ctx: Ctx, node: unknown, what: string): string {
  if (!isScalar(node) || (typeof node.value !== 'string' && typeof node.value !== 'number'))
    throw configError(ctx, node, `${what} must be a string`);
  return String(node.value);
}

function stringList(ctx: Ctx, node: unknown, what: string): string[] {
  if (node === null || node === undefined) return [];
  if (isScalar(node)) return [scalarString(ctx, node, what)];
  if (!isSeq(node)) throw configError(ctx, node, `${what} must be a list of strings`);
  return node.items.map((item) => scalarString(ctx, item, what));
}

function readHeaderRules(ctx: Ctx, node: unknown, what: string): { add: string[]; remove: string[] } {
  if (node === null || node === undefined) return { add: [], remove: [] };
  if (!isMap(node)) throw configError(ctx, node, `${what} must have add and/or remove lists`);
  const rules = { add: [] as string[], remove: [] as string[] };
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (key !== 'add' && key !== 'remove')
      throw configError(ctx, pair.key, `${what} takes add and remove, not "${key}"`);
    rules[key] = stringList(ctx, pair.value, `${what}.${key}`);
  }
  return rules;
}

function readTunnel(ctx: Ctx, keyNode: unknown, node: unknown): TunnelConfig {
  const name = isScalar(keyNode) ? String(keyNode.value) : '';
  if (!/^[\w-]{1,63}$/.test(name))
    throw configError(ctx, keyNode, `"${name}" is not a tunnel name (letters, digits, - and _)`);
  const where = `tunnels.${name}`;
  // A bare value is shorthand for the address: `web: 3000`.
  if (isScalar(node)) return { ...emptyTunnel(name), addr: scalarString(ctx, node, `${where}.addr`) };
  if (!isMap(node)) throw configError(ctx, node, `${where} must be a port or a mapping`);
  const tunnel = emptyTunnel(name);
  let hasAddr = false;
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (!TUNNEL_KEYS.has(key))
      throw configError(
        ctx,
        pair.key,
        `unknown key "${key}" in ${where} (expected ${[...TUNNEL_KEYS].join(', ')})`,
      );
    const value: unknown = pair.value;
    const what = `${where}.${key}`;
    switch (key) {
      case 'addr':
        tunnel.addr = scalarString(ctx, value, what);
        hasAddr = true;
        break;
      case 'subdomain':
        tunnel.subdomain = scalarString(ctx, value, what);
        break;
      case 'host_header':
        tunnel.hostHeader = scalarString(ctx, value, what);
        break;
      case 'basic_auth':
        tunnel.basicAuth = stringList(ctx, value, what);
        break;
      case 'allow_ip':
        tunnel.allowIp = stringList(ctx, value, what);
        break;
      case 'options_without_auth':
      case 'insecure': {
        if (!isScalar(value) || typeof value.value !== 'boolean')
          throw configError(ctx, value, `${what} must be true or false`);
        if (key === 'insecure') tunnel.insecure = value.value;
        else tunnel.optionsWithoutAuth = value.value;
        break;
      }
      case 'inbox':
        // `inbox: true` keeps every path; a pattern or a list of them keeps those.
        if (isScalar(value) && typeof value.value === 'boolean') tunnel.inbox = value.value ? ['/*'] : [];
        else if (isScalar(value)) tunnel.inbox = [scalarString(ctx, value, what)];
        else tunnel.inbox = stringList(ctx, value, what);
        break;
      case 'request_header': {
        const rules = readHeaderRules(ctx, value, what);
        tunnel.requestHeaderAdd = rules.add;
        tunnel.requestHeaderRemove = rules.remove;
        break;
      }
      case 'response_header': {
        const rules = readHeaderRules(ctx, value, what);
        tunnel.responseHeaderAdd = rules.add;
        tunnel.responseHeaderRemove = rules.remove;
        break;
      }
    }
  }
  if (!hasAddr) throw configError(ctx, node, `${where} needs an addr (a port, host:port or URL)`);
  return tunnel;
}

function emptyTunnel(name: string): TunnelConfig {
  return {
    name,
    addr: '',
    basicAuth: [],
    allowIp: [],
    optionsWithoutAuth: false,
    requestHeaderAdd: [],
    requestHeaderRemove: [],
    responseHeaderAdd: [],
    responseHeaderRemove: [],
    insecure: false,
    inbox: [],
  };
}

/** Sets a top-level key (token, server) in the config file, keeping everything else (comments included). */
export function setConfigValue(file: string, key: 'token' | 'server', value: string): void {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const doc = parseDocument(text || 'version: 1\n');
  if (doc.errors.length > 0)
    throw new GgrokError(ErrorCode.BadConfig, `${file}: ${doc.errors[0]!.message.split('\n')[0]}`);
  doc.set(key, value);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Write then rename, so a crash never leaves half a file; the token is a secret: owner-only permissions.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, doc.toString(), { mode: 0o600 });
  renameSync(tmp, file);
}
