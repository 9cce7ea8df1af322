// Initial replication by external media and from an existing replica copy, between in-process
// agents over real mutual TLS: both end byte-identical, the second shipping only differences.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites, runWorkload } from '../../src/demo/workload.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File, twoHosts } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;

beforeAll(async () => {
  ({ cluster, a, b } = await twoHosts());
});
afterAll(async () => cluster?.destroy());

const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();
const digest = async (id: string, seq: number, disk: string) =>
  (await send(b, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;

test('external media: export, WaitingForInitialReplicationImport until imported, then deltas', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'media-vm', disks: [{ name: 'os', size: 16 * MiB }, { name: 'data', size: 8 * MiB }] });
  const socketPath = join(cluster.host('host-a').dataDir, 'nbd', 'media-vm.sock');
  await runWorkload({ socketPath, exportName: 'os' }, { pattern: 'random', seed: 5, totalBytes: 4 * MiB });
  const mediaPath = join(cluster.root, 'media');
  const policy = { ...policy30s, initialReplication: { method: 'external-media' as const, startAt: 'immediately', mediaPath } };
  await send(a, ROUTES.createRelationship, {}, { id: 'rel-media', vm: 'media-vm', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy });
  await send(a, ROUTES.startReplication, { id: 'rel-media' }, undefined, { query: { wait: 'true' } });
  expect((await view(a, 'rel-media')).state).toBe('WaitingForInitialReplicationImport');
  // Writes while the media travels are tracked for the first delta.
  await runWorkload({ socketPath, exportName: 'data' }, { pattern: 'random', seed: 6, totalBytes: 2 * MiB });
  const waiting = (await send(a, ROUTES.replicateNow, { id: 'rel-media' })).json<{ action: string }>();
  expect(waiting.action).toBe('waiting');
  // The replica host imports the folder (shipped on a disk in real life).
  await send(b, ROUTES.importMedia, { id: 'rel-media' }, { folder: mediaPath });
  const r = (await send(a, ROUTES.replicateNow, { id: 'rel-media' })).json<{ action: string; sequence: number }>();
  expect(r.action).toBe('delta');
  expect((await view(a, 'rel-media')).state).toBe('Replicating');
  const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'media-vm');
  for (const disk of ['os', 'data']) expect(await digest('rel-media', r.sequence, disk)).toBe(await sha256File(join(vmDir, `${disk}.img`)));
});

test('existing replica: both sides checksum blocks, only differences ship', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'seeded', disks: [{ name: 'os', size: 32 * MiB }] });
  const socketPath = join(cluster.host('host-a').dataDir, 'nbd', 'seeded.sock');
  await runWorkload({ socketPath, exportName: 'os' }, { pattern: 'sequential', seed: 8, totalBytes: 24 * MiB, blockSize: MiB });
  // An operator copied the disk to the replica host earlier (a restored backup, say)...
  const vmDir = join(cluster.host('host-a').dataDir, 'vms', 'seeded');
  const replicaDir = join(cluster.host('host-b').dataDir, 'from-host-a', 'rel-seeded');
  mkdirSync(replicaDir, { recursive: true });
  copyFileSync(join(vmDir, 'os.img'), join(replicaDir, 'os.img'));
  // ...and the VM has changed 1% since.
  const os = await NbdClient.connect(socketPath, 'os');
  for (const w of randomWrites(Math.round((32 * MiB * 0.01) / 4096), os.size, 9, { maxBlocks: 1 })) await os.write(w.offset, w.data);
  await os.close();
  const policy = { ...policy30s, initialReplication: { method: 'existing-replica' as const, startAt: 'immediately' } };
  await send(a, ROUTES.createRelationship, {}, { id: 'rel-seeded', vm: 'seeded', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy });
  await send(a, ROUTES.startReplication, { id: 'rel-seeded' }, undefined, { query: { wait: 'true' } });
  const v = await view(a, 'rel-seeded');
  expect(v.state).toBe('Replicating');
  expect(await digest('rel-seeded', v.appliedSequence, 'os')).toBe(await sha256File(join(vmDir, 'os.img')));
  // Sealed logs on the wire: the 1% that differs (plus framing), far from the 24 MiB of data.
  expect(v.bytesShipped).toBeLessThan(0.03 * 32 * MiB);
});
