// The Replica server (a separate `drsite agent` process) killed -9 at random moments of a streamed
// initial copy (3 in `npm test`, DRSITE_KILLS to choose): the primary keeps its cut and the
// segment in flight; once the replica is back, the copy resumes at the replica's checkpoint from
// the same cut instead of starting again, and point 1 is the disk as the primary cut it.
// Every kill lands on a copy in progress (a new VM each time); nothing is a point before the end.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RelationshipView, ReplicaStatus } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s } from './cluster.ts';
import { killPlan } from '../support/kills.ts';
import { SEGMENT_BYTES } from '../../src/core/replication/initial-stream.ts';
import { untilSegments, vmWithData } from './stream-copy.ts';
import { ROUTES, send } from '../support/agent-client.ts';

// Seeded kill moments (test/support/kills.ts): DRSITE_SEED replays them, DRSITE_KILLS sets how many (at most 20 here).
const plan = killPlan(import.meta.filename, { default: 3, max: 20 });
const KILLS = plan.kills;
const DISK = 4 * SEGMENT_BYTES;
let cluster: Cluster;
let a: MtlsClient;
const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a');
  await cluster.startProcess('host-b');
  a = await cluster.client('host-a');
}, 60_000);
afterAll(async () => cluster?.destroy());

const view = async (id: string) => (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>();

describe('replica killed -9 during a streamed initial copy', () => {
  test(`${KILLS} kills at random moments: the copy resumes from the replica's checkpoint and point 1 equals the disk`, async () => {
    let interrupted = 0;
    for (let k = 0; k < KILLS; k++) {
      const vm = `vm-${k}`;
      const id = `rel-${vm}`;
      // Data in every segment, so each carries several MiB.
      const image = await vmWithData(cluster, 'host-a', a, vm, DISK, 1000 + k);
      const want = await sha(image);
      await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });

      const started = send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } }).then(() => 'done', (e: unknown) => e);
      // A random moment of the copy: after some segments went in (the replica's checkpoint says so).
      const asPrimary = await cluster.client('host-b', 'host-a');
      await untilSegments(asPrimary, id, 1 + (k % 3));
      await new Promise((r) => setTimeout(r, plan.delayMs(40)));
      await cluster.kill('host-b');
      const outcome = await started;
      const cutBefore = outcome === 'done' ? undefined : (await view(id)).state;
      await cluster.startProcess('host-b');
      const back = await cluster.client('host-b', 'host-a');
      const before = await send(back, ROUTES.replicaStatus, { id }).then((r) => r.json<ReplicaStatus>());
      if (outcome !== 'done') {
        interrupted++;
        expect(cutBefore).toBe('InitialReplicationInProgress');
        // Nothing was a point while the copy was incomplete.
        expect(before.applied).toBe(0);
        expect(before.points).toEqual([]);
        const resumedFrom = before.initial?.segments.d0 ?? 0;
        const shippedBefore = (await view(id)).bytesShipped ?? 0;
        const r = await send(a, ROUTES.replicateNow, { id }).then((x) => x.json<{ action: string; applied: number }>());
        expect(r).toMatchObject({ action: 'initial', applied: 1 });
        // Resumed: only the segments the checkpoint did not hold were sent again.
        const resent = ((await view(id)).bytesShipped ?? 0) - shippedBefore;
        expect(resent).toBeLessThanOrEqual((4 - resumedFrom) * (SEGMENT_BYTES + (1 << 20)));
        if (before.initial) expect(before.initial.cutId).toBeTruthy();
      }
      const after = await send(back, ROUTES.replicaStatus, { id }).then((r) => r.json<ReplicaStatus>());
      expect(after.applied).toBe(1);
      expect(after.initial).toBeUndefined();
      if (before.initial) expect(after.points[0].cutId).toBe(before.initial.cutId); // the same cut, not a new copy
      const b = await cluster.client('host-b');
      const got = (await send(b, ROUTES.pointDigest, { id, seq: 1, disk: 'd0' })).json<{ sha256: string }>().sha256;
      // The disk was not written during the copy, so the cut is the disk as it is now.
      expect(got).toBe(want);
      expect((await view(id)).state).toBe('Replicating');
    }
    // The kills are aimed at copies in progress; a machine fast enough to finish first makes one a no-op, not all.
    expect(interrupted).toBeGreaterThan(0);
  }, 300_000);
});
