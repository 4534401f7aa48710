import { UserError } from '../util/errors.js';
import { helpText, parseCommand, type CommandSpec, type Parsed } from './args.js';
import { commands } from './commands/index.js';

/** One CLI command: its flags (which also make its --help) and what it does. */
export interface Command {
  spec: CommandSpec;
  run(args: Parsed): Promise<number | void>;
}

function overview(): string {
  const width = Math.max(...commands.map((c) => c.spec.name.length)) + 2;
  return [
    'mpt — run, serve, evaluate and train MPT (MosaicGPT) language models in TypeScript',
    '',
    'Usage: mpt <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    "Run 'mpt <command> --help' for a command's options.",
    '',
  ].join('\n');
}

/** Runs the CLI and returns the exit code. User errors print one line; bugs print a stack trace. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const [name, ...rest] = argv;
  try {
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(overview());
      return name ? 0 : 1;
    }
    if (name === '--version') {
      const { readFileSync } = await import('node:fs');
      const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
      process.stdout.write(`${pkg.version}\n`);
      return 0;
    }
    const found = findCommand(name, rest);
    if (!found) throw new UserError(`unknown command "${name}"; run 'mpt --help' for the list`);
    const { spec } = found.command;
    const args = parseCommand(spec, found.rest);
    if (args.help) {
      process.stdout.write(helpText(spec));
      return 0;
    }
    return (await found.command.run(args)) ?? 0;
  } catch (error) {
    if (error instanceof UserError && !debug) {
      process.stderr.write(`mpt: error: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`mpt: ${error instanceof UserError ? 'error' : 'internal error'}: ${(error as Error)?.stack ?? error}\n`);
    return error instanceof UserError ? 1 : 70;
  }
}

/** Commands may have two words (`mpt data prepare`, `mpt bench tokenize`): the longest name wins. */
function findCommand(first: string, rest: string[]): { command: Command; rest: string[] } | undefined {
  const two = rest.length > 0 ? commands.find((c) => c.spec.name === `${first} ${rest[0]}`) : undefined;
  if (two) return { command: two, rest: rest.slice(1) };
  const one = commands.find((c) => c.spec.name === first);
  return one ? { command: one, rest } : undefined;
}
