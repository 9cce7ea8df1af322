// Failback from Azure to a host: brings one disk's content from its page blob (the live blob a
// failed-over VM runs on, or a recovery point) onto a local disk. `minimize-downtime` compares keyed
// 4 KiB digests and downloads only the blocks that differ; `full-download` copies every written page.
import { open, stat, truncate } from 'node:fs/promises';
import type { ContainerClient } from '@azure/storage-blob';
import { blockChecksums, diffBlocks, DIGEST_BYTES, type BlockDigests } from '../core/replication/block-checksums.ts';
import { RawDisk } from '../core/disk/disk.ts';
import { BLOCK_SIZE } from '../core/types.ts';
import type { BlockDevice } from '../model/block-device.ts';
import { TerminalError } from '../model/errors.ts';
import type { AzureBlobLink } from './blob-link.ts';
import { DiskBlobs } from './disk-blobs.ts';
import { diskPointsOf, requireRecord, snapshotIndex } from './replica-index.ts';
import { azureCall } from './errors.ts';
import { MAX_PUT_PAGE, TransferCount, readRange, roundUp, writtenRanges } from './page-io.ts';

export interface AzureFailbackOptions {
  /** The relationship's link; or `container` plus `keys`. */
  readonly link?: AzureBlobLink;
  readonly container?: ContainerClient;
  readonly relationshipId: string;
  readonly diskId: string;
  /**
   * What to bring back: `current` is the live blob (what a failed-over VM wrote, read through a
   * temporary snapshot so it stays consistent while read); `latest` the latest recovery point; a
   * number that recovery point. @default 'current'
   */
  readonly snapshot?: number | 'latest' | 'current';
  /** A block device, or the path of a raw image (created, or grown, to the disk's size). */
  readonly target: BlockDevice | string;
  readonly method: 'minimize-downtime' | 'full-download';
  /** The relationship's MAC key (digests are keyed); taken from the link when omitted. */
  readonly keys?: { readonly macKey: Buffer };
  readonly onProgress?: (done: number, total: number) => void;
}

export interface AzureFailbackResult {
  /** Every byte downloaded: disk data plus digests. */
  readonly bytesDownloaded: number;
  /** Of which digests (the sums blob), when the compare used them. */
  readonly digestBytesDownloaded: number;
  /** 4 KiB blocks written on the target. */
  readonly blocksChanged: number;
  readonly diskSize: number;
  /** How the remote side was digested: from the kept sums, or by downloading its written data (sums stale). */
  readonly compare: 'sums' | 'data' | 'none';
  /** The recovery point read, when the source was one. */
  readonly sequence?: number;
}

export async function failbackFromAzure(opts: AzureFailbackOptions): Promise<AzureFailbackResult> {
  const id = opts.relationshipId;
  const container = opts.link?.container ?? opts.container;
  // Only the MAC key is used on this path: nothing is decrypted.
  const macKey = opts.keys?.macKey ?? opts.link?.keysFor(id).macKey;
  if (!container || !macKey) throw new TerminalError('invalid-argument', 'failback from Azure needs a link, or a container and the relationship MAC key');
  const rec = opts.link ? await opts.link.record(id) : await requireRecord(container, id);
  if (!rec.disks.some((d) => d.id === opts.diskId)) throw new TerminalError('not-found', `relationship ${id} has no disk ${opts.diskId}`);
  const count = new TransferCount();
  const blobs = new DiskBlobs(container, id, opts.diskId, macKey, count);
  const which = opts.snapshot ?? 'current';

  let diskSnap: string;
  let sumsSnap: string;
  let sumsFresh = true;
  let sequence: number | undefined;
  let diskSize: number;
  let temporary = false;
  if (which === 'current') {
    const before = await blobs.live();
    diskSize = before.diskSize;
    sumsFresh = await blobs.sumsFresh(before.etag);
    const snap = await blobs.snapshot({ sequence: 0, cutTime: Date.now(), consistency: 'crash', cutId: 'failback' });
    temporary = true;
    ({ disk: diskSnap, sums: sumsSnap } = snap);
    // A write between the freshness check and the snapshots makes the sums unreliable for this pass.
    if ((await blobs.live()).etag !== before.etag) sumsFresh = false;
  } else {
    const points = diskPointsOf(rec, await snapshotIndex(container, id), opts.diskId);
    const p = which === 'latest' ? points.at(-1) : points.find((x) => x.point.sequence === which);
    if (!p) throw new TerminalError('not-found', `relationship ${id} has no recovery point ${which} of disk ${opts.diskId} (kept: ${points.map((x) => x.point.sequence).join(', ') || 'none'})`);
    ({ disk: diskSnap, sums: sumsSnap } = p);
    sequence = p.point.sequence;
    diskSize = (await azureCall(blobs.disk.name, () => blobs.disk.withSnapshot(p.disk).getProperties())).contentLength! - 512;
    diskSize = Math.min(diskSize, (await blobs.live()).diskSize);
  }

  const { device, close } = await openTarget(opts.target, diskSize);
  try {
    const source = blobs.disk.withSnapshot(diskSnap);
    const result =
      opts.method === 'full-download'
        ? await fullDownload(source, device, diskSize, count, opts.onProgress)
        : await minimizeDowntime(blobs, source, device, diskSize, sumsFresh ? sumsSnap : undefined, diskSnap, macKey, count, opts.onProgress);
    await device.flush();
    return { ...result, bytesDownloaded: count.downloaded, diskSize, ...(sequence !== undefined && { sequence }) };
  } finally {
    await close();
    if (temporary) {
      await azureCall(blobs.disk.name, () => blobs.disk.withSnapshot(diskSnap).deleteIfExists()).catch(() => {});
      await azureCall(blobs.sums.name, () => blobs.sums.withSnapshot(sumsSnap).deleteIfExists()).catch(() => {});
    }
  }
}

async function openTarget(target: BlockDevice | string, diskSize: number): Promise<{ device: BlockDevice; close: () => Promise<void> }> {
  if (typeof target !== 'string') {
    if (target.size < diskSize) throw new TerminalError('invalid-argument', `failback target holds ${target.size} bytes, the disk needs ${diskSize}`);
    return { device: target, close: async () => {} };
  }
  const size = roundUp(diskSize, 512);
  const existing = await stat(target).catch(() => undefined);
  if (!existing) await (await open(target, 'wx')).close();
  if (!existing || existing.size < size) await truncate(target, size);
  const disk = await RawDisk.open(target);
  return { device: disk, close: () => disk.close() };
}

type Partial = Omit<AzureFailbackResult, 'bytesDownloaded' | 'diskSize' | 'sequence'>;

async function fullDownload(
  source: DiskBlobs['disk'],
  device: BlockDevice,
  diskSize: number,
  count: TransferCount,
  onProgress?: (done: number, total: number) => void,
): Promise<Partial> {
  let at = 0;
  for (const r of await writtenRanges(source, 0, diskSize)) {
    if (r.offset > at) await device.writeZeroes(at, r.offset - at);
    for (let o = r.offset; o < r.offset + r.length; o += MAX_PUT_PAGE) {
      const n = Math.min(MAX_PUT_PAGE, r.offset + r.length - o);
      await device.write(o, await readRange(source, o, n, count));
      onProgress?.(o + n, diskSize);
    }
    at = r.offset + r.length;
  }
  if (at < diskSize) await device.writeZeroes(at, diskSize - at);
  onProgress?.(diskSize, diskSize);
  return { digestBytesDownloaded: 0, blocksChanged: Math.ceil(diskSize / BLOCK_SIZE), compare: 'none' };
}

async function minimizeDowntime(
  blobs: DiskBlobs,
  source: DiskBlobs['disk'],
  device: BlockDevice,
  diskSize: number,
  sumsSnap: string | undefined,
  diskSnap: string,
  macKey: Buffer,
  count: TransferCount,
  onProgress?: (done: number, total: number) => void,
): Promise<Partial> {
  const local = await blockChecksums({ size: diskSize, read: (o, n) => device.read(o, n) }, BLOCK_SIZE, macKey);
  const before = count.downloaded;
  // Without fresh sums (someone wrote the blob without keeping them) the written data is digested instead.
  const remote: BlockDigests = sumsSnap ? await blobs.digests(diskSize, sumsSnap) : await blobs.digestsFromData(diskSize, diskSnap);
  const digestBytes = sumsSnap ? count.downloaded - before : 0;
  const differing = diffBlocks(local, remote);
  const isZero = (b: number) => {
    const d = remote.digests.subarray(b * DIGEST_BYTES, (b + 1) * DIGEST_BYTES);
    return d.equals(blobs.zeroDigest(Math.min(BLOCK_SIZE, diskSize - b * BLOCK_SIZE)));
  };
  // Runs of consecutive differing blocks of one kind: zero blocks are written locally, not downloaded.
  const maxBlocks = MAX_PUT_PAGE / BLOCK_SIZE;
  let done = 0;
  for (let i = 0; i < differing.length; ) {
    const zero = isZero(differing[i]);
    let j = i + 1;
    while (j < differing.length && j - i < maxBlocks && differing[j] === differing[j - 1] + 1 && isZero(differing[j]) === zero) j++;
    const at = differing[i] * BLOCK_SIZE;
    const len = Math.min((differing[j - 1] + 1) * BLOCK_SIZE, diskSize) - at;
    if (zero) await device.writeZeroes(at, len);
    else await device.write(at, await readRange(source, at, len, count));
    done += j - i;
    onProgress?.(done, differing.length);
    i = j;
  }
  return { digestBytesDownloaded: digestBytes, blocksChanged: differing.length, compare: sumsSnap ? 'sums' : 'data' };
}
