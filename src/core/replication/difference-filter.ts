// Which blocks of the primary's disks differ from the replica's, for an initial copy from an
// existing replica and for a resynchronisation: the multi-level keyed compare when the replica
// can answer it, else its whole-disk 4 KiB digests.
import { createHmac } from 'node:crypto';
import { COMPARE_DIGEST_BYTES, COMPARE_LEVELS, DIGEST_BYTES, type BlockDigests, type RemoteDigests } from './block-checksums.ts';
import { differingExtents } from './differing-extents.ts';
import { BLOCK_SIZE, type Extent } from '../types.ts';
import type { Logger } from '../../model/logger.ts';
import type { ReplicaLink } from './ports.ts';

/** Narrows one disk's extents to the blocks that differ on the replica. */
export type DifferenceFilter = (diskId: string, extents: AsyncIterable<Extent>) => AsyncIterable<Extent>;

export async function differenceFilter(o: {
  id: string;
  disks: readonly { readonly id: string; readonly size: number }[];
  link: ReplicaLink;
  macKey: Buffer;
  log: Logger;
}): Promise<DifferenceFilter> {
  const key = o.macKey;
  const filters = new Map<string, (extents: AsyncIterable<Extent>) => AsyncIterable<Extent>>();
  for (const d of o.disks) {
    // A one-block probe: a replica that can compare answers it; one that cannot sends the
    // whole-disk 4 KiB digests instead, which are then compared.
    const probe = await o.link.checksums(o.id, d.id, { blockSize: COMPARE_LEVELS[0], only: [0] });
    const multiLevel = probe.digestBytes === COMPARE_DIGEST_BYTES;
    o.log.info('comparing the disk with the replica', { relationship: o.id, disk: d.id, compare: multiLevel ? 'multi-level' : 'whole-disk 4 KiB' });
    if (multiLevel) {
      const remote: RemoteDigests = (blockSize, only) => o.link.checksums(o.id, d.id, { blockSize, ...(only && { only }) });
      filters.set(d.id, (extents) => differingExtents(extents, d.size, remote, key));
    } else {
      const zeroDigest = createHmac('sha256', key).update(Buffer.alloc(BLOCK_SIZE)).digest();
      filters.set(d.id, (extents) => onlyDiffering(extents, probe, key, zeroDigest));
    }
  }
  return (diskId, extents) => filters.get(diskId)!(extents);
}


/** Keeps the blocks of `extents` whose keyed digest differs from `remote` (4 KiB blocks). */
async function* onlyDiffering(extents: AsyncIterable<Extent>, remote: BlockDigests, key: Buffer, zeroDigest: Buffer): AsyncGenerator<Extent> {
  const remoteAt = (block: number): Buffer | undefined => {
    if (remote.indexes) return undefined;
    const at = block * DIGEST_BYTES;
    return at + DIGEST_BYTES <= remote.digests.length ? remote.digests.subarray(at, at + DIGEST_BYTES) : undefined;
  };
  for await (const e of extents) {
    if ('zero' in e) {
      let runStart = -1;
      const first = e.offset / BLOCK_SIZE;
      const blocks = Math.ceil(e.length / BLOCK_SIZE);
      for (let i = 0; i <= blocks; i++) {
        const differs = i < blocks && !remoteAt(first + i)?.equals(zeroDigest);
        if (differs && runStart < 0) runStart = i;
        if (!differs && runStart >= 0) {
          const offset = e.offset + runStart * BLOCK_SIZE;
          yield { offset, length: Math.min(e.offset + e.length, e.offset + i * BLOCK_SIZE) - offset, zero: true };
          runStart = -1;
        }
      }
      continue;
    }
    let runStart = -1;
    const blocks = Math.ceil(e.data.length / BLOCK_SIZE);
    for (let i = 0; i <= blocks; i++) {
      let differs = false;
      if (i < blocks) {
        const block = e.data.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
        const mine = createHmac('sha256', key).update(block).digest();
        differs = !remoteAt(e.offset / BLOCK_SIZE + i)?.equals(mine);
      }
      if (differs && runStart < 0) runStart = i;
      if (!differs && runStart >= 0) {
        yield { offset: e.offset + runStart * BLOCK_SIZE, data: e.data.subarray(runStart * BLOCK_SIZE, i * BLOCK_SIZE) };
        runStart = -1;
      }
    }
  }
}
