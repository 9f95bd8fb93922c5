// The ggrok config file (YAML): relay, token and named tunnels, kept in the platform's config directory.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { ErrorCode, GgrokError } from '../protocol/errors.js';
import {
  ALL_PATHS,
  emptyTunnelSettings,
  fileKey,
  OPTION_ENTRIES,
  type OptionKind,
  type TopOptionName,
  type TopSettings,
  type TunnelSettings,
} from './options.js';

/** One named tunnel as written in the config file: its settings carry the same names as connect()'s options. */
export type TunnelConfig = TunnelSettings & {
  name: string;
  /** Port, host:port or URL of the local service. */
  addr: string;
};

export type Config = TopSettings & {
  /** Where it was read from (it may not exist yet). */
  path: string;
  tunnels: TunnelConfig[];
};

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

/** Top-level keys: the file's version and tunnels, and the options HTTP_OPTIONS keeps at the top (server, token). */
const TOP_OPTIONS = OPTION_ENTRIES.filter(([, spec]) => spec.file === 'top').map(
  ([name]) => name as TopOptionName,
);
const TOP_KEYS = new Set(['version', ...TOP_OPTIONS.map((name) => fileKey(name)[0]!), 'tunnels']);
/** A tunnel's keys: its addr, and the first part of every tunnel option's key path (request_header for .add). */
const TUNNEL_OPTIONS = OPTION_ENTRIES.filter(([, spec]) => spec.file !== 'top' && spec.file !== 'none');
const TUNNEL_KEYS = new Set(['addr', ...TUNNEL_OPTIONS.map(([name]) => fileKey(name)[0]!)]);

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
    } else if (key !== 'tunnels') {
      const name = TOP_OPTIONS.find((n) => fileKey(n)[0] === key)!;
      config[name] = scalarString(ctx, value, key);
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

/** Reads one option's value by its kind (the same checks connect() makes on its options). */
function readValue(ctx: Ctx, node: unknown, kind: OptionKind, what: string): unknown {
  switch (kind) {
    case 'string':
      return scalarString(ctx, node, what);
    case 'list':
      return stringList(ctx, node, what);
    case 'boolean':
    case 'address':
      if (!isScalar(node) || typeof node.value !== 'boolean')
        throw configError(ctx, node, `${what} must be true or false`);
      return node.value;
    case 'paths':
      // `inbox: true` is every path; a pattern or a list of them, those.
      if (isScalar(node) && typeof node.value === 'boolean') return node.value ? [ALL_PATHS] : [];
      return isScalar(node) ? [scalarString(ctx, node, what)] : stringList(ctx, node, what);
    case 'int':
      if (
        !isScalar(node) ||
        typeof node.value !== 'number' ||
        !Number.isInteger(node.value) ||
        node.value < 0
      )
        throw configError(ctx, node, `${what} must be a whole number`);
      return node.value;
  }
}

/** Reads a key whose options sit one level down (request_header: { add, remove }). */
function readNested(ctx: Ctx, node: unknown, key: string, what: string, into: Record<string, unknown>): void {
  const subs = TUNNEL_OPTIONS.filter(([name]) => fileKey(name)[0] === key);
  const names = subs.map(([name]) => fileKey(name)[1]!);
  if (node === null || node === undefined) return;
  if (!isMap(node)) throw configError(ctx, node, `${what} must have ${names.join(' and/or ')} lists`);
  for (const pair of node.items) {
    const sub = isScalar(pair.key) ? String(pair.key.value) : '';
    const found = subs.find(([name]) => fileKey(name)[1] === sub);
    if (!found) throw configError(ctx, pair.key, `${what} takes ${names.join(' and ')}, not "${sub}"`);
    into[found[0]] = readValue(ctx, pair.value, found[1].kind, `${what}.${sub}`);
  }
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
  const into = tunnel as unknown as Record<string, unknown>;
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
    if (key === 'addr') {
      tunnel.addr = scalarString(ctx, value, what);
      hasAddr = true;
      continue;
    }
    const direct = TUNNEL_OPTIONS.find(([n]) => fileKey(n).length === 1 && fileKey(n)[0] === key);
    if (direct) into[direct[0]] = readValue(ctx, value, direct[1].kind, what);
    else readNested(ctx, value, key, what, into);
  }
  if (!hasAddr) throw configError(ctx, node, `${where} needs an addr (a port, host:port or URL)`);
  return tunnel;
}

function emptyTunnel(name: string): TunnelConfig {
  return { name, addr: '', ...emptyTunnelSettings() };
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
