// `ggrok inbox list|replay <id>|drop <id>`: what the relay's webhook inbox keeps for this token, for people and scripts.
import http from 'node:http';
import https from 'node:https';
import { Command, Option } from 'commander';
import { formatBytes } from '../protocol/units.js';
import { defaultConfigPath, loadConfig } from './config.js';
import { relayUrl } from './client.js';

/** Exit codes as the other commands: 1 for a failure (relay unreachable, unknown id), 2 for usage. */
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const DEFAULT_SERVER = 'http://localhost:8080';
/** Largest answer read from the relay (1 000 requests listed take about 300 KiB). */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
const TIMEOUT_MS = 15_000;

interface InboxFlags {
  server?: string;
  token?: string;
  config?: string;
  insecure?: boolean;
  json?: boolean;
}

/** One kept request as the relay lists it. */
interface Entry {
  id: string;
  name: string;
  method: string;
  target: string;
  receivedAt: string;
  bytes: number;
  attempts: number;
  state: string;
  lastError?: string;
}

/** Calls the relay's inbox API; resolves with the status and parsed JSON body. */
function call(
  server: string,
  token: string,
  method: string,
  path: string,
  insecure: boolean,
): Promise<{ status: number; body: unknown }> {
  const url = relayUrl(server, `/_ggrok/inbox${path}`);
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      timeout: TIMEOUT_MS,
      ...(url.protocol === 'https:' ? { rejectUnauthorized: !insecure } : {}),
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url.host} in ${TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) res.destroy(new Error('answer too large'));
        else chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch {
          reject(new Error(`${url.host} answered ${res.statusCode} without JSON: is it a ggrok relay?`));
        }
      });
    });
    req.end();
  });
}

/** Builds the `inbox` command. */
export function inboxCommand(): Command {
  const inbox = new Command('inbox').description(
    "what the relay kept for this token's tunnels while their clients were away (webhook inbox)",
  );
  const shared = (cmd: Command): Command =>
    cmd
      .addOption(new Option('-s, --server <url>', 'relay URL (default: config file)').env('GGROK_SERVER'))
      .addOption(new Option('-t, --token <token>', 'relay token (default: config file)').env('GGROK_TOKEN'))
      .addOption(new Option('--config <path>', 'config file').env('GGROK_CONFIG'))
      .option('-k, --insecure', "accept the relay's self-signed certificate")
      .option('--json', 'print JSON');
  const run = async (
    flags: InboxFlags,
    cmd: Command,
    method: string,
    path: string,
    show: (body: unknown) => string,
  ): Promise<void> => {
    let server = flags.server;
    let token = flags.token;
    if (!server || !token) {
      try {
        const config = loadConfig(flags.config ?? defaultConfigPath());
        server ??= config.server;
        token ??= config.token;
      } catch (err) {
        cmd.error(`error: ${(err as Error).message}`, { exitCode: EXIT_USAGE });
      }
    }
    if (!token) cmd.error('error: no token. Pass --token or set GGROK_TOKEN.', { exitCode: EXIT_USAGE });
    let answer: { status: number; body: unknown };
    try {
      answer = await call(server ?? DEFAULT_SERVER, token, method, path, flags.insecure ?? false);
    } catch (err) {
      process.stderr.write(`ggrok: ${(err as Error).message}\n`);
      process.exitCode = EXIT_FAILURE;
      return;
    }
    if (answer.status !== 200) {
      const b = answer.body as { error?: unknown; message?: unknown };
      const why = [b.message, b.error].find((v): v is string => typeof v === 'string');
      process.stderr.write(`ggrok: ${why ?? `the relay answered ${answer.status}`} (${answer.status})\n`);
      process.exitCode = EXIT_FAILURE;
      return;
    }
    process.stdout.write(flags.json ? `${JSON.stringify(answer.body)}\n` : show(answer.body));
  };
  shared(inbox.command('list').description('list kept requests, oldest first')).action(
    (flags: InboxFlags, cmd: Command) =>
      run(flags, cmd, 'GET', '', (body) => {
        const list = (body as { requests?: Entry[] }).requests ?? [];
        if (list.length === 0) return 'nothing kept\n';
        return list
          .map(
            (e) =>
              `${e.id}  ${e.receivedAt}  ${e.name}  ${e.method} ${e.target}  ${formatBytes(e.bytes)}  ${e.state}` +
              `${e.attempts > 0 ? ` (${e.attempts} attempts${e.lastError ? `: ${e.lastError}` : ''})` : ''}\n`,
          )
          .join('');
      }),
  );
  shared(
    inbox
      .command('replay')
      .description('deliver a kept request again (a failed one gets fresh attempts)')
      .argument('<id>'),
  ).action((id: string, flags: InboxFlags, cmd: Command) =>
    run(flags, cmd, 'POST', `/${encodeURIComponent(id)}/replay`, () => `${id} queued for delivery\n`),
  );
  shared(inbox.command('drop').description('forget a kept request').argument('<id>')).action(
    (id: string, flags: InboxFlags, cmd: Command) =>
      run(flags, cmd, 'DELETE', `/${encodeURIComponent(id)}`, () => `${id} dropped\n`),
  );
  return inbox;
}
