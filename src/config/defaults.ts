// The explicit defaults step: every optional field that has a documented default is filled in
// here, once, after validation, so nothing downstream re-derives a default. Pure: the input
// objects are never mutated, and applying the defaults twice gives the same result.
import type {
  FailoverRequest, NetworkMapping, ProtectedVM, RecoveryAction, RecoveryPlan, ReplicationPolicy,
  Resource, ResolvedReplicationPolicy, Site,
} from '../model/desired.ts';

import { DEFAULT_REPLICA_PORT } from '../model/site.ts';

export { DEFAULT_REPLICA_PORT };
export const DEFAULT_SCRIPT_TIMEOUT = '5m';
export const ALL_FAILOVER_TYPES = ['test', 'planned', 'unplanned', 'failback'] as const;

/** A copy of a validated resource with every documented default filled in. */
export function applyDefaults<R extends Resource>(resource: R): R {
  const r = structuredClone(resource) as Resource;
  switch (r.kind) {
    case 'Site': return siteDefaults(r) as R;
    case 'ReplicationPolicy': return policyDefaults(r) as R;
    case 'NetworkMapping': return r as NetworkMapping as R;
    case 'ProtectedVM': return protectedVmDefaults(r) as R;
    case 'RecoveryPlan': return planDefaults(r) as R;
  }
}

/** Operates on a private copy (see applyDefaults). */
function siteDefaults(site: Site): Site {
  const s = site.spec;
  if (s.type !== 'host') return site;
  s.hypervisor ??= 'files';
  // An embedded site (no endpoint) keeps its data in the drsite state directory.
  if (s.endpoint === undefined) s.dataPath ??= `.drsite/sites/${site.metadata.name}`;
  if (s.replicaServer) {
    s.replicaServer.authentication ??= 'certificate';
    s.replicaServer.port ??= DEFAULT_REPLICA_PORT;
  }
  return site;
}

function policyDefaults(policy: ReplicationPolicy): ResolvedReplicationPolicy {
  const s = policy.spec;
  s.frequency ??= '5m';
  s.recoveryPoints ??= {};
  // additional and retention are exclusive (schema `not`): default only the one in use.
  if (s.recoveryPoints.retention === undefined) s.recoveryPoints.additional ??= 0;
  s.appConsistentEvery ??= '0';
  s.compression ??= true;
  s.encryption ??= 'aes-256-gcm';
  s.initialReplication ??= {};
  s.initialReplication.method ??= 'network';
  s.initialReplication.startAt ??= 'immediately';
  s.resync ??= {};
  s.resync.thresholdPercent ??= 50;
  s.resync.window ??= '22:00-06:00';
  s.resync.automatic ??= true;
  s.multiVmConsistency ??= false;
  return policy as ResolvedReplicationPolicy;
}

function protectedVmDefaults(vm: ProtectedVM): ProtectedVM {
  vm.spec.disks ??= {};
  vm.spec.disks.exclude ??= [];
  return vm;
}

function planDefaults(plan: RecoveryPlan): RecoveryPlan {
  for (const g of plan.spec.groups) {
    for (const a of [...(g.before ?? []), ...(g.after ?? [])]) actionDefaults(a);
  }
  if (plan.spec.failover) failoverDefaults(plan.spec.failover);
  return plan;
}

function actionDefaults(action: RecoveryAction): void {
  action.failoverTypes ??= [...ALL_FAILOVER_TYPES];
  if (action.script) {
    action.script.args ??= [];
    action.script.timeout ??= DEFAULT_SCRIPT_TIMEOUT;
  }
}

/**
 * Options are defaulted only for the failover types they apply to, so that a defaulted plan
 * still passes the rules (rules.ts rejects e.g. failbackMethod on a test failover).
 */
function failoverDefaults(f: FailoverRequest): void {
  if (f.type === 'test' || f.type === 'unplanned') f.recoveryPoint ??= 'latest';
  f.commit ??= false;
  f.cleanupTest ??= false;
  if (f.type === 'failback') f.failbackMethod ??= 'minimize-downtime';
}
