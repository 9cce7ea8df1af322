// The observed state as the vault last recorded it: what `drsite plan` compares against when it is
// not asked to contact the sites. Reading changes nothing.
import type { DesiredState } from '../model/desired.ts';
import type { ObservedRelationship, ObservedState, RecoveryPlanActionState } from '../model/observed.ts';
import type { Vault } from '../vault/vault.ts';

/** Status field under which a ProtectedVM's observed relationship is stored. */
export const RELATIONSHIP_FIELD = 'relationship';

export function observedFromVault(vault: Vault, desired: DesiredState, observedAt: Date): ObservedState {
  const relationships: Record<string, ObservedRelationship> = {};
  for (const s of vault.listStatus('ProtectedVM')) {
    const rel = s.fields[RELATIONSHIP_FIELD] as ObservedRelationship | undefined;
    if (rel) relationships[s.name] = rel;
  }
  const recoveryPlans = observeRecoveryPlans(desired, vault);
  // Sites are not contacted here: a site is taken as reachable with an unknown inventory, so the
  // plan shows what a pass would do once it can reach them.
  const sites: ObservedState['sites'] = {};
  for (const site of desired.sites) sites[site.metadata.name] = { name: site.metadata.name, reachable: true };
  return { observedAt: observedAt.toISOString(), relationships, recoveryPlans, sites };
}

/** Each declared recovery plan with the last failover action the vault recorded for it. */
export function observeRecoveryPlans(desired: DesiredState, vault: Vault): ObservedState['recoveryPlans'] {
  const recoveryPlans: ObservedState['recoveryPlans'] = {};
  for (const p of desired.recoveryPlans) {
    const last = vault.getLastAction('RecoveryPlan', p.metadata.name);
    recoveryPlans[p.metadata.name] = last
      ? { name: p.metadata.name, lastActionId: last.id, lastActionType: last.type, lastActionState: last.state as RecoveryPlanActionState }
      : { name: p.metadata.name };
  }
  return recoveryPlans;
}

export function recordRelationship(vault: Vault, rel: ObservedRelationship, generation: number): void {
  const prev = vault.getStatus('ProtectedVM', rel.name);
  vault.setStatus('ProtectedVM', rel.name, {
    observedGeneration: generation,
    conditions: prev?.conditions ?? [],
    fields: { ...(prev?.fields ?? {}), [RELATIONSHIP_FIELD]: rel },
  });
}
