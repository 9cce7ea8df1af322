// Encryption at rest on the replica (issue 13, part 7): two real agents over mutual TLS. The guest
// writes a known plaintext marker through its NBD export; after the initial copy, deltas, older
// points kept in undo, an existing replica seeded from a plain copy and a reverse replication
// seeded from the former primary's disks, no file under the Replica server's data directory holds
// the marker, while every point, test failover and failover reads it back exactly.
// The VM's own disks stay plain (on the primary, and on a site after a committed failover, where
// the VM runs): encryption at rest is the replica's, as the policy's `encryption` promises.
import { copyFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NbdClient } from '../../src/nbd/client.ts';
import { randomWrites } from '../../src/demo/workload.ts';
import { ManualClock } from '../../src/model/clock.ts';
import type { RelationshipView } from '../../src/transport/agent-api.ts';
import type { MtlsClient } from '../../src/transport/mtls.ts';
import { Cluster, policy30s, sha256File } from './cluster.ts';
import { ROUTES, send } from '../support/agent-client.ts';

const MiB = 1 << 20;
const HOUR = 3_600_000;
const MARKER = Buffer.from('drsite:guest-plaintext-marker/');
const marker = (n: number) => Buffer.concat(Array.from({ length: Math.ceil(n / MARKER.length) }, () => MARKER)).subarray(0, n);

let cluster: Cluster;
let a: MtlsClient;
let b: MtlsClient;
const clock = new ManualClock(Date.UTC(2026, 11, 2, 8, 0, 0));

beforeAll(async () => {
  cluster = await Cluster.create([{ name: 'host-a' }, { name: 'host-b' }]);
  await cluster.startInProcess('host-a', { clock });
  await cluster.startInProcess('host-b', { clock });
  a = await cluster.client('host-a');
  b = await cluster.client('host-b');
}, 60_000);
afterAll(async () => cluster?.destroy());

const hostDir = (h: string) => cluster.host(h).dataDir;
const view = async (c: MtlsClient, id: string) => (await send(c, ROUTES.getRelationship, { id })).json<RelationshipView>();
const digestOn = async (c: MtlsClient, id: string, seq: number, disk: string) =>
  (await send(c, ROUTES.pointDigest, { id, seq, disk })).json<{ sha256: string }>().sha256;

/** Files under `dir` holding the marker (every file: images, undo, logs, journals, keys). */
function filesWithMarker(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && readFileSync(join(e.parentPath, e.name)).includes(MARKER)) out.push(join(e.parentPath, e.name));
  }
  return out;
}

async function nbd<T>(host: string, vm: string, disk: string, fn: (c: NbdClient) => Promise<T>): Promise<T> {
  const c = await NbdClient.connect(join(hostDir(host), 'nbd', `${vm}.sock`), disk);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

const nbdSha = (host: string, vm: string, disk: string) => nbd(host, vm, disk, async (c) => {
  const h = createHash('sha256');
  for (let at = 0; at < c.size; at += 4 * MiB) h.update(await c.read(at, Math.min(4 * MiB, c.size - at)));
  return h.digest('hex');
});

/** The marker at aligned and unaligned places, with random data around it. */
async function writeMarker(host: string, vm: string, disk: string, seed: number): Promise<void> {
  await nbd(host, vm, disk, async (c) => {
    for (const w of randomWrites(100, c.size, seed)) await c.write(w.offset, w.data);
    for (let i = 0; i < 16; i++) await c.write(((seed * 7 + i * 97) % (c.size / MiB - 1)) * MiB + (i % 3) * 1000, marker(5000 + i * 300));
    await c.flush();
  });
}

async function cycle(c: MtlsClient, id: string): Promise<number> {
  const r = (await send(c, ROUTES.replicateNow, { id })).json<{ sequence: number; applied: number }>();
  expect(r.applied).toBe(r.sequence);
  return r.sequence;
}

test('the replica never stores what the guest wrote in the clear; points, test failover, failover and reverse replication read it back', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'enc', disks: [{ name: 'os', size: 16 * MiB }, { name: 'data', size: 8 * MiB }] });
  await writeMarker('host-a', 'enc', 'os', 1);
  const id = 'rel-enc';
  await send(a, ROUTES.createRelationship, {}, { id, vm: 'enc', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy: policy30s });
  await send(a, ROUTES.startReplication, { id }, undefined, { query: { wait: 'true' } });
  const primary = (disk: string) => sha256File(join(hostDir('host-a'), 'vms', 'enc', `${disk}.img`));
  // Hourly points, so older ones are retained (their old blocks in undo).
  const at = new Map<number, { os: string; data: string }>();
  for (let i = 0; i < 3; i++) {
    await clock.advance(HOUR);
    await writeMarker('host-a', 'enc', i === 2 ? 'os' : 'data', 10 + i);
    if (i === 2) await nbd('host-a', 'enc', 'os', async (c) => { await c.write(0, Buffer.alloc(2 * MiB, 0x5a)); await c.flush(); });
    const seq = await cycle(a, id);
    at.set(seq, { os: await primary('os'), data: await primary('data') });
  }
  const rep = await view(b, id);
  expect(rep.atRest).toBe('aes-256-xts');
  expect(rep.recoveryPoints).toBeGreaterThanOrEqual(4);
  expect(filesWithMarker(hostDir('host-b'))).toEqual([]);
  for (const [seq, d] of at) expect({ os: await digestOn(b, id, seq, 'os'), data: await digestOn(b, id, seq, 'data') }).toEqual(d);

  // A test failover of an older point reads through undo and images, decrypted.
  const [older] = at.keys();
  await send(b, ROUTES.testFailover, { id }, { recoveryPoint: older });
  expect(await nbdSha('host-b', 'enc-Test', 'os')).toBe(at.get(older)!.os);
  expect(await nbd('host-b', 'enc-Test', 'os', (c) => c.read(7 * MiB, MARKER.length))).toEqual(MARKER);
  await send(b, ROUTES.cleanupTestFailover, { id });

  // Failover to the latest point and commit: the VM runs on host-b from its own (plain) disks.
  const latest = [...at.keys()].at(-1)!;
  await send(a, ROUTES.setVmPower, { name: 'enc' }, { power: 'Off' });
  await send(b, ROUTES.failover, { id }, { recoveryPoint: 'latest' });
  expect(await nbdSha('host-b', 'enc', 'data')).toBe(at.get(latest)!.data);
  await send(b, ROUTES.commit, { id });
  // Reverse: host-a's replica starts from host-a's own plain disks, encrypted before use.
  const rev = (await send(b, ROUTES.reverse, { id }, { id: `${id}-r1`, replica: { name: 'host-a', endpoint: cluster.host('host-a').url }, policy: policy30s })).json<RelationshipView>();
  expect(rev.state).toBe('Replicating');
  const store = join(hostDir('host-a'), 'from-host-b', `${id}-r1`);
  expect(filesWithMarker(store)).toEqual([]);
  expect((await view(a, `${id}-r1`)).atRest).toBe('aes-256-xts');
  expect(await digestOn(a, `${id}-r1`, rev.appliedSequence, 'data')).toBe(await sha256File(join(hostDir('host-b'), 'vms', 'enc', 'data.img')));
});

test('an existing replica placed as a plain copy is encrypted before the first compare, and only differences ship', async () => {
  await send(a, ROUTES.createVm, {}, { name: 'seeded', disks: [{ name: 'os', size: 16 * MiB }] });
  await writeMarker('host-a', 'seeded', 'os', 3);
  // An operator copied the disk to the replica host (a restored backup, say), then the VM changed a little.
  const replicaDir = join(hostDir('host-b'), 'from-host-a', 'rel-seeded');
  mkdirSync(replicaDir, { recursive: true });
  copyFileSync(join(hostDir('host-a'), 'vms', 'seeded', 'os.img'), join(replicaDir, 'os.img'));
  await nbd('host-a', 'seeded', 'os', async (c) => { await c.write(4 * MiB, Buffer.alloc(64 * 1024, 0x77)); await c.flush(); });
  const policy = { ...policy30s, initialReplication: { method: 'existing-replica' as const, startAt: 'immediately' } };
  await send(a, ROUTES.createRelationship, {}, { id: 'rel-seeded', vm: 'seeded', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy });
  await send(a, ROUTES.startReplication, { id: 'rel-seeded' }, undefined, { query: { wait: 'true' } });
  const v = await view(a, 'rel-seeded');
  expect(v.state).toBe('Replicating');
  expect(await digestOn(b, 'rel-seeded', v.appliedSequence, 'os')).toBe(await sha256File(join(hostDir('host-a'), 'vms', 'seeded', 'os.img')));
  expect(v.bytesShipped).toBeLessThan(1 * MiB);
  expect(filesWithMarker(replicaDir)).toEqual([]);
});
