// The one declaration of `ggrok http`'s options: the CLI flags, the config file keys and connect()'s options all
// come from HTTP_OPTIONS, and one validation turns any of them into a TunnelSpec with the same messages.
import { isIP } from 'node:net';
import { ErrorCode, GgrokError } from '../protocol/errors.js';
import { isInboxPattern, WIRE_LIMITS } from '../protocol/frames.js';
import type { TunnelSpec } from './client.js';
import { parseHeaderArg } from './header-rules.js';
import { MIN_HEALTH_INTERVAL_MS } from './health-check.js';
import { parseTarget } from './target.js';

/**
 * What a value is. `list` is repeatable (a flag given again adds one; the file takes a string or a list; the API a
 * string or an array); `address` is a string that can also be switched off (`--no-<flag>`, `false` in the API);
 * `paths` is a list of path patterns that can also be just on (`--inbox` alone, `true`: every path, "/*").
 */
export type OptionKind = 'string' | 'list' | 'boolean' | 'int' | 'address' | 'paths';

/** What `paths` options mean by "on" with no pattern: every path. */
export const ALL_PATHS = '/*';

/** One option of `ggrok http`, declared once. */
export interface OptionSpec {
  /** Commander flags: short alias, long flag and value placeholder. The long flag in camelCase is the key. */
  readonly flags: string;
  readonly help: string;
  readonly kind: OptionKind;
  /** Environment variable read when the flag (or the API option) is absent. */
  readonly env?: string;
  /**
   * Where the config file keeps it: 'top' (a top-level key), 'tunnel' (a key of each tunnel, in snake_case), a
   * [key, sub-key] pair under each tunnel (request_header: { add }), or 'none'.
   */
  readonly file: 'top' | 'tunnel' | 'none' | readonly [string, string];
  /** 'connection': a flag of `http` and `start`, shared by every tunnel; 'tunnel': a flag of `http`, one tunnel's. */
  readonly scope: 'connection' | 'tunnel';
  /** Only the terminal's business (output format): the API does not take it. */
  readonly cliOnly?: boolean;
  readonly choices?: readonly string[];
  readonly default?: string;
  /** Help of the --no-<flag> form (kind 'address'). */
  readonly negate?: string;
}

/** The default relay URL when neither flag, environment, API option nor config file gives one. */
export const DEFAULT_SERVER = 'http://localhost:8080';

/**
 * Every option of `ggrok http`, in the order `--help` lists them. Adding an option is one entry here (its meaning
 * goes where TunnelSpec is used): the flag, `GGROK_*` variable, config key, API option, type and checks follow.
 */
export const HTTP_OPTIONS = {
  server: {
    flags: '-s, --server <url>',
    help: `relay URL (default: config file, else ${DEFAULT_SERVER})`,
    kind: 'string',
    env: 'GGROK_SERVER',
    file: 'top',
    scope: 'connection',
  },
  token: {
    flags: '-t, --token <token>',
    help: 'relay token (printed by `ggrok relay`; default: config file)',
    kind: 'string',
    env: 'GGROK_TOKEN',
    file: 'top',
    scope: 'connection',
  },
  config: {
    flags: '--config <path>',
    help: 'config file (default: the platform config directory)',
    kind: 'string',
    env: 'GGROK_CONFIG',
    file: 'none',
    scope: 'connection',
  },
  insecure: {
    flags: '-k, --insecure',
    help: 'accept self-signed certificates from the relay and https targets',
    kind: 'boolean',
    file: 'tunnel',
    scope: 'connection',
  },
  logFormat: {
    flags: '--log-format <format>',
    help: 'output format',
    kind: 'string',
    file: 'none',
    scope: 'connection',
    cliOnly: true,
    choices: ['text', 'json'],
    default: 'text',
  },
  quiet: {
    flags: '-q, --quiet',
    help: 'do not print a line per request',
    kind: 'boolean',
    file: 'none',
    scope: 'connection',
    cliOnly: true,
  },
  inspect: {
    flags: '--inspect <host:port>',
    help: 'serve the request inspector here (default 127.0.0.1:4040, or the next free port; "off" disables)',
    kind: 'address',
    env: 'GGROK_INSPECT',
    file: 'none',
    scope: 'connection',
    negate: 'do not start the request inspector',
  },
  subdomain: {
    flags: '--subdomain <name>',
    help: 'ask for this name (<name>.<relay domain>)',
    kind: 'string',
    env: 'GGROK_SUBDOMAIN',
    file: 'tunnel',
    scope: 'tunnel',
  },
  basicAuth: {
    flags: '--basic-auth <user:pass>',
    help: 'visitors must sign in with these credentials (repeatable)',
    kind: 'list',
    file: 'tunnel',
    scope: 'tunnel',
  },
  allowIp: {
    flags: '--allow-ip <cidr>',
    help: 'only these addresses or ranges may visit (repeatable)',
    kind: 'list',
    file: 'tunnel',
    scope: 'tunnel',
  },
  optionsWithoutAuth: {
    flags: '--options-without-auth',
    help: 'let OPTIONS requests (CORS preflights) through without --basic-auth',
    kind: 'boolean',
    file: 'tunnel',
    scope: 'tunnel',
  },
  hostHeader: {
    flags: '--host-header <rewrite|value>',
    help: 'Host sent to the local service: "rewrite" = the target host:port (dev servers with host checks; see below)',
    kind: 'string',
    file: 'tunnel',
    scope: 'tunnel',
  },
  requestHeaderAdd: {
    flags: '--request-header-add <"Name: value">',
    help: 'add a header to requests (repeatable)',
    kind: 'list',
    file: ['request_header', 'add'],
    scope: 'tunnel',
  },
  requestHeaderRemove: {
    flags: '--request-header-remove <name>',
    help: 'remove a header from requests (repeatable)',
    kind: 'list',
    file: ['request_header', 'remove'],
    scope: 'tunnel',
  },
  responseHeaderAdd: {
    flags: '--response-header-add <"Name: value">',
    help: 'add a header to responses (repeatable)',
    kind: 'list',
    file: ['response_header', 'add'],
    scope: 'tunnel',
  },
  responseHeaderRemove: {
    flags: '--response-header-remove <name>',
    help: 'remove a header from responses (repeatable)',
    kind: 'list',
    file: ['response_header', 'remove'],
    scope: 'tunnel',
  },
  pool: {
    flags: '--pool',
    help: 'share the subdomain with other clients of the same token that pass --pool (balanced)',
    kind: 'boolean',
    file: 'tunnel',
    scope: 'tunnel',
  },
  healthPath: {
    flags: '--health-path <path>',
    help: 'with --pool: GET this path on the local service to check it (e.g. /healthz)',
    kind: 'string',
    file: 'tunnel',
    scope: 'tunnel',
  },
  healthInterval: {
    flags: '--health-interval <seconds>',
    help: 'with --health-path: seconds between checks (default 10)',
    kind: 'int',
    file: 'tunnel',
    scope: 'tunnel',
  },
  inbox: {
    flags: '--inbox [path]',
    help: 'while this client is away, the relay keeps requests (all paths, or these: "/webhooks/*", repeatable) and delivers them when it is back; after the port: ggrok http 3000 --inbox',
    kind: 'paths',
    file: 'tunnel',
    scope: 'tunnel',
  },
} as const satisfies Record<string, OptionSpec>;

type Options = typeof HTTP_OPTIONS;
export type OptionName = keyof Options;

/** The value of an option once read (from any source), by kind. */
type ValueOf<K extends OptionKind> = K extends 'list' | 'paths'
  ? string[]
  : K extends 'boolean'
    ? boolean
    : K extends 'int'
      ? number
      : K extends 'address'
        ? string | boolean
        : string;

/** Lists and booleans always have a value (empty, false); the others may be absent. */
type Defaulted<K extends OptionName> = Options[K]['kind'] extends 'list' | 'boolean' | 'paths' ? K : never;

/** Options a config file's tunnel carries. */
export type TunnelOptionName = {
  [K in OptionName]: Options[K]['file'] extends 'top' | 'none' ? never : K;
}[OptionName];

/** One tunnel's settings as read from flags, the config file or the API (validated by tunnelSpec()). */
export type TunnelSettings = {
  [K in TunnelOptionName as K extends Defaulted<K> ? K : never]: ValueOf<Options[K]['kind']>;
} & {
  [K in TunnelOptionName as K extends Defaulted<K> ? never : K]?: ValueOf<Options[K]['kind']>;
};

/** What commander hands an action of `http` or `start`: each option under its key, typed by its kind. */
export type ParsedFlags = { [K in OptionName]?: ValueOf<Options[K]['kind']> };

/** Options the config file keeps at its top level (server, token). */
export type TopOptionName = {
  [K in OptionName]: Options[K]['file'] extends 'top' ? K : never;
}[OptionName];

/** The config file's top-level settings. */
export type TopSettings = { [K in TopOptionName]?: ValueOf<Options[K]['kind']> };

/** Options connect() takes: every option of `ggrok http` but the terminal's own. */
export type ApiOptionName = {
  [K in OptionName]: Options[K] extends { cliOnly: true } ? never : K;
}[OptionName];

/** What the API accepts for each kind: a list may be one string. */
type ApiValue<K extends OptionKind> = K extends 'list'
  ? string | readonly string[]
  : K extends 'paths'
    ? boolean | string | readonly string[]
    : ValueOf<K>;

/** connect()'s options that mirror `ggrok http`'s flags (same names, camelCase). */
export type HttpOptions = { [K in ApiOptionName]?: ApiValue<Options[K]['kind']> };

/** [name, spec] pairs in declaration order, typed. */
export const OPTION_ENTRIES = Object.entries(HTTP_OPTIONS) as [OptionName, OptionSpec][];

/** How an option is named in messages, depending on where the value came from. */
export type Naming = (name: OptionName) => string;

/** The long flag: `--basic-auth`. */
export const flagName: Naming = (name) => /--[\w-]+/.exec(HTTP_OPTIONS[name].flags)![0];

/** The config file's key for one tunnel's option: `tunnels.web.basic_auth`, `tunnels.web.request_header.add`. */
export function fileNaming(tunnel: string): Naming {
  return (name) => `tunnels.${tunnel}.${fileKey(name).join('.')}`;
}

/** The API's name is the option's own: `basicAuth`. */
export const apiName: Naming = (name) => name;

/** The config file key path of an option: ['basic_auth'] or ['request_header', 'add']. */
export function fileKey(name: OptionName): string[] {
  const file = (HTTP_OPTIONS[name] as OptionSpec).file;
  if (typeof file !== 'string') return [...file];
  return [name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)];
}

/** The empty value of a kind (what a tunnel has when nothing sets it). */
export function emptyValue(kind: OptionKind): string[] | false | undefined {
  return kind === 'list' || kind === 'paths' ? [] : kind === 'boolean' ? false : undefined;
}

/** A tunnel's settings with nothing set: empty lists, false, and no strings. */
export function emptyTunnelSettings(): TunnelSettings {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of OPTION_ENTRIES)
    if (spec.file !== 'top' && spec.file !== 'none') {
      const empty = emptyValue(spec.kind);
      if (empty !== undefined) out[name] = empty;
    }
  return out as TunnelSettings;
}

/** Picks one tunnel's settings out of parsed flags or API options (absent ones empty). */
export function pickTunnelSettings(values: Partial<Record<OptionName, unknown>>): TunnelSettings {
  const out: Record<string, unknown> = emptyTunnelSettings();
  for (const [name, spec] of OPTION_ENTRIES)
    if (spec.file !== 'top' && spec.file !== 'none' && values[name] !== undefined) out[name] = values[name];
  return out as TunnelSettings;
}

/**
 * Checks connect()'s options as a JavaScript caller may pass anything: unknown names, wrong types. Returns them
 * with lists as arrays and environment variables filled in (the same ones the flags read). Throws bad_config.
 */
export function readApiOptions(
  options: Record<string, unknown>,
  extra: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Partial<Record<ApiOptionName, string | string[] | boolean | number>> {
  const out: Partial<Record<string, string | string[] | boolean | number>> = {};
  const known = OPTION_ENTRIES.filter(([, spec]) => !spec.cliOnly).map(([name]) => name as string);
  for (const [name, value] of Object.entries(options)) {
    if (extra.includes(name)) continue;
    if (!known.includes(name))
      throw new GgrokError(
        ErrorCode.BadConfig,
        `unknown option "${name}" (expected ${[...known, ...extra].join(', ')})`,
      );
    if (value === undefined) continue;
    out[name] = checkValue(name, HTTP_OPTIONS[name as OptionName].kind, value);
  }
  for (const [name, spec] of OPTION_ENTRIES) {
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (out[name] === undefined && !spec.cliOnly && fromEnv)
      out[name] = spec.kind === 'list' ? [fromEnv] : fromEnv;
  }
  return out;
}

function checkValue(name: string, kind: OptionKind, value: unknown): string | string[] | boolean | number {
  const fail = (what: string): never => {
    throw new GgrokError(ErrorCode.BadConfig, `${name} must be ${what}`);
  };
  switch (kind) {
    case 'string':
      return typeof value === 'string' ? value : fail('a string');
    case 'list':
      if (typeof value === 'string') return [value];
      if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return [...value];
      return fail('a list of strings');
    case 'boolean':
      return typeof value === 'boolean' ? value : fail('true or false');
    case 'int':
      return typeof value === 'number' && Number.isInteger(value) && value >= 0
        ? value
        : fail('a whole number');
    case 'address':
      return typeof value === 'string' || typeof value === 'boolean' ? value : fail('a host:port or false');
    case 'paths':
      if (typeof value === 'boolean') return value ? [ALL_PATHS] : [];
      if (typeof value === 'string') return [value];
      if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return [...value];
      return fail('true, a path pattern or a list of them');
  }
}

/**
 * Turns one tunnel's settings (flags, config file or API) into a TunnelSpec; throws with the offending option
 * named as its source names it (`--basic-auth`, `tunnels.web.basic_auth`, `basicAuth`).
 */
export function tunnelSpec(addr: string, t: TunnelSettings, name: Naming): TunnelSpec {
  for (const pair of t.basicAuth)
    if (!/^[^:]+:.+$/.test(pair))
      throw new Error(`${name('basicAuth')} "${pair.split(':')[0]}:…" must be user:password`);
  for (const rule of t.allowIp)
    if (!isIP(rule.split('/')[0] ?? ''))
      throw new Error(`${name('allowIp')} "${rule}" is not an address or CIDR range`);
  for (const pattern of t.inbox)
    if (!isInboxPattern(pattern))
      throw new Error(
        `${name('inbox')} "${pattern.slice(0, 80)}" must be a path such as /webhooks/* (no spaces)`,
      );
  if (t.inbox.length > WIRE_LIMITS.MAX_INBOX_PATTERNS)
    throw new Error(`${name('inbox')}: at most ${WIRE_LIMITS.MAX_INBOX_PATTERNS} paths`);
  if (t.healthPath !== undefined && !t.pool)
    throw new Error(
      `${name('healthPath')} needs ${name('pool')}: health checks decide a pool member's share`,
    );
  if (t.healthPath !== undefined && !t.healthPath.startsWith('/'))
    throw new Error(`${name('healthPath')} "${t.healthPath.slice(0, 80)}" must start with /`);
  if (t.healthInterval !== undefined && t.healthInterval * 1000 < MIN_HEALTH_INTERVAL_MS)
    throw new Error(`${name('healthInterval')} must be a number of seconds, at least 1`);
  const access =
    t.basicAuth.length > 0 || t.allowIp.length > 0
      ? { basicAuth: t.basicAuth, allowIp: t.allowIp, optionsWithoutAuth: t.optionsWithoutAuth }
      : undefined;
  const headers = (option: 'requestHeaderAdd' | 'responseHeaderAdd'): string[] =>
    t[option].flatMap((arg) => {
      try {
        return parseHeaderArg(arg);
      } catch (err) {
        throw new Error(`${name(option)} ${(err as Error).message}`);
      }
    });
  return {
    subdomain: t.subdomain,
    target: parseTarget(addr, t.insecure),
    access,
    ...(t.pool ? { pool: true } : {}),
    ...(t.inbox.length > 0 ? { inbox: [...new Set(t.inbox)] } : {}),
    ...(t.healthPath !== undefined ? { healthPath: t.healthPath } : {}),
    ...(t.healthInterval !== undefined ? { healthIntervalMs: t.healthInterval * 1000 } : {}),
    headerRules: {
      hostHeader: t.hostHeader,
      requestAdd: headers('requestHeaderAdd'),
      requestRemove: t.requestHeaderRemove,
      responseAdd: headers('responseHeaderAdd'),
      responseRemove: t.responseHeaderRemove,
    },
  };
}
