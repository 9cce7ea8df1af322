// What the reconciler keeps in the vault per ProtectedVM besides the observed relationship: that
// drsite created it (so removal is allowed), the policy name it applied, and the current
// relationship id. One place reads and writes these fields.
import type { Vault } from '../vault/vault.ts';
import { RELATIONSHIP_FIELD } from './observe-vault.ts';

export interface ProtectionIdentity {
  /** drsite created this protection from a declaration. */
  managed: boolean;
  /** Name of the ReplicationPolicy last applied (the agent only knows the spec). */
  policyName?: string;
}

export function getIdentity(vault: Vault, name: string): ProtectionIdentity {
  const f = vault.getStatus('ProtectedVM', name)?.fields ?? {};
  return { managed: f.managed === true, ...(typeof f.policyName === 'string' && { policyName: f.policyName }) };
}

/** Merges fields into the ProtectedVM's status, keeping conditions and other fields. */
export function setStatusFields(vault: Vault, name: string, fields: Record<string, unknown>, generation?: number): void {
  vault.transaction(() => {
    const prev = vault.getStatus('ProtectedVM', name);
    vault.setStatus('ProtectedVM', name, {
      observedGeneration: generation ?? prev?.observedGeneration ?? 0,
      conditions: prev?.conditions ?? [],
      fields: { ...(prev?.fields ?? {}), ...fields },
    });
  });
}

export { RELATIONSHIP_FIELD };
