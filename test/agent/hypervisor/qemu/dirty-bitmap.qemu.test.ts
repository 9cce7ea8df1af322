// The dirty-bitmap tracker on a real QEMU started by the test (not by drsite): a cut yields exactly
// the blocks written since the previous one, read from QEMU's point-in-time view (equal, by
// sha256, to the disk at the cut even while writes go on), writes after the cut go to the next
// cycle, and a QEMU restart is reported as lost continuity, never as a quiet empty delta.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QemuDirtyBitmapSource } from '../../../../src/agent/hypervisor/qemu/dirty-bitmap-tracker.ts';
import type { FrozenSource } from '../../../../src/core/replication/ports.ts';
import type { Extent } from '../../../../src/core/types.ts';
import { startVm, type TestVm } from './qemu-vm.ts';

const MiB = 1 << 20;
const SIZES = [16 * MiB, 8 * MiB];
let dir: string;
let disks: string[];
let vm: TestVm;
let source: QemuDirtyBitmapSource;
const lost: string[] = [];
/** What a replica holds: every cut's extents applied in order. */
let replica: Buffer[];

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function collect(d: FrozenSource): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of d.extents()) out.push(e);
  return out;
}
function apply(target: Buffer, extents: Extent[]): void {
  for (const e of extents) {
    if ('zero' in e) target.fill(0, e.offset, e.offset + e.length);
    else e.data.copy(target, e.offset);
  }
}
const ranges = (extents: Extent[]) => extents.map((e) => ({ offset: e.offset, length: 'zero' in e ? e.length : e.data.length }));
const dataBytes = (extents: Extent[]) => extents.reduce((n, e) => n + ('zero' in e ? 0 : e.data.length), 0);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drsite-qtrack-'));
  disks = SIZES.map((_, i) => join(dir, `disk${i}.raw`));
  // Content before adoption: random in the first MiB, the rest sparse zeroes.
  for (const [i, p] of disks.entries()) {
    await writeFile(p, Buffer.alloc(0));
    const fh = await import('node:fs/promises').then((m) => m.open(p, 'r+'));
    await fh.write(randomBytes(MiB), 0, MiB, 0);
    await fh.truncate(SIZES[i]);
    await fh.close();
  }
  vm = await startVm(dir, disks);
  source = await QemuDirtyBitmapSource.adopt({
    qmpSocket: vm.drsiteSocket,
    disks: [{ id: 'os', node: 'disk0' }, { id: 'data', node: 'disk1' }],
    workDir: join(dir, 'work'),
    onContinuityLost: async (why) => void lost.push(why),
  });
}, 30_000);

afterAll(async () => {
  await source?.close().catch(() => {});
  await vm?.kill();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('QEMU dirty-bitmap tracker (adopted VM)', () => {
  test('a full cut reads every block of the point-in-time view: equal to the disks at the cut', async () => {
    const at = await Promise.all(disks.map((p) => readFile(p)));
    const cut = await source.cut({ cutId: 'c1', time: Date.now(), full: true });
    // Written after the cut: must not be in it.
    await vm.write(0, 0x77, 0, 64 * 1024);
    replica = [];
    for (const [i, d] of cut.disks.entries()) {
      const extents = await collect(d);
      replica[i] = Buffer.alloc(d.size);
      apply(replica[i], extents);
      expect(sha(replica[i]), d.diskId).toBe(sha(at[i]));
      // The sparse tail went as zero metadata, not as data.
      expect(dataBytes(extents)).toBeLessThan(d.size / 2);
    }
    await cut.release();
  });

  test('a delta cut yields exactly the blocks written, from the view at the cut; later writes go to the next cut', async () => {
    const writes: [number, number, number, number][] = [
      [0, 0xab, 1 * MiB, 64 * 1024],
      [0, 0xac, 5 * MiB + 8192, 4096],
      [1, 0xad, 3 * MiB, 12 * 1024],
      [1, 0xae, 8 * MiB - 4096, 4096],
    ];
    for (const w of writes) await vm.write(...w);
    const written = 64 * 1024 + 4096 + 12 * 1024 + 4096;
    const atCut = await Promise.all(disks.map((p) => readFile(p)));
    const cut = await source.cut({ cutId: 'c2', time: Date.now() });
    // Overwrite the same blocks after the cut: copy-before-write keeps the view at the cut.
    await vm.write(0, 0xcd, 1 * MiB, 64 * 1024);
    await vm.write(1, 0xce, 6 * MiB, 4096);
    const extents = await Promise.all(cut.disks.map(collect));
    expect(ranges(extents[0])).toEqual([{ offset: 0, length: 64 * 1024 }, { offset: 1 * MiB, length: 64 * 1024 }, { offset: 5 * MiB + 8192, length: 4096 }]);
    expect(ranges(extents[1])).toEqual([{ offset: 3 * MiB, length: 12 * 1024 }, { offset: 8 * MiB - 4096, length: 4096 }]);
    // The 0x77 write of the previous test (made after the full cut) ships here: 64 KiB more.
    expect(dataBytes(extents[0]) + dataBytes(extents[1])).toBeLessThanOrEqual(1.2 * (written + 64 * 1024));
    for (const i of [0, 1]) {
      apply(replica[i], extents[i]);
      expect(sha(replica[i]), `disk ${i} at the cut`).toBe(sha(atCut[i]));
    }
    await cut.release();

    const after = await Promise.all(disks.map((p) => readFile(p)));
    const next = await source.cut({ cutId: 'c3', time: Date.now() });
    const nextExtents = await Promise.all(next.disks.map(collect));
    expect(ranges(nextExtents[0])).toEqual([{ offset: 1 * MiB, length: 64 * 1024 }]);
    expect(ranges(nextExtents[1])).toEqual([{ offset: 6 * MiB, length: 4096 }]);
    for (const i of [0, 1]) {
      apply(replica[i], nextExtents[i]);
      expect(sha(replica[i])).toBe(sha(after[i]));
    }
    await next.release();
    expect(lost).toEqual([]);
  });

  test('an abandoned cut gives its blocks back: they ship with the next one', async () => {
    await vm.write(1, 0x42, 2 * MiB, 8192);
    const cut = await source.cut({ cutId: 'c4', time: Date.now() });
    expect(ranges(await collect(cut.disks[1]))).toEqual([{ offset: 2 * MiB, length: 8192 }]);
    await cut.abandon();
    await vm.write(1, 0x43, 4 * MiB, 4096);
    const again = await source.cut({ cutId: 'c5', time: Date.now() });
    expect(ranges(await collect(again.disks[1]))).toEqual([{ offset: 2 * MiB, length: 8192 }, { offset: 4 * MiB, length: 4096 }]);
    await again.release();
  });

  test('QEMU restarted: continuity lost is reported and deltas refused until a full cut ships', async () => {
    await vm.kill();
    vm = await startVm(dir, disks);
    await vm.write(0, 0x99, 10 * MiB, 4096); // a write nobody tracked
    await expect(source.cut({ cutId: 'c6', time: Date.now() })).rejects.toThrow(/gone: QEMU restarted.*resynchronization required/);
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatch(/dirty bitmap drsite-\w+-\d+ on block node "disk0" \(disk os\) is gone/);
    await expect(source.cut({ cutId: 'c7', time: Date.now() })).rejects.toThrow(/resynchronization required/);
    const at = await Promise.all(disks.map((p) => readFile(p)));
    const full = await source.cut({ cutId: 'c8', time: Date.now(), full: true });
    for (const [i, d] of full.disks.entries()) {
      const b = Buffer.alloc(d.size);
      apply(b, await collect(d));
      expect(sha(b)).toBe(sha(at[i]));
    }
    await full.release();
    await vm.write(0, 0x55, 0, 4096);
    const delta = await source.cut({ cutId: 'c9', time: Date.now() });
    expect(ranges(await collect(delta.disks[0]))).toEqual([{ offset: 0, length: 4096 }]);
    await delta.release();
    expect(lost).toHaveLength(1);
  });
});
