// Builders for planner tests: DesiredState objects built directly (defaults filled, as the config
// loader hands them over) and the ObservedState of a fully converged world to start cases from.
import type {
  DesiredState,
  NetworkMapping,
  ProtectedVM,
  ProtectedVMSpec,
  RecoveryPlan,
  FailoverRequest,
  ReplicationPolicy,
  ResolvedPolicySpec,
  ResolvedReplicationPolicy,
  Site,
} from '../../src/model/desired.ts';
import type { ObservedRelationship, ObservedState } from '../../src/model/observed.ts';

export const T0 = '2026-03-01T12:00:00Z';
export const VM_DISKS = ['disk0', 'disk1'];

export function site(name: string): Site {
  return {
    apiVersion: 'drsite.dev/v1',
    kind: 'Site',
    metadata: { name },
    spec: { type: 'host', hypervisor: 'files', dataPath: `.drsite/sites/${name}`, replicaServer: { enabled: true, authentication: 'certificate', port: 8443, allowedPrimaries: [] } },
  };
}

export function policy(name: string, over: Partial<ResolvedPolicySpec> = {}): ResolvedReplicationPolicy {
  return {
    apiVersion: 'drsite.dev/v1',
    kind: 'ReplicationPolicy',
    metadata: { name },
    spec: {
      frequency: '5m',
      recoveryPoints: { additional: 0 },
      appConsistentEvery: '0',
      compression: true,
      encryption: 'aes-256-gcm',
      initialReplication: { method: 'network', startAt: 'immediately' },
      resync: { thresholdPercent: 50, window: '22:00-06:00', automatic: true },
      multiVmConsistency: false,
      ...over,
    },
  };
}

export function pvm(name: string, over: Partial<ProtectedVMSpec> = {}): ProtectedVM {
  return {
    apiVersion: 'drsite.dev/v1',
    kind: 'ProtectedVM',
    metadata: { name },
    spec: { vm: name, primary: 'site-a', replica: 'site-b', policy: 'gold', disks: { exclude: [] }, ...over },
  };
}

export function recoveryPlan(name: string, groups: string[][], failover?: FailoverRequest): RecoveryPlan {
  return {
    apiVersion: 'drsite.dev/v1',
    kind: 'RecoveryPlan',
    metadata: { name },
    spec: {
      groups: groups.map((vms, i) => ({ name: `g${i + 1}`, vms: vms as [string, ...string[]] })) as RecoveryPlan['spec']['groups'],
      ...(failover && { failover: { recoveryPoint: 'latest', commit: false, cleanupTest: false, failbackMethod: 'minimize-downtime', ...failover } }),
    },
  };
}

export function mapping(name: string, source: string, target: string, testNetwork?: string): NetworkMapping {
  return {
    apiVersion: 'drsite.dev/v1',
    kind: 'NetworkMapping',
    metadata: { name },
    spec: { source: { site: source, network: 'lan' }, target: { site: target, network: 'lan' }, ...(testNetwork && { testNetwork }) },
  };
}

const byName = <T extends { metadata: { name: string } }>(xs: T[]): T[] => [...xs].sort((a, z) => (a.metadata.name < z.metadata.name ? -1 : 1));

export interface DesiredInput {
  sites?: Site[];
  policies?: ResolvedReplicationPolicy[];
  vms?: ProtectedVM[];
  plans?: RecoveryPlan[];
  mappings?: NetworkMapping[];
}

/** Three sites (a, b, c), policies gold and silver, and whatever the case adds. */
export function desired(input: DesiredInput = {}): DesiredState {
  return {
    sites: byName(input.sites ?? [site('site-a'), site('site-b'), site('site-c')]),
    policies: byName(input.policies ?? [policy('gold'), policy('silver', { frequency: '15m' })]),
    networkMappings: byName(input.mappings ?? []),
    protectedVms: byName(input.vms ?? []),
    recoveryPlans: byName(input.plans ?? []),
    sources: {},
  };
}

/** The relationship a converged world has for this declaration. */
export function relFor(d: DesiredState, v: ProtectedVM, over: Partial<ObservedRelationship> = {}): ObservedRelationship {
  const s = v.spec;
  const pol = d.policies.find((p) => p.metadata.name === s.policy)!;
  const exclude = new Set(s.disks?.exclude ?? []);
  const ext = s.extendedReplica;
  const extPol = ext && d.policies.find((p) => p.metadata.name === ext.policy)!;
  return {
    name: v.metadata.name,
    vm: s.vm,
    primary: s.primary,
    replica: s.replica,
    managed: true,
    exists: true,
    state: 'Replicating',
    health: 'Normal',
    roles: { [s.primary]: 'Primary', [s.replica]: 'Replica', ...(ext && { [ext.site]: 'ExtendedReplica' as const }) },
    direction: { primary: s.primary, replica: s.replica },
    appliedPolicy: { name: pol.metadata.name, spec: structuredClone(pol.spec) },
    disks: VM_DISKS.filter((x) => !exclude.has(x)),
    ...(s.replicaStoragePath !== undefined && { replicaStoragePath: s.replicaStoragePath }),
    ...(ext && extPol && { extendedReplica: { site: ext.site, policy: { name: extPol.metadata.name, spec: structuredClone(extPol.spec) }, state: 'Replicating' as const } }),
    testFailover: 'none',
    testVms: [],
    lastReplicationTime: '2026-03-01T11:58:00Z',
    lagSeconds: 120,
    pendingBytes: 0,
    recoveryPoints: 3,
    ...over,
  };
}

/** Sites reachable with every declared VM on its primary; relationships only when converged. */
export function observedFor(d: DesiredState, opts: { converged?: boolean; at?: string } = {}): ObservedState {
  const sites: ObservedState['sites'] = {};
  for (const s of d.sites) sites[s.metadata.name] = { name: s.metadata.name, reachable: true, vms: {} };
  for (const v of d.protectedVms) {
    sites[v.spec.primary].vms![v.spec.vm] = { disks: [...VM_DISKS], running: true };
  }
  const relationships: ObservedState['relationships'] = {};
  if (opts.converged ?? true) for (const v of d.protectedVms) relationships[v.metadata.name] = relFor(d, v);
  return { observedAt: opts.at ?? T0, relationships, recoveryPlans: {}, sites };
}

/** Converged observation, then `edit` applied to a copy (inputs are frozen by the tests). */
export function observed(d: DesiredState, edit: (o: ObservedState) => void = () => {}, opts: { converged?: boolean } = {}): ObservedState {
  const o = observedFor(d, opts);
  edit(o);
  return o;
}

export function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}
