// Disk full on either side, on real file systems: the replica agent's storage path and the primary
// agent's data directory each sit on a small ext4 on a loop device, filled by disks larger than
// the free space or by a ballast file. Each full disk fails the cycle with a recoverable error
// naming the path and the room missing (health Warning, retrying, never Critical), leaves no
// partial point, and replication recovers by itself once the space is freed.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { RetryableError } from '../../src/model/errors.ts';
import type { RelationshipView, ReplicaStatus } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { newAtRestKey } from '../../src/core/disk/at-rest.ts';
import { ReplicaStore } from '../../src/core/replica/replica-store.ts';
import type { Extent } from '../../src/core/types.ts';
import { applyToReference, buildLog, header, newKeys, sha } from '../core/replica/helpers.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;

interface SmallFs {
  readonly dir: string;
  readonly dev: string;
}

const images = mkdtempSync(join(tmpdir(), 'drsite-disk-full-'));
const mounted: SmallFs[] = [];

/** A fresh ext4 of `sizeMiB` (no reserved blocks: root sees the same free space as anyone) mounted on `dir`. */
function mountSmallFs(dir: string, sizeMiB: number): SmallFs {
  const img = join(images, `${mounted.length}.img`);
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('truncate', ['-s', `${sizeMiB}M`, img]);
    execFileSync('mkfs.ext4', ['-q', '-m', '0', img]);
    const dev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    try {
      execFileSync('mount', [dev, dir]);
    } catch (e) {
      execFileSync('losetup', ['-d', dev]);
      throw e;
    }
    const fs = { dir, dev };
    mounted.push(fs);
    return fs;
  } catch (e) {
    const why = (e as { stderr?: Buffer }).stderr?.toString().trim() || (e as Error).message;
    throw new Error(`the disk-full tests mount small ext4 file systems on loop devices, which needs root and loop device support (losetup, mount): cannot mount one on ${dir}: ${why}`);
  }
}

function unmountAll(): void {
  for (const fs of mounted.splice(0).reverse()) {
    try {
      execFileSync('umount', [fs.dir]);
    } catch {
      execFileSync('umount', ['-l', fs.dir]); // still busy: detach it now, the kernel lets go when the last file closes
    }
    execFileSync('losetup', ['-d', fs.dev]);
  }
}

const available = (dir: string) => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

/** Fills the file system of `dir` with a ballast file until only `leave` bytes are free. */
function ballast(dir: string, leave: number): string {
  const path = join(dir, 'ballast');
  execFileSync('fallocate', ['-l', String(available(dir) - leave), path]);
  return path;
}

let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
let primaryFs: SmallFs;
let replicaFs: SmallFs;

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  // The primary's data directory (VM disks, relationship state, outbox logs, tracking files) and
  // the Replica server's storage path for host-a (its allowedPrimaries entry: <dataDir>/from-host-a).
  primaryFs = mountSmallFs(cluster.host('host-a').dataDir, 160);
  replicaFs = mountSmallFs(join(cluster.host('host-b').dataDir, 'from-host-a'), 96);
  await cluster.startInProcess('host-a');
  await cluster.startInProcess('host-b');
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
}, 60_000);

afterAll(async () => {
  try {
    await cluster?.stopInProcess('host-a');
    await cluster?.stopInProcess('host-b');
  } finally {
    try {
      unmountAll();
    } finally {
      await cluster?.destroy();
      rmSync(images, { recursive: true, force: true });
    }
  }
}, 60_000);

const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();
const digest = async (id: string, seq: number, disk = 'd0') =>
  (await send(b, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;
const diskSha = (vm: string, disk = 'd0') => sha256File(join(cluster.host('host-a').dataDir, 'vms', vm, `${disk}.img`));
const failure = (p: Promise<unknown>) => p.then(() => { throw new Error('expected the cycle to fail'); }, (e: unknown) => e);
const replicateNow = async (id: string) =>
  (await send(a, ROUTES.replicateNow, { id })).json<{ action: string; sequence: number; applied: number }>();

/** Writes `mib` MiB of random data through the VM's NBD export, 1 MiB at a time from `fromMiB`. */
async function writeData(vm: string, fromMiB: number, mib: number): Promise<void> {
  const c = await NbdClient.connect(join(cluster.host('host-a').dataDir, 'nbd', `${vm}.sock`), 'd0');
  for (let i = 0; i < mib; i++) await c.write((fromMiB + i) * MiB, randomBytes(MiB));
  await c.flush();
  await c.close();
}

async function createVm(vm: string, sizeMiB: number): Promise<string> {
  await send(a, ROUTES.createVm, {}, { name: vm, disks: [{ name: 'd0', size: sizeMiB * MiB }] });
  const id = `rel-${vm}`;
  await send(a, ROUTES.createRelationship, {}, { id, vm, replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  return id;
}

/** The cycle's error: recoverable (low-disk), naming a path on the full file system and the room missing. */
function expectDiskFull(e: unknown, fsDir: string): void {
  if (process.env.DRSITE_TEST_VERBOSE) console.log((e as Error).message);
  expect(RetryableError.is(e) && e.code === 'low-disk', String(e)).toBe(true);
  expect((e as Error).message).toContain(fsDir);
  expect((e as Error).message).toMatch(/no space left on the device \(needs about \d+ MiB more\)/);
}

/** The primary's view: not Critical, health Warning saying where and how much, retrying on the schedule. */
async function expectRetrying(id: string, fsDir: string, state: RelationshipView['state']): Promise<void> {
  const v = await view(a, id);
  expect(v.state).toBe(state);
  expect(v.health).toBe('Warning');
  const reason = v.healthReasons.find((r) => r.startsWith('retrying'));
  expect(reason, JSON.stringify(v.healthReasons)).toBeDefined();
  expect(reason).toContain(fsDir);
  expect(reason).toMatch(/needs about \d+ MiB more/);
  expect(v.lastError?.code).toBe('low-disk');
  expect(v.nextRetryAt).toBeDefined();
}

/**
 * Recovered without operator action: Replicating, no longer retrying. Health may stay Warning for
 * a while because the failed cycle counts as missed (Hyper-V's 20 % rule), never Critical.
 */
async function expectRecovered(id: string): Promise<void> {
  const v = await view(a, id);
  expect(v.state).toBe('Replicating');
  expect(v.health).not.toBe('Critical');
  expect(v.healthReasons.filter((r) => !r.includes('replication cycles missed'))).toEqual([]);
  expect(v.nextRetryAt).toBeUndefined();
}

/** Nothing half-written stays on the full file system (temporary files of a failed write are removed). */
function expectNoTemporaries(dir: string): void {
  const tmp = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((n) => n.endsWith('.tmp') || n.endsWith('.part'));
  expect(tmp).toEqual([]);
}

describe('disk full on the Replica server (its storage path)', () => {
  let id: string;

  test('initial copy larger than the free space: retried, applied once space is freed', async () => {
    id = await createVm('r-init', 32);
    await writeData('r-init', 0, 20);
    const fill = ballast(replicaFs.dir, 12 * MiB);
    const e = await failure(send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } }));
    expectDiskFull(e, replicaFs.dir);
    await expectRetrying(id, replicaFs.dir, 'InitialReplicationInProgress');
    expect((await view(b, id)).appliedSequence).toBe(0);
    expectNoTemporaries(replicaFs.dir);

    rmSync(fill);
    const r = await replicateNow(id);
    expect(r).toMatchObject({ action: 'initial', sequence: 1, applied: 1 });
    await expectRecovered(id);
    expect(await digest(id, 1)).toBe(await diskSha('r-init'));
  });

  test('a delta whose log does not fit: the replica stays at its point, the next cycle after freeing space brings it current', async () => {
    await writeData('r-init', 20, 12); // new blocks: the log and the image both need room
    const before = await view(b, id);
    const beforeDigest = await digest(id, before.appliedSequence);
    const fill = ballast(replicaFs.dir, 6 * MiB);
    const e = await failure(replicateNow(id));
    expectDiskFull(e, replicaFs.dir);
    await expectRetrying(id, replicaFs.dir, 'Replicating');
    expect((await view(b, id)).appliedSequence).toBe(before.appliedSequence);
    expect(await digest(id, before.appliedSequence)).toBe(beforeDigest);
    expectNoTemporaries(replicaFs.dir);

    rmSync(fill);
    // The failed cycle's point is sealed in the primary's outbox: it ships first, then a new cut.
    const r = await replicateNow(id);
    expect(r).toMatchObject({ sequence: before.appliedSequence + 2, applied: before.appliedSequence + 2 });
    expect(await digest(id, r.sequence)).toBe(await diskSha('r-init'));
    await expectRecovered(id);
  });

  test('a log that fits but whose undo does not: refused before anything is written, kept, applied once space is freed', async () => {
    await writeData('r-init', 0, 8); // overwrites: the old content must go to undo (4 more points are kept)
    const before = await view(b, id);
    const beforeDigest = await digest(id, before.appliedSequence);
    const seq = before.appliedSequence + 1;
    const fill = ballast(replicaFs.dir, 12 * MiB);
    const e = await failure(replicateNow(id));
    expectDiskFull(e, join(replicaFs.dir, id));
    await expectRetrying(id, replicaFs.dir, 'Replicating');
    const asPrimary = await cluster.client('host-b', 'host-a');
    const st = (await send(asPrimary, ROUTES.replicaStatus, { id })).json<ReplicaStatus>();
    expect(st.applied).toBe(before.appliedSequence);
    expect(st.received.d0).toContain(seq); // received and durable: not sent again
    expect(await digest(id, before.appliedSequence)).toBe(beforeDigest);
    // Not taken for a damaged log.
    expect((await view(b, id)).statistics.replicationErrors).toBe(before.statistics.replicationErrors);
    expectNoTemporaries(replicaFs.dir);

    rmSync(fill);
    // The waiting log applies without being sent again, then the cycle's own cut follows.
    const shipped = (await view(a, id)).bytesShipped ?? 0;
    const r = await replicateNow(id);
    expect(r).toMatchObject({ sequence: seq + 1, applied: seq + 1 });
    expect((await view(a, id)).bytesShipped! - shipped).toBeLessThan(MiB);
    expect(await digest(id, r.sequence)).toBe(await diskSha('r-init'));
    await expectRecovered(id);
  });
});

describe('disk full during retention pruning (the replica store on the same small file system)', () => {
  test('a prune whose undo merge does not fit skips the merge, still drops points and frees space; the merge happens once there is room', async () => {
    const dir = join(replicaFs.dir, 'prune');
    const logs = mkdtempSync(join(tmpdir(), 'drsite-prune-logs-'));
    const keys = newKeys();
    const size = 4 * MiB;
    // Encrypted at rest, as an agent's replica is; latest + 1 hourly point kept.
    const store = await ReplicaStore.open(dir, keys, { relationshipId: 'rel-prune', disks: [{ id: 'd0', size }], retention: { additional: 1 }, atRestKey: newAtRestKey() });
    const ref = Buffer.alloc(size);
    const shaAt = new Map<number, string>();
    const T0 = Date.UTC(2026, 11, 2, 8, 0, 0);
    const apply = async (seq: number, time: number, writes: Extent[]) => {
      applyToReference(ref, writes);
      const path = join(logs, `${seq}.hrl`);
      await buildLog(path, header({ relationshipId: 'rel-prune', diskId: 'd0', sequence: seq, diskSize: size, cutTime: time }), writes, keys);
      await store.receive('d0', seq, path);
      await store.applyPending();
      shaAt.set(seq, sha(ref));
    };
    const segments = () => readdirSync(join(dir, 'undo')).length;
    try {
      await apply(1, T0, [{ offset: 0, data: randomBytes(size) }]);
      // Points in the next hour: each folds the one before into it, its undo list growing (one
      // segment per point) until a prune merges the list (more than 8 segments).
      let seq = 2;
      for (; seq <= 9; seq++) await apply(seq, T0 + 3_600_000 + seq * 60_000, [{ offset: seq * 128 * 1024, data: randomBytes(128 * 1024) }]);
      expect(segments()).toBe(8);
      // Room for the next point's log and undo, not for merging nine segments into one.
      const fill = ballast(replicaFs.dir, 700 * 1024);
      await apply(seq, T0 + 3_600_000 + seq * 60_000, [{ offset: seq * 128 * 1024, data: randomBytes(128 * 1024) }]);
      expect(store.applied).toBe(seq);
      expect(segments()).toBe(9); // not merged
      expectNoTemporaries(dir);
      for (const p of store.points()) {
        const v = await store.openView(p.sequence, 'd0');
        expect(sha(await v.read(0, size)), `point ${p.sequence}`).toBe(shaAt.get(p.sequence));
        await v.close();
      }
      // Keeping fewer points on the full disk: the prune drops them (their undo goes) and frees space.
      const free = available(replicaFs.dir);
      await store.setRetention({ additional: 0 });
      expect(await store.prune()).toEqual([1]);
      expect(store.points().map((p) => p.sequence)).toEqual([seq]);
      expect(segments()).toBe(0);
      expect(available(replicaFs.dir)).toBeGreaterThan(free + 512 * 1024);
      rmSync(fill);
      // With room again, a long list is merged by the next prune (each point of an hour folds
      // into the newest, one segment each).
      await store.setRetention({ additional: 1 });
      for (seq++; seq <= 20; seq++) await apply(seq, T0 + 2 * 3_600_000 + seq * 60_000, [{ offset: (seq % 30) * 128 * 1024, data: randomBytes(64 * 1024) }]);
      expect(segments()).toBeLessThanOrEqual(8);
      const v = await store.openView(store.points()[0].sequence, 'd0');
      expect(sha(await v.read(0, size))).toBe(shaAt.get(store.points()[0].sequence));
      await v.close();
    } finally {
      await store.close();
      rmSync(logs, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('disk full on the primary (its data directory)', () => {
  test('initial copy with the data directory full: it streams to the replica (nothing staged in an outbox) and completes', async () => {
    // Before the streamed initial copy (core/replication/initial-stream.ts) the full log was sealed into the
    // outbox first, so a full primary disk stopped the copy until space was freed. Now the cut goes
    // straight from the disk to the replica: only the relationship's small state files are written.
    const id = await createVm('p-init', 16);
    await writeData('p-init', 0, 10);
    const fill = ballast(primaryFs.dir, 4 * MiB);
    try {
      await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
      expect((await view(b, id)).appliedSequence).toBe(1);
      expect(await digest(id, 1)).toBe(await diskSha('p-init'));
      const rel = join(primaryFs.dir, 'relationships', id);
      expect(readdirSync(rel).includes('outbox') ? readdirSync(join(rel, 'outbox')) : []).toEqual([]);
      expectNoTemporaries(primaryFs.dir);
    } finally {
      rmSync(fill);
    }
    await expectRecovered(id);
  });

  test('a delta with the data directory full streams to the replica; when its send fails too, no point is cut and its changes ship once space is freed', async () => {
    // Before the streamed delta (replication/log-stream.ts) every log was sealed into the outbox
    // first, so a full primary disk stopped replication. Now a delta goes straight to the replica;
    // the outbox is written only when the send fails, and that is the case that must lose nothing.
    const id = `rel-p-init`;
    const outbox = join(primaryFs.dir, 'relationships', id, 'outbox');
    await writeData('p-init', 4, 8);
    const fill = ballast(primaryFs.dir, 4 * MiB);
    let replicaFill: string | undefined;
    try {
      const r1 = await replicateNow(id);
      expect(r1.action).toBe('delta');
      expect(r1.applied).toBe(r1.sequence);
      expect(await digest(id, r1.sequence)).toBe(await diskSha('p-init'));
      expect(existsSync(outbox) ? readdirSync(outbox) : []).toEqual([]);
      expectNoTemporaries(primaryFs.dir);

      // 2. The replica's storage full as well: the stream is refused part way, and the log it
      // leaves to send again does not fit in the outbox. The cut is abandoned, nothing half sealed.
      await writeData('p-init', 4, 8);
      const before = await view(a, id);
      const beforeDigest = await digest(id, before.appliedSequence);
      replicaFill = ballast(replicaFs.dir, 1 * MiB);
      const e = await failure(replicateNow(id));
      expectDiskFull(e, outbox);
      await expectRetrying(id, primaryFs.dir, 'Replicating');
      const after = await view(a, id);
      expect(after.lastCutSequence).toBe(before.lastCutSequence); // the cut was abandoned, not half sealed
      expect(after.pendingBytes).toBeGreaterThanOrEqual(8 * MiB); // its blocks are tracked again
      expect((await view(b, id)).appliedSequence).toBe(before.appliedSequence);
      expect(await digest(id, before.appliedSequence)).toBe(beforeDigest);
      expect(existsSync(outbox) ? readdirSync(outbox) : []).toEqual([]);
      expectNoTemporaries(primaryFs.dir);

      rmSync(fill);
      rmSync(replicaFill);
      replicaFill = undefined;
      const r = await replicateNow(id);
      expect(r).toMatchObject({ action: 'delta', sequence: before.lastCutSequence! + 1 });
      expect(r.applied).toBe(r.sequence);
      expect(await digest(id, r.sequence)).toBe(await diskSha('p-init'));
    } finally {
      rmSync(fill, { force: true });
      if (replicaFill) rmSync(replicaFill, { force: true });
    }
    await expectRecovered(id);
  });
});
