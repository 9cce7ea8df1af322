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

  program
    .command('certs')
    .description('create a CA and certificates for hosts (and the operator identity), idempotent')
    .argument('<hosts...>', 'host names (certificate CN)')
    .option('--dir <dir>', 'where certificates live', '.drsite/certs')
    .action(run(async (hosts: string[], opts: { dir: string }) => (await import('./certs.ts')).certsCommand(hosts, opts, globals(), io)));

  program
    .command('agent')
    .description('run the host agent: NBD exports, change tracking, shipping, Replica server, API')
    .requiredOption('--config <file>', 'agent configuration (YAML)')
    .action(run(async (opts: { config: string }) => (await import('./agent.ts')).agentCommand(opts, io)));

  program
    .command('workload')
    .description("write a deterministic pattern to a VM's disk through its NBD export")
    .argument('<vm>', 'VM name')
    .requiredOption('--disk <name>', 'disk (NBD export name)')
    .option('--socket <path>', 'NBD unix socket of the VM')
    .option('--data-dir <dir>', 'agent data directory (socket at <dir>/nbd/<vm>.sock)')
    .addOption(new Option('--pattern <pattern>', 'write pattern').choices(['random', 'sequential', 'mixed']).default('random'))
    .option('--rate <size>', 'bytes per second, e.g. 10MB')
    .option('--bytes <size>', 'stop after this many bytes, e.g. 64MiB')
    .option('--duration <duration>', 'stop after this long, e.g. 30s')
    .option('--seed <n>', 'PRNG seed', '1')
    .option('--compressible <fraction>', 'share of each block zstd can shrink (0-1)')
    .action(run(async (vm: string, f: import('./workload.ts').WorkloadFlags) => (await import('./workload.ts')).workloadCommand(vm, f, globals(), io)));

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
