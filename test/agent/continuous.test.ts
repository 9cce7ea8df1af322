// Continuous replication (`frequency: continuous`) on the agents' own schedule: a new point follows
// the previous one's acknowledgement (at most one a second), so while a workload writes the
// replica's points keep coming without any replicate-now, and once it stops the replica's latest
// point catches up with the disk by itself; an idle VM gets no empty points. Health judges lag by
// a 30 s period.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomWrites } from '../../src/demo/workload.ts';
import { TerminalError } from '../../src/model/errors.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import type { RecoveryPointInfo, RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a', { schedule: true });
  await cluster.startInProcess('host-b');
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
});
afterAll(async () => cluster?.destroy());

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('continuous replication', () => {
  test('points follow the writes without replicate-now, and the replica catches up once they stop', async () => {
    await send(a, ROUTES.createVm, {}, { name: 'cont', disks: [{ name: 'os', size: 8 * MiB }] });
    await send(a, ROUTES.createRelationship, {}, { id: 'rel-cont', vm: 'cont', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: { ...policy30s, frequency: 'continuous' } });
    await send(a, ROUTES.startReplication, { id: 'rel-cont' }, undefined, { query: { wait: 'true' } });
    const first = (await send(b, ROUTES.getRelationship, { id: 'rel-cont' })).json<RelationshipView>().appliedSequence;
    // Writes in rounds; with a 30 s period no cycle would run in this time, continuous ones must.
    const c = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', 'cont.sock'), 'os');
    for (let round = 0; round < 8; round++) {
      for (const w of randomWrites(16, c.size, 10 + round)) await c.write(w.offset, w.data);
      await c.flush();
      await new Promise((r) => setTimeout(r, 500));
    }
    await c.close();
    const applied = await until('two continuous points', async () => {
      const v = (await send(b, ROUTES.getRelationship, { id: 'rel-cont' })).json<RelationshipView>();
      return v.appliedSequence >= first + 2 ? v.appliedSequence : undefined;
    });
    expect(applied).toBeGreaterThanOrEqual(first + 2);
    // No more writes: the latest point becomes the disk as it is, by the schedule alone.
    const disk = createHash('sha256').update(await readFile(join(cluster.host('host-a').dataDir, 'vms', 'cont', 'os.img'))).digest('hex');
    await until('the replica equal to the disk', async () => {
      const pts = (await send(b, ROUTES.recoveryPoints, { id: 'rel-cont' })).json<RecoveryPointInfo[]>();
      // A newer point may apply between the two requests and replace this one (same hour): ask again.
      const sha = await send(b, ROUTES.pointDigest, { id: 'rel-cont', seq: pts.at(-1)!.sequence, disk: 'os' })
        .then((r) => r.json<{ sha256: string }>().sha256, (e: unknown) => {
          if (TerminalError.is(e) && e.code === 'not-found') return undefined;
          throw e;
        });
      return sha === disk ? true : undefined;
    });
    // Idle, it makes no empty points: the sequence stays while cycles keep running each second.
    const idle = (await send(b, ROUTES.getRelationship, { id: 'rel-cont' })).json<RelationshipView>().appliedSequence;
    await new Promise((r) => setTimeout(r, 2500));
    expect((await send(b, ROUTES.getRelationship, { id: 'rel-cont' })).json<RelationshipView>().appliedSequence).toBe(idle);
    const v = (await send(a, ROUTES.getRelationship, { id: 'rel-cont' })).json<RelationshipView>();
    // Idle is current: its lag stays within a cycle or two, never growing toward the 30 s health period.
    expect(v.state).toBe('Replicating');
    expect(v.lagSeconds).toBeLessThan(10);
  });
});
