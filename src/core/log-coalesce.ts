// Turns a cycle's writes into the fewest log records: the latest write wins for every byte, 4 KiB
// blocks that are all zero become metadata-only zero extents, and adjacent ranges merge into
// records of at most `maxRecordBytes`. Both halves of the engine call it before `writeLog`.
import { BLOCK_SIZE } from './types.ts';
import type { Extent } from './types.ts';
import { RangeSet } from './replica-ranges.ts';

/** Largest data record a log holds; encryption and compression work on buffers up to this size. */
export const MAX_RECORD_BYTES = 1 << 20;

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

export function extentLength(e: Extent): number {
  return 'data' in e ? e.data.length : e.length;
}

type Piece = { offset: number; data: Buffer } | { offset: number; length: number; zero: true };

/** Splits a data piece so that every aligned all-zero 4 KiB block becomes a zero piece. */
function splitZeroBlocks(offset: number, data: Buffer, out: Piece[]): void {
  const end = offset + data.length;
  let runStart = offset;
  let block = Math.ceil(offset / BLOCK_SIZE) * BLOCK_SIZE;
  for (; block + BLOCK_SIZE <= end; block += BLOCK_SIZE) {
    const rel = block - offset;
    if (!data.subarray(rel, rel + BLOCK_SIZE).equals(ZERO_BLOCK)) continue;
    if (block > runStart) out.push({ offset: runStart, data: data.subarray(runStart - offset, rel) });
    out.push({ offset: block, length: BLOCK_SIZE, zero: true });
    runStart = block + BLOCK_SIZE;
  }
  if (runStart < end) out.push({ offset: runStart, data: data.subarray(runStart - offset) });
}

/**
 * Latest write wins per byte range; output is sorted by offset, non-overlapping, with data records
 * of at most `maxRecordBytes`. Output buffers may share memory with the input.
 */
export function coalesce(extents: readonly Extent[], opts: { maxRecordBytes?: number } = {}): Extent[] {
  const max = opts.maxRecordBytes ?? MAX_RECORD_BYTES;
  const covered = new RangeSet();
  const pieces: Piece[] = [];
  // Walking newest to oldest, each write only contributes the bytes no newer write covers.
  for (let i = extents.length - 1; i >= 0; i--) {
    const e = extents[i];
    const start = e.offset;
    const end = start + extentLength(e);
    for (const g of covered.gaps(start, end)) {
      if ('data' in e) pieces.push({ offset: g.start, data: e.data.subarray(g.start - start, g.end - start) });
      else pieces.push({ offset: g.start, length: g.end - g.start, zero: true });
    }
    covered.add(start, end);
  }
  pieces.sort((a, b) => a.offset - b.offset);

  const fine: Piece[] = [];
  for (const p of pieces) {
    if ('data' in p) splitZeroBlocks(p.offset, p.data, fine);
    else fine.push(p);
  }

  const out: Extent[] = [];
  let run: Piece[] = [];
  let runEnd = -1;
  const flush = () => {
    if (!run.length) return;
    const first = run[0];
    if (!('data' in first)) {
      out.push({ offset: first.offset, length: runEnd - first.offset, zero: true });
    } else {
      emitData(first.offset, run.map((p) => (p as { data: Buffer }).data), max, out);
    }
    run = [];
  };
  for (const p of fine) {
    const isData = 'data' in p;
    const sameKind = run.length > 0 && 'data' in run[0] === isData;
    if (!(sameKind && p.offset === runEnd)) flush();
    run.push(p);
    runEnd = p.offset + ('data' in p ? p.data.length : p.length);
  }
  flush();
  return out;
}

/** Emits a contiguous data run as records of at most `max` bytes, copying only to join pieces. */
function emitData(offset: number, buffers: Buffer[], max: number, out: Extent[]): void {
  let chunk: Buffer[] = [];
  let chunkBytes = 0;
  let at = offset;
  const push = () => {
    if (!chunkBytes) return;
    out.push({ offset: at, data: chunk.length === 1 ? chunk[0] : Buffer.concat(chunk, chunkBytes) });
    at += chunkBytes;
    chunk = [];
    chunkBytes = 0;
  };
  for (let b of buffers) {
    while (b.length) {
      const take = Math.min(b.length, max - chunkBytes);
      chunk.push(b.subarray(0, take));
      chunkBytes += take;
      b = b.subarray(take);
      if (chunkBytes === max) push();
    }
  }
  push();
}
