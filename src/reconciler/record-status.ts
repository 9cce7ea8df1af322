// Writes what a pass observed into the vault: each ProtectedVM's relationship (what `drsite plan`
// and `drsite status` read), its Protected / Ready conditions, an event whenever its health or its
// last error changes (what `drsite events` lists), and closes InitialReplication jobs once the
// first complete sync is seen (they stay Running while the copy goes on).
import type { DesiredState } from '../model/desired.ts';
import type { ObservedRelationship } from '../model/observed.ts';
import type { Vault } from '../vault/vault.ts';
import { finish } from './executor.ts';
import type { Observation } from './observe-sites.ts';
import type { Plan } from './plan-types.ts';
import { RELATIONSHIP_FIELD, setStatusFields } from './status-fields.ts';
import { inGroup } from '../core/replication/replication-state.ts';

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
      const before = vault.getStatus('ProtectedVM', name)?.fields[RELATIONSHIP_FIELD] as ObservedRelationship | null | undefined;
      if (rel) recordHealthEvents(vault, name, before ?? undefined, rel);
      setStatusFields(vault, name, { [RELATIONSHIP_FIELD]: rel ?? null, ...(rel && { relationshipId: obs.current.get(name)?.id ?? null }) }, generation);
      const everSynced = rel !== undefined && (rel.recoveryPoints > 0 || rel.state === 'Replicating') && inGroup(rel.state, 'steady', 'resync', 'failover');
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

/** The condition a RecoveryPlan's declared failover gets from a plan: `drsite status`, events and Kubernetes read it. */
export const FAILOVER_CONDITION = 'FailoverAccepted';

/**
 * Whether each RecoveryPlan's declared failover can run, as a condition (True: planned or done;
 * False/Refused: the sites' state refuses it, or its run failed; Unknown/Waiting: it waits for
 * something under way), with a Warning event when it becomes refused.
 */
export function recordDeclarationStatus(vault: Vault, desired: DesiredState, plan: Plan, now: number): void {
  vault.transaction(() => {
    for (const rp of desired.recoveryPlans) {
      const name = rp.metadata.name;
      const f = rp.spec.failover;
      const mine = plan.warnings.filter((w) => w.target.kind === 'RecoveryPlan' && w.target.name === name);
      const refused = mine.filter((w) => w.code === 'failover-refused' || w.code === 'last-action-failed');
      const waiting = mine.filter((w) => w.code === 'failover-waiting');
      const before = vault.getStatus('RecoveryPlan', name)?.conditions.find((c) => c.type === FAILOVER_CONDITION);
      const cond = !f
        ? { type: FAILOVER_CONDITION, status: 'True' as const, reason: 'NoFailoverDeclared', message: 'no failover is declared' }
        : refused.length > 0
          ? { type: FAILOVER_CONDITION, status: 'False' as const, reason: refused.some((w) => w.code === 'failover-refused') ? 'Refused' : 'Failed', message: refused.map((w) => w.message).join('\n') }
          : waiting.length > 0
            ? { type: FAILOVER_CONDITION, status: 'Unknown' as const, reason: 'Waiting', message: waiting.map((w) => w.message).join('\n') }
            : { type: FAILOVER_CONDITION, status: 'True' as const, reason: 'Accepted', message: `failover ${f.id} (${f.type}) is planned or done` };
      if (before?.status === cond.status && before.reason === cond.reason && before.message === cond.message) continue;
      vault.setCondition('RecoveryPlan', name, cond, now);
      if (cond.status === 'False' && cond.reason === 'Refused') {
        vault.recordEvent({ kind: 'RecoveryPlan', name, type: 'Warning', reason: 'FailoverRefused', message: cond.message });
      }
    }
  });
}

/** What a relationship's health says, in one line: its reasons, else its last error, else its state. */
export function healthMessage(rel: ObservedRelationship): string {
  if (rel.healthReasons?.length) return rel.healthReasons.join('; ');
  if (rel.lastError && (rel.health !== 'Normal' || rel.nextRetryAt)) return `${rel.lastError.code}: ${rel.lastError.message}`;
  return `state ${rel.state}`;
}

/**
 * An event when health changes (or its reasons do) and when a new error is met. The vault folds a
 * repeat of the newest event into it, so a fault reported every pass is one event with a count.
 */
function recordHealthEvents(vault: Vault, name: string, before: ObservedRelationship | undefined, rel: ObservedRelationship): void {
  const was = before?.health ?? 'Normal';
  const reasons = (r: ObservedRelationship | undefined) => (r?.healthReasons ?? []).join('\n');
  if (rel.health !== 'Normal' && (rel.health !== was || reasons(rel) !== reasons(before))) {
    vault.recordEvent({ kind: 'ProtectedVM', name, type: 'Warning', reason: `Health${rel.health}`, message: healthMessage(rel) });
  } else if (rel.health === 'Normal' && was !== 'Normal') {
    vault.recordEvent({ kind: 'ProtectedVM', name, type: 'Normal', reason: 'HealthNormal', message: `health Normal again (was ${was}: ${healthMessage(before!)})` });
  }
  const e = rel.lastError;
  // Each new occurrence (a retry failing again folds into the same event, counted).
  if (e && (e.at !== before?.lastError?.at || e.message !== before?.lastError?.message)) {
    vault.recordEvent({ kind: 'ProtectedVM', name, type: 'Warning', reason: 'ReplicationError', message: `${e.code}: ${e.message}` });
  }
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
