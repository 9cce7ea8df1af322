// The API server semantics the controller relies on, as the in-process stand-in implements them
// (fake-api-server.ts STANDS IN FOR A REAL API SERVER, which cannot be installed here), exercised
// through @kubernetes/client-node: if the stand-in drifted from the real behaviour, the
// controller tests would prove less.
import { CustomObjectsApi, KubeConfig, Watch } from '@kubernetes/client-node';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { generateCrds } from '../../src/k8s/crds.ts';
import { statusCode } from '../../src/k8s/kube-api.ts';
import { FakeApiServer } from './fake-api-server.ts';
import { MERGE, NS, ref } from './helpers.ts';

let fake: FakeApiServer;
let kc: KubeConfig;
let api: CustomObjectsApi;
const policy = (name: string) => ({ apiVersion: 'drsite.dev/v1', kind: 'ReplicationPolicy', metadata: { name }, spec: { frequency: '5m' } });
type O = { metadata: { resourceVersion: string; generation: number; deletionTimestamp?: string; finalizers?: string[] }; spec: { frequency: string }; status?: { observedGeneration?: number } };
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => statusCode(e));

beforeAll(async () => {
  fake = new FakeApiServer();
  fake.installCrds(generateCrds());
  await fake.start();
  kc = new KubeConfig();
  kc.loadFromString(fake.kubeconfig(NS));
  api = kc.makeApiClient(CustomObjectsApi);
});
afterAll(() => fake.stop());

test('resourceVersion conflicts, generation on spec changes only, status only through /status', async () => {
  const created = (await api.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: policy('p1') })) as O;
  expect(created.metadata.generation).toBe(1);
  expect(await failure(api.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: policy('p1') }))).toBe(409);
  const edited = (await api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p1', body: { spec: { frequency: '15m' } } }, MERGE)) as O;
  expect(edited.metadata.generation).toBe(2);
  // A stale resourceVersion precondition is refused.
  expect(await failure(api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p1', body: { metadata: { resourceVersion: created.metadata.resourceVersion }, spec: { frequency: '30s' } } }, MERGE))).toBe(409);
  // The main endpoint ignores status; /status ignores spec; neither moves generation for status.
  await api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p1', body: { status: { observedGeneration: 9 } } }, MERGE);
  const s = (await api.patchNamespacedCustomObjectStatus({ ...ref('replicationpolicies'), name: 'p1', body: { spec: { frequency: '30s' }, status: { observedGeneration: 2 } } }, MERGE)) as O;
  expect(s.spec.frequency).toBe('15m');
  expect(s.status).toEqual({ observedGeneration: 2 });
  expect(s.metadata.generation).toBe(2);
  // A patch that is not a merge patch is not silently accepted (the client's default is JSON patch).
  expect(await failure(api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p1', body: [{ op: 'replace', path: '/spec/frequency', value: '5m' }] }))).toBe(415);
});

test('finalizers hold a deleted object (deletionTimestamp set, no new finalizers) until the last one goes', async () => {
  await api.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: { ...policy('p2'), metadata: { name: 'p2', finalizers: ['x/one'] } } });
  const deleting = (await api.deleteNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p2' })) as O;
  expect(deleting.metadata.deletionTimestamp).toBeDefined();
  expect(await failure(api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p2', body: { metadata: { finalizers: ['x/one', 'x/two'] } } }, MERGE))).toBe(422);
  await api.patchNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p2', body: { metadata: { finalizers: [] } } }, MERGE);
  expect(await failure(api.getNamespacedCustomObject({ ...ref('replicationpolicies'), name: 'p2' }))).toBe(404);
});

test('a watch replays from its resourceVersion, and answers 410 Gone (ERROR event) once that is compacted', async () => {
  const list = (await api.listNamespacedCustomObject(ref('replicationpolicies'))) as { metadata: { resourceVersion: string } };
  await api.createNamespacedCustomObject({ ...ref('replicationpolicies'), body: policy('p3') });
  const events = async (rv: string) => {
    const seen: { type: string; object: { code?: number; metadata?: { name?: string } } }[] = [];
    await new Promise<void>((resolve) => {
      void new Watch(kc).watch(`/apis/drsite.dev/v1/namespaces/${NS}/replicationpolicies`, { resourceVersion: rv, timeoutSeconds: 1 }, (type, object) => seen.push({ type, object }), () => resolve());
    });
    return seen;
  };
  const replay = await events(list.metadata.resourceVersion);
  expect(replay.map((e) => [e.type, e.object.metadata?.name])).toEqual([['ADDED', 'p3']]);
  fake.compact();
  const gone = await events(list.metadata.resourceVersion);
  expect(gone.map((e) => [e.type, e.object.code])).toEqual([['ERROR', 410]]);
});
