// The resync's streaming compare: from a cut's extents (data and zero runs, any split), exactly the
// blocks that differ from the replica come out, zero blocks as zero extents, across windows and
// with a short last block; applied to the replica's bytes they give the primary's.
import { describe, it, expect } from 'vitest';
import { compareChecksums, compareKeys, COMPARE_LEVELS, type RemoteDigests } from '../../../src/core/replication/block-checksums.ts';
import { differingExtents } from '../../../src/core/replication/differing-extents.ts';
import { BLOCK_SIZE, type Extent } from '../../../src/core/types.ts';
import { TerminalError } from '../../../src/model/errors.ts';
import { prng, random } from '../helpers.ts';

const MiB = 1 << 20;

function memReader(buf: Buffer) {
  return { size: buf.length, read: async (o: number, l: number) => buf.subarray(o, o + l) };
}

/** `buf` as a cut yields it: zero runs of whole blocks as zero extents, the rest as data extents of `piece` bytes. */
function* asExtents(buf: Buffer, piece: number): Generator<Extent> {
  const zero = Buffer.alloc(BLOCK_SIZE);
  for (let at = 0; at < buf.length; ) {
    const end = Math.min(at + piece, buf.length);
    let z = at;
    while (z < end && z + BLOCK_SIZE <= buf.length && buf.compare(zero, 0, BLOCK_SIZE, z, z + BLOCK_SIZE) === 0) z += BLOCK_SIZE;
    if (z > at) {
      yield { offset: at, length: Math.min(z, end) - at, zero: true };
      at = Math.min(z, end);
      continue;
    }
    yield { offset: at, data: Buffer.from(buf.subarray(at, end)) };
    at = end;
  }
}

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

async function* from(it: Iterable<Extent>): AsyncGenerator<Extent> {
  yield* it;
}

describe('differingExtents', () => {
  it('yields exactly the changed blocks, zero blocks as zero extents, across windows', async () => {
    const size = 9 * MiB + 5 * BLOCK_SIZE + 100; // a short last block
    const replica = random(size);
    replica.fill(0, 2 * MiB, 3 * MiB); // a zero region on the replica
    const primary = Buffer.from(replica);
    const rnd = prng(5);
    const changed = new Set<number>();
    const blocks = Math.ceil(size / BLOCK_SIZE);
    while (changed.size < 90) changed.add(Math.floor(rnd() * blocks));
    changed.add(blocks - 1);
    for (const b of changed) primary[b * BLOCK_SIZE + Math.floor(rnd() * Math.min(BLOCK_SIZE, size - b * BLOCK_SIZE))] ^= 0x77;
    // Blocks zeroed on the primary: they must come out as zero extents.
    for (const b of [1000, 1001, 1002, 1500]) {
      primary.fill(0, b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
      changed.add(b);
    }
    const key = random(32);
    const keys = compareKeys(key);
    const asked: number[] = [];
    const remote: RemoteDigests = async (bs, only) => {
      asked.push(bs);
      return compareChecksums(memReader(replica), bs, keys, only);
    };
    const out = await collect(differingExtents(from(asExtents(primary, 3 * MiB + 4096)), size, remote, key, { windowBytes: 2 * MiB }));

    const got: number[] = [];
    const rebuilt = Buffer.from(replica);
    for (const e of out) {
      const len = 'zero' in e ? e.length : e.data.length;
      for (let b = e.offset / BLOCK_SIZE; b < (e.offset + len) / BLOCK_SIZE; b++) got.push(b);
      if ('zero' in e) rebuilt.fill(0, e.offset, e.offset + e.length);
      else e.data.copy(rebuilt, e.offset);
    }
    const want = [...changed].sort((a, b) => a - b);
    expect(got).toEqual(want);
    expect(rebuilt.equals(primary)).toBe(true);
    const zeroed = out.filter((e) => 'zero' in e);
    expect(zeroed).toEqual([{ offset: 1000 * BLOCK_SIZE, length: 3 * BLOCK_SIZE, zero: true }, { offset: 1500 * BLOCK_SIZE, length: BLOCK_SIZE, zero: true }]);
    // A coarse request per window, a fine one per window with a difference.
    expect(asked.filter((bs) => bs === COMPARE_LEVELS[0])).toHaveLength(Math.ceil(size / (2 * MiB)));
  });

  it('yields nothing for identical content, asking only for coarse digests, window by window', async () => {
    const size = 4 * MiB + 3 * BLOCK_SIZE;
    const data = random(size);
    const key = random(32);
    const keys = compareKeys(key);
    const asked: { bs: number; first?: number; n?: number }[] = [];
    const remote: RemoteDigests = (bs, only) => {
      asked.push({ bs, first: only?.[0], n: only?.length });
      return compareChecksums(memReader(data), bs, keys, only);
    };
    expect(await collect(differingExtents(from(asExtents(data, MiB)), size, remote, key, { windowBytes: 2 * MiB }))).toEqual([]);
    const per = (2 * MiB) / COMPARE_LEVELS[0];
    expect(asked).toEqual([
      { bs: COMPARE_LEVELS[0], first: 0, n: per },
      { bs: COMPARE_LEVELS[0], first: per, n: per },
      { bs: COMPARE_LEVELS[0], first: 2 * per, n: 1 },
    ]);
  });

  it('a replica compared under another key differs everywhere; gaps in the extents are refused', async () => {
    const size = 2 * MiB;
    const data = random(size);
    const key = random(32);
    const other = compareKeys(random(32));
    const remote: RemoteDigests = (bs, only) => compareChecksums(memReader(data), bs, other, only);
    const out = await collect(differingExtents(from(asExtents(data, MiB)), size, remote, key));
    expect(out.reduce((n, e) => n + ('zero' in e ? e.length : e.data.length), 0)).toBe(size);
    const gap = from([{ offset: 0, data: data.subarray(0, MiB) }, { offset: MiB + BLOCK_SIZE, data: data.subarray(0, BLOCK_SIZE) }]);
    const same: RemoteDigests = (bs, only) => compareChecksums(memReader(data), bs, compareKeys(key), only);
    await expect(collect(differingExtents(gap, size, same, key))).rejects.toThrow(TerminalError);
  });
});
