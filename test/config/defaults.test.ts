// The explicit defaults step: fills documented defaults, never mutates, is idempotent, and its
// output is itself a valid declaration (so generated manifests load again unchanged).
import { join } from 'node:path';
import { stringify } from 'yaml';
import { expect, test } from 'vitest';
import { applyDefaults } from '../../src/config/defaults.ts';
import { loadDesiredState, loadDesiredStateFromSources } from '../../src/config/load.ts';
import { validateDocument } from '../../src/config/schema.ts';
import type { ProtectedVM, RecoveryPlan, ReplicationPolicy, Resource, Site } from '../../src/model/desired.ts';

const meta = { apiVersion: 'drsite.dev/v1' as const, metadata: { name: 'x' } };

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object') {
    for (const c of Object.values(v)) deepFreeze(c);
    Object.freeze(v);
  }
  return v;
}

test('a policy with nothing set gets every documented default', () => {
  const p: ReplicationPolicy = { ...meta, kind: 'ReplicationPolicy', spec: {} };
  expect(applyDefaults(p).spec).toEqual({
    frequency: '5m',
    recoveryPoints: { additional: 0 },
    appConsistentEvery: '0',
    compression: true,
    encryption: 'aes-256-gcm',
    initialReplication: { method: 'network', startAt: 'immediately' },
    resync: { thresholdPercent: 50, window: '22:00-06:00', automatic: true },
    multiVmConsistency: false,
  });
});

test('explicit values win, and retention is not combined with a default additional', () => {
  const p: ReplicationPolicy = { ...meta, kind: 'ReplicationPolicy', spec: { frequency: '15m', compression: false, recoveryPoints: { retention: '6h' }, resync: { automatic: false } } };
  const d = applyDefaults(p).spec;
  expect(d.frequency).toBe('15m');
  expect(d.compression).toBe(false);
  expect(d.recoveryPoints).toEqual({ retention: '6h' });
  expect(d.resync).toEqual({ thresholdPercent: 50, window: '22:00-06:00', automatic: false });
});

test('host sites: hypervisor, replica server authentication and port; embedded sites get a data path', () => {
  const embedded: Site = { ...meta, kind: 'Site', spec: { type: 'host', replicaServer: { enabled: true } } };
  expect(applyDefaults(embedded).spec).toEqual({
    type: 'host', hypervisor: 'files', dataPath: '.drsite/sites/x',
    replicaServer: { enabled: true, authentication: 'certificate', port: 8443 },
  });
  const remote: Site = { ...meta, kind: 'Site', spec: { type: 'host', endpoint: 'https://h.example', hypervisor: 'qemu' } };
  expect(applyDefaults(remote).spec).toEqual({ type: 'host', endpoint: 'https://h.example', hypervisor: 'qemu' });
  const azure: Site = { ...meta, kind: 'Site', spec: { type: 'azure', storageAccount: 'a1b', container: 'c1c', credentials: { sasTokenEnv: 'SAS' }, resourceGroup: 'rg', location: 'we' } };
  expect(applyDefaults(azure)).toEqual(azure);
});

test('protected VMs exclude no disks by default', () => {
  const input: ProtectedVM = { ...meta, kind: 'ProtectedVM', spec: { vm: 'v', primary: 'a', replica: 'b', policy: 'p' } };
  const vm = applyDefaults(input);
  expect(vm.spec.disks).toEqual({ exclude: [] });
});

test.each([
  ['test', { recoveryPoint: 'latest', commit: false, cleanupTest: false }],
  ['unplanned', { recoveryPoint: 'latest', commit: false, cleanupTest: false }],
  ['planned', { commit: false, cleanupTest: false }],
  ['failback', { commit: false, cleanupTest: false, failbackMethod: 'minimize-downtime' }],
  ['commit', { commit: false, cleanupTest: false }],
  ['cancel', { commit: false, cleanupTest: false }],
] as const)('failover defaults for type %s apply only where the option means something', (type, want) => {
  const plan: RecoveryPlan = { ...meta, kind: 'RecoveryPlan', spec: { groups: [{ vms: ['v'] }], failover: { id: 'f1', type } } };
  const d = applyDefaults(plan);
  expect(d.spec.failover).toEqual({ id: 'f1', type, ...want });
  const reloaded = loadDesiredStateFromSources([{ file: 'p.yaml', text: stringify(d) }]);
  // Only the dangling VM reference may complain: the defaulted options themselves are valid.
  expect(reloaded.diagnostics.map((x) => x.path)).toEqual(['spec.groups[0].vms[0]']);
});

test('script actions: arguments, timeout and failover types', () => {
  const plan: RecoveryPlan = { ...meta, kind: 'RecoveryPlan', spec: { groups: [{ vms: ['v'], before: [{ script: { path: 'a.sh' } }], after: [{ manual: { message: 'm' }, failoverTypes: ['test'] }] }] } };
  const g = applyDefaults(plan).spec.groups[0];
  expect(g.before?.[0]).toEqual({ script: { path: 'a.sh', args: [], timeout: '5m' }, failoverTypes: ['test', 'planned', 'unplanned', 'failback'] });
  expect(g.after?.[0]).toEqual({ manual: { message: 'm' }, failoverTypes: ['test'] });
});

test('never mutates its input, and applying twice changes nothing', async () => {
  const result = await loadDesiredState(['examples/quickstart'], { cwd: join(import.meta.dirname, '..', '..') });
  if (!result.ok) throw new Error('quickstart did not load');
  const raw: Resource[] = [
    { ...meta, kind: 'ReplicationPolicy', spec: { resync: {} } },
    { ...meta, kind: 'Site', spec: { type: 'host', replicaServer: { enabled: true } } },
    { ...meta, kind: 'RecoveryPlan', spec: { groups: [{ vms: ['v'], before: [{ script: { path: 'a' } }] }], failover: { id: 'a', type: 'failback' } } },
  ];
  for (const r of raw) {
    const before = JSON.stringify(r);
    const once = applyDefaults(deepFreeze(r));
    expect(JSON.stringify(r)).toBe(before);
    expect(applyDefaults(once)).toEqual(once);
  }
  const s = result.state;
  for (const r of [...s.sites, ...s.policies, ...s.networkMappings, ...s.protectedVms, ...s.recoveryPlans]) {
    expect(applyDefaults(r)).toEqual(r);
    expect(validateDocument(r)).toEqual({ valid: true, errors: [] });
  }
});

test('a defaulted desired state, written back as YAML, loads to the same state', async () => {
  const result = await loadDesiredState(['examples/quickstart'], { cwd: join(import.meta.dirname, '..', '..') });
  if (!result.ok) throw new Error('quickstart did not load');
  const s = result.state;
  const text = [...s.sites, ...s.policies, ...s.networkMappings, ...s.protectedVms, ...s.recoveryPlans].map((r) => stringify(r)).join('---\n');
  const again = loadDesiredStateFromSources([{ file: 'all.yaml', text }]);
  if (!again.ok) throw new Error(JSON.stringify(again.diagnostics));
  expect(again.diagnostics).toEqual([]);
  expect({ ...again.state, sources: {} }).toEqual({ ...s, sources: {} });
});
