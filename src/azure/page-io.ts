// Page blob I/O under Azure's rules: writes in 512-byte pages of at most 4 MiB per call (a few in
// flight), clears as metadata, reads and page-range listings that count every byte downloaded,
// since "how much crossed the wire" is what failback is judged on; and ranges of a blob put back
// from one of its snapshots (a rollback costs the size of what is undone, not of the disk).
import type { BlobClient, PageBlobClient } from '@azure/storage-blob';
import { azureCall } from './errors.ts';

export const PAGE = 512;
/** Put Page accepts at most 4 MiB per call. */
export const MAX_PUT_PAGE = 4 << 20;
/** Requests in flight per blob for large transfers. */
const WINDOW = 4;

/** Bytes that crossed the wire in each direction (bodies only). */
export class TransferCount {
  downloaded = 0;
  uploaded = 0;
}

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/** Runs `jobs` with at most `window` in flight; rejects with the first failure after the others settle. */
export async function inWindow<T>(items: readonly T[], job: (item: T) => Promise<void>, window = WINDOW): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < items.length && failure === undefined) {
      const item = items[next++];
      try {
        await job(item);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, worker));
  if (failure !== undefined) throw failure;
}

/** Downloads `[offset, offset+length)` of a blob (or snapshot) into one buffer. */
export async function readRange(blob: BlobClient, offset: number, length: number, count?: TransferCount): Promise<Buffer> {
  if (length === 0) return Buffer.alloc(0);
  return azureCall(blob.name, async () => {
    const res = await blob.download(offset, length);
    const chunks: Buffer[] = [];
    for await (const c of res.readableStreamBody as AsyncIterable<Buffer>) {
      chunks.push(c);
      if (count) count.downloaded += c.length;
    }
    const buf = Buffer.concat(chunks);
    if (buf.length !== length) throw new Error(`short read of ${blob.name} at ${offset}: ${buf.length} of ${length} bytes`);
    return buf;
  });
}

/** Written (non-clear) page ranges inside `[offset, offset+length)`, merged, ascending. */
export async function writtenRanges(blob: PageBlobClient, offset: number, length: number): Promise<ByteRange[]> {
  if (length === 0) return [];
  return azureCall(blob.name, async () => {
    const out: ByteRange[] = [];
    for await (const r of blob.listPageRanges(offset, length)) {
      // `end` is inclusive; Azurite reports each write separately, Azure merges: merge here.
      const start = Math.max(r.start, offset);
      const end = Math.min(r.end + 1, offset + length);
      if (end <= start) continue;
      const last = out.at(-1);
      if (last && last.offset + last.length >= start) {
        (out as { offset: number; length: number }[])[out.length - 1] = { offset: last.offset, length: Math.max(last.offset + last.length, end) - last.offset };
      } else out.push({ offset: start, length: end - start });
    }
    return out.sort((a, b) => a.offset - b.offset);
  });
}

/** Writes page-aligned `data` at a page-aligned `offset`, split into Put Page calls. */
export async function writePages(blob: PageBlobClient, offset: number, data: Buffer, count?: TransferCount): Promise<void> {
  if (offset % PAGE !== 0 || data.length % PAGE !== 0) {
    throw new Error(`page write to ${blob.name} at ${offset} length ${data.length} is not 512-byte aligned`);
  }
  const parts: number[] = [];
  for (let at = 0; at < data.length; at += MAX_PUT_PAGE) parts.push(at);
  await inWindow(parts, async (at) => {
    const part = data.subarray(at, Math.min(at + MAX_PUT_PAGE, data.length));
    await azureCall(blob.name, () => blob.uploadPages(part, offset + at, part.length));
    if (count) count.uploaded += part.length;
  });
}

/** Clears page-aligned `[offset, offset+length)`: reads back as zeroes, stores nothing. */
export async function clearPages(blob: PageBlobClient, offset: number, length: number): Promise<void> {
  if (length === 0) return;
  if (offset % PAGE !== 0 || length % PAGE !== 0) throw new Error(`page clear of ${blob.name} at ${offset} length ${length} is not 512-byte aligned`);
  await azureCall(blob.name, () => blob.clearPages(offset, length));
}

/**
 * Writes bytes at any offset: the partial pages at either end are read, patched and written back
 * (read-modify-write), everything else goes straight out. `data` undefined writes zeroes.
 */
export async function writeBytes(blob: PageBlobClient, offset: number, length: number, data: Buffer | undefined, count?: TransferCount): Promise<void> {
  if (length === 0) return;
  const start = Math.floor(offset / PAGE) * PAGE;
  const end = Math.ceil((offset + length) / PAGE) * PAGE;
  if (start === offset && end === offset + length) {
    if (data) await writePages(blob, offset, data, count);
    else await clearPages(blob, offset, length);
    return;
  }
  if (!data) {
    // Clear the whole pages inside; patch the partial ones at the edges with zeroes.
    const innerStart = Math.ceil(offset / PAGE) * PAGE;
    const innerEnd = Math.floor((offset + length) / PAGE) * PAGE;
    if (innerEnd > innerStart) {
      await clearPages(blob, innerStart, innerEnd - innerStart);
      if (offset < innerStart) await writeBytes(blob, offset, innerStart - offset, Buffer.alloc(innerStart - offset), count);
      if (offset + length > innerEnd) await writeBytes(blob, innerEnd, offset + length - innerEnd, Buffer.alloc(offset + length - innerEnd), count);
      return;
    }
    data = Buffer.alloc(length);
  }
  const buf = Buffer.alloc(end - start);
  const head = await readRange(blob, start, PAGE, count);
  head.copy(buf, 0);
  if (end - PAGE > start) (await readRange(blob, end - PAGE, PAGE, count)).copy(buf, end - PAGE - start);
  data.copy(buf, offset - start);
  await writePages(blob, start, buf, count);
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Sorted, overlapping and touching ranges merged. */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].filter((r) => r.length > 0).sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && last.offset + last.length >= r.offset) out[out.length - 1] = { offset: last.offset, length: Math.max(last.offset + last.length, r.offset + r.length) - last.offset };
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

/** Ranges widened to whole pages (not past `limit`), merged. */
export function pageAligned(ranges: readonly ByteRange[], limit: number): ByteRange[] {
  return mergeRanges(ranges.map((r) => {
    const s = Math.floor(r.offset / PAGE) * PAGE;
    const e = Math.min(roundUp(r.offset + r.length, PAGE), limit);
    return { offset: s, length: Math.max(0, e - s) };
  }));
}

/** Makes page-aligned ranges of `blob` equal to `snapshot` (or zeroes when there is none). */
export async function restoreRanges(blob: PageBlobClient, snapshot: string | undefined, ranges: readonly ByteRange[], count: TransferCount): Promise<void> {
  const src = snapshot ? blob.withSnapshot(snapshot) : undefined;
  for (const r of ranges) {
    await clearPages(blob, r.offset, r.length);
    if (!src) continue;
    for (const w of await writtenRanges(src, r.offset, r.length)) {
      for (let at = w.offset; at < w.offset + w.length; at += MAX_PUT_PAGE) {
        const n = Math.min(MAX_PUT_PAGE, w.offset + w.length - at);
        await writePages(blob, at, await readRange(src, at, n, count), count);
      }
    }
  }
}
