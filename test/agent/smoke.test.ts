// Two in-process agents over real mutual TLS on loopback: protect a VM, replicate, compare.
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File, twoHosts } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
const MiB = 1 << 20;

beforeAll(async () => {
  ({ cluster, a, b } = await twoHosts());
});
afterAll(async () => cluster?.destroy());

test('protect, initial replication, deltas: the replica equals the primary at each cut', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'vm1', disks: [{ name: 'os', size: 8 * MiB }, { name: 'data', size: 4 * MiB }] });
  const rel = (await send(a, ROUTES.createRelationship, {}, {
    id: 'rel-vm1',
    vm: 'vm1',
    replica: { name: 'host-b', endpoint: cluster.host('host-b').url },
    policy: policy30s,
  })).json<{ state: string }>();
  expect(rel.state).toBe('ReadyForInitialReplication');
  const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'vm1');
  const nbd = join(cluster.host('host-a').dataDir, 'nbd', 'vm1.sock');
  const os = await NbdClient.connect(nbd, 'os');
  for (const w of randomWrites(200, os.size, 1)) await os.write(w.offset, w.data);
  await send(a, ROUTES.startReplication, { id: 'rel-vm1' }, undefined, { query: { wait: 'true' } });
  const view = (await send(a, ROUTES.getRelationship, { id: 'rel-vm1' })).json<{ state: string; appliedSequence: number }>();
  expect(view.state).toBe('Replicating');
  for (let cycle = 0; cycle < 3; cycle++) {
    for (const w of randomWrites(50, os.size, 100 + cycle)) await os.write(w.offset, w.data);
    const r = (await send(a, ROUTES.replicateNow, { id: 'rel-vm1' })).json<{ action: string; sequence: number; applied: number }>();
    expect(r.action).toBe('delta');
    expect(r.applied).toBe(r.sequence);
    for (const disk of ['os', 'data']) {
      const want = await sha256File(join(vmDir, `${disk}.img`));
      const got = (await send(b, ROUTES.pointDigest, { id: 'rel-vm1', seq: r.sequence, disk })).json<{ sha256: string }>();
      expect(got.sha256, `${disk} at ${r.sequence}`).toBe(want);
    }
  }
  await os.close();
});
