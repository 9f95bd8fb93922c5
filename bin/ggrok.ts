#!/usr/bin/env node
// The `ggrok` executable: dispatches to the relay and client commands (the one place that sees both).
import { Command, CommanderError } from 'commander';
import { VERSION } from '../protocol/version.js';

// Load only the side the command needs: a relay never runs client code and the other way round (less memory and a
// faster start). Help, version and unknown commands load both, so every command is listed and suggested.
const sub = process.argv[2];
const versionOnly = sub === '-v' || sub === '--version';
const clientOnly = versionOnly || sub === 'http' || sub === 'start' || sub === 'config' || sub === 'inbox';
const relayOnly = versionOnly || sub === 'relay';
const cli = relayOnly ? undefined : await import('../cli/main.js');
const relay = clientOnly ? undefined : await import('../relay/main.js');

const program = new Command('ggrok')
  .description('Share a local server at a stable public URL through your own relay.')
  .version(VERSION, '-v, --version')
  .showSuggestionAfterError(true);
if (cli)
  program
    .addCommand(cli.httpCommand())
    .addCommand(cli.startCommand())
    .addCommand(cli.configCommand())
    .addCommand(cli.inboxCommand());
if (relay) program.addCommand(relay.relayCommand());

// Usage errors exit 2 with one line; --help and --version exit 0.
const all = (cmd: Command): Command[] => [cmd, ...cmd.commands.flatMap(all)];
for (const cmd of all(program)) cmd.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError)
    process.exit(err.exitCode === 0 ? 0 : err.exitCode === 1 ? 2 : err.exitCode);
  throw err;
}
