// One replicated disk in Azure: a page blob holding the raw disk followed by a fixed-VHD footer,
// and beside it a page blob of keyed 4 KiB block digests ("sums") kept in step with every write,
// so comparing a disk with Azure never needs its data downloaded. Both are snapshotted together:
// a recovery point is one snapshot of each.
import { createHmac } from 'node:crypto';
import type { BlobClient, ContainerClient, PageBlobClient } from '@azure/storage-blob';
import { DIGEST_BYTES, type BlockDigests } from '../core/replication/block-checksums.ts';
import { BLOCK_SIZE, type Extent } from '../core/types.ts';
import { VHD_FOOTER_BYTES, vhdFooter } from '../core/disk/vhd.ts';
import { azureCall, isBlobNotFound } from './errors.ts';
import { MAX_PUT_PAGE, PAGE, TransferCount, clearPages, mergeRanges, pageAligned, readRange, restoreRanges, roundUp, writeBytes, writePages, writtenRanges, type ByteRange } from './page-io.ts';

/** Sums entries per 512-byte page of the sums blob. */
const ENTRIES_PER_PAGE = PAGE / DIGEST_BYTES;
const ZERO_ENTRY = Buffer.alloc(DIGEST_BYTES);

export function diskBlobName(relationshipId: string, diskId: string): string {
  return `${relationshipId}/${diskId}.vhd`;
}
export function sumsBlobName(relationshipId: string, diskId: string): string {
  return `${relationshipId}/${diskId}.sums`;
}

/** Blob size for a disk of `diskSize` bytes: the data rounded to whole pages, then the footer. */
export function vhdBlobSize(diskSize: number): number {
  return roundUp(diskSize, PAGE) + VHD_FOOTER_BYTES;
}

function sumsBlobSize(diskSize: number): number {
  return Math.max(PAGE, roundUp(Math.ceil(diskSize / BLOCK_SIZE) * DIGEST_BYTES, PAGE));
}

/** What a recovery point's snapshots carry as metadata (Azure metadata names are lower-case identifiers). */
export interface PointMetadata {
  sequence: number;
  cutTime: number;
  consistency: 'crash' | 'app';
  cutId: string;
}

export function pointToMetadata(p: PointMetadata): Record<string, string> {
  return { sequence: String(p.sequence), cuttime: String(p.cutTime), consistency: p.consistency, cutid: p.cutId };
}

export function pointFromMetadata(m: Record<string, string> | undefined): PointMetadata | undefined {
  const sequence = Number(m?.sequence);
  const cutTime = Number(m?.cuttime);
  if (!m || !Number.isSafeInteger(sequence) || sequence < 1 || !Number.isFinite(cutTime)) return undefined;
  return { sequence, cutTime, consistency: m.consistency === 'app' ? 'app' : 'crash', cutId: m.cutid ?? '' };
}

/**
 * The state of the live (base) disk blob, kept in its metadata: the logical disk size, the sequence
 * being written (set before the first page changes) and the sequence fully written (set after the
 * last), so a half-written sequence is recognised after a crash and never snapshotted.
 */
export interface LiveState {
  diskSize: number;
  writing?: { sequence: number; cutId: string };
  written?: PointMetadata;
  etag: string;
}

export class DiskBlobs {
  readonly relationshipId: string;
  readonly diskId: string;
  readonly disk: PageBlobClient;
  readonly sums: PageBlobClient;
  /** `<disk>.intent.json`: the undo journal of the sequence being written. */
  readonly intent: BlobClient;
  readonly count: TransferCount;
  readonly #macKey: Buffer;
  readonly #zeroDigest: Map<number, Buffer> = new Map();

  constructor(container: ContainerClient, relationshipId: string, diskId: string, macKey: Buffer, count = new TransferCount()) {
    this.relationshipId = relationshipId;
    this.diskId = diskId;
    this.disk = container.getPageBlobClient(diskBlobName(relationshipId, diskId));
    this.sums = container.getPageBlobClient(sumsBlobName(relationshipId, diskId));
    this.intent = container.getBlobClient(`${relationshipId}/${diskId}.intent.json`);
    this.#macKey = macKey;
    this.count = count;
  }

  /** Keyed digest of a block of `length` bytes (4 KiB except maybe the disk's last). */
  digest(block: Buffer): Buffer {
    return createHmac('sha256', this.#macKey).update(block).digest();
  }

  zeroDigest(length: number): Buffer {
    let d = this.#zeroDigest.get(length);
    if (!d) this.#zeroDigest.set(length, (d = this.digest(Buffer.alloc(length))));
    return d;
  }

  /** Creates both blobs (all zeroes) with the VHD footer at the end; keeps existing ones. */
  async create(diskSize: number, footer: { uuid: string; timestamp: number }): Promise<void> {
    const live = await this.live().catch((e) => {
      if (isBlobNotFound(e)) return undefined;
      throw e;
    });
    if (live) return;
    const dataSize = roundUp(diskSize, PAGE);
    await azureCall(this.sums.name, () => this.sums.create(sumsBlobSize(diskSize)));
    await azureCall(this.disk.name, () => this.disk.create(dataSize + VHD_FOOTER_BYTES, { metadata: { disksize: String(diskSize) } }));
    await writePages(this.disk, dataSize, vhdFooter(dataSize, footer), this.count);
  }

  async live(): Promise<LiveState> {
    const p = await azureCall(this.disk.name, () => this.disk.getProperties());
    const m = p.metadata ?? {};
    const writing = Number(m.writing);
    const written = m.written ? pointFromMetadata({ sequence: m.written, cuttime: m.wcuttime ?? '', consistency: m.wconsistency ?? 'crash', cutid: m.wcutid ?? '' }) : undefined;
    return {
      diskSize: Number(m.disksize) || (p.contentLength ?? VHD_FOOTER_BYTES) - VHD_FOOTER_BYTES,
      ...(Number.isSafeInteger(writing) && writing > 0 && { writing: { sequence: writing, cutId: m.wrcutid ?? '' } }),
      ...(written && { written }),
      etag: p.etag ?? '',
    };
  }

  async #setLive(state: Omit<LiveState, 'etag'>): Promise<string> {
    const m: Record<string, string> = { disksize: String(state.diskSize) };
    if (state.writing) {
      m.writing = String(state.writing.sequence);
      m.wrcutid = state.writing.cutId;
    }
    if (state.written) {
      m.written = String(state.written.sequence);
      m.wcuttime = String(state.written.cutTime);
      m.wconsistency = state.written.consistency;
      m.wcutid = state.written.cutId;
    }
    const r = await azureCall(this.disk.name, () => this.disk.setMetadata(m));
    return r.etag ?? '';
  }

  /** Grows both blobs for a disk that grew (a disk never shrinks), moving the footer to the new end. */
  async #grow(from: number, to: number): Promise<void> {
    const oldData = roundUp(from, PAGE);
    const newData = roundUp(to, PAGE);
    if (newData > oldData) {
      await azureCall(this.disk.name, () => this.disk.resize(newData + VHD_FOOTER_BYTES));
      // The old footer now lies inside the disk, where the disk reads zeroes.
      await clearPages(this.disk, oldData, VHD_FOOTER_BYTES);
      await writePages(this.disk, newData, vhdFooter(newData, { uuid: await this.#footerUuid(), timestamp: Date.now() }), this.count);
    }
    if (sumsBlobSize(to) > sumsBlobSize(from)) await azureCall(this.sums.name, () => this.sums.resize(sumsBlobSize(to)));
  }

  async #footerUuid(): Promise<string> {
    const size = (await azureCall(this.disk.name, () => this.disk.getProperties())).contentLength ?? 0;
    const f = await readRange(this.disk, size - VHD_FOOTER_BYTES, VHD_FOOTER_BYTES, this.count);
    return f.subarray(68, 84).toString('hex');
  }

  /**
   * Writes one sequence's extents into the live blob and its sums. The `writing` mark goes on
   * first and the `written` mark last, so a crash in between leaves a blob known to be half-written.
   * Returns the ETag of the disk blob the sums now describe.
   */
  async writeSequence(point: PointMetadata & { diskSize: number }, extents: AsyncIterable<Extent>, before: LiveState, touched: readonly ByteRange[]): Promise<string> {
    if (point.diskSize > before.diskSize) await this.#grow(before.diskSize, point.diskSize);
    const diskSize = Math.max(before.diskSize, point.diskSize);
    await this.#saveIntent({ sequence: point.sequence, cutId: point.cutId, ranges: mergeRanges(touched) });
    await this.#setLive({ diskSize, writing: { sequence: point.sequence, cutId: point.cutId }, ...(before.written && { written: before.written }) });
    const entries = new Map<number, Buffer>();
    const partial = new Set<number>();
    let pending: Promise<void>[] = [];
    let failure: unknown;
    for await (const e of extents) {
      if (failure !== undefined) break;
      const length = 'data' in e ? e.data.length : e.length;
      const aligned = e.offset % PAGE === 0 && length % PAGE === 0;
      // Unaligned extents read-modify-write their edge pages: they run alone so no neighbour races them.
      if (!aligned || pending.length >= 8) {
        await Promise.all(pending);
        pending = [];
      }
      const job = writeBytes(this.disk, e.offset, length, 'data' in e ? e.data : undefined, this.count).catch((err: unknown) => {
        failure ??= err;
      });
      if (aligned) pending.push(job);
      else await job;
      this.#recordDigests(e, length, diskSize, entries, partial);
    }
    await Promise.all(pending);
    if (failure !== undefined) throw failure;
    for (const b of partial) {
      const at = b * BLOCK_SIZE;
      entries.set(b, this.digest(await readRange(this.disk, at, Math.min(BLOCK_SIZE, diskSize - at), this.count)));
    }
    await this.#writeSums(entries, diskSize);
    const etag = await this.#setLive({ diskSize, written: point });
    await this.#markSumsFresh(etag);
    return etag;
  }

  #recordDigests(e: Extent, length: number, diskSize: number, entries: Map<number, Buffer>, partial: Set<number>): void {
    const first = Math.floor(e.offset / BLOCK_SIZE);
    const last = Math.floor((e.offset + length - 1) / BLOCK_SIZE);
    for (let b = first; b <= last; b++) {
      const bs = b * BLOCK_SIZE;
      const be = Math.min(bs + BLOCK_SIZE, diskSize);
      if (bs < e.offset || be > e.offset + length) {
        partial.add(b);
        continue;
      }
      partial.delete(b);
      // An all-zero entry stands for a zero block: unwritten sums pages then read as "zero disk".
      entries.set(b, 'data' in e ? this.digest(e.data.subarray(bs - e.offset, be - e.offset)) : ZERO_ENTRY);
    }
  }

  /** Writes changed sums entries; pages only partly covered are read first and patched. */
  async #writeSums(entries: Map<number, Buffer>, diskSize: number): Promise<void> {
    if (entries.size === 0) return;
    const blocks = Math.ceil(diskSize / BLOCK_SIZE);
    const pages = [...new Set([...entries.keys()].map((b) => Math.floor(b / ENTRIES_PER_PAGE)))].sort((a, b) => a - b);
    const maxPages = MAX_PUT_PAGE / PAGE;
    const runs: { first: number; count: number }[] = [];
    for (const p of pages) {
      const r = runs.at(-1);
      if (r && r.first + r.count === p && r.count < maxPages) r.count++;
      else runs.push({ first: p, count: 1 });
    }
    for (const run of runs) {
      const buf = Buffer.alloc(run.count * PAGE);
      const firstBlock = run.first * ENTRIES_PER_PAGE;
      const endBlock = Math.min((run.first + run.count) * ENTRIES_PER_PAGE, blocks);
      let complete = true;
      for (let b = firstBlock; b < endBlock && complete; b++) if (!entries.has(b)) complete = false;
      if (!complete) (await readRange(this.sums, run.first * PAGE, buf.length, this.count)).copy(buf);
      for (let b = firstBlock; b < endBlock; b++) entries.get(b)?.copy(buf, (b - firstBlock) * DIGEST_BYTES);
      if (buf.every((x) => x === 0)) await clearPages(this.sums, run.first * PAGE, buf.length);
      else await writePages(this.sums, run.first * PAGE, buf, this.count);
    }
  }

  /** Records that the sums describe the disk blob as of `etag` (any other writer changes the ETag). */
  async #markSumsFresh(etag: string): Promise<void> {
    await azureCall(this.sums.name, () => this.sums.setMetadata({ disketag: etag.replace(/"/g, '') }));
  }

  /** Do the live sums describe the live disk blob exactly (nobody wrote it behind our back)? */
  async sumsFresh(diskEtag: string): Promise<boolean> {
    const p = await azureCall(this.sums.name, () => this.sums.getProperties());
    return !!p.metadata?.disketag && p.metadata.disketag === diskEtag.replace(/"/g, '');
  }

  /**
   * Writes through to the live blob outside replication (a failed-over VM's writes), keeping the
   * sums in step. `data` undefined writes zeroes.
   */
  async writeLive(offset: number, length: number, data: Buffer | undefined): Promise<void> {
    const live = await this.live();
    const extent: Extent = data ? { offset, data: data.subarray(0, length) } : { offset, length, zero: true };
    await writeBytes(this.disk, offset, length, data, this.count);
    const entries = new Map<number, Buffer>();
    const partial = new Set<number>();
    this.#recordDigests(extent, length, live.diskSize, entries, partial);
    for (const b of partial) {
      const at = b * BLOCK_SIZE;
      entries.set(b, this.digest(await readRange(this.disk, at, Math.min(BLOCK_SIZE, live.diskSize - at), this.count)));
    }
    await this.#writeSums(entries, live.diskSize);
    const p = await azureCall(this.disk.name, () => this.disk.getProperties());
    await this.#markSumsFresh(p.etag ?? '');
  }

  /** Snapshots both blobs with the point's metadata: sums first, so a disk snapshot implies its sums. */
  async snapshot(point: PointMetadata): Promise<{ disk: string; sums: string }> {
    const metadata = pointToMetadata(point);
    const sums = await azureCall(this.sums.name, () => this.sums.createSnapshot({ metadata }));
    const disk = await azureCall(this.disk.name, () => this.disk.createSnapshot({ metadata }));
    return { disk: disk.snapshot!, sums: sums.snapshot! };
  }

  /** The undo journal of the sequence being written: which ranges it touches, saved before any page changes. */
  async #saveIntent(intent: Intent): Promise<void> {
    const body = Buffer.from(JSON.stringify({ sequence: intent.sequence, cutId: intent.cutId, ranges: intent.ranges.map((r) => [r.offset, r.length]) }));
    const blob = this.intent.getBlockBlobClient();
    await azureCall(blob.name, () => blob.upload(body, body.length));
    this.count.uploaded += body.length;
  }

  async #readIntent(): Promise<Intent | undefined> {
    try {
      const body = await azureCall(this.intent.name, () => this.intent.downloadToBuffer());
      this.count.downloaded += body.length;
      const j = JSON.parse(body.toString('utf8')) as { sequence: number; cutId: string; ranges: [number, number][] };
      return { sequence: j.sequence, cutId: j.cutId, ranges: j.ranges.map(([offset, length]) => ({ offset, length })) };
    } catch (e) {
      if (isBlobNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * Puts the live blobs back to a point (or to an empty disk when there is none): undoes a sequence
   * that was (half-)written and then abandoned. Only the ranges its journal names are restored, from
   * the point's snapshots, so the cost is the size of the abandoned delta, not of the disk.
   */
  async rollback(to: { disk: string; sums: string; point: PointMetadata } | undefined, live: LiveState): Promise<void> {
    const intent = await this.#readIntent();
    const diskRanges = intent ? intent.ranges : [{ offset: 0, length: live.diskSize }];
    const blocks: ByteRange[] = [];
    for (const r of diskRanges) {
      const first = Math.floor(r.offset / BLOCK_SIZE);
      const last = Math.floor((r.offset + r.length - 1) / BLOCK_SIZE);
      blocks.push({ offset: first * DIGEST_BYTES, length: (last - first + 1) * DIGEST_BYTES });
    }
    const sumsSize = sumsBlobSize(live.diskSize);
    await restoreRanges(this.disk, to?.disk, pageAligned(diskRanges, roundUp(live.diskSize, PAGE)), this.count);
    await restoreRanges(this.sums, to?.sums, pageAligned(mergeRanges(blocks), sumsSize), this.count);
    const etag = await this.#setLive({ diskSize: live.diskSize, ...(to && { written: to.point }) });
    await this.#markSumsFresh(etag);
  }

  /** The keyed digests of every block held by the sums blob (or one of its snapshots). */
  async digests(diskSize: number, sumsSnapshot?: string): Promise<BlockDigests> {
    const blocks = Math.ceil(diskSize / BLOCK_SIZE);
    const src = sumsSnapshot ? this.sums.withSnapshot(sumsSnapshot) : this.sums;
    const raw = Buffer.alloc(blocks * DIGEST_BYTES);
    // Only written pages of the sums blob are downloaded: a never-written region is a zero disk.
    for (const r of await writtenRanges(src, 0, sumsBlobSize(diskSize))) {
      const end = Math.min(r.offset + r.length, raw.length);
      if (end <= r.offset) continue;
      for (let at = r.offset; at < end; at += MAX_PUT_PAGE) {
        const n = Math.min(MAX_PUT_PAGE, end - at);
        (await readRange(src, at, n, this.count)).copy(raw, at);
      }
    }
    for (let b = 0; b < blocks; b++) {
      const at = b * DIGEST_BYTES;
      if (raw.subarray(at, at + DIGEST_BYTES).equals(ZERO_ENTRY)) {
        this.zeroDigest(Math.min(BLOCK_SIZE, diskSize - b * BLOCK_SIZE)).copy(raw, at);
      }
    }
    return { blockSize: BLOCK_SIZE, size: diskSize, keyed: true, digests: raw };
  }

  /**
   * Keyed digests computed from the disk's data itself, downloading only its written page ranges
   * (unwritten ranges are zeroes). The check on the sums, and the fallback when they are stale.
   */
  async digestsFromData(diskSize: number, diskSnapshot?: string): Promise<BlockDigests> {
    const blocks = Math.ceil(diskSize / BLOCK_SIZE);
    const src = diskSnapshot ? this.disk.withSnapshot(diskSnapshot) : this.disk;
    const out = Buffer.alloc(blocks * DIGEST_BYTES);
    for (let b = 0; b < blocks; b++) this.zeroDigest(Math.min(BLOCK_SIZE, diskSize - b * BLOCK_SIZE)).copy(out, b * DIGEST_BYTES);
    const ranges = await writtenRanges(src, 0, diskSize);
    // Widen to whole blocks: a block partly written still needs all its bytes hashed.
    const blocksTouched: ByteRange[] = [];
    for (const r of ranges) {
      const s = Math.floor(r.offset / BLOCK_SIZE) * BLOCK_SIZE;
      const e = Math.min(roundUp(r.offset + r.length, BLOCK_SIZE), diskSize);
      const last = blocksTouched.at(-1);
      if (last && last.offset + last.length >= s) blocksTouched[blocksTouched.length - 1] = { offset: last.offset, length: Math.max(e, last.offset + last.length) - last.offset };
      else blocksTouched.push({ offset: s, length: e - s });
    }
    for (const r of blocksTouched) {
      for (let at = r.offset; at < r.offset + r.length; at += MAX_PUT_PAGE) {
        const n = Math.min(MAX_PUT_PAGE, r.offset + r.length - at);
        const buf = await readRange(src, at, n, this.count);
        for (let i = 0; i < n; i += BLOCK_SIZE) {
          this.digest(buf.subarray(i, Math.min(i + BLOCK_SIZE, n))).copy(out, ((at + i) / BLOCK_SIZE) * DIGEST_BYTES);
        }
      }
    }
    return { blockSize: BLOCK_SIZE, size: diskSize, keyed: true, digests: out };
  }

  async delete(): Promise<void> {
    for (const b of [this.disk, this.sums, this.intent]) {
      await azureCall(b.name, () => b.deleteIfExists({ deleteSnapshots: 'include' }));
    }
  }
}

interface Intent {
  sequence: number;
  cutId: string;
  ranges: ByteRange[];
}
