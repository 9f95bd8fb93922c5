// `ggrok http`: flags and environment -> a TunnelClient, with the terminal UI attached. Commander wiring only.
import { isIP } from 'node:net';
import { Command, Option } from 'commander';
import { TunnelClient } from './client.js';
import {
  describeTarget,
  parseHeaderArg,
  parseTarget,
  type HeaderRules,
  type LocalTarget,
} from './local-request.js';
import { Ui } from './ui.js';

interface HttpFlags {
  server: string;
  token?: string;
  subdomain?: string;
  insecure?: boolean;
  logFormat: 'text' | 'json';
  quiet?: boolean;
  basicAuth: string[];
  allowIp: string[];
  optionsWithoutAuth?: boolean;
  hostHeader?: string;
  requestHeaderAdd: string[];
  requestHeaderRemove: string[];
  responseHeaderAdd: string[];
  responseHeaderRemove: string[];
}

/** Exit codes: 0 clean stop, 1 runtime failure (refused, unreachable for good), 2 usage error. */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

/** Builds the `http` subcommand. */
export function httpCommand(): Command {
  return new Command('http')
    .description('share a local HTTP server through a relay')
    .argument('<target>', 'local port (3000), host:port (192.168.1.5:8080) or URL (https://localhost:8443)')
    .addOption(
      new Option('-s, --server <url>', 'relay URL').env('GGROK_SERVER').default('http://localhost:8080'),
    )
    .addOption(new Option('-t, --token <token>', 'relay token (printed by `ggrok relay`)').env('GGROK_TOKEN'))
    .addOption(
      new Option('--subdomain <name>', 'ask for this name (<name>.<relay domain>)').env('GGROK_SUBDOMAIN'),
    )
    .option('-k, --insecure', 'accept self-signed certificates from the relay and an https target')
    .addOption(new Option('--log-format <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('-q, --quiet', 'do not print a line per request')
    .option(
      '--basic-auth <user:pass>',
      'visitors must sign in with these credentials (repeatable)',
      collect,
      [],
    )
    .option('--allow-ip <cidr>', 'only these addresses or ranges may visit (repeatable)', collect, [])
    .option('--options-without-auth', 'let OPTIONS requests (CORS preflights) through without --basic-auth')
    .option(
      '--host-header <rewrite|value>',
      'Host sent to the local service: "rewrite" = the target host:port',
    )
    .option('--request-header-add <"Name: value">', 'add a header to requests (repeatable)', collect, [])
    .option('--request-header-remove <name>', 'remove a header from requests (repeatable)', collect, [])
    .option('--response-header-add <"Name: value">', 'add a header to responses (repeatable)', collect, [])
    .option('--response-header-remove <name>', 'remove a header from responses (repeatable)', collect, [])
    .action(async (spec: string, flags: HttpFlags, cmd: Command) => {
      let target: LocalTarget;
      let headerRules: HeaderRules;
      try {
        target = parseTarget(spec, flags.insecure ?? false);
        headerRules = {
          hostHeader: flags.hostHeader,
          requestAdd: flags.requestHeaderAdd.flatMap(parseHeaderArg),
          requestRemove: flags.requestHeaderRemove,
          responseAdd: flags.responseHeaderAdd.flatMap(parseHeaderArg),
          responseRemove: flags.responseHeaderRemove,
        };
        for (const pair of flags.basicAuth)
          if (!/^[^:]+:.+$/.test(pair)) throw new Error(`--basic-auth "${pair}" must be user:password`);
        for (const rule of flags.allowIp)
          if (!isIP(rule.split('/')[0] ?? ''))
            throw new Error(`--allow-ip "${rule}" is not an address or CIDR range`);
      } catch (err) {
        cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
      }
      if (!flags.token)
        cmd.error(
          'error: no token. Pass --token or set GGROK_TOKEN (the relay prints its token at start-up).',
          { exitCode: EXIT_USAGE },
        );
      await runHttp(target, headerRules, { ...flags, token: flags.token }, cmd);
    });
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

async function runHttp(
  target: LocalTarget,
  headerRules: HeaderRules,
  flags: HttpFlags & { token: string },
  cmd: Command,
): Promise<void> {
  const ui = new Ui({
    format: flags.logFormat,
    quiet: flags.quiet ?? false,
    color: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
  });
  let client: TunnelClient;
  try {
    client = new TunnelClient({
      server: flags.server,
      token: flags.token,
      subdomain: flags.subdomain,
      target,
      insecure: flags.insecure,
      retryInitialConnect: true,
      headerRules,
      access:
        flags.basicAuth.length > 0 || flags.allowIp.length > 0
          ? {
              basicAuth: flags.basicAuth,
              allowIp: flags.allowIp,
              optionsWithoutAuth: flags.optionsWithoutAuth ?? false,
            }
          : undefined,
    });
  } catch (err) {
    cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
  }
  client.on('online', (info) =>
    ui.online({ ...info, target: describeTarget(target), server: flags.server, rttMs: client.rttMs }),
  );
  client.on('offline', (info) => ui.offline(info.reason, info.retryInMs));
  client.on('request', (x) => ui.request(x));
  client.on('fatal', (err) => {
    ui.fatal(err.message);
    process.exitCode = EXIT_FAILURE;
  });
  const stop = (): void => {
    client.close().then(
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
