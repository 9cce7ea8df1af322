// Extended replication A -> B -> C (and a fourth hop) over real mutual TLS: the replica site
// forwards the points it applied; C converges to B's points; failover on C works.
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { TerminalError } from '../../src/model/errors.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
let cluster: Cluster;
const c: Record<string, MtlsClient> = {};
const policy5m = { ...policy30s, frequency: '5m' };

beforeAll(async () => {
  cluster = await Cluster.create([
    { name: 'host-a', replicaServer: false },
    { name: 'host-b', allowedPrimaries: ['host-a'] },
    { name: 'host-c', allowedPrimaries: ['host-b'] },
    { name: 'host-d', allowedPrimaries: ['host-c'] },
  ]);
  for (const h of ['host-a', 'host-b', 'host-c', 'host-d']) {
    await cluster.startInProcess(h);
    c[h] = await cluster.client(h);
  }
});
afterAll(async () => cluster?.destroy());

const digest = async (host: string, id: string, seq: number, disk: string) =>
  (await send(c[host], ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
const cycle = async (host: string, id: string) => (await send(c[host], ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number; action: string }>();

test('A -> B -> C -> D: each hop converges to the points of the one before; failover on C works', async () => {
  await send(c['host-a'], ROUTES.createVm, {}, { name: 'app', disks: [{ name: 'os', size: 16 * MiB }, { name: 'data', size: 4 * MiB }] });
  const socket = join(cluster.host('host-a').dataDir, 'nbd', 'app.sock');
  const os = await NbdClient.connect(socket, 'os');
  for (const w of randomWrites(200, os.size, 1)) await os.write(w.offset, w.data);
  await send(c['host-a'], ROUTES.createRelationship, {}, { id: 'rel-app', vm: 'app', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(c['host-a'], ROUTES.startReplication, { id: 'rel-app' }, undefined, { query: { wait: 'true' } });
  // 30 s is refused for an extended hop.
  const e = await send(c['host-b'], ROUTES.extend, { id: 'rel-app' }, { id: 'rel-app-ext', replica: { name: 'host-c', endpoint: cluster.host('host-c').url }, policy: policy30s }).catch((x: unknown) => x);
  expect(TerminalError.is(e) && e.code === 'invalid-argument').toBe(true);
  const ext = (await send(c['host-b'], ROUTES.extend, { id: 'rel-app' }, { id: 'rel-app-ext', replica: { name: 'host-c', endpoint: cluster.host('host-c').url }, policy: policy5m })).json<RelationshipView>();
  expect(ext).toMatchObject({ role: 'Primary', state: 'Replicating', peer: 'host-c' });
  const hop3 = (await send(c['host-c'], ROUTES.extend, { id: 'rel-app-ext' }, { id: 'rel-app-ext2', replica: { name: 'host-d', endpoint: cluster.host('host-d').url }, policy: { ...policy30s, frequency: '15m' } })).json<RelationshipView>();
  expect(hop3.state).toBe('Replicating');

  const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'app');
  for (let i = 0; i < 4; i++) {
    for (const w of randomWrites(80, os.size, 10 + i)) await os.write(w.offset, w.data);
    const first = await cycle('host-a', 'rel-app');
    const want = await sha256File(join(vmDir, 'os.img'));
    expect(await digest('host-b', 'rel-app', first.sequence, 'os')).toBe(want);
    // The extended hops run on their own (slower) schedule; here one cycle each.
    const second = await cycle('host-b', 'rel-app-ext');
    expect(second.applied).toBe(second.sequence);
    expect(await digest('host-c', 'rel-app-ext', second.sequence, 'os')).toBe(want);
    expect(await digest('host-c', 'rel-app-ext', second.sequence, 'data')).toBe(await digest('host-b', 'rel-app', first.sequence, 'data'));
    const third = await cycle('host-c', 'rel-app-ext2');
    expect(await digest('host-d', 'rel-app-ext2', third.sequence, 'os')).toBe(want);
  }
  await os.close();
  // Roles as each host reports them.
  const onB = (await send(c['host-b'], ROUTES.listRelationships, {})).json<RelationshipView[]>().map((v) => `${v.id}:${v.role}`);
  expect(onB.sort()).toEqual(['rel-app-ext:Primary', 'rel-app:Replica']);
  // Failover from the extended replica.
  const latest = (await send(c['host-c'], ROUTES.getRelationship, { id: 'rel-app-ext' })).json<RelationshipView>().appliedSequence;
  const fo = (await send(c['host-c'], ROUTES.failover, { id: 'rel-app-ext' }, {})).json<{ vm: string; recoveryPoint: { sequence: number } }>();
  expect(fo).toMatchObject({ vm: 'app', recoveryPoint: { sequence: latest } });
  await send(c['host-c'], ROUTES.commit, { id: 'rel-app-ext' });
  expect(await sha256File(join(cluster.host('host-c').dataDir, 'vms', 'app', 'os.img'))).toBe(await sha256File(join(vmDir, 'os.img')));
});
