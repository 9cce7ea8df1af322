// Imperative verbs: `drsite failover|test-failover|failback|commit|cancel <plan|vm>` become a
// failover request with a fresh id on the recovery plan (or on a one-VM plan named after the
// ProtectedVM) and run through the same pass and executor as a declared one, recording the same
// jobs; `reverse|resync|pause|resume <vm>` act on the VM's current relationship.
import { systemClock } from '../model/clock.ts';
import { loadDesiredState } from '../config/index.ts';
import { formatDiagnostic } from '../model/diagnostics.ts';
import type { DesiredState, FailoverRequest, RecoveryPlan } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import { recoverInterrupted, reconcileOnce } from '../reconciler/apply.ts';
import { runDirectAction, type DirectVerb } from '../reconciler/direct-actions.ts';
import { observeSites } from '../reconciler/observe-sites.ts';
import { openSession } from '../reconciler/session.ts';
import { jobRows } from './apply.ts';
import type { GlobalOptions } from './main.ts';
import { printJson, type Io } from './output.ts';
import { waitLockMs } from './wait-lock.ts';

export interface VerbFlags {
  unplanned: boolean;
  cleanup: boolean;
  commit: boolean;
  recoveryPoint: string;
}

function request(verb: string, flags: VerbFlags): FailoverRequest {
  const id = `cli-${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 17)}`;
  switch (verb) {
    case 'failover':
      return flags.unplanned
        ? { id, type: 'unplanned', recoveryPoint: flags.recoveryPoint, commit: flags.commit, cleanupTest: false }
        : { id, type: 'planned', commit: flags.commit, cleanupTest: false };
    case 'test-failover':
      return { id, type: 'test', recoveryPoint: flags.recoveryPoint, commit: false, cleanupTest: flags.cleanup };
    case 'failback':
      return { id, type: 'failback', commit: false, cleanupTest: false, failbackMethod: 'minimize-downtime' };
    case 'commit':
    case 'cancel':
      return { id, type: verb, commit: false, cleanupTest: false };
  }
  throw new TerminalError('invalid-argument', `unknown verb ${verb}`);
}

/** The desired state with the request on the named plan, or on a one-VM plan for a ProtectedVM. */
function withRequest(desired: DesiredState, target: string, f: FailoverRequest): DesiredState {
  const plan = desired.recoveryPlans.find((p) => p.metadata.name === target);
  const pvm = desired.protectedVms.find((p) => p.metadata.name === target);
  if (!plan && !pvm) throw new TerminalError('not-found', `${target} is neither a RecoveryPlan nor a ProtectedVM in these declarations`);
  const next: RecoveryPlan = plan
    ? { ...plan, spec: { ...plan.spec, failover: f } }
    : { apiVersion: 'drsite.dev/v1', kind: 'RecoveryPlan', metadata: { name: target }, spec: { groups: [{ vms: [target] }], failover: f } };
  return { ...desired, recoveryPlans: [...desired.recoveryPlans.filter((p) => p.metadata.name !== target), next] };
}

export async function verbCommand(verb: string, target: string, paths: string[], flags: VerbFlags, g: GlobalOptions, io: Io): Promise<number> {
  const loaded = await loadDesiredState(paths);
  for (const d of loaded.diagnostics) io.err(formatDiagnostic(d));
  if (!loaded.ok) return 1;
  const json = g.output === 'json';
  const report = (l: string) => !json && io.out(l);
  const direct = ['reverse', 'resync', 'pause', 'resume'].includes(verb);
  const desired = direct ? loaded.state : withRequest(loaded.state, target, request(verb, flags));
  const session = await openSession({ desired, vaultPath: g.vault!, stateDir: g.stateDir, report, command: `drsite ${verb} ${target}`, waitLockMs: waitLockMs(g) });
  try {
    recoverInterrupted(session.vault);
    if (direct) {
      const observation = await observeSites(desired, session.sites, session.vault, new Date());
      const job = await runDirectAction({ desired, sites: session.sites, vault: session.vault, observation, stateDir: session.stateDir, report, clock: systemClock }, verb as DirectVerb, target);
      if (json) printJson(io, job ?? { ok: true });
      else io.out(job ? jobRows([job]) : `${verb}: done for ${target}`);
      return job?.state === 'Failed' ? 1 : 0;
    }
    const r = await reconcileOnce({ desired, sites: session.sites, vault: session.vault, stateDir: session.stateDir, report });
    const planJobs = r.jobs.filter((j) => j.type === 'RecoveryPlan' && j.target === `RecoveryPlan/${target}`);
    for (const w of r.plan.warnings.filter((x) => x.target.name === target)) io.err(`warning: ${w.message}`);
    if (json) printJson(io, r.jobs);
    else if (r.jobs.length) io.out(jobRows(r.jobs));
    if (!planJobs.length) {
      io.err(`${verb} ${target}: nothing was run (see the warnings above)`);
      return 1;
    }
    return planJobs.some((j) => j.state === 'Failed') ? 1 : 0;
  } finally {
    await session.close();
  }
}
