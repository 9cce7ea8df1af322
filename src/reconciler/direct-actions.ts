// Imperative single-VM operations of the CLI that are not a failover request (those go through a
// recovery plan job, declared or one-VM): reverse, resync, pause, resume. Same journal, same jobs.
import { TerminalError } from '../model/errors.ts';
import { lookup } from '../model/observed.ts';
import type { Job } from '../vault/vault.ts';
import { failoverCalls, finish, startJob, type ExecContext, type VmStep } from './executor.ts';
import { runJournaledCalls } from './journal.ts';
import { relationshipId } from './relationship-ids.ts';
import { setStatusFields } from './status-fields.ts';
import { inGroup } from '../core/replication/replication-state.ts';

export type DirectVerb = 'reverse' | 'resync' | 'pause' | 'resume';

export async function runDirectAction(ctx: ExecContext, verb: DirectVerb, name: string): Promise<Job | undefined> {
  const { vault, sites, desired } = ctx;
  const pvm = desired.protectedVms.find((p) => p.metadata.name === name);
  if (!pvm) throw new TerminalError('not-found', `ProtectedVM ${name} is not declared`);
  const cur = ctx.observation.current.get(name);
  const rel = lookup(ctx.observation.observed.relationships, name);
  if (!cur || !rel) throw new TerminalError('not-found', `${name} has no replication relationship on the sites`);
  if (verb === 'pause' || verb === 'resume') {
    const site = sites.get(cur.primarySite);
    await (verb === 'pause' ? site.suspend(cur.id) : site.resume(cur.id));
    vault.recordEvent({ kind: 'ProtectedVM', name, type: 'Normal', reason: verb === 'pause' ? 'ReplicationPaused' : 'ReplicationResumed', message: `by an operator (drsite ${verb})` });
    return undefined;
  }
  const job = startJob(vault, { type: verb === 'reverse' ? 'ReverseReplication' : 'Resynchronize', target: `ProtectedVM/${name}`, input: { verb, relationshipId: cur.id } }, `by an operator (drsite ${verb})`);
  try {
    if (verb === 'resync') {
      await runJournaledCalls(vault, job.id, [{ name: 'resync', site: sites.get(cur.primarySite), run: (s) => s.resync(cur.id), done: async () => false }]);
    } else {
      if (!inGroup(rel.state, 'failedOver')) {
        throw new TerminalError('invalid-state', `${name} is ${rel.state}: reverse replication follows a failover`);
      }
      const policy = desired.policies.find((p) => p.metadata.name === pvm.spec.policy);
      const step: VmStep = {
        key: 'reverse', type: 'reverse-replication', protectedVm: name, vm: rel.vm, relationshipId: cur.id,
        newRelationshipId: relationshipId(name, cur.k + 1), from: rel.direction.primary, to: rel.direction.replica,
        ...(policy && { policy: policy.spec }),
      };
      await runJournaledCalls(vault, job.id, failoverCalls(sites, step, job.id));
      setStatusFields(vault, name, { policyName: pvm.spec.policy });
    }
    return finish(vault, job.id, 'Succeeded');
  } catch (e) {
    return finish(vault, job.id, 'Failed', e);
  }
}
