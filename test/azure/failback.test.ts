// Failback from Azure to the host after a failover: the failed-over VM's writes land in the page
// blob, the old primary's disk has drifted a little; minimize-downtime downloads only differing
// blocks, full-download everything. Azurite stands in for Azure Storage, which cannot be reached from here.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AzureBlobLink } from '../../src/azure/blob-link.ts';
import { diskBlobName } from '../../src/azure/disk-blobs.ts';
import { failbackFromAzure } from '../../src/azure/failback.ts';
import { RawDisk } from '../../src/core/disk/disk.ts';
import { ManualClock } from '../../src/model/clock.ts';
import { prng } from '../core/helpers.ts';
import { startAzurite, type Azurite } from './azurite.ts';
import { TestVm, createRequest, type PointCopy } from './driver.ts';

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const BLOCKS = SIZE / 4096;

describe('failback from Azure', () => {
  let az: Azurite;
  let vm: TestVm;
  let link: AzureBlobLink;
  let latest: PointCopy;
  beforeAll(async () => {
    az = await startAzurite();
    const container = az.container('failback');
    await container.create();
    vm = await TestVm.create('rel-db1', { os: SIZE });
    const clock = new ManualClock(Date.UTC(2026, 0, 7, 9, 0));
    link = new AzureBlobLink({ container, clock });
    await link.createReplica(createRequest(vm.id, 'db1', [{ id: 'os', size: SIZE }], vm.keys, 0));
    const rand = prng(11);
    // Whole disk random: nothing is left for page ranges to skip, so a full download is the disk.
    for (let at = 0; at < SIZE; at += MiB) await vm.disks[0].write(at, randomBytes(MiB));
    await vm.cycle(link, { full: true, time: clock.now() });
    await clock.advance(5 * 60_000);
    await vm.scribble(50, rand);
    latest = (await vm.cycle(link, { time: clock.now(), keepImages: true })).point;
    // Unplanned failover: the primary wrote a few blocks that never shipped, then went down.
    await vm.scribble(8, rand);
    await vm.disks[0].close();
    // The failed-over VM writes 1% of the disk's 4 KiB pages in Azure.
    const blobs = link.diskBlobs(vm.id, 'os');
    for (let i = 0; i < BLOCKS / 100; i++) {
      const b = Math.floor(rand() * BLOCKS);
      await blobs.writeLive(b * 4096, 4096, randomBytes(4096));
    }
  });
  afterAll(async () => {
    await vm?.close().catch(() => {});
    await az?.cleanup();
  });

  const liveSha = async () => sha(await az.container('failback').getPageBlobClient(diskBlobName(vm.id, 'os')).downloadToBuffer(0, SIZE));

  it('minimize-downtime downloads under 3% of the disk and ends byte-identical to the Azure disk', async () => {
    const target = vm.path('os');
    const expected = await liveSha();
    expect(sha(await readFile(target))).not.toBe(expected);
    const r = await failbackFromAzure({ link, relationshipId: vm.id, diskId: 'os', target, method: 'minimize-downtime' });
    expect(sha(await readFile(target))).toBe(expected);
    expect(r.compare).toBe('sums');
    expect(r.bytesDownloaded).toBeLessThan(0.03 * SIZE);
    // At least the Azure-side 1% plus the primary's unshipped blocks, and nothing like the whole disk.
    expect(r.blocksChanged).toBeGreaterThanOrEqual(30);
    expect(r.blocksChanged).toBeLessThan(BLOCKS / 100 + 8 + 1);
    console.log(`minimize-downtime: ${r.bytesDownloaded} bytes downloaded (${((100 * r.bytesDownloaded) / SIZE).toFixed(2)}% of ${SIZE}; digests ${r.digestBytesDownloaded}), ${r.blocksChanged} blocks changed`);
    // A second pass (the final one, after the VM stops) finds nothing left to copy.
    const again = await failbackFromAzure({ link, relationshipId: vm.id, diskId: 'os', target, method: 'minimize-downtime' });
    expect(again.blocksChanged).toBe(0);
    expect(again.bytesDownloaded - again.digestBytesDownloaded).toBe(0);
  });

  it('full-download ends byte-identical and downloads about the whole disk', async () => {
    const target = join(vm.dir, 'fresh.img');
    const r = await failbackFromAzure({ link, relationshipId: vm.id, diskId: 'os', target, method: 'full-download' });
    expect(sha(await readFile(target))).toBe(await liveSha());
    // Blocks the guest zeroed are clear pages: nothing to download for them.
    expect(r.bytesDownloaded).toBeGreaterThan(0.99 * SIZE);
    expect(r.bytesDownloaded).toBeLessThan(SIZE * 1.01);
    console.log(`full-download: ${r.bytesDownloaded} bytes downloaded`);
  });

  it('brings back a recovery point onto a block device', async () => {
    const dev = await RawDisk.create(join(vm.dir, 'point.img'), SIZE);
    try {
      const r = await failbackFromAzure({ link, relationshipId: vm.id, diskId: 'os', snapshot: 'latest', target: dev, method: 'minimize-downtime' });
      expect(r.sequence).toBe(2);
    } finally {
      await dev.close();
    }
    expect(sha(await readFile(join(vm.dir, 'point.img')))).toBe(latest.sha.os);
  });

  it('writes that bypassed the digests are detected (ETag) and compared from the data instead, still byte-identical', async () => {
    const blob = az.container('failback').getPageBlobClient(diskBlobName(vm.id, 'os'));
    await blob.uploadPages(randomBytes(8192), 40960, 8192);
    const target = vm.path('os');
    const r = await failbackFromAzure({ link, relationshipId: vm.id, diskId: 'os', target, method: 'minimize-downtime' });
    expect(r.compare).toBe('data');
    expect(r.blocksChanged).toBe(2);
    expect(sha(await readFile(target))).toBe(await liveSha());
  });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
