// The agent's own schedule on an injected clock: cycles at the policy frequency, the retry backoff
// of Hyper-V Replica (1, 2, 4, 8, 10, then every 30 minutes), a non-recoverable error that stops
// retrying, automatic resync only inside its window, pause and resume.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { inWindow } from '../../src/core/replication/primary-record.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { ManualClock } from '../../src/model/clock.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
const MIN = 60_000;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
// Local noon: outside the default 22:00-06:00 resync window.
const clock = new ManualClock(new Date(2026, 10, 23, 12, 0, 0).getTime());

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a', { clock, schedule: true });
  await cluster.startInProcess('host-b', { clock });
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
});
afterAll(async () => cluster?.destroy());

const view = async (id: string) => (await send(a, ROUTES.getRelationship, { id })).json<RelationshipView>();

/** Waits (real time) until the relationship's view satisfies `ok`. */
async function until(id: string, ok: (v: RelationshipView) => boolean, what: string): Promise<RelationshipView> {
  for (let i = 0; i < 400; i++) {
    const v = await view(id);
    if (ok(v)) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await view(id))}`);
}

async function write(vm: string, disk: string, bytes: number, seed: number): Promise<void> {
  const c = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', `${vm}.sock`), disk);
  for (const w of randomWrites(Math.ceil(bytes / 4096), c.size, seed, { maxBlocks: 1 })) await c.write(w.offset, w.data);
  await c.close();
}

async function protect(vm: string, size = 8 * MiB): Promise<string> {
  await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size }] });
  const id = `rel-${vm}`;
  await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

describe('schedule', () => {
  test('the resync window crosses midnight', () => {
    const at = (h: number, m = 0) => new Date(2026, 0, 1, h, m).getTime();
    expect([at(21, 59), at(22), at(23, 30), at(0), at(5, 59), at(6), at(12)].map((t) => inWindow('22:00-06:00', t))).toEqual([
      false, true, true, true, true, false, false,
    ]);
    expect([at(1), at(2), at(5)].map((t) => inWindow('01:00-05:00', t))).toEqual([true, true, false]);
  });

  test('cycles run every 30 s of the injected clock', async () => {
    const id = await protect('tick');
    const applied = (await view(id)).appliedSequence;
    await write('tick', 'd0', 64 * 1024, 1);
    await clock.advance(30_000);
    const v = await until(id, (x) => x.appliedSequence === applied + 1, 'a scheduled cycle');
    expect(v.lastReplicationTime).toBe(new Date(clock.now()).toISOString());
    await clock.advance(30_000);
    await until(id, (x) => x.appliedSequence === applied + 2, 'the next scheduled cycle');
  });

  test('a replica that cannot be reached is retried at 1, 2, 4, 8, 10, then every 30 minutes; health Warning', async () => {
    const id = 'rel-tick';
    await cluster.stopInProcess('host-b');
    const delays: number[] = [];
    let v = await view(id);
    let failures = v.statistics.replicationErrors;
    for (let i = 0; i < 8; i++) {
      const started = clock.now();
      // The first failure comes with the next 30 s tick; later ones when the retry is due.
      await clock.advance(v.nextRetryAt ? Date.parse(v.nextRetryAt) - clock.now() : 30_000);
      v = await until(id, (x) => x.statistics.replicationErrors === failures + 1 && x.nextRetryAt !== undefined, `failure ${i + 1}`);
      failures++;
      expect(v.health).toBe('Warning');
      delays.push((Date.parse(v.nextRetryAt!) - clock.now()) / MIN);
      void started;
    }
    expect(delays).toEqual([1, 2, 4, 8, 10, 30, 30, 30]);
    await cluster.startInProcess('host-b', { clock });
    await clock.advance(Date.parse(v.nextRetryAt!) - clock.now());
    v = await until(id, (x) => x.nextRetryAt === undefined && x.statistics.successfulReplicationCount > 0 && x.lastError === undefined || x.nextRetryAt === undefined, 'recovery after the outage');
    expect(v.state).toBe('Replicating');
    // Still Warning for the cycles missed during the outage, until the statistics are reset.
    expect(v.healthReasons.join()).toMatch(/missed/);
    await send(a, ROUTES.resetStatistics, { id });
    expect((await view(id)).health).toBe('Normal');
  });

  test('an authorization error stops retrying: Critical until an operator resumes', async () => {
    const id = 'rel-tick';
    const config = cluster.host('host-b').config;
    const original = readFileSync(config, 'utf8');
    await cluster.stopInProcess('host-b');
    writeFileSync(config, original.replace(/server: "host-a"/, 'server: "someone-else"'));
    await cluster.startInProcess('host-b', { clock });
    await clock.advance(30_000);
    let v = await until(id, (x) => x.state === 'Critical', 'Critical');
    expect(v.health).toBe('Critical');
    expect(v.lastError?.code).toBe('authorization');
    expect(v.nextRetryAt).toBeUndefined();
    const errors = v.statistics.replicationErrors;
    await clock.advance(60 * MIN);
    await new Promise((r) => setTimeout(r, 200));
    expect((await view(id)).statistics.replicationErrors).toBe(errors); // no attempt made
    // The operator fixes the cause and resumes: a resync (a full compare) follows.
    await cluster.stopInProcess('host-b');
    writeFileSync(config, original);
    await cluster.startInProcess('host-b', { clock });
    await send(a, ROUTES.resume, { id });
    v = await view(id);
    expect(v.state).toBe('ResynchronizationRequired');
    await send(a, ROUTES.resync, { id });
    await until(id, (x) => x.state === 'Replicating', 'replicating again');
    await send(a, ROUTES.resetStatistics, { id });
    expect((await view(id)).health).toBe('Normal');
  });

  test('past the threshold: ResynchronizationRequired, resync waits for the window, then ends byte-identical', async () => {
    const id = await protect('big', 4 * MiB);
    await write('big', 'd0', 3 * MiB, 2); // 75% of the disk pending > 50%
    await clock.advance(30_000);
    let v = await until(id, (x) => x.state === 'ResynchronizationRequired', 'threshold');
    expect(v.health).toBe('Warning');
    // Outside 22:00-06:00 nothing runs.
    const applied = v.appliedSequence;
    await clock.advance(30_000);
    await new Promise((r) => setTimeout(r, 200));
    expect((await view(id)).state).toBe('ResynchronizationRequired');
    // Move the clock into the window.
    const tenPm = new Date(clock.now());
    tenPm.setHours(22, 0, 30, 0);
    await clock.advance(tenPm.getTime() - clock.now());
    v = await until(id, (x) => x.state === 'Replicating' && x.appliedSequence > applied, 'resync in the window');
    const digest = (await send(b, ROUTES.pointDigest, { id, seq: v.appliedSequence, disk: 'd0' })).json<{ sha256: string }>().sha256;
    expect(digest).toBe(await sha256File(join(cluster.host('host-a').dataDir, 'vms', 'big', 'd0.img')));
  });

  test('past the threshold inside the window: the resync runs in the same cycle, not one interval later', async () => {
    // The clock is inside 22:00-06:00 after the test above.
    const id = await protect('big-night', 4 * MiB);
    const applied = (await view(id)).appliedSequence;
    await write('big-night', 'd0', 3 * MiB, 4);
    await clock.advance(30_000); // one cycle, and no further clock movement
    const v = await until(id, (x) => x.state === 'Replicating' && x.appliedSequence > applied, 'resync in the same cycle');
    expect(v.appliedSequence).toBe(applied + 1);
    const digest = (await send(b, ROUTES.pointDigest, { id, seq: v.appliedSequence, disk: 'd0' })).json<{ sha256: string }>().sha256;
    expect(digest).toBe(await sha256File(join(cluster.host('host-a').dataDir, 'vms', 'big-night', 'd0.img')));
  });

  test('pause: tracking continues, nothing ships; resume catches up', async () => {
    const id = await protect('paused');
    await send(a, ROUTES.suspend, { id });
    const applied = (await view(id)).appliedSequence;
    await write('paused', 'd0', 256 * 1024, 3);
    await clock.advance(30_000);
    await new Promise((r) => setTimeout(r, 200));
    let v = await view(id);
    expect(v).toMatchObject({ state: 'Suspended', appliedSequence: applied });
    expect(v.pendingBytes).toBeGreaterThan(0);
    await send(a, ROUTES.resume, { id });
    await clock.advance(30_000);
    v = await until(id, (x) => x.appliedSequence === applied + 1, 'catch-up after resume');
    expect(v.pendingBytes).toBe(0);
    const digest = (await send(b, ROUTES.pointDigest, { id, seq: v.appliedSequence, disk: 'd0' })).json<{ sha256: string }>().sha256;
    expect(digest).toBe(await sha256File(join(cluster.host('host-a').dataDir, 'vms', 'paused', 'd0.img')));
  });
});
