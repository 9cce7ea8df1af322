// Reproducible test data: seeded noise, "mixed" blocks (incompressible, half-compressible, zero),
// disk images of a given size and copies of them with a fraction of 4 KiB blocks rewritten.
import { createCipheriv, createHash } from 'node:crypto';
import { copyFile, open, type FileHandle } from 'node:fs/promises';
import { createRng } from '../../src/demo/workload.ts';
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

/**
 * Copies `base` to `out` and rewrites `fraction` of its 4 KiB blocks (distinct, seeded) with new
 * noise. Returns the rewritten block indexes, ascending: the only blocks where `out` differs.
 */
export async function mutatedCopy(base: string, out: string, size: number, fraction: number, seed: number): Promise<number[]> {
  await copyFile(base, out);
  const blocks = Math.floor(size / BLOCK_SIZE);
  const n = Math.round(blocks * fraction);
  if (n === 0) return [];
  const rng = createRng(seed);
  const chosen = new Set<number>();
  while (chosen.size < n) chosen.add(rng.int(blocks));
  const sorted = [...chosen].sort((a, z) => a - z);
  const fh = await open(out, 'r+');
  try {
    let i = 0;
    for (const b of sorted) await fh.write(noise(seed + 1, i++, BLOCK_SIZE), 0, BLOCK_SIZE, b * BLOCK_SIZE);
  } finally {
    await fh.close();
  }
  return sorted;
}

/**
 * Writes the 4 KiB `blocks` of `from` over the same blocks of `to`, then fsyncs `to`: resets an
 * image that differs from `from` only in those blocks (a resync target after a run) at the cost of
 * the changed blocks instead of a whole fsynced copy.
 */
export async function restoreBlocks(from: string, to: string, blocks: readonly number[]): Promise<void> {
  const src = await open(from, 'r');
  const dst = await open(to, 'r+');
  try {
    const buf = Buffer.allocUnsafe(256 * BLOCK_SIZE);
    for (let i = 0; i < blocks.length; ) {
      let n = 1;
      while (i + n < blocks.length && blocks[i + n] === blocks[i] + n && n < 256) n++;
      const at = blocks[i] * BLOCK_SIZE;
      await readFull(src, buf, n * BLOCK_SIZE, at);
      let done = 0;
      while (done < n * BLOCK_SIZE) done += (await dst.write(buf, done, n * BLOCK_SIZE - done, at + done)).bytesWritten;
      i += n;
    }
    await dst.sync();
  } finally {
    await Promise.all([src.close(), dst.close()]);
  }
}

/** Offset of the first byte where two files differ (a size difference counts), or -1 when identical. */
export async function firstDifference(a: string, b: string): Promise<number> {
  const fa = await open(a, 'r');
  const fb = await open(b, 'r');
  try {
    const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
    const chunk = 8 << 20;
    const ba = Buffer.allocUnsafe(chunk);
    const bb = Buffer.allocUnsafe(chunk);
    for (let at = 0; at < Math.min(sa, sb); at += chunk) {
      const n = Math.min(chunk, Math.min(sa, sb) - at);
      await Promise.all([readFull(fa, ba, n, at), readFull(fb, bb, n, at)]);
      if (ba.compare(bb, 0, n, 0, n) !== 0) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return at + i;
      }
    }
    return sa === sb ? -1 : Math.min(sa, sb);
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

async function readFull(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  for (let got = 0; got < length; ) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw new Error(`short file: wanted ${length} bytes at ${position}`);
    got += bytesRead;
  }
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
