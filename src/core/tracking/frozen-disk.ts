// One disk's cut as the shipper reads it: the frozen bitmap's blocks, read once as extents (zero
// blocks as zero extents), then released or abandoned. The tracker (tracker.ts) serves the reads,
// from the disk or from what copy-before-write set aside, behind the narrow FrozenHost.
import { TerminalError } from '../../model/errors.ts';
import { BLOCK_SIZE } from '../types.ts';
import type { Extent } from '../types.ts';
import type { DirtyBitmap } from './dirty-bitmap.ts';

/** Largest data extent a cut yields (adjacent dirty blocks merge up to this). */
export const MAX_EXTENT_BYTES = 1 << 20;
const MAX_RUN_BLOCKS = MAX_EXTENT_BYTES / BLOCK_SIZE;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** What a frozen disk needs from its tracker: the cut's content of a run of blocks, and its end. */
export interface FrozenHost {
  readRun(start: number, count: number): Promise<Buffer>;
  finish(requeue: boolean): Promise<void>;
}

export interface FrozenDiskInfo {
  readonly diskId: string;
  readonly size: number;
  readonly cutId: string;
  readonly time: number;
  /** `full`: every block of the disk (initial copy); `delta`: blocks dirty since the previous cut. */
  readonly kind: 'delta' | 'full';
}

/** One disk's point-in-time view at a cut. Read it once, then release (shipped) or abandon (not shipped). */
export class FrozenDisk implements FrozenDiskInfo {
  readonly diskId: string;
  readonly size: number;
  readonly cutId: string;
  readonly time: number;
  readonly kind: 'delta' | 'full';
  /** Blocks in the cut. */
  readonly blocks: number;
  /** Bytes in the cut (the last block may be short). */
  readonly bytes: number;
  readonly #host: FrozenHost;
  readonly #bitmap: DirtyBitmap;
  #phase: 'frozen' | 'reading' | 'read' | 'finished' = 'frozen';

  constructor(host: FrozenHost, bitmap: DirtyBitmap, info: FrozenDiskInfo) {
    this.#host = host;
    this.#bitmap = bitmap;
    this.diskId = info.diskId;
    this.size = info.size;
    this.cutId = info.cutId;
    this.time = info.time;
    this.kind = info.kind;
    this.blocks = bitmap.count;
    const last = bitmap.blocks - 1;
    const short = bitmap.blocks * BLOCK_SIZE - info.size;
    this.bytes = bitmap.count * BLOCK_SIZE - (last >= 0 && bitmap.has(last) ? short : 0);
  }

  /** True once the cut was released or abandoned. */
  get finished(): boolean {
    return this.#phase === 'finished';
  }

  /**
   * The cut's content of every frozen block, ascending, once: data extents of at most 1 MiB,
   * all-zero blocks as zero extents (merged without a size limit). Writes may continue meanwhile.
   */
  async *extents(onProgress?: (done: number, total: number) => void): AsyncGenerator<Extent> {
    if (this.#phase !== 'frozen') {
      throw new TerminalError('invalid-state', `cut ${this.cutId} of disk ${this.diskId} was already read (${this.#phase}); a cut can be read once`);
    }
    this.#phase = 'reading';
    let done = 0;
    let zeroAt = 0;
    let zeroLen = 0;
    for (const run of this.#bitmap.runs(MAX_RUN_BLOCKS)) {
      const at = run.start * BLOCK_SIZE;
      const buf = await this.#host.readRun(run.start, run.count);
      let i = 0;
      while (i < buf.length) {
        const zero = isZero(buf, i);
        let j = i + BLOCK_SIZE;
        while (j < buf.length && isZero(buf, j) === zero) j += BLOCK_SIZE;
        j = Math.min(j, buf.length);
        if (zero) {
          if (zeroLen > 0 && zeroAt + zeroLen === at + i) zeroLen += j - i;
          else {
            if (zeroLen > 0) yield { offset: zeroAt, length: zeroLen, zero: true };
            zeroAt = at + i;
            zeroLen = j - i;
          }
        } else {
          if (zeroLen > 0) yield { offset: zeroAt, length: zeroLen, zero: true };
          zeroLen = 0;
          yield { offset: at + i, data: buf.subarray(i, j) };
        }
        i = j;
      }
      done += buf.length;
      onProgress?.(done, this.bytes);
    }
    if (zeroLen > 0) yield { offset: zeroAt, length: zeroLen, zero: true };
    if (this.#phase === 'reading') this.#phase = 'read';
  }

  /** The cut shipped: drop its copy-before-write data. */
  async release(): Promise<void> {
    this.#phase = 'finished';
    await this.#host.finish(false);
  }

  /** The cut did not ship: its blocks go back to the dirty set for the next cut. */
  async abandon(): Promise<void> {
    this.#phase = 'finished';
    await this.#host.finish(true);
  }
}

function isZero(buf: Buffer, at: number): boolean {
  const n = Math.min(BLOCK_SIZE, buf.length - at);
  return buf.compare(ZERO_BLOCK, 0, n, at, at + n) === 0;
}
