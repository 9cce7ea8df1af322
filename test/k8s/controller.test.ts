// drsite controller against the in-process API server of fake-api-server.ts, which STANDS IN FOR
// A REAL API SERVER (none can be installed here). The controller is the production code with a
// kubeconfig file pointing @kubernetes/client-node at the fake, and two embedded sites that
// really replicate. The tests run in order on one world: protect, edit, reject an invalid
// object, re-list after 410 Gone, delete behind the finalizer, then hand leadership over.
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PROTECTION_FINALIZER, SITE_FINALIZER } from '../../src/k8s/api-group.ts';
import { Controller } from '../../src/k8s/controller.ts';
import { Vault } from '../../src/vault/vault.ts';
import { CR, MERGE, NS, condition, ref, setUp, statusOf, waitFor, type Env } from './helpers.ts';

let env: Env;
let c1: Controller;
let c2: Controller | undefined;
const log: string[] = [];
const logs = () => log.join('\n');
const LEASE = 'drsite-test';

const controller = (identity: string) =>
  new Controller({
    kubeConfig: env.kubeConfig(), namespace: NS, stateDir: env.stateDir, identity, leaseName: LEASE,
    leaseDurationSeconds: 2, leaseRetryMs: 250, pollMs: 500, report: (l) => log.push(`[${identity}] ${l}`),
  });

const pvm = (name: string, policy = 'fast') => ({
  apiVersion: 'drsite.dev/v1', kind: 'ProtectedVM', metadata: { name }, spec: { vm: 'app-01', primary: 'site-a', replica: 'site-b', policy },
});

const get = (plural: string, name: string) => env.fake.get(`${CR}/${plural}`, NS, name);

beforeAll(async () => {
  env = await setUp();
  for (const s of env.sites) await env.user.createNamespacedCustomObject({ ...ref('sites'), body: s });
  await env.user.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: { apiVersion: 'drsite.dev/v1', kind: 'ReplicationPolicy', metadata: { name: 'fast' }, spec: { frequency: '30s' } } });
  await env.user.createNamespacedCustomObject({ ...ref('protectedvms'), body: pvm('app-01') });
  c1 = controller('c1');
  c1.start();
});

afterAll(async () => {
  await c2?.stop();
  await c1?.stop();
  await env?.cleanup();
});

describe('drsite controller (against the fake API server)', () => {
  test('CRs are reconciled: finalizer, status through /status with observedGeneration, conditions and state', async () => {
    const protectedVm = await waitFor('app-01 Replicating and Ready', () => {
      const o = get('protectedvms', 'app-01');
      return statusOf(o)?.state === 'Replicating' && condition(o, 'Ready')?.status === 'True' ? o : undefined;
    }, 30_000, logs);
    expect(c1.isLeader).toBe(true);
    expect(protectedVm.metadata.finalizers).toEqual([PROTECTION_FINALIZER]);
    expect(protectedVm.status).toMatchObject({ observedGeneration: 1, health: 'Normal', direction: { primary: 'site-a', replica: 'site-b' }, roles: { 'site-a': 'Primary', 'site-b': 'Replica' } });
    expect((protectedVm.status as { lag?: string }).lag).toMatch(/^\d+[smh]$/);
    expect(condition(protectedVm, 'Protected')).toMatchObject({ status: 'True', observedGeneration: 1 });
    expect(condition(protectedVm, 'Accepted')).toMatchObject({ status: 'True', reason: 'Valid' });
    for (const name of ['site-a', 'site-b']) {
      const site = get('sites', name)!;
      expect(site.metadata.finalizers).toEqual([SITE_FINALIZER]);
      expect(site.status).toMatchObject({ observedGeneration: 1 });
      expect(condition(site, 'Accepted')?.status).toBe('True');
    }
    // Status went through the status subresource, and every field written is in the CRD schema.
    expect(env.fake.requests).toContain(`PATCH /${CR}/namespaces/${NS}/protectedvms/app-01/status`);
    expect(env.fake.pruned).toEqual([]);
  });

  test('an edited spec moves generation, and observedGeneration follows once it is applied', async () => {
    await env.user.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'fast', body: { spec: { frequency: '5m' } } }, MERGE);
    expect(get('replicationpolicies', 'fast')!.metadata.generation).toBe(2);
    await waitFor('policy observedGeneration 2', () => (get('replicationpolicies', 'fast')?.status as { observedGeneration?: number })?.observedGeneration === 2, 20_000, logs);
    await waitFor('ChangePolicy job Event', () => env.fake.list('api/v1/events', NS).some((e) => e.reason === 'ChangePolicySucceeded'), 20_000, logs);
  });

  test('Events are created for jobs, on the object the job acts on', async () => {
    const events = await waitFor('EnableProtection events', () => {
      const es = env.fake.list('api/v1/events', NS).filter((e) => String(e.reason).startsWith('EnableProtection'));
      return es.length >= 2 ? es : undefined;
    }, 10_000, logs);
    const uid = get('protectedvms', 'app-01')!.metadata.uid;
    expect(events.map((e) => e.reason).sort()).toEqual(['EnableProtectionStarted', 'EnableProtectionSucceeded']);
    for (const e of events) expect(e.involvedObject).toMatchObject({ apiVersion: 'drsite.dev/v1', kind: 'ProtectedVM', name: 'app-01', namespace: NS, uid });
    // Read back through the client as kubectl describe would.
    const listed = await env.kubeConfig().makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: NS });
    expect(listed.items.filter((e) => e.involvedObject.name === 'app-01').length).toBeGreaterThanOrEqual(2);
  });

  test('an invalid object is reported on its own status; the others stay applied', async () => {
    await env.user.createNamespacedCustomObject({ ...ref('protectedvms'), body: pvm('broken', 'no-such-policy') });
    const broken = await waitFor('broken rejected', () => {
      const c = condition(get('protectedvms', 'broken'), 'Accepted');
      return c?.status === 'False' ? c : undefined;
    }, 10_000, logs);
    expect(broken.reason).toBe('Invalid');
    expect(broken.message).toMatch(/protectedvms\/broken:.*no-such-policy/);
    await waitFor('app-01 marked NotApplied', () => condition(get('protectedvms', 'app-01'), 'Accepted')?.reason === 'NotApplied', 10_000, logs);
    // Deleting it lets the declarations load again; it never had protection, so it goes at once.
    await env.user.deleteNamespacedCustomObject({ ...ref('protectedvms'), name: 'broken' });
    await waitFor('broken gone', () => !get('protectedvms', 'broken'), 10_000, logs);
    await waitFor('app-01 applied again', () => condition(get('protectedvms', 'app-01'), 'Accepted')?.reason === 'Valid', 10_000, logs);
    expect(statusOf(get('protectedvms', 'app-01'))?.state).toBe('Replicating');
  });

  test('a declared failover the state refuses is a False FailoverAccepted condition on the RecoveryPlan, with the reason', async () => {
    // app-01 runs on its declared primary: a failback has nothing to bring home.
    await env.user.createNamespacedCustomObject({ ...ref('recoveryplans'), body: {
      apiVersion: 'drsite.dev/v1', kind: 'RecoveryPlan', metadata: { name: 'dr' },
      spec: { groups: [{ vms: ['app-01'] }], failover: { id: 'fb-1', type: 'failback' } },
    } });
    const refused = await waitFor('dr FailoverAccepted False', () => {
      const c = condition(get('recoveryplans', 'dr'), 'FailoverAccepted');
      return c?.status === 'False' ? c : undefined;
    }, 15_000, logs);
    expect(refused.reason).toBe('Refused');
    expect(refused.message).toMatch(/failover fb-1 \(failback\) refused: app-01 runs on its declared primary site-a: nothing to fail back/);
    expect(env.fake.pruned).toEqual([]);
    await env.user.deleteNamespacedCustomObject({ ...ref('recoveryplans'), name: 'dr' });
    await waitFor('dr gone', () => !get('recoveryplans', 'dr'), 10_000, logs);
  });

  test('a watch that comes back after its resourceVersion expired (410 Gone) re-lists and sees what it missed', async () => {
    const listsBefore = c1.informer('NetworkMapping').lists;
    const release = env.fake.holdWatches();
    env.fake.closeWatches();
    await env.user.createNamespacedCustomObject({
      ...ref('networkmappings'),
      body: { apiVersion: 'drsite.dev/v1', kind: 'NetworkMapping', metadata: { name: 'lan' }, spec: { source: { site: 'site-a', network: 'lan' }, target: { site: 'site-b', network: 'lan-dr' } } },
    });
    env.fake.compact();
    release();
    await waitFor('410 served', () => env.fake.goneServed > 0, 10_000, logs);
    await waitFor('re-listed', () => c1.informer('NetworkMapping').lists > listsBefore, 10_000, logs);
    expect(c1.informer('NetworkMapping').get('lan')).toBeDefined();
    await waitFor('lan accepted', () => condition(get('networkmappings', 'lan'), 'Accepted')?.status === 'True', 10_000, logs);
    expect(logs()).toMatch(/410 Gone\); listing again/);
  });

  test('deleting a ProtectedVM: the finalizer keeps it until protection is disabled, then it goes', async () => {
    const deleting = (await env.user.deleteNamespacedCustomObject({ ...ref('protectedvms'), name: 'app-01' })) as { metadata: { deletionTimestamp?: string; finalizers?: string[] } };
    expect(deleting.metadata.deletionTimestamp).toBeDefined();
    expect(get('protectedvms', 'app-01')?.metadata.finalizers).toEqual([PROTECTION_FINALIZER]);
    await waitFor('app-01 gone', () => !get('protectedvms', 'app-01'), 20_000, logs);
    const vault = Vault.open(`${env.stateDir}/vault.db`);
    try {
      expect(vault.listJobs({ type: 'DisableProtection' }).map((j) => [j.target, j.state])).toEqual([['ProtectedVM/app-01', 'Succeeded']]);
    } finally {
      vault.close();
    }
    // Disabling was announced (and done) before the finalizer let the object go.
    const disabled = env.fake.changes.findIndex((c) => /^ADDED events\/app-01\.job-.*\.succeeded$/.test(c) && env.fake.list('api/v1/events', NS).some((e) => e.reason === 'DisableProtectionSucceeded' && c.endsWith(`/${(e.metadata as { name: string }).name}`)));
    expect(disabled).toBeGreaterThanOrEqual(0);
    expect(disabled).toBeLessThan(env.fake.changes.indexOf('DELETED protectedvms/app-01'));
    // The sites stay: only their own deletion would remove them.
    expect(get('sites', 'site-a')).toBeDefined();
  });

  test('two controllers: one leader; the other takes over only after the first stops renewing', async () => {
    const leases = env.kubeConfig().makeApiClient(CoordinationV1Api);
    c2 = controller('c2');
    c2.start();
    const readsBefore = env.fake.requests.filter((r) => r.endsWith(`/leases/${LEASE}`)).length;
    // Let c2 try the Lease many times while c1 renews it.
    await waitFor('c2 tried the lease', () => env.fake.requests.filter((r) => r.endsWith(`/leases/${LEASE}`)).length > readsBefore + 20, 20_000, logs);
    expect(c1.isLeader).toBe(true);
    expect(c2.isLeader).toBe(false);
    const held = await leases.readNamespacedLease({ name: LEASE, namespace: NS });
    expect(held.spec?.holderIdentity).toBe('c1');
    const transitions = held.spec?.leaseTransitions ?? 0;

    // c1 stops without handing the Lease back, as a crashed leader would leave it.
    await c1.stop({ releaseLease: false });
    expect(c1.isLeader).toBe(false);
    const c1Passes = c1.passes;
    expect((await leases.readNamespacedLease({ name: LEASE, namespace: NS })).spec?.holderIdentity).toBe('c1');
    await waitFor('c2 leads', () => c2!.isLeader, 20_000, logs);
    const taken = await leases.readNamespacedLease({ name: LEASE, namespace: NS });
    expect(taken.spec).toMatchObject({ holderIdentity: 'c2', leaseTransitions: transitions + 1, leaseDurationSeconds: 2 });
    expect(logs()).toMatch(/\[c2\] leader \(lease drsite-test took over from c1\)/);

    // The new leader reconciles: a new object gets its status from c2.
    await env.user.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: { apiVersion: 'drsite.dev/v1', kind: 'ReplicationPolicy', metadata: { name: 'slow' }, spec: { frequency: '15m' } } });
    // The status is written during the pass, the pass counted when it ends: wait for both.
    await waitFor('slow accepted by a pass of c2', () => condition(get('replicationpolicies', 'slow'), 'Accepted')?.status === 'True' && c2!.passes > 0, 20_000, logs);
    expect(c1.passes).toBe(c1Passes);
  });
});
