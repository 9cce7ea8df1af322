// Reproducible test data: seeded noise, "mixed" blocks (incompressible, half-compressible, zero),
// disk images of a given size and copies of them with a fraction of 4 KiB blocks rewritten.
import { createCipheriv, createHash } from 'node:crypto';
import { copyFile, open } from 'node:fs/promises';
import { createRng } from '../../src/agent/workload.ts';
import { BLOCK_SIZE } from '../../src/core/types.ts';

export { createRng };

/** `length` pseudo-random bytes, a pure function of (seed, index): AES-128-CTR keystream. */
export function noise(seed: number, index: number, length: number): Buffer {
  const key = createHash('sha256').update(`drsite-bench:${seed}`).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(Math.floor(index / 2 ** 32), 0);
  iv.writeUInt32BE(index >>> 0, 4);
  return createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(length));
}

const TEXT = Buffer.from(
  'INFO 2026-03-01T12:00:00Z request served path=/api/v1/orders status=200 bytes=5120 user=alice\n',
  'latin1',
);

/**
 * "Mixed" data, block by block: 40% incompressible, 40% half log-like text and half noise (zstd
 * about 2x), 20% zeroes: roughly what a guest writes (databases, logs, freed blocks).
 */
export function mixedData(seed: number, index: number, length: number): Buffer {
  const buf = noise(seed, index, length);
  const rng = createRng(seed * 7919 + index);
  for (let at = 0; at < length; at += BLOCK_SIZE) {
    const end = Math.min(length, at + BLOCK_SIZE);
    const r = rng.next();
    if (r < 0.4) continue;
    if (r < 0.8) {
      const half = at + ((end - at) >> 1);
      for (let p = at; p < half; p += TEXT.length) TEXT.copy(buf, p, 0, Math.min(TEXT.length, half - p));
    } else buf.fill(0, at, end);
  }
  return buf;
}

/** Writes a `size`-byte image of seeded noise, 8 MiB at a time. */
export async function writeNoiseImage(path: string, size: number, seed: number): Promise<void> {
  const chunk = 8 << 20;
  const fh = await open(path, 'w');
  try {
    for (let at = 0, i = 0; at < size; at += chunk, i++) {
      await fh.write(noise(seed, i, Math.min(chunk, size - at)), 0, Math.min(chunk, size - at), at);
    }
  } finally {
    await fh.close();
  }
}

/** Copies `base` to `out` and rewrites `fraction` of its 4 KiB blocks (distinct, seeded) with new noise. */
export async function mutatedCopy(base: string, out: string, size: number, fraction: number, seed: number): Promise<number> {
  await copyFile(base, out);
  const blocks = Math.floor(size / BLOCK_SIZE);
  const n = Math.round(blocks * fraction);
  if (n === 0) return 0;
  const rng = createRng(seed);
  const chosen = new Set<number>();
  while (chosen.size < n) chosen.add(rng.int(blocks));
  const fh = await open(out, 'r+');
  try {
    let i = 0;
    for (const b of [...chosen].sort((a, z) => a - z)) await fh.write(noise(seed + 1, i++, BLOCK_SIZE), 0, BLOCK_SIZE, b * BLOCK_SIZE);
  } finally {
    await fh.close();
  }
  return n;
}

/** Copies a file and fsyncs the copy, so its writeback never lands inside a timed run. */
export async function copySynced(src: string, dest: string): Promise<void> {
  await copyFile(src, dest);
  const fh = await open(dest, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}
