// Block checksums for resync and existing-replica copies: the blocks reported different are
// exactly the blocks changed, with whole-disk digests (keyed or not) and with the multi-level
// compare's short keyed digests.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { RawDisk } from '../../../src/core/disk/disk.ts';
import {
  blockChecksums, diffBlocks, differingBlocks, blocksWithin, digestsFromJSON, digestsToJSON, COARSE_BLOCK_SIZE,
  compareChecksums, compareKeys, compareRequestFromJSON, compareRequestToJSON, COMPARE_DIGEST_BYTES, COMPARE_LEVELS,
} from '../../../src/core/replication/block-checksums.ts';
import { BLOCK_SIZE } from '../../../src/core/types.ts';
import { TerminalError } from '../../../src/model/errors.ts';
import { tempDir, prng, random } from '../helpers.ts';

const MiB = 1 << 20;
const SIZE = 64 * MiB;
let dir: string;
let cleanup: () => Promise<void>;
let local: RawDisk;
let remote: RawDisk;
let changed: number[];

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('checksums'));
  const content = random(SIZE);
  await writeFile(join(dir, 'local.raw'), content);
  const rnd = prng(11);
  const set = new Set<number>();
  while (set.size < 300) set.add(Math.floor(rnd() * (SIZE / BLOCK_SIZE)));
  changed = [...set].sort((a, b) => a - b);
  for (const b of changed) content[b * BLOCK_SIZE + Math.floor(rnd() * BLOCK_SIZE)] ^= 0x5a; // one byte per block
  await writeFile(join(dir, 'remote.raw'), content);
  local = await RawDisk.open(join(dir, 'local.raw'), { readOnly: true });
  remote = await RawDisk.open(join(dir, 'remote.raw'), { readOnly: true });
});
afterAll(async () => {
  await local.close();
  await remote.close();
  await cleanup();
});

describe('block checksums', () => {
  it('reports exactly the changed 4 KiB blocks of a 64 MiB disk', async () => {
    const t0 = performance.now();
    const l = await blockChecksums(local);
    const ms = performance.now() - t0;
    const r = await blockChecksums(remote);
    expect(l.digests.length).toBe((SIZE / BLOCK_SIZE) * 32);
    expect(diffBlocks(l, r)).toEqual(changed);
    expect(diffBlocks(l, l)).toEqual([]);
    console.log(`blockChecksums: 64 MiB at 4 KiB in ${ms.toFixed(0)} ms (${(64 / (ms / 1000)).toFixed(0)} MiB/s)`);
  });

  it('keyed digests depend on the key and still find exactly the changed blocks', async () => {
    const key = random(32);
    const t0 = performance.now();
    const l = await blockChecksums(local, BLOCK_SIZE, key);
    const ms = performance.now() - t0;
    const r = await blockChecksums(remote, BLOCK_SIZE, key);
    expect(diffBlocks(l, r)).toEqual(changed);
    const other = await blockChecksums(local, BLOCK_SIZE, random(32), [0, 1]);
    expect(other.digests.equals(l.digests.subarray(0, 64))).toBe(false);
    expect(() => diffBlocks(l, { ...r, keyed: false })).toThrow(TerminalError);
    // Standard HMAC-SHA-256, so any implementation on the other side agrees.
    const first = await local.read(0, BLOCK_SIZE);
    expect(l.digests.subarray(0, 32).equals(createHmac('sha256', key).update(first).digest())).toBe(true);
    const longKey = random(100);
    const lk = await blockChecksums(local, BLOCK_SIZE, longKey, [0]);
    expect(lk.digests.equals(createHmac('sha256', longKey).update(first).digest())).toBe(true);
    console.log(`blockChecksums keyed (HMAC-SHA-256): 64 MiB at 4 KiB in ${ms.toFixed(0)} ms`);
  });

  it('the multi-level compare (64 KiB, then 4 KiB) gives the same blocks, through JSON', async () => {
    const key = random(32);
    const keys = compareKeys(key);
    const asked: { blockSize: number; blocks: number }[] = [];
    const ask = async (bs: number, only?: readonly number[]) => {
      const req = compareRequestFromJSON(JSON.parse(JSON.stringify(compareRequestToJSON({ blockSize: bs, ...(only && { only }) }))));
      asked.push({ blockSize: bs, blocks: req.only?.length ?? -1 });
      return digestsFromJSON(JSON.parse(JSON.stringify(digestsToJSON(await compareChecksums(remote, req.blockSize, keys, req.only)))));
    };
    const t0 = performance.now();
    expect(await differingBlocks(local, ask, key)).toEqual(changed);
    const ms = performance.now() - t0;
    expect(asked.map((a) => a.blockSize)).toEqual([...COMPARE_LEVELS]);
    const cs = COMPARE_LEVELS[0];
    const coarse = diffBlocks(await compareChecksums(local, cs, keys), await ask(cs));
    expect(coarse).toEqual([...new Set(changed.map((b) => Math.floor((b * BLOCK_SIZE) / cs)))]);
    // Only the coarse blocks that differ are refined to 4 KiB.
    expect(asked[COMPARE_LEVELS.length - 1].blocks).toBe(coarse.length * (cs / BLOCK_SIZE));
    expect(blocksWithin([1], COARSE_BLOCK_SIZE, BLOCK_SIZE, SIZE)).toHaveLength(256);
    console.log(`multi-level compare: 64 MiB, ${changed.length} blocks changed, in ${ms.toFixed(0)} ms (both sides in this process)`);
  });

  it('compare digests are short, keyed, and depend on position only through content', async () => {
    const keys = compareKeys(random(32));
    for (const bs of COMPARE_LEVELS) {
      const d = await compareChecksums(local, bs, keys, [0, 1, 2]);
      expect(d.digests.length).toBe(3 * COMPARE_DIGEST_BYTES);
      expect(d.digestBytes).toBe(COMPARE_DIGEST_BYTES);
      const other = await compareChecksums(local, bs, compareKeys(random(32)), [0, 1, 2]);
      expect(other.digests.equals(d.digests)).toBe(false);
      // The same bytes give the same digest wherever they are (zero blocks, here).
      const zeroes = { size: 3 * bs, read: (_o: number, l: number) => Promise.resolve(Buffer.alloc(l)) };
      const z = await compareChecksums(zeroes, bs, keys);
      expect(z.digests.subarray(0, 8).equals(z.digests.subarray(8, 16))).toBe(true);
      // Mixing schemes is refused rather than compared.
      const full = await blockChecksums(local, bs, random(32), [0, 1, 2]);
      expect(() => diffBlocks(d, full)).toThrow(TerminalError);
    }
    expect(() => compareRequestFromJSON({ blockSize: 12345 })).toThrow(/blockSize must be one of/);
    expect(() => compareRequestFromJSON({ blockSize: 4096, runs: [1] })).toThrow(/pairs/);
  });

  it('a size difference makes the blocks past the smaller end differ', async () => {
    const a = { size: 10 * BLOCK_SIZE + 512, read: (o: number, l: number) => Promise.resolve(Buffer.alloc(l)) };
    const b = { size: 12 * BLOCK_SIZE, read: (o: number, l: number) => Promise.resolve(Buffer.alloc(l)) };
    expect(diffBlocks(await blockChecksums(a), await blockChecksums(b))).toEqual([10, 11]);
  });

  it('rejects JSON whose digests do not match the declared blocks', () => {
    expect(() => digestsFromJSON({ blockSize: 4096, size: 8192, keyed: false, digests: Buffer.alloc(32).toString('base64') })).toThrow(/32 digest bytes where 64/);
  });
});
