// Writes what a pass observed into the vault: each ProtectedVM's relationship (what `drsite plan`
// and `drsite status` read), its Protected / Ready conditions, and closes InitialReplication jobs
// once the first complete sync is seen (they stay Running while the copy goes on).
import type { DesiredState } from '../model/desired.ts';
import type { ObservedRelationship } from '../model/observed.ts';
import type { Vault } from '../vault/vault.ts';
import { finish } from './executor.ts';
import type { Observation } from './observe-sites.ts';
import { RELATIONSHIP_FIELD, setStatusFields } from './status-fields.ts';

const PROTECTED_STATES = new Set(['Replicating', 'Resynchronizing', 'ResynchronizationRequired', 'Suspended', 'PreparedForPlannedFailover', 'FailoverWaitingCompletion', 'FailedOver']);

export function recordObservation(vault: Vault, desired: DesiredState, obs: Observation): void {
  const now = Date.parse(obs.observed.observedAt);
  vault.transaction(() => {
    for (const r of desired.protectedVms) vault.recordDesired('ProtectedVM', r.metadata.name, r.spec);
    for (const r of desired.recoveryPlans) vault.recordDesired('RecoveryPlan', r.metadata.name, r.spec);
    for (const r of desired.policies) vault.recordDesired('ReplicationPolicy', r.metadata.name, r.spec);
    for (const r of desired.sites) vault.recordDesired('Site', r.metadata.name, r.spec);
    for (const r of desired.networkMappings) vault.recordDesired('NetworkMapping', r.metadata.name, r.spec);

    const names = new Set([...desired.protectedVms.map((p) => p.metadata.name), ...Object.keys(obs.observed.relationships)]);
    for (const name of names) {
      const rel: ObservedRelationship | undefined = obs.observed.relationships[name];
      const generation = vault.getDesired('ProtectedVM', name)?.generation;
      setStatusFields(vault, name, { [RELATIONSHIP_FIELD]: rel ?? null, ...(rel && { relationshipId: obs.current.get(name)?.id ?? null }) }, generation);
      const everSynced = rel !== undefined && (rel.recoveryPoints > 0 || rel.state === 'Replicating') && PROTECTED_STATES.has(rel.state);
      vault.setCondition('ProtectedVM', name, {
        type: 'Protected',
        status: everSynced ? 'True' : 'False',
        reason: rel ? rel.state : 'NotProtected',
        message: !rel ? 'no replication relationship' : everSynced ? `replicating ${rel.direction.primary} -> ${rel.direction.replica}` : rel.initialReplication ? `initial replication ${pct(rel.initialReplication.bytesDone, rel.initialReplication.bytesTotal)}` : rel.state,
      }, now);
      vault.setCondition('ProtectedVM', name, {
        type: 'Ready',
        status: rel?.state === 'Replicating' && rel.health === 'Normal' ? 'True' : 'False',
        reason: rel ? `${rel.state}/${rel.health}` : 'NotProtected',
        message: rel ? `state ${rel.state}, health ${rel.health}` : 'no replication relationship',
      }, now);
    }
  });
  closeInitialReplications(vault, obs);
}

function pct(done: number, total: number): string {
  return total > 0 ? `${Math.floor((100 * done) / total)}%` : '0%';
}

function closeInitialReplications(vault: Vault, obs: Observation): void {
  for (const j of vault.listJobs({ type: 'InitialReplication', state: 'Running', limit: 500 })) {
    const name = j.target.replace(/^ProtectedVM\//, '');
    const rel = obs.observed.relationships[name];
    const site = rel && obs.observed.sites[rel.direction.primary];
    if (rel && site && !site.reachable) continue;
    const job = vault.getJob(j.id)!;
    const open = job.steps.find((s) => s.name === 'first-sync' && s.state === 'Running');
    if (rel?.state === 'Replicating' || (rel && rel.recoveryPoints > 0)) {
      vault.transaction(() => {
        if (open) vault.endStep(j.id, 'first-sync', { state: 'Succeeded', output: { recoveryPoints: rel.recoveryPoints } });
        finish(vault, j.id, 'Succeeded');
      });
    } else if (!rel) {
      finish(vault, j.id, 'Cancelled', 'the relationship no longer exists');
    } else if (rel.state === 'Critical') {
      finish(vault, j.id, 'Failed', `initial replication of ${name} failed: relationship is Critical`);
    } else if (!open) {
      vault.startStep(j.id, 'first-sync');
    }
  }
}
