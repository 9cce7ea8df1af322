// The `drsite` command: argument parsing and dispatch. Each command lives in its own module and
// returns an exit code; this file only wires them and turns failures into one clear line.
import { Command, CommanderError, Option } from 'commander';
import { describeError, processIo, type Io, type OutputFormat } from './output.ts';

export interface GlobalOptions {
  output: OutputFormat;
  debug: boolean;
  vault?: string;
}

/** Exit codes shared by every command. */
export const EXIT = { ok: 0, invalid: 1, changes: 2 } as const;

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  let code: number = EXIT.ok;
  const program = new Command('drsite')
    .description('Disaster recovery for virtual machines, declared as code.')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--debug', 'print stack traces with errors', false)
    .option('--vault <path>', 'control-plane state (SQLite)', '.drsite/vault.db')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });

  const globals = (): GlobalOptions => program.opts<GlobalOptions>();
  const run = (fn: (...a: never[]) => Promise<number>) =>
    async (...args: unknown[]) => {
      code = await (fn as (...a: unknown[]) => Promise<number>)(...args);
    };

  program
    .command('validate')
    .description('check declarations: YAML, schemas, references and rules')
    .argument('<paths...>', 'YAML files or directories')
    .action(run(async (paths: string[]) => (await import('./validate.ts')).validateCommand(paths, globals(), io)));

  program
    .command('plan')
    .description('show what apply would change, as a list of typed actions')
    .argument('<paths...>', 'YAML files or directories')
    .option('--detailed-exitcode', 'exit 2 when there are changes', false)
    .action(
      run(async (paths: string[], opts: { detailedExitcode: boolean }) =>
        (await import('./plan.ts')).planCommand(paths, opts, globals(), io),
      ),
    );

  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors are invalid input.
      return e.exitCode === 0 ? EXIT.ok : EXIT.invalid;
    }
    io.err(describeError(e, globals().debug));
    return EXIT.invalid;
  }
  return code;
}
