// A vault created empty next to sites that already replicate (the old one was lost or damaged
// and moved aside) is rebuilt from what the sites report: relationships, directions and recovery
// points are observed every pass anyway. What the sites cannot tell is which declared failover
// ids already ran, and a declared id the vault has no record of looks new. Rather than guess (and
// fail over again, back the other way), the first pass adopts every failover declared at that
// moment as done; a new failover.id runs as usual.
import type { DesiredState } from '../model/desired.ts';
import { lookup } from '../model/observed.ts';
import type { Vault } from '../vault/vault.ts';
import type { Observation } from './observe-sites.ts';

/** Returns the recovery plans whose declared failover was adopted (the caller re-observes). */
export function adoptRebuiltVault(vault: Vault, desired: DesiredState, observation: Observation, report: (line: string) => void): string[] {
  if (!vault.createdEmpty) return [];
  const { relationships, sites } = observation.observed;
  const replicating = desired.protectedVms.some((p) => lookup(relationships, p.metadata.name)?.exists === true);
  if (!replicating) {
    // Nothing to adopt yet; a site that did not answer might still hold relationships.
    if (desired.sites.every((s) => lookup(sites, s.metadata.name)?.reachable === true)) vault.clearCreatedEmpty();
    return [];
  }
  const adopted: string[] = [];
  vault.transaction(() => {
    for (const rp of desired.recoveryPlans) {
      const f = rp.spec.failover;
      const name = rp.metadata.name;
      if (!f || vault.getLastAction('RecoveryPlan', name)) continue;
      vault.recordAction('RecoveryPlan', name, { id: f.id, type: f.cleanupTest ? 'cleanupTest' : f.type, state: 'Cancelled' });
      const message = `the vault was rebuilt from the sites: failover ${f.id} (${f.type}), declared before, is taken as done and not run again; declare a new failover.id to run one`;
      vault.recordEvent({ kind: 'RecoveryPlan', name, type: 'Warning', reason: 'FailoverAdopted', message });
      report(`RecoveryPlan ${name}: ${message}`);
      adopted.push(name);
    }
    vault.clearCreatedEmpty();
  });
  return adopted;
}
