// Reads a disk as it was at an older recovery point without copying it: a byte's content at point
// k is in the oldest undo segment (of the points after k) that covers it, else in the latest image.

import type { ImageFile } from '../disk/image-file.ts';
import type { UndoFile } from './replica-undo.ts';
import { RangeSet } from './replica-ranges.ts';

/** A read-only disk at one point in time. */
export interface BlockReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * `segments` must be ordered oldest first (ascending point, then segment order within a point).
 * An encrypted image's undo holds whole units of its ciphertext, so the stored bytes of the whole
 * units around the read are gathered first and decrypted once.
 */
export async function readAtPoint(
  segments: readonly UndoFile[],
  image: ImageFile,
  offset: number,
  length: number,
): Promise<Buffer> {
  const u = image.unit;
  const a = offset - (offset % u);
  const b = Math.ceil((offset + length) / u) * u;
  const raw = await gather(segments, image, a, b - a);
  if (!image.cipher) return raw;
  image.cipher.decrypt(raw, a);
  return a === offset && b - a === length ? raw : raw.subarray(offset - a, offset - a + length);
}

async function gather(segments: readonly UndoFile[], image: ImageFile, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  const end = offset + length;
  const covered = new RangeSet();
  for (const seg of segments) {
    if (covered.size === 1 && covered.gaps(offset, end).length === 0) break;
    for (let i = seg.firstEndingAfter(offset); i < seg.entries.length; i++) {
      const e = seg.entries[i];
      if (e.offset >= end) break;
      const s = Math.max(offset, e.offset);
      const t = Math.min(end, e.offset + e.length);
      for (const g of covered.gaps(s, t)) await seg.readInto(e, g.start, g.end - g.start, out, g.start - offset);
      covered.add(s, t);
    }
  }
  for (const g of covered.gaps(offset, end)) await image.readRawAsync(out, g.start, g.start - offset, g.end - g.start);
  return out;
}
