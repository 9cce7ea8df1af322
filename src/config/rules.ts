// Semantic rules: what a schema cannot say about one document alone (references between
// documents, frequencies across hops, conflicts), each a small named function that returns
// diagnostics pointing at the offending field. Rules see resources with defaults applied. This
// module is the rule set: every rule (defined under rules/, by what it checks) in report order.
import type { Diagnostic } from '../model/diagnostics.ts';
import type { Rule, RuleInput } from './rules/support.ts';
import { failoverOptionsMatchType, networkMappingConflicts, recoveryPlanSingleDirection, recoveryPlanVmsOnce, testNetworkIsolated } from './rules/failover.ts';
import {
  appConsistentWithinRetention, consistencyWithoutGroup, extendedReplicaFrequency, extendedReplicaSite, externalMediaNeedsPath,
  replicationGroupNeedsConsistency, replicationGroupSameSites,
} from './rules/replication.ts';
import {
  azureIsNotPrimary, credentialsAreEnvNames, danglingReferences, duplicateNames, embeddedReplicaPortsDistinct, primaryIsNotReplica,
  replicaSiteAcceptsReplication, vmProtectedOnce,
} from './rules/sites.ts';

export type { Declared, Rule, RuleInput } from './rules/support.ts';
export * from './rules/failover.ts';
export * from './rules/replication.ts';
export * from './rules/sites.ts';

/** Every rule, in the order their diagnostics are reported. */
export const RULES: readonly Rule[] = [
  duplicateNames,
  danglingReferences,
  primaryIsNotReplica,
  azureIsNotPrimary,
  replicaSiteAcceptsReplication,
  embeddedReplicaPortsDistinct,
  vmProtectedOnce,
  extendedReplicaSite,
  extendedReplicaFrequency,
  replicationGroupNeedsConsistency,
  consistencyWithoutGroup,
  replicationGroupSameSites,
  externalMediaNeedsPath,
  appConsistentWithinRetention,
  networkMappingConflicts,
  testNetworkIsolated,
  credentialsAreEnvNames,
  recoveryPlanVmsOnce,
  recoveryPlanSingleDirection,
  failoverOptionsMatchType,
];

export function checkRules(input: RuleInput): Diagnostic[] {
  return RULES.flatMap((rule) => rule(input));
}
