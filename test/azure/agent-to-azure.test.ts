// A host agent replicating a two-disk VM into Azure Blob page blobs through its ordinary shipping
// cycle. Azurite stands in for Azure Storage, which cannot be reached from here; qemu-img checks
// that each blob, downloaded, is a fixed VHD identical to the primary at the cut.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../agent/cluster.ts';
import { startAzurite, type Azurite } from './azurite.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const run = promisify(execFile);
const MiB = 1 << 20;
let cluster: Cluster;
let az: Azurite;
let a: MtlsClient;

beforeAll(async () => {
  az = await startAzurite();
  await az.container('dr-replicas').create();
  // Credentials reach the agent only through the environment variable the Site names.
  process.env.DRSITE_TEST_AZURE_CONNECTION = az.connectionString;
  cluster = await Cluster.create([{ name: 'host-a', replicaServer: false }]);
  await cluster.startInProcess('host-a');
  a = await cluster.client('host-a');
});
afterAll(async () => {
  await cluster?.destroy();
  await az?.stop();
  await az?.cleanup();
  delete process.env.DRSITE_TEST_AZURE_CONNECTION;
});

test('agent cycles ship into page blobs; each blob is a fixed VHD equal to the primary at its cut', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'web', disks: [{ name: 'os', size: 16 * MiB }, { name: 'data', size: 8 * MiB }] });
  const azure = {
    type: 'azure' as const,
    storageAccount: 'devstoreaccount1',
    container: 'dr-replicas',
    credentials: { connectionStringEnv: 'DRSITE_TEST_AZURE_CONNECTION' },
    resourceGroup: 'rg-dr',
    location: 'westeurope',
  };
  await send(a, ROUTES.createRelationship, {}, { id: 'rel-web', vm: 'web', replica: { name: 'azure-dr', endpoint: '', azure }, policy: policy30s });
  const socket = join(cluster.host('host-a').dataDir, 'nbd', 'web.sock');
  const os = await NbdClient.connect(socket, 'os');
  for (const w of randomWrites(200, os.size, 1)) await os.write(w.offset, w.data);
  await send(a, ROUTES.startReplication, { id: 'rel-web' }, undefined, { query: { wait: 'true' } });
  for (let i = 0; i < 3; i++) {
    for (const w of randomWrites(60, os.size, 10 + i)) await os.write(w.offset, w.data);
    const r = (await send(a, ROUTES.replicateNow, { id: 'rel-web' })).json<{ sequence: number; applied: number }>();
    expect(r.applied).toBe(r.sequence);
  }
  await os.close();
  const v = (await send(a, ROUTES.getRelationship, { id: 'rel-web' })).json<RelationshipView>();
  expect(v).toMatchObject({ state: 'Replicating', health: 'Normal', peer: 'azure-dr' });
  const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'web');
  for (const disk of ['os', 'data']) {
    const blob = join(cluster.root, `${disk}.vhd`);
    writeFileSync(blob, await az.container('dr-replicas').getBlobClient(`rel-web/${disk}.vhd`).downloadToBuffer());
    const info = JSON.parse((await run('qemu-img', ['info', '--output', 'json', '-f', 'vpc', blob])).stdout) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(disk === 'os' ? 16 * MiB : 8 * MiB);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', join(vmDir, `${disk}.img`), blob]); // exit 0 = identical
  }
});
