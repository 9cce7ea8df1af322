// Fixed-block checksums for resync and existing-replica initial copy: both sides digest the same
// blocks, only the blocks whose digests differ ship. Keyed (HMAC-SHA-256) when a key is given,
// because a peer that can choose block contents could otherwise aim for collisions.
import { createHash, hash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { TerminalError } from '../model/errors.ts';
import { BLOCK_SIZE } from './types.ts';

export const DIGEST_BYTES = 32;
/** Coarse layer of the two-level compare: 1 MiB blocks, refined to 4 KiB where they differ. */
export const COARSE_BLOCK_SIZE = 1 << 20;
const READ_CHUNK = 8 << 20;

export interface BlockReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface BlockDigests {
  readonly blockSize: number;
  /** Size in bytes of the device digested (blocks past it do not exist). */
  readonly size: number;
  readonly keyed: boolean;
  /** Block indexes covered, ascending; undefined means every block of the device. */
  readonly indexes?: readonly number[];
  /** DIGEST_BYTES per covered block, in the order of `indexes` (or of the blocks). */
  readonly digests: Buffer;
}

export interface BlockDigestsJSON {
  blockSize: number;
  size: number;
  keyed: boolean;
  indexes?: number[];
  digests: string;
}

/**
 * Digests of every block of `reader` (or only of `only`, ascending block indexes), read in large
 * chunks. The last block may be short; its digest covers the bytes that exist.
 */
export async function blockChecksums(
  reader: BlockReader,
  blockSize: number = BLOCK_SIZE,
  keyed?: Buffer,
  only?: readonly number[],
): Promise<BlockDigests> {
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0 || READ_CHUNK % blockSize !== 0) {
    throw new TerminalError('invalid-argument', `checksum block size ${blockSize} must divide ${READ_CHUNK}`);
  }
  const count = Math.ceil(reader.size / blockSize);
  const indexes = only ? [...only] : undefined;
  if (indexes) {
    for (let i = 0; i < indexes.length; i++) {
      if (indexes[i] < 0 || indexes[i] >= count || (i > 0 && indexes[i] <= indexes[i - 1])) {
        throw new TerminalError('invalid-argument', `checksum block list must be ascending indexes below ${count}; got ${indexes[i]} at position ${i}`);
      }
    }
  }
  const digests = Buffer.allocUnsafe((indexes?.length ?? count) * DIGEST_BYTES);
  const digest = keyed ? hmacSha256(keyed) : (block: Buffer): Buffer => hash('sha256', block, 'buffer');
  const perChunk = READ_CHUNK / blockSize;
  let out = 0;
  // Runs of consecutive blocks, at most one chunk long, each read with one call.
  const readRun = (run: { start: number; count: number }) => {
    const at = run.start * blockSize;
    return reader.read(at, Math.min(run.count * blockSize, reader.size - at));
  };
  const runs = [...runsOf(indexes, count, perChunk)];
  let next = runs.length ? readRun(runs[0]) : undefined;
  for (let r = 0; r < runs.length; r++) {
    const buf = await next!;
    // Read ahead: the next chunk loads while this one is hashed.
    next = r + 1 < runs.length ? readRun(runs[r + 1]) : undefined;
    for (let i = 0; i < buf.length; i += blockSize) {
      digest(buf.subarray(i, Math.min(i + blockSize, buf.length))).copy(digests, out * DIGEST_BYTES);
      out++;
    }
  }
  return { blockSize, size: reader.size, keyed: !!keyed, indexes, digests };
}

/**
 * Block indexes whose content differs between the two sides: different digests, covered by one
 * side only, or past the end of the smaller device. Both must use the same block size and key.
 */
export function diffBlocks(local: BlockDigests, remote: BlockDigests): number[] {
  if (local.blockSize !== remote.blockSize || local.keyed !== remote.keyed) {
    throw new TerminalError(
      'invalid-argument',
      `cannot compare checksums of ${local.blockSize}-byte ${local.keyed ? 'keyed' : 'plain'} blocks with ${remote.blockSize}-byte ${remote.keyed ? 'keyed' : 'plain'} blocks`,
    );
  }
  const bs = local.blockSize;
  const shortBlock = (size: number) => (size % bs !== 0 ? Math.floor(size / bs) : -1);
  // A block short on one side only (sizes differ) differs even if the bytes present match.
  const lengthsDiffer = (i: number) => local.size !== remote.size && (i === shortBlock(local.size) || i === shortBlock(remote.size));
  const out: number[] = [];
  if (!local.indexes && !remote.indexes) {
    // Whole-device digests: compare in place, no maps (a large disk has millions of blocks).
    const ln = local.digests.length / DIGEST_BYTES;
    const rn = remote.digests.length / DIGEST_BYTES;
    for (let i = 0; i < Math.max(ln, rn); i++) {
      const o = i * DIGEST_BYTES;
      const same = i < ln && i < rn && local.digests.compare(remote.digests, o, o + DIGEST_BYTES, o, o + DIGEST_BYTES) === 0;
      if (!same || lengthsDiffer(i)) out.push(i);
    }
    return out;
  }
  const l = digestMap(local);
  const r = digestMap(remote);
  const all = new Set<number>([...l.keys(), ...r.keys()]);
  for (const i of [...all].sort((a, b) => a - b)) {
    const a = l.get(i);
    const b = r.get(i);
    if (!a || !b || !a.equals(b) || lengthsDiffer(i)) out.push(i);
  }
  return out;
}

/** The fine block indexes inside the given coarse blocks, limited to a device of `size` bytes. */
export function blocksWithin(coarse: readonly number[], coarseSize: number, fineSize: number, size: number): number[] {
  if (coarseSize % fineSize !== 0) throw new TerminalError('invalid-argument', `coarse block ${coarseSize} is not a multiple of ${fineSize}`);
  const per = coarseSize / fineSize;
  const last = Math.ceil(size / fineSize);
  const out: number[] = [];
  for (const c of coarse) for (let i = c * per; i < Math.min((c + 1) * per, last); i++) out.push(i);
  return out;
}

/** Asks the other side for digests of `blockSize` blocks (all of them, or only the listed ones). */
export type RemoteDigests = (blockSize: number, only?: readonly number[]) => Promise<BlockDigests>;

/**
 * The two-level compare: 1 MiB digests first (32 bytes per MiB on the wire), then 4 KiB digests
 * only inside the 1 MiB blocks that differ. Returns the differing 4 KiB block indexes.
 */
export async function differingBlocks(local: BlockReader, remote: RemoteDigests, keyed?: Buffer): Promise<number[]> {
  const [lc, rc] = await Promise.all([blockChecksums(local, COARSE_BLOCK_SIZE, keyed), remote(COARSE_BLOCK_SIZE)]);
  const coarse = diffBlocks(lc, rc);
  if (coarse.length === 0) return [];
  const size = Math.max(local.size, rc.size);
  const fine = blocksWithin(coarse, COARSE_BLOCK_SIZE, BLOCK_SIZE, size);
  const localFine = fine.filter((i) => i * BLOCK_SIZE < local.size);
  const remoteFine = fine.filter((i) => i * BLOCK_SIZE < rc.size);
  const [lf, rf] = await Promise.all([blockChecksums(local, BLOCK_SIZE, keyed, localFine), remote(BLOCK_SIZE, remoteFine)]);
  return diffBlocks(lf, rf);
}

export function digestsToJSON(d: BlockDigests): BlockDigestsJSON {
  return { blockSize: d.blockSize, size: d.size, keyed: d.keyed, ...(d.indexes ? { indexes: [...d.indexes] } : {}), digests: d.digests.toString('base64') };
}

export function digestsFromJSON(j: BlockDigestsJSON): BlockDigests {
  const digests = Buffer.from(j.digests, 'base64');
  const expected = (j.indexes?.length ?? Math.ceil(j.size / j.blockSize)) * DIGEST_BYTES;
  if (digests.length !== expected) {
    throw new TerminalError('integrity', `block checksums: ${digests.length} digest bytes where ${expected} were expected`);
  }
  return { blockSize: j.blockSize, size: j.size, keyed: j.keyed, indexes: j.indexes, digests };
}

/**
 * HMAC-SHA-256 (RFC 2104) with the padded-key states absorbed once and cloned per block: the same
 * digests as createHmac, about 3x faster on 4 KiB blocks since the key is not re-processed.
 */
function hmacSha256(key: Buffer): (block: Buffer) => Buffer {
  const k = Buffer.alloc(64);
  (key.length > 64 ? createHash('sha256').update(key).digest() : key).copy(k);
  const inner: Hash = createHash('sha256').update(k.map((x) => x ^ 0x36));
  const outer: Hash = createHash('sha256').update(k.map((x) => x ^ 0x5c));
  return (block) => outer.copy().update(inner.copy().update(block).digest()).digest();
}

function digestMap(d: BlockDigests): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  const n = d.digests.length / DIGEST_BYTES;
  for (let k = 0; k < n; k++) m.set(d.indexes ? d.indexes[k] : k, d.digests.subarray(k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES));
  return m;
}

function* runsOf(indexes: readonly number[] | undefined, count: number, max: number): Generator<{ start: number; count: number }> {
  if (!indexes) {
    for (let s = 0; s < count; s += max) yield { start: s, count: Math.min(max, count - s) };
    return;
  }
  let start = -1;
  let n = 0;
  for (const i of indexes) {
    if (start >= 0 && i === start + n && n < max) n++;
    else {
      if (start >= 0) yield { start, count: n };
      start = i;
      n = 1;
    }
  }
  if (start >= 0) yield { start, count: n };
}
