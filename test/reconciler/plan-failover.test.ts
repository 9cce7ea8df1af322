// Table-driven: recovery-plan failover requests (a new failover.id) and the per-VM actions they
// expand into, groups in declared order; refusals come back as warnings with nothing planned.
import { describe, expect, test } from 'vitest';
import type { FailoverRequest } from '../../src/model/desired.ts';
import type { ObservedState } from '../../src/model/observed.ts';
import { plan, type ActionOf } from '../../src/reconciler/plan.ts';
import { desired, mapping, observed, policy, pvm, recoveryPlan } from './fixtures.ts';
import { find, runCase, type Case } from './harness.ts';

// Group order (zdb first, then apps, then aweb) deliberately differs from name order.
const VMS = [pvm('zdb'), pvm('app1'), pvm('app2'), pvm('aweb')];
const GROUPS = [['zdb'], ['app2', 'app1'], ['aweb']];

const world = (f: FailoverRequest, extra: { policies?: ReturnType<typeof policy>[] } = {}) =>
  desired({ vms: VMS, plans: [recoveryPlan('dr', GROUPS, f)], mappings: [mapping('lan', 'site-a', 'site-b', 'isolated')], ...extra });

const all = (o: ObservedState, edit: (r: ObservedState['relationships'][string]) => void) => {
  for (const r of Object.values(o.relationships)) edit(r);
};
const failedOver = (state: 'FailoverWaitingCompletion' | 'FailedOver') => (o: ObservedState) =>
  all(o, (r) => { r.state = state; r.direction = { primary: 'site-b', replica: 'site-a' }; r.roles = { 'site-b': 'Primary', 'site-a': 'Replica' }; });
const reversed = (o: ObservedState) => all(o, (r) => { r.direction = { primary: 'site-b', replica: 'site-a' }; });

// The same world with site-b an Azure storage account: it holds replicas only.
const toAzure = (d: ReturnType<typeof world>): ReturnType<typeof world> => ({
  ...d,
  sites: d.sites.map((x) => (x.metadata.name !== 'site-b' ? x : {
    ...x,
    spec: { type: 'azure', storageAccount: 'drreplicas', container: 'replicas', credentials: { connectionStringEnv: 'DR_AZURE' }, resourceGroup: 'rg-dr', location: 'westeurope' },
  })),
});
const order = (type: string) => ['zdb', 'app1', 'app2', 'aweb'].map((v) => `${type} ${v}`);
const perVm = (...types: string[]) => ['zdb', 'app1', 'app2', 'aweb'].flatMap((v) => types.map((t) => `${t} ${v}`));

const test1 = world({ id: 't1', type: 'test' });
const cleanup = world({ id: 't2', type: 'test', cleanupTest: true });
const planned = world({ id: 'p1', type: 'planned' });
const plannedCommit = world({ id: 'p2', type: 'planned', commit: true });
const unplanned = world({ id: 'u1', type: 'unplanned', commit: true, recoveryPoint: '2026-03-01T11:00:00Z' });
const commit = world({ id: 'c1', type: 'commit' });
const cancel = world({ id: 'x1', type: 'cancel' });
const failback = world({ id: 'f1', type: 'failback', failbackMethod: 'full-download' });
const plannedToAzure = toAzure(plannedCommit);
const failbackFromAzure = toAzure(failback);

const cases: Case[] = [
  {
    reason: 'test failover, new id: one test VM per VM, groups in declared order, not destructive',
    desired: test1,
    observed: observed(test1),
    want: order('test-failover'),
    check: (p) => {
      expect(p.actions.every((a) => !a.destructive)).toBe(true);
      const t = find(p, 'test-failover', 'zdb') as ActionOf<'test-failover'>;
      expect(t.details).toEqual({ recoveryPlan: 'dr', failoverId: 't1', groupIndex: 0, groupName: 'g1', site: 'site-b', recoveryPoint: 'latest', testVm: 'zdb-Test', testNetwork: 'isolated' });
      expect(p.actions.map((a) => (a.details as { groupIndex: number }).groupIndex)).toEqual([0, 1, 1, 2]);
    },
  },
  {
    reason: 'the same failover id as the last action: no-op',
    desired: test1,
    observed: observed(test1, (o) => { o.recoveryPlans.dr = { name: 'dr', lastActionId: 't1', lastActionType: 'test', lastActionState: 'Succeeded' }; }),
    want: [],
  },
  {
    reason: 'the same id whose run failed: no rerun, a warning says to declare a new id',
    desired: test1,
    observed: observed(test1, (o) => { o.recoveryPlans.dr = { name: 'dr', lastActionId: 't1', lastActionType: 'test', lastActionState: 'Failed' }; }),
    want: [],
    warnings: ['last-action-failed'],
  },
  {
    reason: 'a new id while the previous action still runs: it waits (not refused)',
    desired: test1,
    observed: observed(test1, (o) => { o.recoveryPlans.dr = { name: 'dr', lastActionId: 't0', lastActionType: 'test', lastActionState: 'Waiting' }; }),
    want: [],
    warnings: ['failover-waiting'],
  },
  {
    reason: 'test failover while one is already active: refused (clean it up first)',
    desired: test1,
    observed: observed(test1, (o) => { o.relationships.app1.testFailover = 'active'; o.relationships.app1.testVms = ['app1-Test']; }),
    want: [],
    warnings: ['failover-refused'],
  },
  {
    reason: 'cleanupTest: remove the test VMs where a test is active, not destructive',
    desired: cleanup,
    observed: observed(cleanup, (o) => {
      for (const v of ['zdb', 'aweb']) { o.relationships[v].testFailover = 'active'; o.relationships[v].testVms = [`${v}-Test`]; }
    }),
    want: ['cleanup-test-failover zdb', 'cleanup-test-failover aweb'],
    check: (p) => {
      expect(p.actions.every((a) => !a.destructive)).toBe(true);
      expect(find(p, 'cleanup-test-failover', 'aweb').dependsOn).toEqual([find(p, 'cleanup-test-failover', 'zdb').id]);
    },
  },
  {
    reason: 'cleanupTest with no active test: nothing to do, reported',
    desired: cleanup,
    observed: observed(cleanup),
    want: [],
    warnings: ['failover-nothing-to-do'],
  },
  {
    reason: 'planned failover without commit: planned-failover only (cancel stays possible), destructive',
    desired: planned,
    observed: observed(planned),
    want: order('planned-failover'),
    check: (p) => {
      expect(p.actions.every((a) => a.destructive)).toBe(true);
      expect(find(p, 'planned-failover', 'zdb').details).toMatchObject({ from: 'site-a', to: 'site-b', recoveryPoint: 'latest' });
    },
  },
  {
    reason: 'planned failover with commit: planned, commit, reverse replication per VM; groups wait for the previous group',
    desired: plannedCommit,
    observed: observed(plannedCommit),
    want: perVm('planned-failover', 'commit-failover', 'reverse-replication'),
    check: (p) => {
      const id = (t: string, v: string) => find(p, t as 'planned-failover', v).id;
      expect(find(p, 'commit-failover', 'zdb').dependsOn).toEqual([id('planned-failover', 'zdb')]);
      expect(find(p, 'reverse-replication', 'zdb').details).toMatchObject({ from: 'site-b', to: 'site-a' });
      // Group 2 (app1, app2) starts after group 1 (zdb) is done; group 3 after both apps.
      expect(find(p, 'planned-failover', 'app1').dependsOn).toEqual([id('reverse-replication', 'zdb')]);
      expect(find(p, 'planned-failover', 'app2').dependsOn).toEqual([id('reverse-replication', 'zdb')]);
      expect(find(p, 'planned-failover', 'aweb').dependsOn).toEqual([id('reverse-replication', 'app1'), id('reverse-replication', 'app2')]);
    },
  },
  {
    reason: 'planned failover needs the primary reachable: refused when it is not',
    desired: planned,
    observed: observed(planned, (o) => { o.sites['site-a'].reachable = false; }),
    want: [],
    // The protection pass also reports the unreachable site once per VM.
    warnings: ['site-unreachable', 'site-unreachable', 'site-unreachable', 'site-unreachable', 'failover-refused', 'failover-refused', 'failover-refused', 'failover-refused'],
  },
  {
    reason: 'unplanned failover with commit, primary unreachable or Critical: unplanned + commit at the chosen point',
    desired: unplanned,
    observed: observed(unplanned, (o) => { o.sites['site-a'].reachable = false; o.relationships.zdb.state = 'Critical'; }),
    want: perVm('unplanned-failover', 'commit-failover'),
    warnings: ['site-unreachable', 'site-unreachable', 'site-unreachable', 'critical'],
    check: (p) => expect(find(p, 'unplanned-failover', 'zdb').details).toMatchObject({ from: 'site-a', to: 'site-b', recoveryPoint: '2026-03-01T11:00:00Z' }),
  },
  {
    reason: 'unplanned failover with no recovery point yet: refused',
    desired: unplanned,
    observed: observed(unplanned, (o) => { o.relationships.aweb.recoveryPoints = 0; }),
    want: [],
    warnings: ['failover-refused'],
  },
  {
    reason: 'commit while FailoverWaitingCompletion: commit-failover on the running site, destructive',
    desired: commit,
    observed: observed(commit, failedOver('FailoverWaitingCompletion')),
    want: order('commit-failover'),
    warnings: ['failover-state', 'failover-state', 'failover-state', 'failover-state'],
    check: (p) => {
      expect(find(p, 'commit-failover', 'zdb').details).toMatchObject({ site: 'site-b' });
      expect(p.actions.every((a) => a.destructive)).toBe(true);
    },
  },
  {
    reason: 'commit with nothing waiting (Replicating): refused',
    desired: commit,
    observed: observed(commit),
    want: [],
    warnings: ['failover-refused', 'failover-refused', 'failover-refused', 'failover-refused'],
  },
  {
    reason: 'cancel while FailoverWaitingCompletion: cancel-failover, destructive',
    desired: cancel,
    observed: observed(cancel, failedOver('FailoverWaitingCompletion')),
    want: order('cancel-failover'),
    warnings: ['failover-state', 'failover-state', 'failover-state', 'failover-state'],
    check: (p) => expect(p.actions.every((a) => a.destructive)).toBe(true),
  },
  {
    reason: 'planned failover requested during FailoverWaitingCompletion: refused as a warning',
    desired: planned,
    observed: observed(planned, (o) => { o.relationships.app2.state = 'FailoverWaitingCompletion'; o.relationships.app2.direction = { primary: 'site-b', replica: 'site-a' }; }),
    want: [],
    warnings: ['failover-state', 'failover-refused'],
  },
  {
    reason: 'failback from FailedOver: reverse first, fail back, restore the declared direction',
    desired: failback,
    observed: observed(failback, failedOver('FailedOver')),
    want: perVm('reverse-replication', 'failback', 'reverse-replication'),
    warnings: ['failover-state', 'failover-state', 'failover-state', 'failover-state'],
    check: (p) => {
      const steps = p.actions.filter((a) => a.target.name === 'zdb').map((a) => [a.type, (a.details as { from: string }).from, (a.details as { to: string }).to]);
      expect(steps).toEqual([['reverse-replication', 'site-b', 'site-a'], ['failback', 'site-b', 'site-a'], ['reverse-replication', 'site-a', 'site-b']]);
      expect((find(p, 'failback', 'zdb') as ActionOf<'failback'>).details.method).toBe('full-download');
    },
  },
  {
    reason: 'failback while replicating reversed: fail back, then restore the direction',
    desired: failback,
    observed: observed(failback, reversed),
    want: perVm('failback', 'reverse-replication'),
    warnings: ['reversed-direction', 'reversed-direction', 'reversed-direction', 'reversed-direction'],
  },
  {
    reason: 'failback when the VMs already run on their declared primary: refused',
    desired: failback,
    observed: observed(failback),
    want: [],
    warnings: ['failover-refused', 'failover-refused', 'failover-refused', 'failover-refused'],
  },
  {
    reason: 'one VM not protected yet: the whole request is refused (all or nothing), protection still planned',
    desired: planned,
    observed: observed(planned, (o) => { delete o.relationships.app1; }),
    want: ['enable-protection app1', 'start-initial-replication app1'],
    warnings: ['failover-waiting'],
  },
  {
    reason: 'protection changes come before the failover, which waits for them',
    desired: world({ id: 't9', type: 'test' }, { policies: [policy('gold', { frequency: '30s' })] }),
    observed: observed(world({ id: 't9', type: 'test' })),
    // Protection is by VM name; the failover follows in group order.
    want: [...['app1', 'app2', 'aweb', 'zdb'].map((v) => `change-policy ${v}`), ...order('test-failover')],
    check: (p) => {
      expect(find(p, 'test-failover', 'zdb').dependsOn).toEqual([find(p, 'change-policy', 'zdb').id]);
      expect(find(p, 'test-failover', 'app1').dependsOn).toEqual([find(p, 'test-failover', 'zdb').id, find(p, 'change-policy', 'app1').id]);
    },
  },
  {
    reason: 'two plans ask for the same VM in one pass: the first by name wins, the other is refused',
    desired: desired({
      vms: VMS,
      plans: [recoveryPlan('b-plan', [['zdb']], { id: 'b', type: 'test' }), recoveryPlan('a-plan', [['zdb', 'aweb']], { id: 'a', type: 'test' })],
    }),
    observed: observed(desired({ vms: VMS })),
    want: ['test-failover aweb', 'test-failover zdb'],
    warnings: ['failover-waiting'],
    check: (p) => expect(p.warnings[0].target).toEqual({ kind: 'RecoveryPlan', name: 'b-plan' }),
  },
  {
    reason: 'planned failover to Azure with commit: no reverse replication (nothing replicates back from Azure)',
    desired: plannedToAzure,
    observed: observed(plannedToAzure),
    want: perVm('planned-failover', 'commit-failover'),
    check: (p) => expect(find(p, 'planned-failover', 'zdb').reason).toContain('write the Terraform that starts it in Azure (site-b)'),
  },
  {
    reason: 'failback from Azure after a committed failover: one failback step per VM that downloads and replicates to Azure again',
    desired: failbackFromAzure,
    observed: observed(failbackFromAzure, failedOver('FailedOver')),
    want: perVm('failback'),
    warnings: ['failover-state', 'failover-state', 'failover-state', 'failover-state'],
    check: (p) => {
      expect((find(p, 'failback', 'zdb') as ActionOf<'failback'>).details).toMatchObject({ from: 'site-b', to: 'site-a', method: 'full-download' });
    },
  },
  {
    reason: 'failback from Azure before the failover is committed: refused',
    desired: failbackFromAzure,
    observed: observed(failbackFromAzure, failedOver('FailoverWaitingCompletion')),
    want: [],
    warnings: ['failover-state', 'failover-state', 'failover-state', 'failover-state', 'failover-refused', 'failover-refused', 'failover-refused', 'failover-refused'],
  },
  {
    reason: 'a plan without a failover block: nothing',
    desired: desired({ vms: VMS, plans: [recoveryPlan('dr', GROUPS)] }),
    observed: observed(desired({ vms: VMS })),
    want: [],
  },
];

describe('plan(): recovery-plan failovers', () => {
  test.each(cases)('$reason', (c) => {
    runCase(c);
  });

  test('only test and cleanup are non-destructive in the failover family', () => {
    const d = plannedCommit;
    const p = plan(d, observed(d));
    const kinds = new Set(p.actions.map((a) => a.type));
    expect([...kinds]).toEqual(['planned-failover', 'commit-failover', 'reverse-replication']);
    expect(p.actions.every((a) => a.destructive)).toBe(true);
  });

  test('action ids are stable across passes and carry the plan and failover id', () => {
    const p1 = plan(plannedCommit, observed(plannedCommit));
    const p2 = plan(structuredClone(plannedCommit), observed(plannedCommit));
    expect(p1.actions.map((a) => a.id)).toEqual(p2.actions.map((a) => a.id));
    expect(find(p1, 'planned-failover', 'zdb').id).toBe('planned-failover:ProtectedVM/zdb@RecoveryPlan/dr/p2#0');
  });
});
