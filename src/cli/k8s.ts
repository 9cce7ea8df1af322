// `drsite crds` prints the CustomResourceDefinitions for `kubectl apply -f -`; `drsite controller`
// reconciles the custom resources of one namespace with the kubeconfig found the usual way
// (KUBECONFIG, ~/.kube/config, or the pod's service account), until SIGINT / SIGTERM.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { TerminalError } from '../model/errors.ts';
import { parseDuration } from '../model/units.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';

export interface ControllerFlags {
  namespace?: string;
  leaseName: string;
  identity?: string;
  leaseDuration: string;
  poll: string;
}

export async function crdsCommand(g: GlobalOptions, io: Io): Promise<number> {
  const { generateCrds } = await import('../k8s/crds.ts');
  const crds = generateCrds();
  if (g.output === 'json') printJson(io, { apiVersion: 'v1', kind: 'List', items: crds });
  else io.out(crds.map((c) => stringify(c, { lineWidth: 0 })).join('---\n'));
  return 0;
}

function seconds(text: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < 1000) throw new TerminalError('invalid-argument', `${flag} ${JSON.stringify(text)} is not a duration of at least 1s, such as 15s`);
  return ms;
}

export async function controllerCommand(flags: ControllerFlags, g: GlobalOptions, io: Io): Promise<number> {
  const leaseMs = seconds(flags.leaseDuration, '--lease-duration');
  const pollMs = seconds(flags.poll, '--poll');
  const { Controller } = await import('../k8s/controller.ts');
  const { loadDefaultKubeConfig } = await import('../k8s/kubeconfig.ts');
  const kc = loadDefaultKubeConfig();
  const namespace = flags.namespace ?? kc.namespace ?? 'default';
  const identity = flags.identity ?? `${hostname()}_${randomUUID().slice(0, 8)}`;
  const say = (line: string) => io.out(`${new Date().toISOString()} ${line}`);
  say(`drsite controller ${identity}: namespace ${namespace} on ${kc.server}, state in ${g.stateDir}`);
  const controller = new Controller({
    kubeConfig: kc.kubeConfig, namespace, stateDir: g.stateDir, vaultPath: g.vault!, identity, leaseName: flags.leaseName,
    leaseDurationSeconds: Math.round(leaseMs / 1000), pollMs, report: say,
  });
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  controller.start();
  await stopped;
  say('stopping: finishing the pass in progress, then releasing the lease');
  await controller.stop();
  return 0;
}

/** Registers `crds` and `controller` on the drsite program. */
export function registerK8sCommands(program: Command, globals: () => GlobalOptions, io: Io, run: (fn: (...a: never[]) => Promise<number>) => (...a: unknown[]) => Promise<void>): void {
  program
    .command('crds')
    .description('print the CustomResourceDefinitions of every kind (YAML, or a List with --output json) for kubectl apply -f -')
    .action(run(async () => crdsCommand(globals(), io)));

  program
    .command('controller')
    .description('reconcile the custom resources of a namespace (leader-elected through a Lease)')
    .option('-n, --namespace <namespace>', "namespace to watch (default: the kubeconfig context's, else default)")
    .option('--lease-name <name>', 'coordination.k8s.io Lease used for leader election', 'drsite-controller')
    .option('--identity <id>', "this replica's name in the Lease (default: <hostname>_<random>)")
    .option('--lease-duration <duration>', 'how long a leader that stopped renewing keeps the Lease', '15s')
    .option('--poll <duration>', 'mean time between passes when nothing changes (jittered +-20%)', '10s')
    .action(run(async (f: ControllerFlags) => controllerCommand(f, globals(), io)));
}
