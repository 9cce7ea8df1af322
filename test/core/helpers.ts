// Shared test helpers for the primary half of the engine: temp folders, applying extents to a
// replica image, and deterministic random bytes.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../../src/model/block-device.ts';
import type { Extent } from '../../src/core/types.ts';

/** A fresh folder under the OS temp dir, and its removal. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `drsite-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Applies extents onto a device the way the replica does: data written, zero runs zeroed. */
export async function applyExtents(dev: BlockDevice, extents: AsyncIterable<Extent>): Promise<{ extents: number; dataBytes: number; zeroBytes: number }> {
  let n = 0;
  let dataBytes = 0;
  let zeroBytes = 0;
  for await (const e of extents) {
    n++;
    if ('zero' in e) {
      await dev.writeZeroes(e.offset, e.length);
      zeroBytes += e.length;
    } else {
      await dev.write(e.offset, e.data);
      dataBytes += e.data.length;
    }
  }
  return { extents: n, dataBytes, zeroBytes };
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Seeded PRNG (mulberry32) so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const random = (n: number): Buffer => randomBytes(n);
