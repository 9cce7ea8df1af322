// The per-disk file that proves tracking continuity across restarts: marked dirty while a tracker
// runs, rewritten clean with the bitmap on an orderly close. Anything else (missing, dirty,
// damaged, other geometry) means writes may have gone unseen.
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { writeFileAtomic } from '../atomic-file.ts';
import { DirtyBitmap } from './dirty-bitmap.ts';

const MAGIC = Buffer.from('DRSCBT1\n');

interface Header {
  clean: boolean;
  size: number;
  blockSize: number;
  blocks: number;
  dirty: number;
  sha256: string;
}

export type LoadedState =
  | { readonly continuity: 'intact'; readonly bitmap: DirtyBitmap }
  | { readonly continuity: 'lost'; readonly why: string };

export async function loadTrackingState(path: string, size: number, blockSize: number): Promise<LoadedState> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { continuity: 'lost', why: `no tracking state at ${path}` };
    throw e;
  }
  if (raw.length < MAGIC.length + 4 || !raw.subarray(0, MAGIC.length).equals(MAGIC)) {
    return { continuity: 'lost', why: `tracking state ${path} is not a drsite tracking file` };
  }
  const hlen = raw.readUInt32BE(MAGIC.length);
  const bodyAt = MAGIC.length + 4 + hlen;
  let h: Header;
  try {
    h = JSON.parse(raw.subarray(MAGIC.length + 4, bodyAt).toString('utf8')) as Header;
  } catch {
    return { continuity: 'lost', why: `tracking state ${path} has a damaged header` };
  }
  if (!h.clean) return { continuity: 'lost', why: `tracking state ${path} was not closed cleanly` };
  const blocks = Math.ceil(size / blockSize);
  if (h.size !== size || h.blockSize !== blockSize || h.blocks !== blocks) {
    return { continuity: 'lost', why: `tracking state ${path} describes a disk of ${h.size} bytes, the disk has ${size}` };
  }
  const bits = raw.subarray(bodyAt);
  if (bits.length !== Math.ceil(blocks / 8) || createHash('sha256').update(bits).digest('hex') !== h.sha256) {
    return { continuity: 'lost', why: `tracking state ${path} has a damaged bitmap` };
  }
  return { continuity: 'intact', bitmap: new DirtyBitmap(blocks, bits) };
}

/**
 * Writes the state atomically; returns the bytes written. `bitmap` undefined writes the dirty
 * marker (no bitmap: while the tracker runs the file's bitmap would be stale anyway).
 */
export async function saveTrackingState(path: string, size: number, blockSize: number, bitmap?: DirtyBitmap): Promise<number> {
  const bits = bitmap ? Buffer.from(bitmap.bits.buffer, bitmap.bits.byteOffset, bitmap.bits.byteLength) : Buffer.alloc(0);
  const header: Header = {
    clean: !!bitmap,
    size,
    blockSize,
    blocks: Math.ceil(size / blockSize),
    dirty: bitmap?.count ?? 0,
    sha256: createHash('sha256').update(bits).digest('hex'),
  };
  const hbuf = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(hbuf.length);
  const file = Buffer.concat([MAGIC, len, hbuf, bits]);
  await writeFileAtomic(path, file);
  return file.length;
}
