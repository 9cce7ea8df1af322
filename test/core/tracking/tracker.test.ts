// The tracker and the atomic cut on real image files: extents of a cut, applied to the previous
// image, give exactly the image as of the cut, while writes race with the cut and with its reading.
import { describe, it, expect, afterEach } from 'vitest';
import { copyFile, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { TrackedDisk } from '../../../src/core/tracking/tracker.ts';
import { cutVm, cutGroup } from '../../../src/core/tracking/cut.ts';
import { RawDisk, sha256File, sha256Device } from '../../../src/core/disk/disk.ts';
import { TerminalError } from '../../../src/model/errors.ts';
import { BLOCK_SIZE } from '../../../src/core/types.ts';
import { tempDir, applyExtents, collect, prng, random } from '../helpers.ts';

const MiB = 1 << 20;
const MAGIC = 0xd15c0001;
let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups) await c();
  cleanups = [];
});

async function scratch(prefix: string): Promise<string> {
  const t = await tempDir(prefix);
  cleanups.push(t.cleanup);
  return t.dir;
}

/** Base image: random bytes, but every block's first 8 bytes zero, so "seq 0" means untouched. */
function baseImage(size: number): Buffer {
  const b = random(size);
  for (let at = 0; at < size; at += BLOCK_SIZE) b.fill(0, at, at + 8);
  return b;
}

interface WriteRec {
  seq: number;
  offset: number;
  data: Buffer;
}

/** Each 4 KiB block of a write says which write it came from: magic, then the per-disk sequence. */
function stamped(seq: number, blocks: number): Buffer {
  const b = random(blocks * BLOCK_SIZE);
  for (let i = 0; i < blocks; i++) {
    b.writeUInt32BE(MAGIC, i * BLOCK_SIZE);
    b.writeUInt32BE(seq, i * BLOCK_SIZE + 4);
  }
  return b;
}

/** The highest write sequence visible in an image: the prefix of writes it must contain. */
function maxSeq(img: Buffer): number {
  let n = 0;
  for (let at = 0; at < img.length; at += BLOCK_SIZE) {
    if (img.readUInt32BE(at) === MAGIC) n = Math.max(n, img.readUInt32BE(at + 4));
  }
  return n;
}

function replay(base: Buffer, writes: WriteRec[], upTo: number): Buffer {
  const img = Buffer.from(base);
  for (const w of writes) if (w.seq <= upTo) w.data.copy(img, w.offset);
  return img;
}

describe('tracker and atomic cut', () => {
  it('ships exactly the image as of the cut for 2 disks cut atomically while writes race', async () => {
    const dir = await scratch('tracker');
    const size = 4 * MiB;
    const blocks = size / BLOCK_SIZE;
    const names = ['d0', 'd1'];
    const bases = names.map(() => baseImage(size));
    for (let i = 0; i < 2; i++) {
      await writeFile(join(dir, `${names[i]}.raw`), bases[i]);
      await copyFile(join(dir, `${names[i]}.raw`), join(dir, `${names[i]}.replica`));
    }
    // Disk 1 spills copy-before-write data to its side file almost at once.
    const disks = [
      await TrackedDisk.open(join(dir, 'd0.raw')),
      await TrackedDisk.open(join(dir, 'd1.raw'), { cbwMemoryLimit: 64 * 1024 }),
    ];
    expect(disks.map((d) => d.continuity)).toEqual(['lost', 'lost']); // no state file yet
    for (const d of disks) await d.clearDirty(); // the replicas are byte copies of the bases

    const log: WriteRec[][] = [[], []];
    const seqs = [0, 0];
    const completed = [0, 0];
    // Each writer awaits its writes in turn, so each write causally follows the previous one.
    const chains: { disk: number; seq: number }[][] = [];
    let stop = false;
    const rnd = prng(42);
    const write = async (disk: number, offsetBlock: number, n: number) => {
      const seq = ++seqs[disk];
      const data = stamped(seq, n);
      const rec = { seq, offset: offsetBlock * BLOCK_SIZE, data };
      log[disk].push(rec);
      const p = disks[disk].write(rec.offset, data); // queued synchronously: issue order = apply order
      await p;
      completed[disk] = Math.max(completed[disk], seq);
      return seq;
    };
    const writer = async (id: number) => {
      const chain: { disk: number; seq: number }[] = [];
      chains[id] = chain;
      while (!stop) {
        const disk = rnd() < 0.5 ? 0 : 1;
        const n = 1 + Math.floor(rnd() * 8);
        const at = Math.floor(rnd() * (blocks - n));
        chain.push({ disk, seq: await write(disk, at, n) });
      }
    };
    const writers = [0, 1, 2, 3].map((i) => writer(i));
    while (seqs[0] + seqs[1] < 400) await new Promise((r) => setImmediate(r));

    const mustContain = [...completed];
    const cut = await cutVm(disks, { cutId: 'cut-1', time: 1000 });
    const mayContain = [...seqs];

    // Writes to frozen blocks before the shipper reads them: copy-before-write must preserve them.
    for (let b = 0; b < blocks; b += 16) {
      await write(0, b, 1);
      await write(1, b, 1);
    }
    const shipped = [];
    for (let i = 0; i < 2; i++) {
      const replica = await RawDisk.open(join(dir, `${names[i]}.replica`));
      const slowly = async function* (src: AsyncIterable<import('../../../src/core/types.ts').Extent>) {
        for await (const e of src) {
          yield e;
          await new Promise((r) => setImmediate(r)); // let writers race with the read
        }
      };
      shipped.push(await applyExtents(replica, slowly(cut.disks[i].extents())));
      await replica.close();
    }
    await cut.release();
    stop = true;
    await Promise.all(writers);

    const included: number[] = [];
    for (let i = 0; i < 2; i++) {
      const replica = await RawDisk.open(join(dir, `${names[i]}.replica`), { readOnly: true });
      const img = await replica.read(0, size);
      await replica.close();
      const n = maxSeq(img);
      included.push(n);
      expect(n).toBeGreaterThanOrEqual(mustContain[i]);
      expect(n).toBeLessThanOrEqual(mayContain[i]);
      expect(img.equals(replay(bases[i], log[i], n))).toBe(true);
    }
    // Crash consistency across disks: a write in the cut implies every write it causally followed.
    for (const chain of chains) {
      let sawExcluded = false;
      for (const w of chain) {
        const inCut = w.seq <= included[w.disk];
        if (sawExcluded) expect(inCut, `write ${w.disk}#${w.seq} after an excluded one`).toBe(false);
        if (!inCut) sawExcluded = true;
      }
    }
    const stats = disks.map((d) => d.writeStats());
    expect(stats[0].cbwCopiedBytes).toBeGreaterThan(0);
    expect(stats[1].cbwSideFileBytes).toBeGreaterThan(0);
    await expect(access(join(dir, 'd1.raw.cbw'))).rejects.toThrow(); // side file dropped at release

    // Next cut: everything written after cut-1 (including during its read) and nothing else.
    const cut2 = await cutVm(disks, { cutId: 'cut-2', time: 2000 });
    for (let i = 0; i < 2; i++) {
      const replica = await RawDisk.open(join(dir, `${names[i]}.replica`));
      await applyExtents(replica, cut2.disks[i].extents());
      await replica.close();
    }
    await cut2.release();
    for (let i = 0; i < 2; i++) {
      await disks[i].flush();
      expect(await sha256File(join(dir, `${names[i]}.replica`))).toBe(await sha256Device(disks[i]));
      expect(await sha256File(join(dir, `${names[i]}.replica`))).toBe(await sha256Device({ size, read: (o, l) => Promise.resolve(replay(bases[i], log[i], Infinity).subarray(o, o + l)) }));
    }
    for (const d of disks) await d.close();
    expect(shipped[0].dataBytes).toBeGreaterThan(0);
  });

  it('handles sub-block writes, zeroes and a disk size that is not a multiple of 4 KiB', async () => {
    const dir = await scratch('tracker-odd');
    const size = 2 * MiB + 1536;
    const path = join(dir, 'odd.raw');
    const disk = await TrackedDisk.create(path, size);
    expect(disk.continuity).toBe('intact');
    await copyFile(path, join(dir, 'odd.replica'));
    const rnd = prng(7);
    const writeSome = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const len = 512 * (1 + Math.floor(rnd() * 24));
        const at = 512 * Math.floor(rnd() * ((size - len) / 512));
        if (rnd() < 0.2) await disk.writeZeroes(at, len);
        else await disk.write(at, random(len));
      }
      await disk.write(size - 512, random(512)); // the short last block
    };
    await writeSome(300);
    for (let round = 1; round <= 2; round++) {
      const cut = await cutVm([disk], { cutId: `c${round}`, time: round });
      await writeSome(50); // after the cut: must not leak into it, must show up in the next one
      const replica = await RawDisk.open(join(dir, 'odd.replica'));
      const before = await sha256Device(replica);
      const applied = await applyExtents(replica, cut.disks[0].extents());
      await replica.close();
      expect(applied.dataBytes + applied.zeroBytes).toBe(cut.disks[0].bytes);
      expect(await sha256File(join(dir, 'odd.replica'))).not.toBe(before);
      await cut.release();
    }
    const last = await cutVm([disk], { cutId: 'c3', time: 3 });
    const replica = await RawDisk.open(join(dir, 'odd.replica'));
    await applyExtents(replica, last.disks[0].extents());
    await last.release();
    expect(await sha256Device(replica)).toBe(await sha256Device(disk));
    await replica.close();
    await disk.close();
  });

  it('yields zero runs as zero extents and data extents of at most 1 MiB', async () => {
    const dir = await scratch('tracker-zero');
    const disk = await TrackedDisk.create(join(dir, 'z.raw'), 8 * MiB);
    await disk.write(0, random(3 * MiB));
    await disk.writeZeroes(3 * MiB, 2 * MiB);
    await disk.write(5 * MiB, random(4096));
    const cut = await cutVm([disk], { cutId: 'z', time: 1 });
    const extents = await collect(cut.disks[0].extents());
    await cut.release();
    const data = extents.filter((e) => !('zero' in e));
    const zero = extents.filter((e) => 'zero' in e);
    expect(data.every((e) => 'data' in e && e.data.length <= MiB)).toBe(true);
    expect(zero).toEqual([{ offset: 3 * MiB, length: 2 * MiB, zero: true }]);
    expect(extents.map((e) => e.offset)).toEqual([...extents.map((e) => e.offset)].sort((a, b) => a - b));
    await disk.close();
  });

  it('refuses a second cut while one is open, and abandon puts its blocks back', async () => {
    const dir = await scratch('tracker-refuse');
    const a = await TrackedDisk.create(join(dir, 'a.raw'), MiB);
    const b = await TrackedDisk.create(join(dir, 'b.raw'), MiB);
    await a.write(0, random(8192));
    await b.write(65536, random(4096));
    const cut = await cutVm([a], { cutId: 'one', time: 1 });
    await b.write(0, random(4096));
    const refused = await cutGroup([{ vm: 'x', disks: [b] }, { vm: 'y', disks: [a] }], { cutId: 'two', time: 2 }).catch((e) => e);
    expect(TerminalError.is(refused) && refused.code).toBe('invalid-state');
    expect(String(refused.message)).toContain('disk a still has cut one open');
    // The refusal froze nothing: b still holds both of its dirty blocks.
    expect(b.pendingBytes()).toBe(8192);
    expect(b.frozen).toBeUndefined();
    expect(a.pendingBytes()).toBe(8192);
    await cut.abandon();
    expect(a.dirtyBlocks()).toBe(2);
    await expect(collect(cut.disks[0].extents())).rejects.toThrow(/already read/);
    const group = await cutGroup([{ vm: 'x', disks: [b] }, { vm: 'y', disks: [a] }], { cutId: 'three', time: 3 });
    expect(group.vms.get('x')!.disks[0].blocks).toBe(2);
    expect(group.vms.get('y')!.disks[0].blocks).toBe(2);
    expect(group.vms.get('y')!.disks[0].cutId).toBe('three');
    await group.release();
    expect(a.pendingBytes() + b.pendingBytes()).toBe(0);
    await a.markAllDirty();
    expect(a.pendingBytes()).toBe(MiB);
    await a.close();
    await b.close();
  });

  it('measures primary write amplification for random 4 KiB writes', async () => {
    const dir = await scratch('tracker-amp');
    const size = 16 * MiB;
    const results: Record<string, string> = {};
    // [label, copy-before-write memory, writes racing with the read, writes between cut and read]
    const scenarios = [
      ['memory-cbw', 64 * MiB, 250, 0],
      ['side-file-cbw', 0, 250, 0],
      ['side-file-cbw-slow-shipper', 0, 0, 1000],
    ] as const;
    for (const [label, limit, racing, beforeRead] of scenarios) {
      const rnd = prng(3);
      const disk = await TrackedDisk.create(join(dir, `${label}.raw`), size, { cbwMemoryLimit: limit });
      const randomWrite = () => disk.write(BLOCK_SIZE * Math.floor(rnd() * (size / BLOCK_SIZE)), random(BLOCK_SIZE));
      // Cycles of 1000 writes, then a cut; more writes race with the shipper's read of the cut.
      for (let cycle = 0; cycle < 4; cycle++) {
        for (let i = 0; i < 1000; i++) await randomWrite();
        const cut = await cutVm([disk], { cutId: `a${cycle}`, time: cycle });
        for (let i = 0; i < beforeRead; i++) await randomWrite();
        const it = cut.disks[0].extents()[Symbol.asyncIterator]();
        let writes = 0;
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (writes < racing) {
            await randomWrite();
            writes++;
          }
        }
        await cut.release();
      }
      await disk.close();
      const s = disk.writeStats();
      expect(s.diskBytes).toBe(s.vmBytes);
      if (limit > 0) expect(s.amplification).toBeLessThan(1.01); // memory copies write nothing
      expect(s.amplification).toBeLessThan(2);
      results[label] = `${s.amplification.toFixed(3)}x (copied aside ${((100 * s.cbwCopiedBytes) / s.vmBytes).toFixed(1)}% of VM bytes)`;
    }
    console.log(`primary write amplification, random 4 KiB writes, bytes stored / bytes written by the VM: ${JSON.stringify(results, null, 1)}`);
  });
});
