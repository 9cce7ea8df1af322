// Multi-VM consistency: VMs of one replication group are cut at the same instant, so their
// recovery points are crash-consistent together even while both keep writing.
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import type { RecoveryPointInfo } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, twoHosts } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;

beforeAll(async () => {
  ({ cluster, a, b } = await twoHosts());
});
afterAll(async () => cluster?.destroy());

test('a group cut shares one instant: an app writing "intent" on one VM and "commit" on the other is never seen half-done', async () => {
  const policy = { ...policy30s, multiVmConsistency: true };
  for (const vm of ['app', 'db']) {
    await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size: 4 * MiB }] });
    await send(a, ROUTES.createRelationship, {}, { id: `rel-${vm}`, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy, replicationGroup: 'tier' });
    await send(a, ROUTES.startReplication, { id: `rel-${vm}` }, undefined, { query: { wait: 'true' } });
  }
  const app = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', 'app.sock'), 'd0');
  const db = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', 'db.sock'), 'd0');
  const counter = (n: number) => Buffer.alloc(4096, 0).fill(`${n};`);
  // Writer: the db records transaction n, then the app records it: app <= db at every instant.
  let stop = false;
  const writer = (async () => {
    for (let n = 1; !stop; n++) {
      await db.write(0, counter(n));
      await app.write(0, counter(n));
    }
  })();
  const cuts: string[] = [];
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 30));
    const res = (await send(a, ROUTES.replicateGroupNow, { group: 'tier' })).json<Record<string, { sequence: number; applied: number }>>();
    expect(res['rel-app'].applied).toBe(res['rel-app'].sequence);
    expect(res['rel-db'].applied).toBe(res['rel-db'].sequence);
    const pa = (await send(b, ROUTES.recoveryPoints, { id: 'rel-app' })).json<RecoveryPointInfo[]>().at(-1)!;
    const pd = (await send(b, ROUTES.recoveryPoints, { id: 'rel-db' })).json<RecoveryPointInfo[]>().at(-1)!;
    expect(pa.cutId).toBe(pd.cutId); // one cut for the group
    expect(pa.time).toBe(pd.time);
    cuts.push(pa.cutId);
    // Read the replicas at that point: the app never holds a transaction the db lacks.
    const failA = (await send(b, ROUTES.testFailover, { id: 'rel-app' }, { recoveryPoint: pa.sequence })).json<{ nbdSocket: string }>();
    const failD = (await send(b, ROUTES.testFailover, { id: 'rel-db' }, { recoveryPoint: pd.sequence })).json<{ nbdSocket: string }>();
    const ra = await NbdClient.connect(failA.nbdSocket, 'd0');
    const rd = await NbdClient.connect(failD.nbdSocket, 'd0');
    const seen = async (c: NbdClient) => Number.parseInt((await c.read(0, 16)).toString('latin1').split(';')[0] || '0', 10);
    const [na, nd] = [await seen(ra), await seen(rd)];
    expect(na).toBeLessThanOrEqual(nd);
    expect(nd - na).toBeLessThanOrEqual(1);
    await ra.close();
    await rd.close();
    await send(b, ROUTES.cleanupTestFailover, { id: 'rel-app' });
    await send(b, ROUTES.cleanupTestFailover, { id: 'rel-db' });
  }
  stop = true;
  await writer;
  expect(new Set(cuts).size).toBe(6);
  await app.close();
  await db.close();
});
