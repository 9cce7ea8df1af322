// Table-driven: every (desired, observed) situation of a protected VM the planner can meet, with
// the actions it must choose and why.
import { describe, expect, test } from 'vitest';
import { plan, type ActionOf } from '../../src/reconciler/plan.ts';
import { desired, observed, observedFor, policy, pvm, relFor, T0, VM_DISKS } from './fixtures.ts';
import { find, runCase, type Case } from './harness.ts';

const web = pvm('web');
const one = desired({ vms: [web] });
const db = pvm('db', { extendedReplica: { site: 'site-c', policy: 'silver' } });
const withExt = desired({ vms: [db] });
const noAutoResync = desired({ vms: [web], policies: [policy('gold', { resync: { thresholdPercent: 50, window: '22:00-06:00', automatic: false } })] });

const cases: Case[] = [
  {
    reason: 'converged: same desired and observed gives an empty plan',
    desired: desired({ vms: [web, db] }),
    observed: observed(desired({ vms: [web, db] })),
    want: [],
  },
  {
    reason: 'nothing declared, nothing observed: empty plan',
    desired: desired(),
    observed: observed(desired()),
    want: [],
  },
  {
    reason: 'declared but not protected: enable, then start initial replication',
    desired: one,
    observed: observed(one, () => {}, { converged: false }),
    want: ['enable-protection web', 'start-initial-replication web'],
    check: (p) => {
      const en = find(p, 'enable-protection') as ActionOf<'enable-protection'>;
      expect(en.details).toEqual({ vm: 'web', primary: 'site-a', replica: 'site-b', policy: 'gold', disks: VM_DISKS });
      expect(en.destructive).toBe(false);
      const st = find(p, 'start-initial-replication') as ActionOf<'start-initial-replication'>;
      expect(st.dependsOn).toEqual([en.id]);
      expect(st.details).toEqual({ method: 'network', startAt: 'immediately' });
    },
  },
  {
    reason: 'excluded disks are left out of enable-protection',
    desired: desired({ vms: [pvm('web', { disks: { exclude: ['disk1'] } })] }),
    observed: observed(one, () => {}, { converged: false }),
    want: ['enable-protection web', 'start-initial-replication web'],
    check: (p) => expect((find(p, 'enable-protection') as ActionOf<'enable-protection'>).details.disks).toEqual(['disk0']),
  },
  {
    reason: 'initialReplication.startAt in the future of the observation: start is planned with notBefore',
    desired: desired({ vms: [web], policies: [policy('gold', { initialReplication: { method: 'network', startAt: '2026-03-01T22:00:00Z' } })] }),
    observed: observed(one, () => {}, { converged: false }),
    want: ['enable-protection web', 'start-initial-replication web'],
    check: (p) => expect((find(p, 'start-initial-replication') as ActionOf<'start-initial-replication'>).details.notBefore).toBe('2026-03-01T22:00:00Z'),
  },
  {
    reason: 'initialReplication.startAt already past: start now, no notBefore',
    desired: desired({ vms: [web], policies: [policy('gold', { initialReplication: { method: 'external-media', startAt: '2026-03-01T06:00:00Z', mediaPath: '/media' } })] }),
    observed: observed(one, () => {}, { converged: false }),
    want: ['enable-protection web', 'start-initial-replication web'],
    check: (p) => expect(find(p, 'start-initial-replication').details).toEqual({ method: 'external-media', startAt: '2026-03-01T06:00:00Z', mediaPath: '/media' }),
  },
  {
    reason: 'extended replica declared on a new VM: extend after initial replication',
    desired: withExt,
    observed: observed(withExt, () => {}, { converged: false }),
    want: ['enable-protection db', 'start-initial-replication db', 'extend-replication db'],
    check: (p) => expect(find(p, 'extend-replication').dependsOn).toEqual([find(p, 'start-initial-replication').id]),
  },
  {
    reason: 'relationship observed but Disabled counts as not protected',
    desired: one,
    observed: observed(one, (o) => { o.relationships.web.state = 'Disabled'; }),
    want: ['enable-protection web', 'start-initial-replication web'],
  },
  {
    reason: 'enabled but ReadyForInitialReplication: start initial replication only',
    desired: one,
    observed: observed(one, (o) => { o.relationships.web.state = 'ReadyForInitialReplication'; }),
    want: ['start-initial-replication web'],
  },
  {
    reason: 'initial replication in progress or waiting for import: nothing to do',
    desired: desired({ vms: [web, pvm('app')] }),
    observed: observed(desired({ vms: [web, pvm('app')] }), (o) => {
      o.relationships.web.state = 'InitialReplicationInProgress';
      o.relationships.app.state = 'WaitingForInitialReplicationImport';
    }),
    want: [],
  },
  {
    reason: 'suspended by the engine (recovered error): resume',
    desired: one,
    observed: observed(one, (o) => { o.relationships.web.state = 'Suspended'; o.relationships.web.suspendedBy = 'engine'; }),
    want: ['resume web'],
    check: (p) => expect(find(p, 'resume').destructive).toBe(false),
  },
  {
    reason: 'suspended by an operator: not auto-resumed, reported',
    desired: one,
    observed: observed(one, (o) => { o.relationships.web.state = 'Suspended'; o.relationships.web.suspendedBy = 'operator'; }),
    want: [],
    warnings: ['suspended-by-operator'],
  },
  {
    reason: 'ResynchronizationRequired with automatic resync: resync (non-destructive) in the policy window',
    desired: one,
    observed: observed(one, (o) => { o.relationships.web.state = 'ResynchronizationRequired'; o.relationships.web.health = 'Warning'; }),
    want: ['resync web'],
    check: (p) => {
      const r = find(p, 'resync') as ActionOf<'resync'>;
      expect(r.destructive).toBe(false);
      expect(r.details).toEqual({ window: '22:00-06:00', thresholdPercent: 50 });
    },
  },
  {
    reason: 'ResynchronizationRequired with automatic resync off: warning only',
    desired: noAutoResync,
    observed: observed(noAutoResync, (o) => { o.relationships.web.state = 'ResynchronizationRequired'; }),
    want: [],
    warnings: ['resync-required'],
  },
  {
    reason: 'policy spec edited: change-policy listing the changed fields',
    desired: desired({ vms: [web], policies: [policy('gold', { frequency: '30s' })] }),
    observed: observed(one),
    want: ['change-policy web'],
    check: (p) => {
      const c = find(p, 'change-policy') as ActionOf<'change-policy'>;
      expect(c.details).toEqual({ hop: 'replica', from: 'gold', to: 'gold', changes: [{ field: 'frequency', from: '"5m"', to: '"30s"' }] });
      expect(c.destructive).toBe(false);
    },
  },
  {
    reason: 'ProtectedVM points at another policy: change-policy from -> to',
    desired: desired({ vms: [pvm('web', { policy: 'silver' })] }),
    observed: observed(one),
    want: ['change-policy web'],
    check: (p) => {
      const c = find(p, 'change-policy') as ActionOf<'change-policy'>;
      expect([c.details.from, c.details.to]).toEqual(['gold', 'silver']);
      expect(c.details.changes.map((x) => x.field)).toEqual(['frequency']);
    },
  },
  {
    reason: 'policy changed while ReadyForInitialReplication: change-policy is planned before the start that uses it',
    desired: desired({ vms: [web], policies: [policy('gold', { compression: false })] }),
    observed: observed(one, (o) => { o.relationships.web.state = 'ReadyForInitialReplication'; }),
    want: ['change-policy web', 'start-initial-replication web'],
    check: (p) => expect(find(p, 'start-initial-replication').dependsOn).toEqual([find(p, 'change-policy').id]),
  },
  {
    reason: 'a disk newly excluded: change-disk-set removes it (its replica copy goes: destructive, declared)',
    desired: desired({ vms: [pvm('web', { disks: { exclude: ['disk1'] } })] }),
    observed: observed(one),
    want: ['change-disk-set web'],
    check: (p) => {
      const c = find(p, 'change-disk-set') as ActionOf<'change-disk-set'>;
      expect(c.details).toEqual({ added: [], removed: ['disk1'] });
      expect(c.destructive).toBe(true);
    },
  },
  {
    reason: 'a disk added to the VM and not excluded: change-disk-set adds it (non-destructive)',
    desired: one,
    observed: observed(one, (o) => { o.sites['site-a'].vms!.web.disks.push('disk2'); }),
    want: ['change-disk-set web'],
    check: (p) => {
      expect(find(p, 'change-disk-set').details).toEqual({ added: ['disk2'], removed: [] });
      expect(find(p, 'change-disk-set').destructive).toBe(false);
    },
  },
  {
    reason: 'a replicated disk vanished from the VM: drift, reported, nothing removed',
    desired: one,
    observed: observed(one, (o) => { o.sites['site-a'].vms!.web.disks = ['disk0']; }),
    want: [],
    warnings: ['disk-missing'],
  },
  {
    reason: 'replicaStoragePath changed: move-replica-storage from -> to',
    desired: desired({ vms: [pvm('web', { replicaStoragePath: '/new' })] }),
    observed: observed(one, (o) => { o.relationships.web.replicaStoragePath = '/old'; }),
    want: ['move-replica-storage web'],
    check: (p) => expect(find(p, 'move-replica-storage').details).toEqual({ site: 'site-b', from: '/old', to: '/new' }),
  },
  {
    reason: 'extended replica declared on a replicating VM: extend-replication',
    desired: withExt,
    observed: observed(withExt, (o) => { delete o.relationships.db.extendedReplica; }),
    want: ['extend-replication db'],
    check: (p) => expect(find(p, 'extend-replication').details).toEqual({ from: 'site-b', site: 'site-c', policy: 'silver' }),
  },
  {
    reason: 'extended replica removed from the declaration: remove-extended-replication, destructive',
    desired: desired({ vms: [pvm('db')] }),
    observed: observed(withExt),
    want: ['remove-extended-replication db'],
    check: (p) => expect(find(p, 'remove-extended-replication').destructive).toBe(true),
  },
  {
    reason: 'extended replica moved to another site: remove, then extend',
    desired: desired({ vms: [pvm('db', { extendedReplica: { site: 'site-a', policy: 'silver' } })] }),
    observed: observed(withExt),
    want: ['remove-extended-replication db', 'extend-replication db'],
    check: (p) => expect(find(p, 'extend-replication').dependsOn).toEqual([find(p, 'remove-extended-replication').id]),
  },
  {
    reason: 'extended hop policy edited: change-policy on the extended hop',
    desired: desired({ vms: [db], policies: [policy('gold'), policy('silver', { frequency: '15m', compression: false })] }),
    observed: observed(withExt),
    want: ['change-policy db'],
    check: (p) => expect((find(p, 'change-policy') as ActionOf<'change-policy'>).details.hop).toBe('extended'),
  },
  {
    reason: 'relationship no longer declared (managed by drsite): disable-protection, destructive',
    desired: desired(),
    observed: observed(one),
    want: ['disable-protection web'],
    check: (p) => {
      const d = find(p, 'disable-protection') as ActionOf<'disable-protection'>;
      expect(d.destructive).toBe(true);
      expect(d.details.cause).toBe('undeclared');
    },
  },
  {
    reason: 'replication found on a site that drsite never created: drift, not disabled',
    desired: desired(),
    observed: observed(one, (o) => { o.relationships.web.managed = false; }),
    want: [],
    warnings: ['unmanaged-relationship'],
  },
  {
    reason: 'undeclared relationship that is already gone: nothing',
    desired: desired(),
    observed: observed(one, (o) => { o.relationships.web.exists = false; }),
    want: [],
  },
  {
    reason: 'ProtectedVM renamed: disable the old name first, enable the new one after it',
    desired: desired({ vms: [pvm('web2', { vm: 'web' })] }),
    observed: observed(one),
    want: ['disable-protection web', 'enable-protection web2', 'start-initial-replication web2'],
    check: (p) => expect(find(p, 'enable-protection').dependsOn).toEqual([find(p, 'disable-protection').id]),
  },
  {
    reason: 'replica site changed: replace (destructive disable, then enable and start)',
    desired: desired({ vms: [pvm('web', { replica: 'site-c' })] }),
    observed: observed(one),
    want: ['disable-protection web', 'enable-protection web', 'start-initial-replication web'],
    check: (p) => {
      const d = find(p, 'disable-protection') as ActionOf<'disable-protection'>;
      expect([d.destructive, d.details.cause, d.details.replica]).toEqual([true, 'replaced', 'site-b']);
      expect(find(p, 'enable-protection').dependsOn).toEqual([d.id]);
    },
  },
  {
    reason: 'FailoverWaitingCompletion with a policy edit: no change-policy that would fight the failover',
    desired: desired({ vms: [web], policies: [policy('gold', { frequency: '30s' })] }),
    observed: observed(one, (o) => { o.relationships.web.state = 'FailoverWaitingCompletion'; o.relationships.web.direction = { primary: 'site-b', replica: 'site-a' }; }),
    want: [],
    warnings: ['failover-state'],
  },
  {
    reason: 'drift: FailedOver with no recovery plan asking anything: warning, never a destructive action',
    desired: desired({ vms: [pvm('web', { disks: { exclude: ['disk1'] } })] }),
    observed: observed(one, (o) => { o.relationships.web.state = 'FailedOver'; o.relationships.web.direction = { primary: 'site-b', replica: 'site-a' }; }),
    want: [],
    warnings: ['failover-state'],
  },
  {
    reason: 'site changed while failed over: the replacement waits',
    desired: desired({ vms: [pvm('web', { replica: 'site-c' })] }),
    observed: observed(one, (o) => { o.relationships.web.state = 'FailedOver'; }),
    want: [],
    warnings: ['failover-state'],
  },
  {
    reason: 'relationship Critical: an operator must act, nothing planned',
    desired: desired({ vms: [web], policies: [policy('gold', { frequency: '30s' })] }),
    observed: observed(one, (o) => { o.relationships.web.state = 'Critical'; o.relationships.web.health = 'Critical'; }),
    want: [],
    warnings: ['critical'],
  },
  {
    reason: 'replica site unreachable: enabling is deferred',
    desired: one,
    observed: observed(one, (o) => { o.sites['site-b'].reachable = false; }, { converged: false }),
    want: [],
    warnings: ['site-unreachable'],
  },
  {
    reason: 'replica site unreachable: a replacement is deferred whole (no removal without the re-add)',
    desired: desired({ vms: [pvm('web', { replica: 'site-c' })] }),
    observed: observed(one, (o) => { delete o.sites['site-c']; }),
    want: [],
    warnings: ['site-unreachable'],
  },
  {
    reason: 'VM not on its primary site: cannot enable, reported',
    desired: one,
    observed: observed(one, (o) => { o.sites['site-a'].vms = {}; }, { converged: false }),
    want: [],
    warnings: ['vm-not-found'],
  },
  {
    reason: 'replicating reversed after a failover: policy edits apply, disk and storage changes wait',
    desired: desired({ vms: [pvm('web', { policy: 'silver', replicaStoragePath: '/x', disks: { exclude: ['disk1'] } })] }),
    observed: observed(one, (o) => { o.relationships.web.direction = { primary: 'site-b', replica: 'site-a' }; }),
    want: ['change-policy web'],
    warnings: ['reversed-direction'],
  },
  {
    reason: 'a name that shadows Object.prototype is looked up as data',
    desired: desired({ vms: [pvm('constructor')] }),
    observed: observed(desired({ vms: [pvm('constructor')] }), () => {}, { converged: false }),
    want: ['enable-protection constructor', 'start-initial-replication constructor'],
  },
];

describe('plan(): protection', () => {
  test.each(cases)('$reason', (c) => {
    runCase(c);
  });

  test('drift never yields a destructive action: the declarations are unchanged in every drift case', () => {
    // The declaration is the converged one; only the observation drifts.
    const d = desired({ vms: [web, db] });
    const drifts: ((o: ReturnType<typeof observedFor>) => void)[] = [
      (o) => { o.relationships.web.state = 'FailedOver'; },
      (o) => { o.relationships.web.state = 'FailoverWaitingCompletion'; },
      (o) => { o.relationships.web.state = 'PreparedForPlannedFailover'; },
      (o) => { o.relationships.web.state = 'Suspended'; o.relationships.web.suspendedBy = 'operator'; },
      (o) => { o.relationships.web.state = 'Critical'; },
      (o) => { o.relationships.web.direction = { primary: 'site-b', replica: 'site-a' }; },
      (o) => { o.relationships.web.testFailover = 'active'; o.relationships.web.testVms = ['web-Test']; },
      (o) => { o.relationships.web.disks = ['disk0', 'disk1', 'disk9']; },
      (o) => { o.relationships.web.appliedPolicy = undefined; },
      (o) => { o.relationships.stray = { ...relFor(d, pvm('stray')), managed: false }; },
      (o) => { o.sites['site-a'].vms = {}; },
      (o) => { o.sites['site-b'].reachable = false; },
      (o) => { o.relationships.db.extendedReplica!.state = 'Critical'; },
    ];
    for (const drift of drifts) {
      const p = plan(d, observed(d, drift));
      expect(p.actions.filter((a) => a.destructive)).toEqual([]);
    }
  });

  test('a reversed relationship made with existing-replica is not a policy change; before the first copy the method still is', () => {
    const d = desired({ vms: [web] });
    const existing = { method: 'existing-replica', startAt: 'immediately' };
    // After a reverse or failback: replicating the other way with the method the failover chose.
    const reversed = plan(d, observed(d, (o) => {
      const r = o.relationships.web;
      r.direction = { primary: 'site-b', replica: 'site-a' };
      r.appliedPolicy = { name: r.appliedPolicy!.name, spec: { ...r.appliedPolicy!.spec, initialReplication: existing } as never };
    }));
    expect(reversed.actions.map((a) => a.type)).toEqual([]);
    // Not copied yet: the declared method is what the first copy must use.
    const waiting = plan(d, observed(d, (o) => {
      const r = o.relationships.web;
      r.state = 'ReadyForInitialReplication';
      r.recoveryPoints = 0;
      r.appliedPolicy = { name: r.appliedPolicy!.name, spec: { ...r.appliedPolicy!.spec, initialReplication: existing } as never };
    }));
    expect(waiting.actions.filter((a) => a.type === 'change-policy').map((a) => (a.details as { changes: { field: string }[] }).changes.map((c) => c.field))).toEqual([['initialReplication']]);
  });

  test('inputs are not mutated and the plan is plain JSON', () => {
    const d = desired({ vms: [web, db, pvm('app', { replicaStoragePath: '/x' })], policies: [policy('gold', { frequency: '30s' }), policy('silver')] });
    const o = observed(d, (x) => { delete x.relationships.app; x.relationships.db.state = 'Suspended'; x.relationships.db.suspendedBy = 'engine'; });
    const before = JSON.stringify([d, o]);
    const p = plan(d, o);
    expect(JSON.stringify([d, o])).toBe(before);
    expect(p.actions.length).toBeGreaterThan(0);
  });

  test('observedAt that is not a time is a typed error naming the field', () => {
    expect(() => plan(one, { ...observed(one), observedAt: 'yesterday' })).toThrow(/observedAt/);
  });

  test('the plan uses observedAt as its only clock', () => {
    const d = desired({ vms: [web], policies: [policy('gold', { initialReplication: { method: 'network', startAt: '2026-03-01T22:00:00Z' } })] });
    const early = plan(d, { ...observed(d, () => {}, { converged: false }), observedAt: T0 });
    const late = plan(d, { ...observed(d, () => {}, { converged: false }), observedAt: '2026-03-02T00:00:00Z' });
    expect((find(early, 'start-initial-replication') as ActionOf<'start-initial-replication'>).details.notBefore).toBe('2026-03-01T22:00:00Z');
    expect((find(late, 'start-initial-replication') as ActionOf<'start-initial-replication'>).details.notBefore).toBeUndefined();
  });

  test('several VMs: removals first, then each VM by name with its actions in rank order', () => {
    const d = desired({
      vms: [pvm('zeta'), pvm('alpha', { policy: 'silver', replicaStoragePath: '/p' }), pvm('mid')],
    });
    const o = observed(desired({ vms: [pvm('alpha'), pvm('gone'), pvm('mid')] }), (x) => {
      x.relationships.mid.state = 'ResynchronizationRequired';
      x.sites['site-a'].vms!.zeta = { disks: ['disk0'] };
    });
    const p = plan(d, o);
    expect(p.actions.map((a) => `${a.type} ${a.target.name}`)).toEqual([
      'disable-protection gone',
      'change-policy alpha',
      'move-replica-storage alpha',
      'resync mid',
      'enable-protection zeta',
      'start-initial-replication zeta',
    ]);
  });
});
