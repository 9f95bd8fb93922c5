// `ggrok http`: flags and environment -> a TunnelClient, with the terminal UI attached. Commander wiring only.
import { Command, Option } from 'commander';
import { TunnelClient } from './client.js';
import { describeTarget, parseTarget, type LocalTarget } from './local-request.js';
import { Ui } from './ui.js';

interface HttpFlags {
  server: string;
  token?: string;
  subdomain?: string;
  insecure?: boolean;
  logFormat: 'text' | 'json';
  quiet?: boolean;
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
    .action(async (spec: string, flags: HttpFlags, cmd: Command) => {
      let target: LocalTarget;
      try {
        target = parseTarget(spec, flags.insecure ?? false);
      } catch (err) {
        cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
      }
      if (!flags.token)
        cmd.error(
          'error: no token. Pass --token or set GGROK_TOKEN (the relay prints its token at start-up).',
          { exitCode: EXIT_USAGE },
        );
      await runHttp(target, { ...flags, token: flags.token }, cmd);
    });
}

async function runHttp(
  target: LocalTarget,
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
