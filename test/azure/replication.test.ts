// Host -> Azure Blob replication of a two-disk VM through AzureBlobLink. Azurite stands in for
// Azure Storage, which cannot be reached from here; QEMU checks the blobs are valid fixed VHDs.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AzureBlobLink } from '../../src/azure/blob-link.ts';
import { diskBlobName } from '../../src/azure/disk-blobs.ts';
import { blockChecksums } from '../../src/core/replication/block-checksums.ts';
import { RawDisk } from '../../src/core/disk/disk.ts';
import { parseVhdFooter } from '../../src/core/disk/vhd.ts';
import { ManualClock } from '../../src/model/clock.ts';
import { prng } from '../core/helpers.ts';
import { startAzurite, type Azurite } from './azurite.ts';
import { TestVm, createRequest, type PointCopy } from './driver.ts';

const run = promisify(execFile);
const MiB = 1 << 20;
const SIZES = { os: 24 * MiB, data: 8 * MiB + 1536 };

describe('replication into Azure page blobs', () => {
  let az: Azurite;
  let vm: TestVm;
  beforeAll(async () => {
    az = await startAzurite();
    await az.container('replicas').create();
    vm = await TestVm.create('rel-web1', SIZES);
  });
  afterAll(async () => {
    await vm?.close();
    await az?.cleanup();
  });

  it('initial copy and deltas: each blob is a fixed VHD identical to the primary; snapshots are exactly the retained points', async () => {
    const container = az.container('replicas');
    const clock = new ManualClock(Date.UTC(2026, 0, 5, 10, 0));
    const link = new AzureBlobLink({ container, clock, primary: 'host-a' });
    const disks = Object.entries(SIZES).map(([id, size]) => ({ id, size }));
    const created = await link.createReplica(createRequest(vm.id, 'web1', disks, vm.keys, 1));
    expect(created).toMatchObject({ applied: 0, points: [], state: 'ReadyForInitialReplication', disks });
    // Idempotent: the same request again changes nothing.
    expect((await link.createReplica(createRequest(vm.id, 'web1', disks, vm.keys, 1))).applied).toBe(0);

    const rand = prng(7);
    await vm.scribble(0, rand, true);
    const points: PointCopy[] = [];
    const first = await vm.cycle(link, { full: true, time: clock.now(), keepImages: true });
    expect(first.status).toMatchObject({ applied: 1, received: {} });
    expect(first.status.points.map((p) => p.sequence)).toEqual([1]);
    points.push(first.point);
    await checkBlobsAgainst(first.point, 'initial');

    for (let i = 0; i < 3; i++) {
      await clock.advance(30 * 60_000);
      await vm.scribble(60, rand);
      const c = await vm.cycle(link, { time: clock.now(), keepImages: true });
      points.push(c.point);
      expect(c.status.applied).toBe(c.point.sequence);
    }
    await checkBlobsAgainst(points.at(-1)!, 'after deltas');

    // Cuts at 10:00, 10:30, 11:00, 11:30, now 11:30, one additional hourly point: hour 10 keeps
    // its last point (10:30, seq 2), hour 11 its last (seq 4, also the latest).
    const status = await link.status(vm.id);
    expect(status.points.map((p) => p.sequence)).toEqual([2, 4]);
    expect(status.points.map((p) => p.time)).toEqual([Date.UTC(2026, 0, 5, 10, 30), Date.UTC(2026, 0, 5, 11, 30)].map((t) => new Date(t).toISOString()));
    expect(status.storagePath).toBe(`${az.endpoint}/replicas/${vm.id}`);
    const snapshots: string[] = [];
    for await (const b of container.listBlobsFlat({ prefix: `${vm.id}/`, includeSnapshots: true, includeMetadata: true })) {
      if (b.snapshot) snapshots.push(`${b.name}@${b.metadata?.sequence}`);
    }
    expect(snapshots.sort()).toEqual(
      ['data.sums@2', 'data.sums@4', 'data.vhd@2', 'data.vhd@4', 'os.sums@2', 'os.sums@4', 'os.vhd@2', 'os.vhd@4'].map((s) => `${vm.id}/${s}`).sort(),
    );
    // Every retained snapshot holds the primary's disk as it was at that cut.
    for (const seq of [2, 4]) {
      const p = points[seq - 1];
      for (const [diskId, size] of Object.entries(SIZES)) {
        const dp = (await link.diskPoints(vm.id, diskId)).find((x) => x.point.sequence === seq)!;
        const data = await container.getPageBlobClient(diskBlobName(vm.id, diskId)).withSnapshot(dp.disk).downloadToBuffer(0, size);
        expect(createHash('sha256').update(data).digest('hex'), `${diskId} at point ${seq}`).toBe(p.sha[diskId]);
      }
    }

    // checksums(): the latest point's keyed digests, from the sums blob, equal the primary's own
    // and those computed from the blob's data; the sums cost 1/128 of the data to download.
    for (const [diskId, size] of Object.entries(SIZES)) {
      const image = await RawDisk.open(points[3].images[diskId], { readOnly: true });
      const local = await blockChecksums(image, 4096, vm.keys.macKey);
      await image.close();
      const before = link.count.downloaded;
      const remote = await link.checksums(vm.id, diskId);
      const sumsBytes = link.count.downloaded - before;
      expect(remote.digests.equals(local.digests)).toBe(true);
      expect(remote.size).toBe(size);
      const blobs = link.diskBlobs(vm.id, diskId);
      const latest = (await link.diskPoints(vm.id, diskId)).at(-1)!;
      const before2 = blobs.count.downloaded;
      const fromData = await blobs.digestsFromData(size, latest.disk);
      const dataBytes = blobs.count.downloaded - before2;
      expect(fromData.digests.equals(local.digests)).toBe(true);
      expect(sumsBytes).toBeLessThanOrEqual(Math.ceil(size / 4096) * 32 + 512 + 1024);
      console.log(`checksums of ${diskId} (${size} bytes): sums ${sumsBytes} bytes downloaded, from data ${dataBytes} bytes`);
    }

    async function checkBlobsAgainst(p: PointCopy, when: string): Promise<void> {
      for (const [diskId, size] of Object.entries(SIZES)) {
        const path = join(vm.dir, `${diskId}.blob.vhd`);
        const blob = container.getPageBlobClient(diskBlobName(vm.id, diskId));
        await blob.downloadToFile(path);
        const footer = parseVhdFooter((await blob.downloadToBuffer(Math.ceil(size / 512) * 512, 512)));
        expect(footer.currentSize).toBe(size);
        const { stdout } = await run('qemu-img', ['info', '--output', 'json', '-f', 'vpc', path]);
        expect(JSON.parse(stdout)['virtual-size'], `${diskId} ${when}`).toBe(size);
        // Exit status 0: identical contents.
        await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', p.images[diskId], path]);
      }
    }
  });

  it('a point is only taken once every disk holds the sequence; a half-shipped sequence is dropped by discardPending', async () => {
    const container = az.container('replicas');
    const clock = new ManualClock(Date.UTC(2026, 0, 6, 10, 0));
    const other = await TestVm.create('rel-app2', { a: 4 * MiB, b: 2 * MiB });
    try {
      const link = new AzureBlobLink({ container, clock });
      await link.createReplica(createRequest(other.id, 'app2', [{ id: 'a', size: 4 * MiB }, { id: 'b', size: 2 * MiB }], other.keys, 0));
      const rand = prng(3);
      await other.scribble(0, rand, true);
      const one = await other.cycle(link, { full: true, time: clock.now() });
      expect(one.status.applied).toBe(1);
      await clock.advance(60_000);
      await other.scribble(40, rand);
      // Sequence 2 sealed, but only disk a reaches Azure before the primary gives up on it.
      const two = await other.cycle(link, { time: clock.now(), applyToo: false });
      // cycle() uploaded both; re-create the half-shipped state by dropping b's write and re-sending a only.
      await link.discardPending(other.id);
      await link.upload(other.id, 2, 'a', two.logs[0]);
      let s = await link.apply(other.id);
      expect(s.applied).toBe(1);
      expect(s.received).toEqual({ a: [2] });
      expect(s.points.map((p) => p.sequence)).toEqual([1]);
      // The primary resynchronises instead: the half-written sequence goes, disk a is point 1 again.
      s = await link.discardPending(other.id);
      expect(s.received).toEqual({});
      const blobA = container.getPageBlobClient(diskBlobName(other.id, 'a'));
      expect(sha(await blobA.downloadToBuffer(0, 4 * MiB))).toBe(one.point.sha.a);
      // Re-sent in full, the sequence applies.
      await link.upload(other.id, 2, 'a', two.logs[0]);
      await link.upload(other.id, 2, 'b', two.logs[1]);
      s = await link.apply(other.id);
      expect(s.applied).toBe(2);
      expect(s.points.map((p) => p.sequence)).toEqual([2]);
      expect(sha(await blobA.downloadToBuffer(0, 4 * MiB))).toBe(two.point.sha.a);
      // Uploading an applied sequence again is acknowledged and changes nothing; so is apply.
      await link.upload(other.id, 2, 'a', two.logs[0]);
      expect((await link.apply(other.id)).applied).toBe(2);
      // remove() deletes every blob and snapshot of the relationship.
      await link.remove(other.id);
      const left: string[] = [];
      for await (const b of container.listBlobsFlat({ prefix: `${other.id}/`, includeSnapshots: true })) left.push(b.name);
      expect(left).toEqual([]);
      await expect(link.status(other.id)).rejects.toMatchObject({ code: 'not-found' });
    } finally {
      await other.close();
    }
  });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
