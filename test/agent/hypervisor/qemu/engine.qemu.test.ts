// The real replication engine on an adopted QEMU VM: PrimaryReplication in this process with the
// dirty-bitmap tracker as its cut source, shipping over mutual TLS to a Replica server agent.
// After the initial copy and after each delta the replica's point equals QEMU's disks at the cut
// (sha256); a delta ships only what the guest wrote; a QEMU restart makes the relationship
// ResynchronizationRequired, and the resync brings the replica back to QEMU's disks.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QemuDirtyBitmapSource } from '../../../../src/agent/hypervisor/qemu/dirty-bitmap-tracker.ts';
import { HttpReplicaLink } from '../../../../src/agent/links/https.ts';
import { PrimaryReplication } from '../../../../src/core/replication/primary.ts';
import { newPrimaryRecord, retentionOf } from '../../../../src/core/replication/primary-record.ts';
import { systemClock } from '../../../../src/model/clock.ts';
import { loadCertBundle } from '../../../../src/transport/certs.ts';
import { silentLogger } from '../../../../src/transport/logger.ts';
import type { MtlsClient } from '../../../../src/transport/mtls.ts';
import { Cluster, policy30s } from '../../cluster.ts';
import type { ResolvedPolicySpec } from '../../../../src/model/desired.ts';
import { startVm, type TestVm } from './qemu-vm.ts';
import { ROUTES, send } from '../../../support/agent-client.ts';

const MiB = 1 << 20;
const SIZES = [16 * MiB, 8 * MiB];
const IDS = ['os', 'data'];
let dir: string;
let disks: string[];
let vm: TestVm;
let cluster: Cluster;
let b: MtlsClient;
let source: QemuDirtyBitmapSource;
let primary: PrimaryReplication;

const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
const pointDigest = async (seq: number, disk: string) =>
  (await send(b, ROUTES.pointDigest, { id: 'rel-adopted', seq, disk })).json<{ sha256: string }>().sha256;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drsite-qengine-'));
  disks = SIZES.map((_, i) => join(dir, `disk${i}.raw`));
  for (const [i, p] of disks.entries()) {
    const fh = await open(p, 'w');
    await fh.write(randomBytes(2 * MiB), 0, 2 * MiB, 0);
    await fh.truncate(SIZES[i]);
    await fh.close();
  }
  vm = await startVm(dir, disks);
  cluster = await Cluster.create([{ name: 'host-a', replicaServer: false }, { name: 'host-b' }]);
  await cluster.startInProcess('host-b');
  b = await cluster.client('host-b');
  source = await QemuDirtyBitmapSource.adopt({
    qmpSocket: vm.drsiteSocket,
    disks: IDS.map((id, i) => ({ id, node: `disk${i}` })),
    workDir: join(dir, 'work'),
    onContinuityLost: (why) => primary.markContinuityLost(why),
  });
  const link = new HttpReplicaLink(cluster.host('host-b').url, await loadCertBundle(cluster.certs, 'host-a'));
  // The defaults step's 30 s policy (resolved), without automatic resync: the test drives it.
  const resolved = policy30s as ResolvedPolicySpec;
  const policy: ResolvedPolicySpec = { ...resolved, recoveryPoints: { additional: 0 }, resync: { ...resolved.resync, automatic: false } };
  const keys = { encryptionKey: randomBytes(32), macKey: randomBytes(32) };
  const diskInfo = source.disks.map((d) => ({ id: d.id, size: d.size }));
  await link.createReplica({
    id: 'rel-adopted', vm: 'adopted', disks: diskInfo, retention: retentionOf(policy),
    keys: { encryptionKey: keys.encryptionKey.toString('base64'), macKey: keys.macKey.toString('base64') },
  });
  const relDir = join(dir, 'rel');
  await mkdir(relDir, { recursive: true });
  const record = newPrimaryRecord({ id: 'rel-adopted', vm: 'adopted', replica: { name: 'host-b', endpoint: cluster.host('host-b').url }, policy, excludeDisks: [], disks: diskInfo });
  primary = new PrimaryReplication({ dir: relDir, record, keys, source, link, clock: systemClock, log: silentLogger });
}, 60_000);

afterAll(async () => {
  await source?.close().catch(() => {});
  await vm?.kill();
  await cluster?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function expectReplicaEqualsQemu(seq: number): Promise<void> {
  for (const [i, id] of IDS.entries()) expect(await pointDigest(seq, id), `${id} at point ${seq}`).toBe(sha(await readFile(disks[i])));
}

describe('PrimaryReplication on an adopted QEMU VM', () => {
  test('initial copy, then deltas that ship only the written blocks; every point equals QEMU at the cut', async () => {
    const initial = await primary.startInitial();
    expect(primary.state).toBe('Replicating');
    await expectReplicaEqualsQemu(initial.sequence!);

    for (let round = 0; round < 3; round++) {
      let written = 0;
      for (let k = 0; k < 8; k++) {
        const disk = k % 2;
        const len = (1 + ((k * 7 + round) % 16)) * 4096;
        const off = (((k * 131 + round * 977) % (SIZES[disk] / 4096 - 16)) >>> 0) * 4096;
        await vm.write(disk, 0x10 + round * 16 + k, off, len);
        written += len;
      }
      const r = await primary.cycle();
      expect(r.action).toBe('delta');
      expect(r.applied).toBe(r.sequence);
      // Overlapping writes only make the dirty set smaller than the sum.
      expect(r.bytes!).toBeLessThanOrEqual(1.2 * written);
      expect(r.bytes!).toBeGreaterThan(0);
      await expectReplicaEqualsQemu(r.sequence!);
    }
  });

  test('QEMU restarted: ResynchronizationRequired, and the resync brings the replica back to QEMU', async () => {
    await vm.kill();
    vm = await startVm(dir, disks);
    await vm.write(1, 0x99, 1 * MiB, 64 * 1024);
    await expect(primary.cycle()).rejects.toThrow(/resynchronization required/);
    expect(primary.state).toBe('ResynchronizationRequired');
    const r = await primary.requestResync();
    expect(r.action).toBe('resync');
    expect(primary.state).toBe('Replicating');
    await expectReplicaEqualsQemu(r.sequence!);
    await vm.write(0, 0x5a, 0, 8192);
    const d = await primary.cycle();
    expect(d).toMatchObject({ action: 'delta', bytes: 8192 });
    await expectReplicaEqualsQemu(d.sequence!);
  });
});
