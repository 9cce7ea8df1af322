// Failover, end to end between two agents over real mutual TLS: test failover on an overlay,
// planned failover with zero data loss, reverse replication, failback, unplanned failover to an
// older point with a change of point before commit, and refusals that change nothing.
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { ManualClock } from '../../src/model/clock.ts';
import { TerminalError } from '../../src/model/errors.ts';
import type { RecoveryPointInfo, RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
const HOUR = 3_600_000;
let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
// One clock for both hosts, moved an hour per cycle where older points must be retained.
const clock = new ManualClock(Date.UTC(2026, 10, 23, 8, 0, 0));

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a', { clock });
  await cluster.startInProcess('host-b', { clock });
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
});
afterAll(async () => cluster?.destroy());

const hostDir = (h: string) => cluster.host(h).dataDir;
const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();
const digestOn = async (c: MtlsClient, id: string, seq: number, disk: string) =>
  (await send(c, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
const expectRefused = async (p: Promise<unknown>, code: string) => {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(TerminalError.is(e) && e.code === code, `expected ${code}, got ${String(e)}`).toBe(true);
};

async function nbdSha(host: string, vm: string, disk: string): Promise<string> {
  const c = await NbdClient.connect(join(hostDir(host), 'nbd', `${vm}.sock`), disk);
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  for (let at = 0; at < c.size; at += 4 * MiB) h.update(await c.read(at, Math.min(4 * MiB, c.size - at)));
  await c.close();
  return h.digest('hex');
}

async function write(host: string, vm: string, disk: string, count: number, seed: number): Promise<void> {
  const c = await NbdClient.connect(join(hostDir(host), 'nbd', `${vm}.sock`), disk);
  for (const w of randomWrites(count, c.size, seed)) await c.write(w.offset, w.data);
  await c.flush();
  await c.close();
}

async function protect(vm: string): Promise<string> {
  await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'os', size: 16 * MiB }, { name: 'data', size: 8 * MiB }] });
  await write('host-a', vm, 'os', 300, 1);
  const id = `rel-${vm}`;
  await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  return id;
}

async function cycle(c: MtlsClient, id: string): Promise<number> {
  const r = (await send(c, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number }>();
  expect(r.applied).toBe(r.sequence);
  return r.sequence;
}

async function filesDigest(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir, { recursive: true })).sort()) {
    try {
      out[name] = await sha256File(join(dir, name));
    } catch {
      /* a folder */
    }
  }
  return out;
}

describe('failover', () => {
  test('test failover: <vm>-Test on an overlay, the replica untouched, cycles keep applying, cleanup removes it', async () => {
    const id = await protect('tf');
    const seq = await cycle(a, id);
    const pointOs = await digestOn(b, id, seq, 'os');
    const store = join(hostDir('host-b'), 'from-host-a', id);
    const before = await filesDigest(store);
    const r = (await send(b, ROUTES.testFailover, { id }, { recoveryPoint: 'latest', network: 'test-net' })).json<{ testVm: string; recoveryPoint: RecoveryPointInfo }>();
    expect(r.testVm).toBe('tf-Test');
    expect(r.recoveryPoint.sequence).toBe(seq);
    const vmJson = JSON.parse(readFileSync(join(hostDir('host-b'), 'vms', 'tf-Test', 'vm.json'), 'utf8'));
    expect(vmJson).toMatchObject({ name: 'tf-Test', power: 'Running', adapters: [{ network: 'test-net' }], origin: { kind: 'test', recoveryPoint: seq } });
    expect(await nbdSha('host-b', 'tf-Test', 'os')).toBe(pointOs);
    // The test VM writes; the replica's files and points do not change.
    await write('host-b', 'tf-Test', 'os', 200, 77);
    expect(await nbdSha('host-b', 'tf-Test', 'os')).not.toBe(pointOs);
    expect(await filesDigest(store)).toEqual(before);
    expect(await digestOn(b, id, seq, 'os')).toBe(pointOs);
    // Replication keeps running while the test VM exists.
    await write('host-a', 'tf', 'os', 50, 2);
    const next = await cycle(a, id);
    expect(await digestOn(b, id, next, 'os')).toBe(await sha256File(join(hostDir('host-a'), 'vms', 'tf', 'os.img')));
    // The test VM survives a restart of the replica host's agent, with what it wrote.
    const written = await nbdSha('host-b', 'tf-Test', 'os');
    await cluster.stopInProcess('host-b');
    await cluster.startInProcess('host-b', { clock });
    b = await cluster.client('host-b');
    expect(await nbdSha('host-b', 'tf-Test', 'os')).toBe(written);
    // A second test failover is refused and changes nothing.
    await expectRefused(send(b, ROUTES.testFailover, { id }, {}), 'invalid-state');
    expect((await view(b, id)).testFailover).toEqual({ vm: 'tf-Test', sequence: seq });
    const cleaned = (await send(b, ROUTES.cleanupTestFailover, { id })).json<{ removed: string[] }>();
    expect(cleaned.removed).toEqual(['tf-Test']);
    expect((await readdir(join(hostDir('host-b'), 'vms')).catch(() => [] as string[])).includes('tf-Test')).toBe(false);
    expect((await readdir(join(hostDir('host-b'), 'nbd'))).includes('tf-Test.sock')).toBe(false);
    await expectRefused(send(b, ROUTES.cleanupTestFailover, { id }), 'invalid-state');
  });

  test('planned failover: zero data loss, reverse replication ships only differences, failback restores the direction', async () => {
    const id = await protect('pf');
    await cycle(a, id);
    await write('host-a', 'pf', 'data', 100, 3); // acknowledged writes after the last cycle
    // Refused while the VM runs; nothing changes.
    await expectRefused(send(a, ROUTES.preparePlannedFailover, { id }), 'invalid-state');
    expect((await view(a, id)).state).toBe('Replicating');
    await send(a, ROUTES.setVmPower, { name: 'pf' }, { power: 'Off' });
    const primaryOs = await sha256File(join(hostDir('host-a'), 'vms', 'pf', 'os.img'));
    const primaryData = await sha256File(join(hostDir('host-a'), 'vms', 'pf', 'data.img'));
    const prep = (await send(a, ROUTES.preparePlannedFailover, { id })).json<{ sequence: number; state: string }>();
    expect(prep.state).toBe('PreparedForPlannedFailover');
    const fo = (await send(b, ROUTES.failover, { id }, {
      recoveryPoint: 'latest',
      adapters: [{ name: 'eth0', network: 'dr-lan', ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1', dns: ['10.20.0.2'] } }],
    })).json<{ vm: string; recoveryPoint: RecoveryPointInfo; state: string }>();
    expect(fo).toMatchObject({ vm: 'pf', state: 'FailoverWaitingCompletion' });
    expect(fo.recoveryPoint.sequence).toBe(prep.sequence);
    const vmJson = JSON.parse(readFileSync(join(hostDir('host-b'), 'vms', 'pf', 'vm.json'), 'utf8'));
    expect(vmJson).toMatchObject({ power: 'Running', adapters: [{ name: 'eth0', network: 'dr-lan', ipv4: { address: '10.20.0.11/24', gateway: '10.20.0.1' } }] });
    expect(await nbdSha('host-b', 'pf', 'os')).toBe(primaryOs);
    expect(await nbdSha('host-b', 'pf', 'data')).toBe(primaryData);
    // Reverse: host-b replicates back to host-a, seeded from host-a's own disks.
    const rev = (await send(b, ROUTES.reverse, { id }, { id: `${id}-r1`, replica: { name: 'host-a', endpoint: cluster.host('host-a').url }, policy: policy30s })).json<RelationshipView>();
    expect(rev).toMatchObject({ role: 'Primary', state: 'Replicating', peer: 'host-a' });
    expect(rev.bytesShipped).toBeLessThan(0.05 * 24 * MiB);
    const onA = (await send(a, ROUTES.listRelationships, {})).json<RelationshipView[]>().filter((v) => v.vm === 'pf');
    expect(onA.map((v) => `${v.id}:${v.role}`)).toEqual([`${id}-r1:Replica`]);
    // 2% changes on the new primary ship as a small delta.
    await write('host-b', 'pf', 'os', Math.round((16 * MiB * 0.02) / 4096 / 2.5), 4);
    const s1 = await cycle(b, `${id}-r1`);
    const bOs = await sha256File(join(hostDir('host-b'), 'vms', 'pf', 'os.img'));
    expect(await digestOn(a, `${id}-r1`, s1, 'os')).toBe(bOs);
    expect((await view(b, `${id}-r1`)).bytesShipped).toBeLessThan(0.05 * 24 * MiB);
    // Failback: planned failover back to host-a, then reverse again.
    await send(b, ROUTES.setVmPower, { name: 'pf' }, { power: 'Off' });
    await send(b, ROUTES.preparePlannedFailover, { id: `${id}-r1` });
    await send(a, ROUTES.failover, { id: `${id}-r1` }, {});
    await send(a, ROUTES.commit, { id: `${id}-r1` });
    const back = (await send(a, ROUTES.reverse, { id: `${id}-r1` }, { id: `${id}-r2`, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s })).json<RelationshipView>();
    expect(back).toMatchObject({ role: 'Primary', peer: 'host-b', state: 'Replicating' });
    expect(await sha256File(join(hostDir('host-a'), 'vms', 'pf', 'os.img'))).toBe(bOs);
    const s2 = await cycle(a, `${id}-r2`);
    expect(await digestOn(b, `${id}-r2`, s2, 'os')).toBe(bOs);
  });

  test('reverse with full-download discards the former primary disks and copies everything again', async () => {
    const id = await protect('fd');
    await cycle(a, id);
    await send(a, ROUTES.setVmPower, { name: 'fd' }, { power: 'Off' });
    await send(a, ROUTES.preparePlannedFailover, { id });
    await send(b, ROUTES.failover, { id }, {});
    const rev = (await send(b, ROUTES.reverse, { id }, {
      id: `${id}-r1`, replica: { name: 'host-a', endpoint: cluster.host('host-a').url }, policy: policy30s, method: 'full-download',
    })).json<RelationshipView>();
    expect(rev).toMatchObject({ state: 'Replicating', initialReplication: { method: 'network' } });
    // Everything the VM holds crossed again (300 random 4 KiB-16 KiB writes: over 1 MiB of data).
    expect(rev.bytesShipped).toBeGreaterThan(1 << 20);
    const s1 = rev.appliedSequence;
    expect(await digestOn(a, `${id}-r1`, s1, 'os')).toBe(await sha256File(join(hostDir('host-b'), 'vms', 'fd', 'os.img')));
    expect((await readdir(join(hostDir('host-a'), 'vms'))).includes('fd')).toBe(false);
  });

  test('unplanned failover to an older point, change of point before commit, commit discards the other points', async () => {
    const id = await protect('uf');
    const at = new Map<number, string>();
    for (let i = 0; i < 3; i++) {
      await clock.advance(HOUR); // one retained hourly point per cycle
      await write('host-a', 'uf', 'os', 100, 10 + i);
      const seq = await cycle(a, id);
      at.set(seq, await sha256File(join(hostDir('host-a'), 'vms', 'uf', 'os.img')));
    }
    const points = (await send(b, ROUTES.recoveryPoints, { id })).json<RecoveryPointInfo[]>();
    expect(points.length).toBeGreaterThanOrEqual(3);
    const older = points.at(-2)!;
    // The primary is gone.
    await cluster.stopInProcess('host-a');
    const fo = (await send(b, ROUTES.failover, { id }, { recoveryPoint: older.time })).json<{ recoveryPoint: RecoveryPointInfo }>();
    expect(fo.recoveryPoint.sequence).toBe(older.sequence);
    expect(await nbdSha('host-b', 'uf', 'os')).toBe(at.get(older.sequence));
    // Change of mind before commit: the latest point instead.
    const latest = points.at(-1)!;
    await send(b, ROUTES.failover, { id }, { recoveryPoint: 'latest' });
    expect(await nbdSha('host-b', 'uf', 'os')).toBe(at.get(latest.sequence));
    const committed = (await send(b, ROUTES.commit, { id })).json<RelationshipView>();
    expect(committed.state).toBe('FailedOver');
    expect(committed.recoveryPoints).toBe(0);
    expect(await sha256File(join(hostDir('host-b'), 'vms', 'uf', 'os.img'))).toBe(at.get(latest.sequence));
    // After commit, cancel and a second commit are refused.
    await expectRefused(send(b, ROUTES.cancel, { id }), 'invalid-state');
    await expectRefused(send(b, ROUTES.commit, { id }), 'invalid-state');
    await cluster.startInProcess('host-a', { clock });
    a = await cluster.client('host-a');
  });

  test('cancel returns to replicating with the failed-over VM removed; commit without failover is refused', async () => {
    const id = await protect('cf');
    await cycle(a, id);
    await expectRefused(send(b, ROUTES.commit, { id }), 'invalid-state');
    expect((await view(b, id)).state).toBe('Replicating');
    await send(b, ROUTES.failover, { id }, {});
    // While failed over the replica refuses new logs: the primary's cycle fails and changes nothing there.
    await write('host-a', 'cf', 'os', 20, 5);
    await expectRefused(send(a, ROUTES.replicateNow, { id }), 'invalid-state');
    await send(b, ROUTES.cancel, { id });
    expect((await view(b, id)).state).toBe('Replicating');
    expect((await readdir(join(hostDir('host-b'), 'vms'))).includes('cf')).toBe(false);
    await send(a, ROUTES.resume, { id });
    const seq = await cycle(a, id);
    expect(await digestOn(b, id, seq, 'os')).toBe(await sha256File(join(hostDir('host-a'), 'vms', 'cf', 'os.img')));
  });
});

describe('storage and removal', () => {
  test('move replica storage: old files removed, replication resumes at the new place', async () => {
    const id = await protect('mv');
    await cycle(a, id);
    const old = join(hostDir('host-b'), 'from-host-a', id);
    const target = join(cluster.root, 'new-storage');
    const v = (await send(b, ROUTES.moveStorage, { id }, { path: target })).json<RelationshipView>();
    expect(v.storagePath).toBe(join(target, id));
    expect((await readdir(join(hostDir('host-b'), 'from-host-a'))).includes(id)).toBe(false);
    expect((await readdir(join(target, id))).sort()).toEqual(expect.arrayContaining(['data.img', 'os.img']));
    await write('host-a', 'mv', 'os', 50, 6);
    const seq = await cycle(a, id);
    expect(await digestOn(b, id, seq, 'os')).toBe(await sha256File(join(hostDir('host-a'), 'vms', 'mv', 'os.img')));
    await expectRefused(send(b, ROUTES.moveStorage, { id }, { path: 'relative/path' }), 'invalid-argument');
  });

  test('remove replication from the primary removes both sides; from the replica, the primary stops with a clear error', async () => {
    const id1 = await protect('rm1');
    await send(a, ROUTES.removeRelationship, { id: id1 });
    await expectRefused(send(a, ROUTES.getRelationship, { id: id1 }), 'not-found');
    await expectRefused(send(b, ROUTES.getRelationship, { id: id1 }), 'not-found');
    expect((await readdir(join(hostDir('host-b'), 'from-host-a'))).includes(id1)).toBe(false);
    // The VM itself stays on the primary.
    expect((await send(a, ROUTES.getVm, { name: 'rm1' })).json<{ name: string }>().name).toBe('rm1');

    const id2 = await protect('rm2');
    await send(b, ROUTES.removeRelationship, { id: id2 });
    await expectRefused(send(b, ROUTES.getRelationship, { id: id2 }), 'not-found');
    await expectRefused(send(a, ROUTES.replicateNow, { id: id2 }), 'not-found');
    const v = await view(a, id2);
    expect(v).toMatchObject({ state: 'Critical', health: 'Critical' });
    await send(a, ROUTES.removeRelationship, { id: id2 }); // the primary side can still be removed
    await expectRefused(send(a, ROUTES.getRelationship, { id: id2 }), 'not-found');
  });
});
