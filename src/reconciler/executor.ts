// The executor: turns one planned action into journaled calls on the sites, recorded as a job in
// the vault. Protection actions run as top-level jobs; failover-family actions run as child jobs of
// a recovery plan's job (recovery-plan.ts) from the steps frozen when that plan started.
import { join } from 'node:path';
import type { Clock } from '../model/clock.ts';
import type { DesiredState, ResolvedPolicySpec } from '../model/desired.ts';
import { TerminalError } from '../model/errors.ts';
import type { SiteSet } from '../sites/open-sites.ts';
import type { Site, SiteVm } from '../sites/site.ts';
import type { FailoverAdapterSettings, RelationshipView } from '../transport/agent-api.ts';
import type { Job, JobType, NewJob, Vault } from '../vault/vault.ts';
import { runJournaledCalls, unsupported, type SiteCall } from './journal.ts';
import type { Observation } from './observe-sites.ts';
import type { FailoverActionType, PlannedAction } from './plan-types.ts';
import { extendedRelationshipId, relationshipId } from './relationship-ids.ts';
import { setStatusFields } from './status-fields.ts';
import { inGroup } from '../core/replication/replication-state.ts';

export interface ExecContext {
  desired: DesiredState;
  sites: SiteSet;
  vault: Vault;
  observation: Observation;
  /** drsite's state directory (script journals live under it). */
  stateDir: string;
  /** Progress lines for the CLI. */
  report: (line: string) => void;
  clock: Clock;
}

export const JOB_TYPE: Record<PlannedAction['type'], JobType> = {
  'enable-protection': 'EnableProtection',
  'start-initial-replication': 'InitialReplication',
  'change-policy': 'ChangePolicy',
  'change-disk-set': 'ChangePolicy',
  'move-replica-storage': 'MoveReplicaStorage',
  'extend-replication': 'ExtendReplication',
  'remove-extended-replication': 'ExtendReplication',
  'disable-protection': 'DisableProtection',
  resume: 'ChangePolicy',
  resync: 'Resynchronize',
  'test-failover': 'TestFailover',
  'cleanup-test-failover': 'CleanupTestFailover',
  'planned-failover': 'PlannedFailover',
  'unplanned-failover': 'UnplannedFailover',
  'commit-failover': 'CommitFailover',
  'cancel-failover': 'CancelFailover',
  'reverse-replication': 'ReverseReplication',
  failback: 'PlannedFailover',
};

async function views(site: Site, id: string): Promise<RelationshipView[]> {
  return (await site.relationships()).filter((v) => v.id === id);
}

async function vms(site: Site): Promise<SiteVm[]> {
  return site.vms();
}

function policyOf(desired: DesiredState, name: string): ResolvedPolicySpec {
  const p = desired.policies.find((x) => x.metadata.name === name);
  if (!p) throw new TerminalError('not-found', `policy ${name} is not declared`);
  return p.spec;
}

/** `ProtectedVM/web-01` -> the object a job's events belong to. */
function jobObject(target: string): { kind: string; name: string } {
  const i = target.indexOf('/');
  return i < 0 ? { kind: 'Job', name: target } : { kind: target.slice(0, i), name: target.slice(i + 1) };
}

/**
 * Opens a job and records its start as an event of its target (ProtectedVM or RecoveryPlan), so
 * `drsite events <vm|plan>` lists every job as it starts and ends beside health changes.
 */
export function startJob(vault: Vault, job: NewJob, why?: string): Job {
  return vault.transaction(() => {
    const j = vault.createJob(job);
    vault.recordEvent({ ...jobObject(j.target), type: 'Normal', reason: `${j.type}Started`, message: `job ${j.id}${why ? `: ${why}` : ' started'}` });
    return j;
  });
}

/** Closes a job, drops its leftover pending marks (their outcome is recorded on the steps) and records how it ended as an event. */
export function finish(vault: Vault, jobId: string, state: 'Succeeded' | 'Failed' | 'Cancelled', error?: unknown): Job {
  return vault.transaction(() => {
    for (const m of vault.listPending()) if (m.key.startsWith(`call:${jobId}:`)) vault.clearPending(m.key);
    const j = vault.finishJob(jobId, state, error);
    const message = `job ${j.id} ${state.toLowerCase()}${j.error?.message ? `: ${j.error.message}` : ''}`;
    vault.recordEvent({ ...jobObject(j.target), type: state === 'Failed' ? 'Warning' : 'Normal', reason: `${j.type}${state}`, message });
    return j;
  });
}

/** Runs one protection action as a job; returns the job as recorded (Failed jobs do not throw). */
export async function runProtectionAction(ctx: ExecContext, action: PlannedAction): Promise<Job | undefined> {
  const { vault, desired, sites } = ctx;
  const name = action.target.name;
  const target = `ProtectedVM/${name}`;
  const pvm = desired.protectedVms.find((p) => p.metadata.name === name);
  const current = ctx.observation.current.get(name);

  if (action.type === 'start-initial-replication' && vault.listJobs({ target, type: 'InitialReplication', state: 'Running', limit: 1 }).length > 0) {
    return undefined; // already started; its job closes when the first sync completes
  }
  if (action.type === 'start-initial-replication' && action.details.notBefore && Date.parse(action.details.notBefore) > ctx.clock.now()) {
    return undefined; // the policy schedules it later: a later pass starts it
  }
  if (action.type === 'resume') {
    const site = sites.get(current?.primarySite ?? '');
    await site.resume(current!.id);
    vault.recordEvent({ kind: 'ProtectedVM', name, type: 'Normal', reason: 'ReplicationResumed', message: action.reason });
    return undefined;
  }

  const job = startJob(vault, { type: JOB_TYPE[action.type], target, input: { action } }, action.reason);
  ctx.report(`${job.type} ${name}: started (${action.reason})`);
  try {
    let calls: SiteCall[];
    switch (action.type) {
      case 'enable-protection': {
        const d = action.details;
        const primary = sites.get(d.primary);
        const replica = sites.get(d.replica);
        const id = relationshipId(name);
        // Remember before the call that drsite owns this protection, so a crash right after the
        // create still lets a later removal happen.
        setStatusFields(vault, name, { managed: true, policyName: d.policy });
        calls = [{
          name: 'create-relationship',
          site: primary,
          run: (s) => s.createRelationship({
            id,
            vm: d.vm,
            replica: { name: d.replica, endpoint: replica.endpoint, ...(replica.azure && { azure: replica.azure }) },
            policy: policyOf(desired, d.policy),
            excludeDisks: pvm?.spec.disks?.exclude ?? [],
            ...(d.replicaStoragePath && { replicaStoragePath: d.replicaStoragePath }),
          }),
          done: async () => (await views(primary, id)).length > 0,
        }];
        break;
      }
      case 'start-initial-replication': {
        const id = current?.id ?? relationshipId(name);
        const primary = sites.get(current?.primarySite ?? pvm!.spec.primary);
        calls = [{
          name: 'start',
          site: primary,
          run: (s) => s.startReplication(id),
          done: async () => (await views(primary, id)).some((v) => v.state !== 'ReadyForInitialReplication'),
        }];
        await runJournaledCalls(vault, job.id, calls);
        // Long copies never block a pass: the job stays Running and the status pass closes it once
        // the relationship reaches Replicating (the first complete sync).
        vault.startStep(job.id, 'first-sync');
        ctx.report(`InitialReplication ${name}: started; progress shows in drsite status`);
        return vault.getJob(job.id);
      }
      case 'change-policy': {
        if (action.details.hop === 'extended') unsupported('changing the extended replica policy');
        if (!current) throw new TerminalError('not-found', `${name} has no relationship to change`);
        const site = sites.get(current.primarySite);
        const spec = policyOf(desired, action.details.to);
        calls = [{ name: 'modify-settings', site, run: (s) => s.modifySettings(current.id, spec), done: async () => false }];
        await runJournaledCalls(vault, job.id, calls);
        setStatusFields(vault, name, { policyName: action.details.to });
        ctx.report(`ChangePolicy ${name}: now ${action.details.to}`);
        return finish(vault, job.id, 'Succeeded');
      }
      case 'resync': {
        if (!current) throw new TerminalError('not-found', `${name} has no relationship to resynchronize`);
        calls = [{ name: 'resync', site: sites.get(current.primarySite), run: (s) => s.resync(current.id), done: async () => false }];
        break;
      }
      case 'disable-protection': {
        if (!current) throw new TerminalError('not-found', `${name} has no relationship to remove`);
        const site = sites.get(current.primarySite);
        calls = [{
          name: 'remove-relationship',
          site,
          run: (s) => s.removeRelationship(current.id),
          done: async () => (await views(site, current.id)).length === 0,
        }];
        await runJournaledCalls(vault, job.id, calls);
        setStatusFields(vault, name, { managed: false });
        return finish(vault, job.id, 'Succeeded');
      }
      case 'change-disk-set':
        unsupported('changing the replicated disk set');
      // falls through (unsupported throws)
      case 'move-replica-storage': {
        if (!current) throw new TerminalError('not-found', `${name} has no relationship whose storage could move`);
        const site = sites.get(current.replicaSite);
        const to = action.details.to;
        calls = [{
          name: 'move-storage',
          site,
          run: (s) => s.moveStorage(current.id, to),
          done: async () => (await views(site, current.id)).some((v) => v.role === 'Replica' && v.storagePath === join(to, current.id)),
        }];
        break;
      }
      case 'extend-replication': {
        // Planned with the enable of the same pass, the relationship may not be observed yet: its id is deterministic.
        const relId = current?.id ?? relationshipId(name);
        const from = sites.get(current?.replicaSite ?? action.details.from);
        const target = sites.get(action.details.site);
        const extId = extendedRelationshipId(name);
        calls = [{
          name: 'extend',
          site: from,
          run: (s) => s.extend(relId, { id: extId, replica: { name: action.details.site, endpoint: target.endpoint }, policy: policyOf(desired, action.details.policy) }),
          done: async () => (await views(from, extId)).length > 0,
        }];
        break;
      }
      case 'remove-extended-replication':
        unsupported('removing an extended replica');
      // falls through
      default:
        throw new TerminalError('invalid-argument', `${action.type} is a failover action: it runs inside a recovery plan`);
    }
    await runJournaledCalls(vault, job.id, calls);
    return finish(vault, job.id, 'Succeeded');
  } catch (e) {
    ctx.report(`${job.type} ${name}: failed: ${(e as Error).message}`);
    return finish(vault, job.id, 'Failed', e);
  }
}

/** One failover-family step for one VM, frozen in the recovery plan's job when it starts. */
export interface VmStep {
  /** The plan job's step name for it, e.g. `group-1/db-01/test-failover`. */
  key: string;
  type: FailoverActionType;
  protectedVm: string;
  vm: string;
  relationshipId: string;
  /** reverse-replication: the id of the relationship it creates. */
  newRelationshipId?: string;
  site?: string;
  from?: string;
  to?: string;
  recoveryPoint?: string;
  testNetwork?: string | null;
  adapters?: FailoverAdapterSettings[];
  /** reverse-replication: the policy the new relationship runs with. */
  policy?: ResolvedPolicySpec;
  /** Planned failover and failback: stop the guest hard when it ignores the power button past its site's timeout. */
  forceShutdown?: boolean;
  /** How the data gets home: on the reverse-replication before a host failback, or on a failback from Azure. @default minimize-downtime */
  method?: 'minimize-downtime' | 'full-download';
}

/**
 * The agent calls a failover step makes, each with the check that resolves it after a crash.
 * `jobId` names the step's job: an azure site writes that failover's Terraform to `azure/<job>/`.
 */
export function failoverCalls(sites: SiteSet, s: VmStep, jobId?: string): SiteCall[] {
  const id = s.relationshipId;
  const on = (site: string | undefined) => sites.get(site ?? '');
  const stateOn = async (site: Site, role: 'Primary' | 'Replica'): Promise<string | undefined> =>
    (await views(site, id)).find((v) => v.role === role)?.state;
  const powerOff = (site: Site): SiteCall => ({
    name: 'power-off',
    site,
    run: (x) => x.setVmPower(s.vm, 'Off', s.forceShutdown ? { force: true } : {}),
    done: async () => (await vms(site)).find((v) => v.name === s.vm)?.power === 'Off',
  });
  const prepare = (site: Site): SiteCall => ({
    name: 'prepare-planned-failover',
    site,
    run: (x) => x.preparePlannedFailover(id),
    done: async () => (await stateOn(site, 'Primary')) === 'PreparedForPlannedFailover',
  });
  const failover = (site: Site, point: string): SiteCall => ({
    name: 'failover',
    site,
    run: (x) => x.failover(id, { recoveryPoint: point, ...(s.adapters && { adapters: s.adapters }), ...(site.kind === 'azure' && { kind: s.type === 'unplanned-failover' ? 'unplanned' : 'planned', ...(jobId && { job: jobId }) }) }),
    done: async () => inGroup(await stateOn(site, 'Replica'), 'failedOver'),
  });
  const commit = (site: Site): SiteCall => ({
    name: 'commit',
    site,
    run: (x) => x.commit(id),
    done: async () => (await stateOn(site, 'Replica')) === 'FailedOver',
  });
  switch (s.type) {
    case 'test-failover': {
      const site = on(s.site);
      return [{
        name: 'test-failover',
        site,
        run: (x) => x.testFailover(id, { recoveryPoint: s.recoveryPoint ?? 'latest', network: s.testNetwork ?? null, ...(s.adapters && { adapters: s.adapters }), ...(jobId && site.kind === 'azure' && { job: jobId }) }),
        done: async () => (await vms(site)).some((v) => v.name === `${s.vm}-Test`),
      }];
    }
    case 'cleanup-test-failover': {
      const site = on(s.site);
      return [{
        name: 'cleanup-test-failover',
        site,
        run: (x) => x.cleanupTestFailover(id),
        done: async () => !(await vms(site)).some((v) => v.name === `${s.vm}-Test`),
      }];
    }
    case 'planned-failover':
      return [powerOff(on(s.from)), prepare(on(s.from)), failover(on(s.to), 'latest')];
    case 'failback':
      if (on(s.from).kind === 'azure') return failbackFromAzureCalls(on(s.from), on(s.to), s, { powerOff, stateOn });
      return [powerOff(on(s.from)), prepare(on(s.from)), failover(on(s.to), 'latest'), commit(on(s.to))];
    case 'unplanned-failover':
      return [failover(on(s.to), s.recoveryPoint ?? 'latest')];
    case 'commit-failover':
      return [commit(on(s.site))];
    case 'cancel-failover': {
      const site = on(s.site);
      return [{ name: 'cancel', site, run: (x) => x.cancel(id), done: async () => !inGroup(await stateOn(site, 'Replica'), 'failedOver') }];
    }
    case 'reverse-replication': {
      const from = on(s.from);
      const to = on(s.to);
      const newId = s.newRelationshipId!;
      return [{
        name: 'reverse',
        site: from,
        run: (x) => x.reverse(id, { id: newId, replica: { name: to.name, endpoint: to.endpoint }, policy: s.policy!, start: true, ...(s.method && { method: s.method }) }),
        done: async () => (await views(from, newId)).length > 0,
      }];
    }
  }
}

/**
 * Failback from Azure onto the former primary host, which still holds the relationship: with its
 * VM off it downloads what the Azure VM changed (or everything), the Azure site then ends the
 * failover, the host replicates to Azure again (a resync that ships only what differs from the
 * last point), and the VM starts at home. The Azure VM itself is Terraform's to destroy.
 */
function failbackFromAzureCalls(
  azure: Site,
  home: Site,
  s: VmStep,
  h: { powerOff: (site: Site) => SiteCall; stateOn: (site: Site, role: 'Primary' | 'Replica') => Promise<string | undefined> },
): SiteCall[] {
  const id = s.relationshipId;
  return [
    h.powerOff(home),
    {
      name: 'download-from-azure',
      site: home,
      run: (x) => x.failbackFromAzure(id, { method: s.method ?? 'minimize-downtime' }),
      // Downloading again is safe (minimize-downtime compares first), so after a crash it just runs again.
      done: async () => !inGroup(await h.stateOn(azure, 'Replica'), 'failedOver'),
    },
    {
      name: 'end-azure-failover',
      site: azure,
      run: (x) => x.endFailover(id),
      done: async () => !inGroup(await h.stateOn(azure, 'Replica'), 'failedOver'),
    },
    {
      name: 'replicate-to-azure',
      site: home,
      run: (x) => x.replicateToAzure(id),
      done: async () => (await h.stateOn(home, 'Primary')) === 'Replicating',
    },
    {
      name: 'power-on',
      site: home,
      run: (x) => x.setVmPower(s.vm, 'Running'),
      done: async () => (await vms(home)).find((v) => v.name === s.vm)?.power === 'Running',
    },
  ];
}
