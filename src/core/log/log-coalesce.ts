// Turns a cycle's writes into the fewest log records: the latest write wins for every byte, 4 KiB
// blocks that are all zero become metadata-only zero extents, and adjacent ranges merge into
// records of at most `maxRecordBytes`. Both halves of the engine call it before `writeLog`.
import { BLOCK_SIZE } from '../types.ts';
import type { Extent } from '../types.ts';

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
    // Most blocks hold data: their first or last byte says so without a full comparison.
    if (data[rel] !== 0 || data[rel + BLOCK_SIZE - 1] !== 0 || !data.subarray(rel, rel + BLOCK_SIZE).equals(ZERO_BLOCK)) continue;
    if (block > runStart) out.push({ offset: runStart, data: data.subarray(runStart - offset, rel) });
    out.push({ offset: block, length: BLOCK_SIZE, zero: true });
    runStart = block + BLOCK_SIZE;
  }
  if (runStart < end) out.push({ offset: runStart, data: data.subarray(runStart - offset) });
}

/** Max-heap of write indexes: the newest write among those that started is on top. */
class NewestFirst {
  private readonly a: number[] = [];

  get top(): number | undefined {
    return this.a[0];
  }

  push(v: number): void {
    const a = this.a;
    let i = a.push(v) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] >= v) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = v;
  }

  pop(): void {
    const a = this.a;
    const last = a.pop()!;
    if (!a.length) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const c = l + 1 < a.length && a[l + 1] > a[l] ? l + 1 : l;
      if (a[c] <= last) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = last;
  }
}

/**
 * Latest write wins per byte range; output is sorted by offset, non-overlapping, with data records
 * of at most `maxRecordBytes`. Output buffers may share memory with the input.
 */
export function coalesce(extents: readonly Extent[], opts: { maxRecordBytes?: number } = {}): Extent[] {
  const max = opts.maxRecordBytes ?? MAX_RECORD_BYTES;
  // A sweep over the disk in offset order: at every position the newest write that covers it is
  // visible (n log n; walking newest to oldest with a covered-range set costs n^2 on random writes).
  const n = extents.length;
  const starts = new Float64Array(n);
  const ends = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    starts[i] = extents[i].offset;
    ends[i] = starts[i] + extentLength(extents[i]);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => starts[a] - starts[b]);
  const live = new NewestFirst();
  const pieces: Piece[] = [];
  let lastWriter = -1;
  let k = 0;
  let pos = 0;
  for (;;) {
    while (live.top !== undefined && ends[live.top] <= pos) live.pop();
    if (live.top === undefined) {
      if (k === n) break;
      const i = order[k];
      pos = Math.max(pos, starts[i]);
      // Common case: a write no other write overlaps is one piece as it is.
      if (pos === starts[i] && (k + 1 === n || ends[i] <= starts[order[k + 1]])) {
        pieces.push(extents[i] as Piece);
        lastWriter = i;
        pos = ends[i];
        k++;
        continue;
      }
    }
    while (k < n && starts[order[k]] <= pos) {
      if (ends[order[k]] > pos) live.push(order[k]);
      k++;
    }
    const w = live.top;
    if (w === undefined || ends[w] <= pos) continue;
    const next = Math.min(ends[w], k < n ? starts[order[k]] : Infinity);
    const e = extents[w];
    const prev = pieces[pieces.length - 1];
    if (lastWriter === w && prev && prev.offset + ('data' in prev ? prev.data.length : prev.length) === pos) {
      // The same write continues past a start of an older one: extend its piece.
      if ('data' in e) pieces[pieces.length - 1] = { offset: prev.offset, data: e.data.subarray(prev.offset - e.offset, next - e.offset) };
      else pieces[pieces.length - 1] = { offset: prev.offset, length: next - prev.offset, zero: true };
    } else if ('data' in e) {
      pieces.push({ offset: pos, data: e.data.subarray(pos - e.offset, next - e.offset) });
    } else {
      pieces.push({ offset: pos, length: next - pos, zero: true });
    }
    lastWriter = w;
    pos = next;
  }

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
