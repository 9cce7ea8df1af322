// Planner speed at fleet size: 1,000 protected VMs (3 sites, 4 policies, 10 recovery plans) against
// an empty, a converged and a 10%-drifted observation. Goal: a pass in <= 200 ms.
// Run: npx node bench/plan.bench.ts
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { DesiredState, ProtectedVM, RecoveryPlan, ResolvedReplicationPolicy, Site } from '../src/model/desired.ts';
import type { ObservedRelationship, ObservedState } from '../src/model/observed.ts';
import { plan } from '../src/reconciler/plan.ts';

export interface PlanBenchResult {
  case: string;
  vms: number;
  /** Milliseconds per plan() call. */
  runs: number[];
  min: number;
  median: number;
  max: number;
  actions: number;
  warnings: number;
}

const VMS = 1000;
const RUNS = 7;
const AT = '2026-03-01T12:00:00Z';
const DISKS = ['disk0', 'disk1', 'disk2'];

const meta = { apiVersion: 'drsite.dev/v1' as const };
const site = (name: string): Site => ({ ...meta, kind: 'Site', metadata: { name }, spec: { type: 'host', hypervisor: 'files', replicaServer: { enabled: true, authentication: 'certificate', port: 8443 } } });
const policy = (name: string, frequency: '30s' | '5m' | '15m'): ResolvedReplicationPolicy => ({
  ...meta, kind: 'ReplicationPolicy', metadata: { name },
  spec: {
    frequency, recoveryPoints: { additional: 4 }, appConsistentEvery: '0', compression: true, encryption: 'aes-256-gcm',
    initialReplication: { method: 'network', startAt: 'immediately' }, resync: { thresholdPercent: 50, window: '22:00-06:00', automatic: true }, multiVmConsistency: false,
  },
});

function buildDesired(): DesiredState {
  const names = Array.from({ length: VMS }, (_, i) => `vm-${String(i).padStart(4, '0')}`);
  const vms: ProtectedVM[] = names.map((name, i) => ({
    ...meta, kind: 'ProtectedVM', metadata: { name },
    spec: {
      vm: name, primary: 'site-a', replica: 'site-b', policy: ['p30s', 'p5m', 'p15m'][i % 3], disks: { exclude: i % 5 === 0 ? ['disk2'] : [] },
      replicaStoragePath: `/replicas/${name}`,
      ...(i % 10 === 0 && { extendedReplica: { site: 'site-c', policy: 'p15m-ext' } }),
    },
  }));
  const plans: RecoveryPlan[] = Array.from({ length: 10 }, (_, p) => {
    const members = names.slice(p * 100, p * 100 + 100);
    return {
      ...meta, kind: 'RecoveryPlan', metadata: { name: `plan-${p}` },
      spec: {
        groups: [0, 1, 2, 3].map((g) => ({ name: `g${g}`, vms: members.slice(g * 25, g * 25 + 25) as [string, ...string[]] })) as RecoveryPlan['spec']['groups'],
        failover: { id: `run-${p}`, type: 'test', recoveryPoint: 'latest', commit: false, cleanupTest: false, failbackMethod: 'minimize-downtime' },
      },
    };
  });
  return {
    sites: [site('site-a'), site('site-b'), site('site-c')],
    policies: [policy('p15m', '15m'), policy('p15m-ext', '15m'), policy('p30s', '30s'), policy('p5m', '5m')],
    networkMappings: [],
    protectedVms: vms,
    recoveryPlans: plans,
    sources: {},
  };
}

function buildObserved(d: DesiredState, converged: boolean): ObservedState {
  const policies = new Map(d.policies.map((p) => [p.metadata.name, p]));
  const o: ObservedState = { observedAt: AT, relationships: {}, recoveryPlans: {}, sites: {} };
  for (const s of d.sites) o.sites[s.metadata.name] = { name: s.metadata.name, reachable: true, vms: {} };
  for (const v of d.protectedVms) o.sites['site-a'].vms![v.spec.vm] = { disks: [...DISKS], running: true };
  if (!converged) return o;
  for (const v of d.protectedVms) {
    const s = v.spec;
    const ext = s.extendedReplica;
    const rel: ObservedRelationship = {
      name: v.metadata.name, vm: s.vm, primary: s.primary, replica: s.replica, managed: true, exists: true,
      state: 'Replicating', health: 'Normal', roles: { [s.primary]: 'Primary', [s.replica]: 'Replica' },
      direction: { primary: s.primary, replica: s.replica },
      appliedPolicy: { name: s.policy, spec: structuredClone(policies.get(s.policy)!.spec) },
      disks: DISKS.filter((x) => !(s.disks?.exclude ?? []).includes(x)),
      replicaStoragePath: s.replicaStoragePath,
      ...(ext && { extendedReplica: { site: ext.site, policy: { name: ext.policy, spec: structuredClone(policies.get(ext.policy)!.spec) }, state: 'Replicating' as const } }),
      testFailover: 'none', testVms: [], lastReplicationTime: AT, lagSeconds: 60, pendingBytes: 0, recoveryPoints: 5,
    };
    o.relationships[v.metadata.name] = rel;
  }
  for (const p of d.recoveryPlans) {
    o.recoveryPlans[p.metadata.name] = { name: p.metadata.name, lastActionId: p.spec.failover!.id, lastActionType: 'test', lastActionState: 'Succeeded' };
  }
  return o;
}

/** 10% of the VMs drift, one kind of drift each, and one recovery plan gets a new failover id. */
function drift(d: DesiredState, o: ObservedState): ObservedState {
  const x = structuredClone(o);
  d.protectedVms.forEach((v, i) => {
    if (i % 10 !== 3 || i >= 900) return; // plan-9 (vm-0900..0999) stays clean so its new id expands
    const r = x.relationships[v.metadata.name];
    switch ((i / 10) % 7 | 0) {
      case 0: r.appliedPolicy!.spec.frequency = '15m'; break;
      case 1: r.disks = ['disk0']; break;
      case 2: r.replicaStoragePath = '/old'; break;
      case 3: r.state = 'Suspended'; r.suspendedBy = 'engine'; break;
      case 4: r.state = 'ResynchronizationRequired'; break;
      case 5: r.state = 'FailedOver'; break;
      default: delete x.relationships[v.metadata.name];
    }
  });
  x.relationships['vm-gone'] = { ...x.relationships['vm-0000'], name: 'vm-gone', vm: 'vm-gone' };
  delete x.recoveryPlans['plan-9'];
  return x;
}

function measure(name: string, d: DesiredState, o: ObservedState): PlanBenchResult {
  let last = plan(d, o); // warm-up: JIT, not counted
  const runs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    last = plan(d, o);
    runs.push(Math.round((performance.now() - t) * 100) / 100);
  }
  const sorted = [...runs].sort((a, z) => a - z);
  return {
    case: name, vms: d.protectedVms.length, runs,
    min: sorted[0], median: sorted[sorted.length >> 1], max: sorted[sorted.length - 1],
    actions: last.actions.length, warnings: last.warnings.length,
  };
}

export async function benchPlan(): Promise<PlanBenchResult[]> {
  const d = buildDesired();
  const empty = buildObserved(d, false);
  const converged = buildObserved(d, true);
  return [
    measure('empty', d, empty),
    measure('converged', d, converged),
    measure('drift-10pct', d, drift(d, converged)),
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const r of await benchPlan()) {
    console.log(`plan ${r.case.padEnd(12)} ${r.vms} VMs: min ${r.min} ms, median ${r.median} ms, max ${r.max} ms over ${r.runs.length} runs (${r.actions} actions, ${r.warnings} warnings)`);
  }
}
