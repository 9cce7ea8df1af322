// One reconcile pass: observe the sites, record what was seen, resume any recovery plan a previous
// pass (or a killed process) left open, plan, and apply the plan one journaled action at a time.
// Protection actions are level-triggered (a failed one is simply planned again next pass, unless
// its error is terminal); failover actions run only from a new failover id, inside a plan job.
import { systemClock, type Clock } from '../model/clock.ts';
import type { DesiredState } from '../model/desired.ts';
import { lookup } from '../model/observed.ts';
import type { SiteSet } from '../sites/open-sites.ts';
import type { Job, Vault } from '../vault/vault.ts';
import { finish, runProtectionAction, type ExecContext } from './executor.ts';
import { observeSites, type Observation } from './observe-sites.ts';
import { plan as makePlan } from './plan.ts';
import { FAILOVER_ACTIONS, unmetDeclarations, type Plan, type PlannedAction, type PlanWarning } from './plan-types.ts';
import { planJobInput, runPlanJob, runnablePlanJobs, startPlanJob } from './recovery-plan.ts';
import { adoptRebuiltVault } from './rebuilt-vault.ts';
import { recordDeclarationStatus, recordObservation } from './record-status.ts';

export interface PassOptions {
  desired: DesiredState;
  sites: SiteSet;
  vault: Vault;
  stateDir: string;
  report?: (line: string) => void;
  /** Observe and plan only. */
  dryRun?: boolean;
  /** Called with the plan before anything is applied (the CLI prints it). */
  onPlan?: (plan: Plan) => void;
  /**
   * Action ids that failed with a non-recoverable error in an earlier pass: recorded once, not
   * retried (the loop keeps this set; an action whose id or declaration changes is tried again).
   * Ids that fail terminally in this pass are added.
   */
  skipActions?: Set<string>;
  /** Time for observations, schedules and job records. @default systemClock */
  clock?: Clock;
}

export interface PassResult {
  /** The plan made at the start of the pass. */
  plan: Plan;
  /** Jobs this pass started or resumed, as recorded when it ended. */
  jobs: Job[];
  /** What the sites reported after the pass. */
  observation: Observation;
  /** Actions that failed with a non-recoverable error (not retried by the loop). */
  terminalFailures: number;
  converged: boolean;
  /** Declarations the state left by the pass refuses (or whose run failed): `apply` exits 1 on them. */
  unmet: PlanWarning[];
}

const isFailover = (a: PlannedAction) => (FAILOVER_ACTIONS as readonly string[]).includes(a.type);

/**
 * Recovers what a killed process left: top-level jobs still Running (other than a recovery plan,
 * which resumes, and an initial replication waiting for its first sync) are closed as Cancelled.
 * Their pending marks go with them; this is safe because the next plan is made from what the
 * sites report and relationship ids are deterministic, so a create that did land is seen as done.
 */
export function recoverInterrupted(vault: Vault): number {
  let n = 0;
  for (const j of vault.listJobs({ state: 'Running', parentId: null, limit: 500 })) {
    if (j.type === 'RecoveryPlan') continue;
    if (j.type === 'InitialReplication' && vault.getJob(j.id)?.steps.some((s) => s.name === 'first-sync')) continue;
    finish(vault, j.id, 'Cancelled', 'interrupted: the reconciler stopped during this job; the next pass re-plans from what the sites report');
    n++;
  }
  const open = new Set(vault.listJobs({ limit: 1000 }).filter((j) => j.state === 'Running' || j.state === 'Waiting').map((j) => j.id));
  for (const m of vault.listPending()) {
    const jobId = /^call:([^:]+):/.exec(m.key)?.[1];
    if (jobId && !open.has(jobId)) vault.clearPending(m.key);
  }
  return n;
}

export function isConverged(desired: DesiredState, obs: Observation, plan: Plan, vault: Vault): boolean {
  if (plan.actions.length > 0) return false;
  if (vault.listJobs({ type: 'RecoveryPlan', state: 'Running', limit: 1 }).length > 0) return false;
  if (vault.listJobs({ type: 'RecoveryPlan', state: 'Waiting', limit: 1 }).length > 0) return false;
  return desired.protectedVms.every((p) => {
    const rel = lookup(obs.observed.relationships, p.metadata.name);
    return rel?.state === 'Replicating' && rel.health === 'Normal';
  });
}

export async function reconcileOnce(opts: PassOptions): Promise<PassResult> {
  const { desired, sites, vault } = opts;
  const clock = opts.clock ?? systemClock;
  sites.setDesired(desired);
  const report = opts.report ?? (() => {});
  const jobs = new Map<string, string>();
  let terminalFailures = 0;
  let observation = await observeSites(desired, sites, vault, new Date(clock.now()));
  if (!opts.dryRun) {
    recordObservation(vault, desired, observation);
    if (adoptRebuiltVault(vault, desired, observation, report).length > 0) observation = await observeSites(desired, sites, vault, new Date(clock.now()));
  }
  const ctx = (): ExecContext => ({ desired, sites, vault, observation, stateDir: opts.stateDir, report, clock });

  if (!opts.dryRun) {
    const open = runnablePlanJobs(vault);
    for (const id of open) {
      jobs.set(id, id);
      report(`RecoveryPlan ${vault.getJob(id)?.target}: resuming job ${id}`);
      await runPlanJob(ctx(), id);
    }
    if (open.length > 0) {
      observation = await observeSites(desired, sites, vault, new Date(clock.now()));
      recordObservation(vault, desired, observation);
    }
  }

  const plan = makePlan(desired, observation.observed);
  opts.onPlan?.(plan);
  if (opts.dryRun) return { plan, jobs: [], observation, terminalFailures, converged: isConverged(desired, observation, plan, vault), unmet: unmetDeclarations(plan) };

  const failed = new Set<string>();
  const byPlan = new Map<string, PlannedAction[]>();
  for (const action of plan.actions) {
    if (isFailover(action)) {
      const origin = (action.details as { recoveryPlan: string }).recoveryPlan;
      byPlan.set(origin, [...(byPlan.get(origin) ?? []), action]);
      continue;
    }
    if (opts.skipActions?.has(action.id) || action.dependsOn.some((d) => failed.has(d))) {
      failed.add(action.id);
      continue;
    }
    try {
      const job = await runProtectionAction(ctx(), action);
      if (job) {
        jobs.set(job.id, job.id);
        if (job.state === 'Failed') {
          failed.add(action.id);
          if (job.error?.recoverable !== true) {
            terminalFailures++;
            opts.skipActions?.add(action.id);
          }
        }
      }
    } catch (e) {
      failed.add(action.id);
      report(`${action.type} ${action.target.name}: ${(e as Error).message}`);
    }
  }
  for (const [name, actions] of byPlan) {
    const rp = desired.recoveryPlans.find((p) => p.metadata.name === name);
    if (!rp?.spec.failover) continue;
    // Protection actions these depend on must have succeeded in this pass.
    if (actions.some((a) => a.dependsOn.some((d) => failed.has(d)))) continue;
    const job = startPlanJob(vault, planJobInput(ctx(), rp, actions));
    jobs.set(job.id, job.id);
    report(`RecoveryPlan ${name}: failover ${rp.spec.failover.id} (${rp.spec.failover.type}) started as job ${job.id}`);
    await runPlanJob(ctx(), job.id);
  }

  observation = await observeSites(desired, sites, vault, new Date(clock.now()));
  recordObservation(vault, desired, observation);
  const after = makePlan(desired, observation.observed);
  // What the pass leaves: a failover it ran is done (or failed) by now, a refused one still is.
  recordDeclarationStatus(vault, desired, after, clock.now());
  return {
    plan,
    jobs: [...jobs.keys()].map((id) => vault.getJob(id)!).filter(Boolean),
    observation,
    terminalFailures,
    converged: isConverged(desired, observation, after, vault),
    unmet: unmetDeclarations(after),
  };
}
