// The resync's streaming compare: a frozen cut's extents in, only the 4 KiB blocks that differ from
// the replica out, found by the multi-level compare (COMPARE_LEVELS digests) one window of the disk
// at a time, so the cut is read once and memory stays one window.
import { TerminalError } from '../../model/errors.ts';
import {
  COMPARE_LEVELS, blocksWithin, compareChecksums, compareKeys, diffBlocks, type BlockDigests, type BlockReader, type RemoteDigests,
} from './block-checksums.ts';
import { BLOCK_SIZE, type Extent } from '../types.ts';

/** Disk bytes compared per step: a multiple of the coarsest level. */
const WINDOW = 64 << 20;

export interface DifferingExtentsOptions {
  /** @default 64 MiB */
  readonly windowBytes?: number;
}

/**
 * Keeps the blocks of `extents` (ascending, contiguous from 0, covering `size` bytes: a full cut)
 * whose content differs from the replica's, which `remote` digests with `compareChecksums` under
 * the same MAC key. Differing zero blocks come out as zero extents.
 */
export async function* differingExtents(
  extents: AsyncIterable<Extent>,
  size: number,
  remote: RemoteDigests,
  macKey: Buffer,
  opts: DifferingExtentsOptions = {},
): AsyncGenerator<Extent> {
  const levels = COMPARE_LEVELS;
  const window = opts.windowBytes ?? WINDOW;
  if (window % levels[0] !== 0) throw new TerminalError('invalid-argument', `compare window ${window} is not a multiple of ${levels[0]}`);
  const keys = compareKeys(macKey);
  const buf = Buffer.alloc(Math.min(window, Math.max(size, 1)));
  let start = 0; // disk offset of buf[0]
  let filled = 0;

  // The replica's coarse digests are asked window by window, this window's and the next one's
  // ahead, so that both sides read and digest the same part of the disk at the same time.
  const coarseOf = (at: number): number[] => {
    const out: number[] = [];
    for (let i = at / levels[0]; i < Math.ceil(Math.min(at + buf.length, size) / levels[0]); i++) out.push(i);
    return out;
  };
  const asked = new Map<number, Promise<BlockDigests>>();
  const ask = (at: number) => {
    if (at >= size || asked.has(at)) return;
    const p = remote(levels[0], coarseOf(at));
    p.catch(() => {}); // awaited at its window; an abandoned compare must not leave it unhandled
    asked.set(at, p);
  };
  ask(0);
  ask(buf.length);

  async function* flush(): AsyncGenerator<Extent> {
    const reader: BlockReader = { size, read: async (o, l) => buf.subarray(o - start, o - start + l) };
    let only = coarseOf(start);
    const theirsAsked = asked.get(start)!;
    asked.delete(start);
    let local = await compareChecksums(reader, levels[0], keys, only);
    let theirs = await theirsAsked;
    for (let level = 0; ; level++) {
      const differ = diffBlocks(local, theirs);
      if (differ.length === 0) return;
      if (level === levels.length - 1) {
        yield* runsAsExtents(differ, buf, start, filled);
        return;
      }
      const next = levels[level + 1];
      only = blocksWithin(differ, levels[level], next, start + filled);
      const remoteOnly = only.filter((i) => i * next < theirs.size);
      [local, theirs] = await Promise.all([compareChecksums(reader, next, keys, only), remote(next, remoteOnly)]);
    }
  }

  let expect = 0;
  for await (const e of extents) {
    if (e.offset !== expect) throw new TerminalError('invalid-argument', `compare: extents skip from ${expect} to ${e.offset}`);
    const length = 'zero' in e ? e.length : e.data.length;
    expect += length;
    for (let done = 0; done < length; ) {
      const n = Math.min(length - done, buf.length - filled);
      if ('zero' in e) buf.fill(0, filled, filled + n);
      else e.data.copy(buf, filled, done, done + n);
      filled += n;
      done += n;
      if (filled === buf.length) {
        yield* flush();
        start += filled;
        filled = 0;
        ask(start);
        ask(start + buf.length);
      }
    }
  }
  if (expect !== size) throw new TerminalError('invalid-argument', `compare: extents cover ${expect} of ${size} bytes`);
  if (filled > 0) yield* flush();
}

/** Runs of differing 4 KiB blocks as extents of the window's bytes: all-zero runs as zero extents. */
function* runsAsExtents(blocks: readonly number[], buf: Buffer, start: number, filled: number): Generator<Extent> {
  const zero = Buffer.alloc(BLOCK_SIZE);
  const isZero = (b: number) => {
    const at = b * BLOCK_SIZE - start;
    const end = Math.min(at + BLOCK_SIZE, filled);
    return buf.compare(zero, 0, end - at, at, end) === 0;
  };
  for (let i = 0; i < blocks.length; ) {
    const z = isZero(blocks[i]);
    let n = 1;
    while (i + n < blocks.length && blocks[i + n] === blocks[i] + n && isZero(blocks[i + n]) === z) n++;
    const offset = blocks[i] * BLOCK_SIZE;
    const end = Math.min((blocks[i] + n) * BLOCK_SIZE, start + filled);
    // A copy: the window's buffer is overwritten by the next window while the log may still hold this.
    yield z ? { offset, length: end - offset, zero: true } : { offset, data: Buffer.from(buf.subarray(offset - start, end - start)) };
    i += n;
  }
}
