// The `drsite` command: argument parsing and dispatch. Each command lives in its own module and
// returns an exit code; this file only wires them and turns failures into one clear line.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { describeError, processIo, type Io, type OutputFormat } from './output.ts';

export interface GlobalOptions {
  output: OutputFormat;
  debug: boolean;
  vault?: string;
  /** The same as vault (`--state`): a SQLite path or `etcd://host:port,...`; wins over --vault. */
  state?: string;
  /** drsite's state directory: embedded sites, certificates, journals (and the vault unless --vault). */
  stateDir: string;
  /** apply, run and the verbs: how long to wait for another drsite reconciling the same vault. */
  waitLock?: string;
}

const VERSION = (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

/** Exit codes shared by every command. */
export const EXIT = { ok: 0, invalid: 1, changes: 2 } as const;

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  let code: number = EXIT.ok;
  const program = new Command('drsite')
    .description('Disaster recovery for virtual machines, declared as code.')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--debug', 'print stack traces with errors', false)
    .option('--vault <path>', 'control-plane state (SQLite) (default: <state-dir>/vault.db)')
    .option('--state <url>', 'control-plane state: a SQLite path, or etcd://host:port,host:port... for controllers at several sites (see docs/control-plane.md)')
    .option('--state-dir <dir>', 'state directory: embedded sites, certificates, journals', '.drsite')
    .option('--wait-lock <duration>', 'apply, run, verbs: wait this long for another drsite reconciling the same vault (default: refuse at once)')
    .version(VERSION, '-V, --version')
    .exitOverride()
    // Every subcommand's --help lists --state-dir, -o and the rest too (inherited by the commands below).
    .configureHelp({ showGlobalOptions: true })
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });

  const globals = (): GlobalOptions => {
    const o = program.opts<GlobalOptions>();
    return { ...o, vault: o.state ?? o.vault ?? `${o.stateDir}/vault.db` };
  };
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
    .command('synth')
    .description('synthesise Terraform for Azure Site Recovery (cdktf), or the normalised manifests')
    .argument('<paths...>', 'YAML files or directories')
    .addOption(new Option('--target <target>', 'what to synthesise').choices(['azure-site-recovery', 'manifests']).default('azure-site-recovery'))
    .option('--out <dir>', 'output directory', '.drsite/synth/asr')
    .option('--resource-group <name>', 'resource group of the Recovery Services vault')
    .option('--location <region>', 'Azure region of the vault')
    .option('--vault-name <name>', 'name of the Recovery Services vault')
    .action(
      run(async (paths: string[], opts: import('./synth.ts').SynthOptions) => (await import('./synth.ts')).synthCommand(paths, opts, globals(), io)),
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

  const paths = (cmd: Command) => cmd.argument('<paths...>', 'YAML files or directories');

  paths(program.command('apply').description('one reconcile pass: observe the sites, print the plan, apply it, print the jobs'))
    .option('--no-samples', 'do not create sample VMs or run their workload (sample-vms.json)')
    .action(run(async (p: string[], o: { samples: boolean }) => (await import('./apply.ts')).applyCommand(p, globals(), io, o)));

  paths(program.command('run').description('reconcile continuously (level-triggered loop) with live status'))
    .addOption(new Option('--until <condition>', 'stop when this holds').choices(['converged']))
    .option('--duration <duration>', 'stop after this long, e.g. 10m')
    .option('--poll <duration>', 'mean time between passes (jittered +-20%)', '2s')
    .option('--metrics-port <port>', 'serve Prometheus metrics on 127.0.0.1:<port>/metrics')
    .option('--no-samples', 'do not create sample VMs or run their workload (sample-vms.json)')
    .option('--leader-ttl <duration>', 'with --state etcd://: how long the leader\'s etcd lease outlives its last renewal (a follower takes over after it)', '10s')
    .action(run(async (p: string[], o: import('./run.ts').RunFlags) => (await import('./run.ts')).runCommand(p, o, globals(), io)));

  program
    .command('status')
    .description('replication status per ProtectedVM, as the last pass recorded it in the vault')
    .action(run(async () => (await import('./status.ts')).statusCommand(globals(), io)));

  program
    .command('jobs')
    .description('list jobs, or show one job with its steps and child jobs')
    .argument('[id]', 'job id')
    .option('--limit <n>', 'how many jobs to list', '30')
    .action(run(async (id: string | undefined, o: { limit: string }) => (await import('./jobs.ts')).jobsCommand(id, o, globals(), io)));

  program
    .command('events')
    .description('events newest first: health changes, replication errors, operator and recovery plan actions')
    .argument('[name]', 'only this resource (a ProtectedVM or RecoveryPlan name)')
    .option('--kind <kind>', 'only this kind, e.g. ProtectedVM')
    .option('--limit <n>', 'how many events', '50')
    .action(run(async (name: string | undefined, o: { kind?: string; limit: string }) => (await import('./events.ts')).eventsCommand(name, o, globals(), io)));

  program
    .command('continue')
    .description('confirm the manual action a recovery plan waits on; the running loop resumes the plan')
    .argument('<plan>', 'RecoveryPlan name')
    .action(run(async (plan: string) => (await import('./continue.ts')).continueCommand(plan, globals(), io)));

  (await import('./k8s.ts')).registerK8sCommands(program, globals, io, run);

  const verbs: [string, string][] = [
    ['failover', 'planned failover (or --unplanned) of a recovery plan or a ProtectedVM'],
    ['test-failover', 'test failover (<vm>-Test VMs), or --cleanup to remove them'],
    ['failback', 'planned failover back to the declared primary, then reverse replication'],
    ['commit', 'commit a failover that waits for completion'],
    ['cancel', 'cancel a failover that waits for completion'],
    ['reverse', 'start reverse replication from the site that now runs the VM'],
    ['resync', 'resynchronize a ProtectedVM now'],
    ['pause', 'suspend replication of a ProtectedVM'],
    ['resume', 'resume replication of a ProtectedVM'],
  ];
  for (const [verb, description] of verbs) {
    const cmd = program.command(verb).description(description).argument('<target>', 'RecoveryPlan or ProtectedVM name').argument('<paths...>', 'YAML files or directories');
    // Each verb lists only the options it reads.
    if (verb === 'failover') {
      cmd.option('--unplanned', 'the primary is lost: start from a recovery point', false)
        .option('--commit', 'commit at once (and reverse replication for a planned failover)', false);
    }
    if (verb === 'test-failover') cmd.option('--cleanup', 'remove the test VMs instead', false);
    if (verb === 'failover' || verb === 'test-failover') cmd.option('--recovery-point <point>', 'latest | latest-app-consistent | RFC 3339 time', 'latest');
    cmd.action(run(async (target: string, p: string[], o: Partial<import('./verbs.ts').VerbFlags>) =>
      (await import('./verbs.ts')).verbCommand(verb, target, p, { unplanned: false, cleanup: false, commit: false, recoveryPoint: 'latest', ...o }, globals(), io)));
  }

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
