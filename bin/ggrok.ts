#!/usr/bin/env node
// The `ggrok` executable: dispatches to the relay and client commands (the one place that sees both).
import { Command, CommanderError } from 'commander';
import { configCommand, httpCommand, startCommand } from '../cli/main.js';
import { VERSION } from '../protocol/version.js';
import { relayCommand } from '../relay/main.js';

const program = new Command('ggrok')
  .description('Share a local server at a stable public URL through your own relay.')
  .version(VERSION, '-v, --version')
  .addCommand(httpCommand())
  .addCommand(startCommand())
  .addCommand(configCommand())
  .addCommand(relayCommand())
  .showSuggestionAfterError(true);

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
