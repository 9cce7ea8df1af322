// What the streamed initial copy kill tests share: a VM with data in every segment, and the wait
// for a random moment of its copy.
import { join } from 'node:path';
import { randomWrites } from '../../src/demo/workload.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import type { ReplicaStatus } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import type { Cluster } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

/** Creates `vm` with one disk `d0` of `size` bytes on `host`, with random data in every segment; returns its image path. */
export async function vmWithData(cluster: Cluster, host: string, client: MtlsClient, vm: string, size: number, seed: number): Promise<string> {
  await send(client, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size }] });
  const c = await NbdClient.connect(join(cluster.host(host).dataDir, 'nbd', `${vm}.sock`), 'd0');
  await Promise.all(randomWrites(64 * 16, size, seed, { maxBlocks: 16 }).map((w) => c.write(w.offset, w.data)));
  await c.flush();
  await c.close();
  return join(cluster.host(host).dataDir, 'vms', vm, 'd0.img');
}

/** Waits (up to ~2 s) until the replica's checkpoint holds `segments` segments of `d0`, or a point. */
export async function untilSegments(asPrimary: MtlsClient, id: string, segments: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const s = await send(asPrimary, ROUTES.replicaStatus, { id }).then((r) => r.json<ReplicaStatus>(), () => undefined);
    if ((s?.initial?.segments.d0 ?? 0) >= segments || (s?.applied ?? 0) >= 1) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}
