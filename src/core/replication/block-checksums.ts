// Fixed-block checksums for resync and existing-replica initial copy: both sides digest the same
// blocks, only the blocks whose digests differ ship. Two schemes: full HMAC-SHA-256 (or SHA-256)
// digests of 4 KiB blocks (stored beside Azure disks, so fixed), and the short keyed digests of the
// multi-level compare between agents (64 KiB blocks, then 4 KiB blocks only where those differ).
// Keyed because a guest that can choose block contents could otherwise aim for collisions.
import { createCipheriv, createHash, createHmac, hash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { TerminalError } from '../../model/errors.ts';
import { BLOCK_SIZE } from '../types.ts';

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
  /** `digestBytes` (default DIGEST_BYTES) per covered block, in the order of `indexes` (or of the blocks). */
  readonly digests: Buffer;
  /** COMPARE_DIGEST_BYTES for the multi-level compare's digests; absent for (HMAC-)SHA-256. */
  readonly digestBytes?: number;
}

export interface BlockDigestsJSON {
  blockSize: number;
  size: number;
  keyed: boolean;
  indexes?: number[];
  /** Compare digests list their blocks as flat (start, count) pairs instead: far shorter. */
  runs?: number[];
  digests: string;
  digestBytes?: number;
}

/** A request for compare digests: the level's block size and the blocks (default: all). */
export interface CompareRequest {
  readonly blockSize: number;
  readonly only?: readonly number[];
}

export interface CompareRequestJSON {
  blockSize: number;
  runs?: number[];
}

export function compareRequestToJSON(r: CompareRequest): CompareRequestJSON {
  return { blockSize: r.blockSize, ...(r.only && { runs: indexesToRuns(r.only) }) };
}

/** Validates a compare request from the wire (block size one of COMPARE_LEVELS, runs well formed). */
export function compareRequestFromJSON(j: unknown): CompareRequest {
  const o = (j ?? {}) as Partial<CompareRequestJSON>;
  if (typeof o.blockSize !== 'number' || !COMPARE_LEVELS.includes(o.blockSize)) {
    throw new TerminalError('invalid-argument', `compare request: blockSize must be one of ${COMPARE_LEVELS.join(', ')}, got ${JSON.stringify(o.blockSize)}`);
  }
  return { blockSize: o.blockSize, ...(o.runs !== undefined && { only: runsToIndexes(o.runs, 'compare request') }) };
}

/** Ascending block indexes as flat (start, count) pairs. */
export function indexesToRuns(indexes: readonly number[]): number[] {
  const runs: number[] = [];
  for (const i of indexes) {
    const n = runs.length;
    if (n && runs[n - 2] + runs[n - 1] === i) runs[n - 1]++;
    else runs.push(i, 1);
  }
  return runs;
}

function runsToIndexes(runs: unknown, what: string): number[] {
  if (!Array.isArray(runs) || runs.length % 2 !== 0 || !runs.every((v) => Number.isSafeInteger(v) && v >= 0)) {
    throw new TerminalError('invalid-argument', `${what}: runs must be (start, count) pairs of non-negative integers`);
  }
  const out: number[] = [];
  for (let k = 0; k < runs.length; k += 2) {
    if (out.length + runs[k + 1] > 1 << 26) throw new TerminalError('invalid-argument', `${what}: more than ${1 << 26} blocks`);
    for (let i = 0; i < runs[k + 1]; i++) out.push(runs[k] + i);
  }
  return out;
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
  const digest = keyed ? hmacSha256(keyed) : (block: Buffer): Buffer => hash('sha256', block, 'buffer');
  const d = await digestBlocks(reader, blockSize, only, DIGEST_BYTES, (buf, out, at) => {
    let k = 0;
    for (let i = 0; i < buf.length; i += blockSize, k++) digest(buf.subarray(i, Math.min(i + blockSize, buf.length))).copy(out, (at + k) * DIGEST_BYTES);
    return k;
  });
  return { ...d, keyed: !!keyed };
}

/**
 * Reads the covered blocks in runs of at most READ_CHUNK (the next run loads while this one is
 * digested) and lets `digestRun` write the digests of each run's blocks from position `at` on.
 */
async function digestBlocks(
  reader: BlockReader,
  blockSize: number,
  only: readonly number[] | undefined,
  digestBytes: number,
  digestRun: (buf: Buffer, out: Buffer, at: number) => number,
): Promise<{ blockSize: number; size: number; indexes?: readonly number[]; digests: Buffer }> {
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
  const digests = Buffer.allocUnsafe((indexes?.length ?? count) * digestBytes);
  const readRun = (run: { start: number; count: number }) => {
    const at = run.start * blockSize;
    return reader.read(at, Math.min(run.count * blockSize, reader.size - at));
  };
  const runs = [...runsOf(indexes, count, READ_CHUNK / blockSize)];
  let next = runs.length ? readRun(runs[0]) : undefined;
  let out = 0;
  for (let r = 0; r < runs.length; r++) {
    const buf = await next!;
    next = r + 1 < runs.length ? readRun(runs[r + 1]) : undefined;
    out += digestRun(buf, digests, out);
  }
  return { blockSize, size: reader.size, ...(indexes && { indexes }), digests };
}

/**
 * Block indexes whose content differs between the two sides: different digests, covered by one
 * side only, or past the end of the smaller device. Both must use the same block size and key.
 */
export function diffBlocks(local: BlockDigests, remote: BlockDigests): number[] {
  const db = local.digestBytes ?? DIGEST_BYTES;
  if (local.blockSize !== remote.blockSize || local.keyed !== remote.keyed || db !== (remote.digestBytes ?? DIGEST_BYTES)) {
    const what = (d: BlockDigests) => `${d.blockSize}-byte ${d.keyed ? 'keyed' : 'plain'} blocks (${d.digestBytes ?? DIGEST_BYTES}-byte digests)`;
    throw new TerminalError('invalid-argument', `cannot compare checksums of ${what(local)} with ${what(remote)}`);
  }
  const bs = local.blockSize;
  const shortBlock = (size: number) => (size % bs !== 0 ? Math.floor(size / bs) : -1);
  // A block short on one side only (sizes differ) differs even if the bytes present match.
  const lengthsDiffer = (i: number) => local.size !== remote.size && (i === shortBlock(local.size) || i === shortBlock(remote.size));
  const out: number[] = [];
  const li = local.indexes;
  const ri = remote.indexes;
  if ((!li && !ri) || (li && ri && li.length === ri.length && li.every((v, k) => v === ri[k]))) {
    // The same blocks on both sides (the whole device, or one list): compare in place, no maps
    // (a large disk has millions of blocks).
    const ln = local.digests.length / db;
    const rn = remote.digests.length / db;
    for (let k = 0; k < Math.max(ln, rn); k++) {
      const o = k * db;
      const same = k < ln && k < rn && local.digests.compare(remote.digests, o, o + db, o, o + db) === 0;
      const i = li ? li[k] : k;
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

/** Asks the other side for compare digests of `blockSize` blocks (all of them, or only the listed ones). */
export type RemoteDigests = (blockSize: number, only?: readonly number[]) => Promise<BlockDigests>;

/**
 * The multi-level compare: keyed digests of every 64 KiB block on both sides at once, then of the
 * 4 KiB blocks only inside the 64 KiB blocks that differed (COMPARE_LEVELS). Returns
 * the differing 4 KiB block indexes. `remote` answers with `compareChecksums` under the same key.
 */
export async function differingBlocks(local: BlockReader, remote: RemoteDigests, macKey: Buffer): Promise<number[]> {
  const keys = compareKeys(macKey);
  let localOnly: number[] | undefined;
  let remoteOnly: number[] | undefined;
  for (let level = 0; ; level++) {
    const bs = COMPARE_LEVELS[level];
    const [l, r] = await Promise.all([compareChecksums(local, bs, keys, localOnly), remote(bs, remoteOnly)]);
    const differ = diffBlocks(l, r);
    if (differ.length === 0 || level === COMPARE_LEVELS.length - 1) return differ;
    const next = COMPARE_LEVELS[level + 1];
    const fine = blocksWithin(differ, bs, next, Math.max(local.size, r.size));
    localOnly = fine.filter((i) => i * next < local.size);
    remoteOnly = fine.filter((i) => i * next < r.size);
  }
}

/** Block sizes of the multi-level compare, coarsest first; the last is BLOCK_SIZE. */
// Two levels, not three: one pass of 64 KiB GMAC over the disk costs about one read of it, and a
// 1 MiB level first would send every 64 KiB region with a change through a second read (at 1%
// random 4 KiB changes nearly every 1 MiB block differs).
export const COMPARE_LEVELS: readonly number[] = [64 << 10, BLOCK_SIZE];
/**
 * Bytes of a compare digest. 64 bits of a keyed function: a changed block goes unnoticed with
 * probability 2^-64, and since the key is secret per relationship a guest cannot aim for that.
 */
export const COMPARE_DIGEST_BYTES = 8;
// GMAC's nonce is fixed on purpose: the tag is then a pure (keyed) function of the block, as a
// compare needs. GHASH alone is a universal hash whose key could be recovered from tags, so each
// tag is encrypted once more (AES, another key): universal hash then PRF, a standard MAC shape.
const GMAC_NONCE = Buffer.alloc(12);
/** Blocks at least this large use GMAC (one call runs at memory speed); smaller ones keyed SHA-256 (cheaper per call). */
const GMAC_MIN_BLOCK = 64 << 10;

/** Subkeys of the multi-level compare, derived from the relationship's MAC key. */
export interface CompareKeys {
  readonly gmac: Buffer;
  readonly prf: Buffer;
  readonly prefix: Buffer;
}

export function compareKeys(macKey: Buffer): CompareKeys {
  const sub = (label: string) => createHmac('sha256', macKey).update(`drsite compare v1 ${label}`).digest();
  return { gmac: sub('gmac'), prf: sub('prf'), prefix: Buffer.concat([sub('prefix'), sub('prefix2')]) };
}

/**
 * Compare digests (COMPARE_DIGEST_BYTES each) of every `blockSize` block of `reader`, or only of
 * `only` (ascending indexes). Blocks of 64 KiB and more: AES-GMAC with a fixed nonce, the tag
 * encrypted with AES under a second key, truncated. Smaller blocks: SHA-256 of a 64-byte secret
 * prefix and the block, truncated (a PRF for fixed-length input). The last block may be short.
 */
export async function compareChecksums(reader: BlockReader, blockSize: number, keys: CompareKeys, only?: readonly number[]): Promise<BlockDigests> {
  const gmac = blockSize >= GMAC_MIN_BLOCK;
  const stage = Buffer.allocUnsafe(gmac ? 16 * (READ_CHUNK / blockSize) : keys.prefix.length + blockSize);
  if (!gmac) keys.prefix.copy(stage);
  const d = await digestBlocks(reader, blockSize, only, COMPARE_DIGEST_BYTES, (buf, out, at) => {
    const n = Math.ceil(buf.length / blockSize);
    for (let k = 0; k < n; k++) {
      const block = buf.subarray(k * blockSize, Math.min((k + 1) * blockSize, buf.length));
      if (gmac) {
        const c = createCipheriv('aes-256-gcm', keys.gmac, GMAC_NONCE);
        c.setAAD(block);
        c.final();
        c.getAuthTag().copy(stage, k * 16);
      } else {
        // prefix || block in one buffer: one hash call per block, the cheapest per call.
        block.copy(stage, keys.prefix.length);
        hash('sha256', stage.subarray(0, keys.prefix.length + block.length), 'buffer').copy(out, (at + k) * COMPARE_DIGEST_BYTES, 0, COMPARE_DIGEST_BYTES);
      }
    }
    if (gmac) {
      const ecb = createCipheriv('aes-256-ecb', keys.prf, null).setAutoPadding(false);
      const enc = ecb.update(stage.subarray(0, n * 16));
      for (let k = 0; k < n; k++) enc.copy(out, (at + k) * COMPARE_DIGEST_BYTES, k * 16, k * 16 + COMPARE_DIGEST_BYTES);
    }
    return n;
  });
  return { ...d, keyed: true, digestBytes: COMPARE_DIGEST_BYTES };
}

export function digestsToJSON(d: BlockDigests): BlockDigestsJSON {
  const listed = d.indexes && (d.digestBytes !== undefined ? { runs: indexesToRuns(d.indexes) } : { indexes: [...d.indexes] });
  return {
    blockSize: d.blockSize, size: d.size, keyed: d.keyed, ...listed, digests: d.digests.toString('base64'),
    ...(d.digestBytes !== undefined && { digestBytes: d.digestBytes }),
  };
}

export function digestsFromJSON(j: BlockDigestsJSON): BlockDigests {
  const digests = Buffer.from(j.digests, 'base64');
  const indexes = j.runs !== undefined ? runsToIndexes(j.runs, 'block checksums') : j.indexes;
  if (j.digestBytes !== undefined && j.digestBytes !== COMPARE_DIGEST_BYTES) {
    throw new TerminalError('integrity', `block checksums: ${j.digestBytes}-byte digests, only ${COMPARE_DIGEST_BYTES} (compare) or ${DIGEST_BYTES} are known`);
  }
  const expected = (indexes?.length ?? Math.ceil(j.size / j.blockSize)) * (j.digestBytes ?? DIGEST_BYTES);
  if (digests.length !== expected) {
    throw new TerminalError('integrity', `block checksums: ${digests.length} digest bytes where ${expected} were expected`);
  }
  return { blockSize: j.blockSize, size: j.size, keyed: j.keyed, indexes, digests, ...(j.digestBytes !== undefined && { digestBytes: j.digestBytes }) };
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
  const db = d.digestBytes ?? DIGEST_BYTES;
  const n = d.digests.length / db;
  for (let k = 0; k < n; k++) m.set(d.indexes ? d.indexes[k] : k, d.digests.subarray(k * db, (k + 1) * db));
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
