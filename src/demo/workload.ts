// A deterministic write workload (what a VM's guest would do to its disk), driven through NBD or
// straight into a BlockDevice, for tests and the benchmark: same seed, same bytes at the same offsets.

import { createCipheriv, createHash } from 'node:crypto';
import type { BlockDevice } from '../model/block-device.ts';
import type { Clock } from '../model/clock.ts';
import { systemClock } from '../model/clock.ts';
import { TerminalError } from '../model/errors.ts';
import { NbdClient } from '../nbd/client.ts';

export type WorkloadTarget =
  | { readonly socketPath: string; readonly exportName: string }
  | { readonly device: BlockDevice };

export interface WorkloadOptions {
  /**
   * `sequential`: one block after another, wrapping at the end of the disk; `random`: one block
   * at a random aligned offset; `mixed`: 1 to 8 blocks, half continuing the last write and half
   * at random, with a one-block read for about every three writes.
   */
  readonly pattern: 'random' | 'sequential' | 'mixed';
  /** Alignment and unit size of every write. @default 4096 */
  readonly blockSize?: number;
  /** Bytes written per second at most (a token bucket; bursts never exceed one write). @default unlimited */
  readonly rate?: number;
  /** Stop after exactly this many bytes written (the last write is shortened to fit). */
  readonly totalBytes?: number;
  /** Stop once this much clock time has passed. At least one of totalBytes / durationMs is required. */
  readonly durationMs?: number;
  /** Seeds offsets, sizes and data. */
  readonly seed: number;
  /** Fraction (0..1) of each block filled with a repeating pattern, so zstd shrinks it by about that much. @default 0 */
  readonly compressible?: number;
  /** Fraction (0..1) of writes whose data is all zeroes. @default 0 */
  readonly zeroFraction?: number;
  /**
   * Requests in flight at once. Over NBD the server keeps their order whatever the depth; straight
   * into a device, overlapping writes in flight may land in either order, so keep 1 there when the
   * final bytes matter. @default 1
   */
  readonly queueDepth?: number;
  /** Stops the workload early; the result then says `aborted`. */
  readonly signal?: AbortSignal;
  /** @default systemClock */
  readonly clock?: Clock;
}

export interface WorkloadResult {
  readonly bytesWritten: number;
  readonly writes: number;
  /** Writes whose data was all zeroes (counted in writes and bytesWritten too). */
  readonly zeroWrites: number;
  readonly reads: number;
  readonly bytesRead: number;
  readonly aborted: boolean;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence on every platform. */
export function createRng(seed: number): { next(): number; int(n: number): number } {
  let a = seed >>> 0;
  const u32 = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  // 53 bits from two draws, so offsets stay uniform on disks of more than 2^32 blocks.
  const next = () => ((u32() >>> 5) * 67108864 + (u32() >>> 6)) / 9007199254740992;
  return { next, int: (n: number) => Math.floor(next() * n) };
}

/** Pseudo-random bytes for write number `index` of a seed: AES-CTR keystream, fast and reproducible. */
function noise(seed: number, index: number, length: number): Buffer {
  const key = createHash('sha256').update(`drsite-workload:${seed}`).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(Math.floor(index / 2 ** 32), 0);
  iv.writeUInt32BE(index >>> 0, 4);
  return createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(length));
}

const FILLER = Buffer.from('drsite compressible filler: the same words again and again. ', 'latin1');

function blockData(seed: number, index: number, length: number, blockSize: number, compressible: number): Buffer {
  const data = noise(seed, index, length);
  const fill = Math.round(Math.min(1, Math.max(0, compressible)) * blockSize);
  if (fill > 0) {
    for (let at = 0; at < length; at += blockSize) {
      const end = Math.min(length, at + fill);
      for (let p = at; p < end; p += FILLER.length) FILLER.copy(data, p, 0, Math.min(FILLER.length, end - p));
    }
  }
  return data;
}

/**
 * `count` writes at block-aligned offsets inside a disk of `size` bytes, each 1 to `maxBlocks`
 * blocks of random data: the same list for the same arguments.
 */
export function randomWrites(
  count: number,
  size: number,
  seed: number,
  opts: { blockSize?: number; maxBlocks?: number } = {},
): { offset: number; data: Buffer }[] {
  const blockSize = opts.blockSize ?? 4096;
  const maxBlocks = opts.maxBlocks ?? 4;
  const blocks = Math.floor(size / blockSize);
  if (blocks < 1) throw new TerminalError('invalid-argument', `randomWrites: disk of ${size} bytes holds no ${blockSize}-byte block`);
  const rng = createRng(seed);
  const out: { offset: number; data: Buffer }[] = [];
  for (let i = 0; i < count; i++) {
    const n = Math.min(blocks, 1 + rng.int(maxBlocks));
    const offset = rng.int(blocks - n + 1) * blockSize;
    out.push({ offset, data: noise(seed, i, n * blockSize) });
  }
  return out;
}

type Op = { readonly kind: 'read' | 'write'; readonly offset: number; readonly length: number; readonly zero: boolean };

/** The op sequence of a workload: a pure function of the seed, the pattern and the disk size. */
function opStream(opts: WorkloadOptions, size: number, blockSize: number): () => Op {
  const rng = createRng(opts.seed);
  const blocks = Math.floor(size / blockSize);
  const zeroFraction = opts.zeroFraction ?? 0;
  let cursor = 0; // in blocks
  return () => {
    let kind: Op['kind'] = 'write';
    let n = 1;
    let at: number;
    if (opts.pattern === 'sequential') {
      at = cursor;
    } else if (opts.pattern === 'random') {
      at = rng.int(blocks);
    } else {
      if (rng.next() < 0.25) kind = 'read';
      n = Math.min(blocks, 1 + rng.int(8));
      at = rng.next() < 0.5 ? cursor : rng.int(blocks);
    }
    if (at + n > blocks) at = 0;
    const zero = kind === 'write' && rng.next() < zeroFraction;
    if (kind === 'write') cursor = (at + n) % blocks;
    return { kind, offset: at * blockSize, length: n * blockSize, zero };
  };
}

/** Runs a workload to its byte count or duration, whichever comes first. */
export async function runWorkload(target: WorkloadTarget, opts: WorkloadOptions): Promise<WorkloadResult> {
  if (opts.totalBytes === undefined && opts.durationMs === undefined) {
    throw new TerminalError('invalid-argument', 'runWorkload needs totalBytes or durationMs');
  }
  if ('device' in target) return drive(target.device, opts);
  const client = await NbdClient.connect(target.socketPath, target.exportName);
  try {
    return await drive(client, opts);
  } finally {
    await client.close();
  }
}

async function drive(device: BlockDevice, opts: WorkloadOptions): Promise<WorkloadResult> {
  const blockSize = opts.blockSize ?? 4096;
  const clock = opts.clock ?? systemClock;
  const depth = Math.max(1, opts.queueDepth ?? 1);
  if (device.size < blockSize) {
    throw new TerminalError('invalid-argument', `workload: device of ${device.size} bytes is smaller than one ${blockSize}-byte block`);
  }
  const next = opStream(opts, device.size, blockSize);
  const start = clock.now();
  const deadline = opts.durationMs === undefined ? Infinity : start + opts.durationMs;
  const budget = opts.totalBytes ?? Infinity;
  let bytesWritten = 0;
  let writes = 0;
  let zeroWrites = 0;
  let reads = 0;
  let bytesRead = 0;
  let aborted = false;
  let index = 0;
  let failure: unknown = null;
  const inFlight = new Set<Promise<void>>();

  const track = (p: Promise<void>) => {
    const t = p.catch((e) => {
      failure ??= e;
    }).finally(() => inFlight.delete(t));
    inFlight.add(t);
  };

  while (bytesWritten < budget && failure === null) {
    if (opts.signal?.aborted) {
      aborted = true;
      break;
    }
    const op = next();
    const i = index++;
    if (op.kind === 'write' && opts.rate !== undefined) {
      // Token bucket: a write may start once the bytes already issued fit the allowance so far,
      // so at any instant bytesWritten <= rate * elapsed + one write.
      const waitMs = Math.ceil(((bytesWritten - (opts.rate * (clock.now() - start)) / 1000) * 1000) / opts.rate);
      if (waitMs > 0) {
        if (clock.now() + waitMs >= deadline) break;
        if (!(await sleepUnlessAborted(clock, waitMs, opts.signal))) {
          aborted = true;
          break;
        }
      }
    }
    if (clock.now() >= deadline) break;
    while (inFlight.size >= depth) await Promise.race(inFlight);
    if (failure !== null) break;

    if (op.kind === 'read') {
      reads++;
      bytesRead += op.length;
      track(device.read(op.offset, op.length).then(() => {}));
      continue;
    }
    const length = Math.min(op.length, budget - bytesWritten);
    const data = op.zero ? Buffer.alloc(length) : blockData(opts.seed, i, length, blockSize, opts.compressible ?? 0);
    bytesWritten += length;
    writes++;
    if (op.zero) zeroWrites++;
    track(device.write(op.offset, data));
  }
  await Promise.all(inFlight);
  if (failure !== null) throw failure;
  return { bytesWritten, writes, zeroWrites, reads, bytesRead, aborted };
}

/** Sleeps on `clock`; false if `signal` aborted first (raced here, since not every Clock honours it). */
async function sleepUnlessAborted(clock: Clock, ms: number, signal?: AbortSignal): Promise<boolean> {
  if (!signal) {
    await clock.sleep(ms);
    return true;
  }
  if (signal.aborted) return false;
  let onAbort = () => {};
  const aborted = new Promise<false>((resolve) => {
    onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([clock.sleep(ms, signal).then(() => true, () => false), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
