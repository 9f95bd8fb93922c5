// `ggrok http`, `ggrok start` and `ggrok config`: flags, environment and config file -> a TunnelClient with
// the terminal UI attached. Commander wiring and option merging only.
import { Command, InvalidArgumentError, Option } from 'commander';
import { TunnelClient, type TunnelSpec } from './client.js';
import { defaultConfigPath, loadConfig, setConfigValue, type Config } from './config.js';
import { parseInspectAddress, startInspector, type Inspector } from './inspector/index.js';
import { describeTarget } from './target.js';
import {
  ALL_PATHS,
  DEFAULT_SERVER,
  fileNaming,
  flagName,
  OPTION_ENTRIES,
  pickTunnelSettings,
  tunnelSpec,
  type OptionSpec,
  type ParsedFlags,
} from './options.js';
import { checkTarget } from './target-check.js';
import { Ui } from './ui.js';

export { inboxCommand } from './inbox-command.js';

/** Exit codes: 0 clean stop, 1 runtime failure (refused, unreachable for good), 2 usage or config error. */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

/** Parsed flags of `http` and `start` (the --log-format choices checked by commander). */
type ConnectionFlags = ParsedFlags & { logFormat?: 'text' | 'json' };

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/**
 * A path pattern of a 'paths' option. `ggrok http --inbox 3000` would read the port as a pattern (the option takes an
 * optional value): say where the port goes instead.
 */
function collectPattern(value: string, previous: string[]): string[] {
  if (!value.startsWith('/'))
    throw new InvalidArgumentError(
      `"${value}" is not a path pattern (patterns start with "/"). For every path, give the flag after the port: ggrok http 3000 --inbox`,
    );
  return collect(value, previous);
}

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number.');
  return Number(value);
}

/** Adds HTTP_OPTIONS' flags of one scope: 'connection' ones to `http` and `start`, 'tunnel' ones to `http`. */
function addOptions(cmd: Command, scope: OptionSpec['scope']): Command {
  for (const [name, spec] of OPTION_ENTRIES) {
    if (spec.scope !== scope) continue;
    const option = new Option(spec.flags, spec.help);
    if (spec.env) option.env(spec.env);
    if (spec.choices) option.choices(spec.choices);
    if (spec.kind === 'list') option.argParser(collect).default([]);
    // Alone it means every path; given values are collected (`--inbox /a --inbox /b`).
    if (spec.kind === 'paths') option.preset(ALL_PATHS).argParser(collectPattern).default([]);
    if (spec.kind === 'int') option.argParser(wholeNumber);
    if (spec.default !== undefined) option.default(spec.default);
    cmd.addOption(option);
    if (spec.negate) cmd.option(`--no-${flagName(name).slice(2)}`, spec.negate);
  }
  return cmd;
}

/**
 * Starts the inspector unless turned off. A port the user chose is not silently replaced; when the default
 * range is all taken the tunnel still runs, without an inspector.
 */
async function maybeInspector(flags: ConnectionFlags, cmd: Command, ui: Ui): Promise<Inspector | undefined> {
  const spec = flags.inspect;
  if (spec === false || (typeof spec === 'string' && /^(off|false|no|0)$/i.test(spec))) return undefined;
  const explicit = typeof spec === 'string';
  const addr = usage(cmd, () => parseInspectAddress(explicit ? spec : '127.0.0.1:4040'));
  try {
    return await startInspector({ ...addr, portAttempts: explicit ? 0 : 20 });
  } catch (err) {
    if (explicit) cmd.error(`error: --inspect ${spec}: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
    ui.warn(`inspector not started: ${(err as Error).message}`);
    return undefined;
  }
}

/** When to use --host-header rewrite and what it changes, under `ggrok http --help`. */
const HOST_HEADER_HELP = `
Dev servers and --host-header rewrite:
  Vite, webpack-dev-server, Angular's ng serve, Django (DEBUG), Rails and Next.js dev (its hot-reload socket)
  refuse requests for hosts or origins they do not know (DNS-rebinding protection), so a visitor through the
  tunnel gets "Blocked request", "Invalid Host header", DisallowedHost, "Blocked hosts" or no hot reload. ggrok
  recognises these refusals and prints which server refused and the fix.
  --host-header rewrite (config file: host_header: rewrite) sends Host: <target host:port> instead of the public
  host, and rewrites the Origin of the tunnel's own pages to match, which satisfies these checks and hot-reload
  sockets. What changes: redirects and absolute URLs the app builds from Host name the target (localhost:5173),
  not the public URL; X-Forwarded-Host still carries the public host. Rails checks X-Forwarded-Host too: add the
  relay's domain to config.hosts instead. Or allow the relay's domain in the server's own setting, which the hint
  names (server.allowedHosts, devServer.allowedHosts, allowedDevOrigins, ALLOWED_HOSTS, config.hosts).
`;

/** Builds the `http` subcommand. */
export function httpCommand(): Command {
  return addOptions(
    addOptions(
      new Command('http')
        .description('share a local HTTP server through a relay')
        .argument(
          '<target>',
          'local port (3000), host:port (192.168.1.5:8080) or URL (https://localhost:8443)',
        ),
      'connection',
    ),
    'tunnel',
  )
    .addHelpText('after', HOST_HEADER_HELP)
    .action(async (addr: string, flags: ConnectionFlags, cmd: Command) => {
      const settings = pickTunnelSettings(flags);
      const spec = usage(cmd, () => tunnelSpec(addr, settings, flagName));
      await runTunnels([spec], flags, cmd);
    });
}

/** Builds the `start` subcommand: named tunnels from the config file, over one connection. */
export function startCommand(): Command {
  return addOptions(
    new Command('start')
      .description('start tunnels named in the config file, all over one connection to the relay')
      .argument('[names...]', 'tunnel names from the config file'),
    'connection',
  )
    .option('--all', 'start every tunnel in the config file')
    .action(async (names: string[], flags: ConnectionFlags & { all?: boolean }, cmd: Command) => {
      const config = usage(cmd, () => loadConfig(flags.config ?? defaultConfigPath()));
      if (config.tunnels.length === 0)
        cmd.error(
          `error: no tunnels in ${config.path}. Add some under "tunnels:" (see ggrok config --help).`,
          {
            exitCode: EXIT_USAGE,
          },
        );
      if (flags.all && names.length > 0)
        cmd.error('error: pass tunnel names or --all, not both', { exitCode: EXIT_USAGE });
      if (!flags.all && names.length === 0)
        cmd.error(
          `error: name the tunnels to start (${config.tunnels.map((t) => t.name).join(', ')}) or pass --all`,
          {
            exitCode: EXIT_USAGE,
          },
        );
      const chosen = flags.all
        ? config.tunnels
        : names.map((name) => {
            const found = config.tunnels.find((t) => t.name === name);
            if (!found)
              cmd.error(
                `error: no tunnel "${name}" in ${config.path} (have: ${config.tunnels.map((t) => t.name).join(', ')})`,
                {
                  exitCode: EXIT_USAGE,
                },
              );
            return found;
          });
      const specs = usage(cmd, () =>
        chosen.map((t) =>
          tunnelSpec(t.addr, { ...t, insecure: t.insecure || (flags.insecure ?? false) }, fileNaming(t.name)),
        ),
      );
      await runTunnels(specs, flags, cmd, config);
    });
}

/** Builds the `config` subcommand. */
export function configCommand(): Command {
  const config = new Command('config').description('read and edit the config file (YAML)');
  config
    .command('add-token')
    .description('save the relay token in the config file')
    .argument('<token>', 'the token the relay printed or its operator gave you')
    .addOption(new Option('--config <path>', 'config file').env('GGROK_CONFIG'))
    .action((token: string, flags: { config?: string }, cmd: Command) => {
      const file = flags.config ?? defaultConfigPath();
      usage(cmd, () => setConfigValue(file, 'token', token));
      process.stdout.write(`Token saved to ${file}\n`);
    });
  config
    .command('add-server')
    .description('save the relay URL in the config file')
    .argument('<url>', 'e.g. https://relay.example.com')
    .addOption(new Option('--config <path>', 'config file').env('GGROK_CONFIG'))
    .action((url: string, flags: { config?: string }, cmd: Command) => {
      const file = flags.config ?? defaultConfigPath();
      usage(cmd, () => setConfigValue(file, 'server', url));
      process.stdout.write(`Relay saved to ${file}\n`);
    });
  config
    .command('check')
    .description('validate the config file and list its tunnels')
    .addOption(new Option('--config <path>', 'config file').env('GGROK_CONFIG'))
    .action((flags: { config?: string }, cmd: Command) => {
      const loaded = usage(cmd, () => loadConfig(flags.config ?? defaultConfigPath()));
      for (const t of loaded.tunnels) usage(cmd, () => tunnelSpec(t.addr, t, fileNaming(t.name)));
      process.stdout.write(`${loaded.path}: ok\n`);
      process.stdout.write(`server: ${loaded.server ?? `(none; default ${DEFAULT_SERVER})`}\n`);
      process.stdout.write(`token: ${loaded.token ? '(set)' : '(none)'}\n`);
      for (const t of loaded.tunnels)
        process.stdout.write(`tunnel ${t.name}: ${t.addr}${t.subdomain ? ` as ${t.subdomain}` : ''}\n`);
    });
  config
    .command('path')
    .description('print where the config file is read from')
    .action(() => void process.stdout.write(`${defaultConfigPath()}\n`));
  return config;
}

/** Runs `fn`; any error it throws becomes a one-line usage error (exit 2). */
function usage<T>(cmd: Command, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
  }
}

/** Connects the tunnels and keeps them up until Ctrl-C, printing what happens. */
async function runTunnels(
  specs: TunnelSpec[],
  flags: ConnectionFlags,
  cmd: Command,
  loaded?: Config,
): Promise<void> {
  const config = loaded ?? usage(cmd, () => loadConfig(flags.config ?? defaultConfigPath()));
  // Precedence: flag, then environment (commander merges both), then the config file, then the default.
  const server = flags.server ?? config.server ?? DEFAULT_SERVER;
  const token = flags.token ?? config.token;
  if (!token)
    cmd.error(
      'error: no token. Pass --token, set GGROK_TOKEN, or run `ggrok config add-token <token>` (the relay prints its token at start-up).',
      { exitCode: EXIT_USAGE },
    );
  const ui = new Ui({
    format: flags.logFormat ?? 'text',
    quiet: flags.quiet ?? false,
    color: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
  });
  const inspector = await maybeInspector(flags, cmd, ui);
  const [first, ...more] = specs as [TunnelSpec, ...TunnelSpec[]];
  const client = usage(
    cmd,
    () =>
      new TunnelClient({
        server,
        token,
        ...first,
        more,
        insecure: flags.insecure,
        retryInitialConnect: true,
        observe: inspector?.observe,
      }),
  );
  client.on('online', (info) => {
    inspector?.setTunnels(info.tunnels);
    ui.online({
      tunnels: info.tunnels.map((t) => ({ url: t.url, target: describeTarget(t.target) })),
      server,
      rttMs: client.rttMs,
      reconnected: info.reconnected,
      inspector: inspector?.url,
    });
    // Tell at start what the first visitor would otherwise discover as a 502: no server yet, or an untrusted certificate.
    if (!info.reconnected)
      for (const t of info.tunnels)
        checkTarget(t.target).then(
          (problem) => problem && ui.warn(problem.message, { code: problem.code, tunnel: t.name }),
          () => {},
        );
  });
  client.on('offline', (info) => ui.offline(info.reason, info.retryInMs));
  client.on('request', (x) => ui.request(x, specs.length > 1));
  client.on('inbox', (report) => ui.inbox(report));
  client.on('hint', (hint) => {
    inspector?.addHint(hint);
    ui.hint(hint);
  });
  client.on('pool', (pool) => ui.pool(pool));
  client.on('health', (h) => ui.health(h));
  client.on('stats', (stats) => {
    inspector?.setStats(stats);
    ui.stats(stats);
  });
  client.on('fatal', (err) => {
    ui.fatal(err.message);
    process.exitCode = EXIT_FAILURE;
  });
  const stop = (): void => {
    ui.summary([...client.stats.values()]);
    Promise.all([client.close(), inspector?.close()]).then(
      () => process.exit(process.exitCode ?? 0),
      () => process.exit(EXIT_FAILURE),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await client.start();
  } catch {
    // 'fatal' already printed the reason.
    process.exit(EXIT_FAILURE);
  }
}
