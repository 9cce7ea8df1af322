// Initial replication: a point-in-time full copy while the VM keeps writing, then the first delta
// brings the replica to the final image; export to and import from external media.
import { describe, it, expect, afterEach } from 'vitest';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TrackedDisk } from '../../../src/core/tracking/tracker.ts';
import { cutVm } from '../../../src/core/tracking/cut.ts';
import { RawDisk, sha256Device, sha256File } from '../../../src/core/disk/disk.ts';
import { initialCopyExtents, exportToMedia, importFromMedia } from '../../../src/core/replication/initial-copy.ts';
import { TerminalError } from '../../../src/model/errors.ts';
import { BLOCK_SIZE } from '../../../src/core/types.ts';
import type { Extent } from '../../../src/core/types.ts';
import { tempDir, applyExtents, prng, random } from '../helpers.ts';

const MiB = 1 << 20;
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

/** Random 4 KiB writes until stopped; returns the stop function. */
function keepWriting(disk: TrackedDisk, seed: number): () => Promise<number> {
  const rnd = prng(seed);
  let stop = false;
  let n = 0;
  const loop = (async () => {
    while (!stop) {
      await disk.write(BLOCK_SIZE * Math.floor(rnd() * Math.floor(disk.size / BLOCK_SIZE)), random(BLOCK_SIZE)); // whole blocks inside the disk
      n++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  return async () => {
    stop = true;
    await loop;
    return n;
  };
}

async function populate(disk: TrackedDisk): Promise<void> {
  await disk.write(0, random(2 * MiB)); // data
  await disk.write(3 * MiB, random(MiB + 512)); // data ending mid-block
  await disk.write(6 * MiB, Buffer.alloc(MiB)); // written, but zeroes
}

describe('initial copy', () => {
  it('copy as of the start + the next delta = the final image, while writes continue', async () => {
    const t = await tempDir('initial');
    cleanup = t.cleanup;
    const disk = await TrackedDisk.create(join(t.dir, 'vm.raw'), 8 * MiB);
    await populate(disk);
    const atStart = await sha256Device(disk);
    const replica = await RawDisk.create(join(t.dir, 'replica.raw'), 8 * MiB);
    const progress: [number, number][] = [];
    let stopWriting: (() => Promise<number>) | undefined;
    const extents: Extent[] = [];
    for await (const e of initialCopyExtents(disk, { cutId: 'seed', time: 1, onProgress: (d, n) => progress.push([d, n]) })) {
      stopWriting ??= keepWriting(disk, 5); // the cut is taken: from here the VM writes concurrently
      extents.push(e);
      if ('zero' in e) await replica.writeZeroes(e.offset, e.length);
      else await replica.write(e.offset, e.data);
      await new Promise((r) => setImmediate(r));
    }
    const writes = await stopWriting!();
    expect(writes).toBeGreaterThan(10);
    expect(await sha256Device(replica)).toBe(atStart);
    // Non-zero blocks as data, zero runs as metadata only.
    const dataBytes = extents.reduce((n, e) => n + ('data' in e ? e.data.length : 0), 0);
    expect(dataBytes).toBe(2 * MiB + MiB + BLOCK_SIZE);
    expect(extents.filter((e) => 'zero' in e).map((e) => [e.offset, 'length' in e && e.length])).toEqual([
      [2 * MiB, MiB],
      [3 * MiB + MiB + BLOCK_SIZE, 8 * MiB - (4 * MiB + BLOCK_SIZE)],
    ]);
    expect(progress.at(-1)).toEqual([8 * MiB, 8 * MiB]);
    expect(progress.every(([d], i) => i === 0 || d > progress[i - 1][0])).toBe(true);

    expect(disk.frozen).toBeUndefined(); // released when read to the end
    expect(disk.pendingBytes()).toBeGreaterThan(0);
    const delta = await cutVm([disk], { cutId: 'first-delta', time: 2 });
    await applyExtents(replica, delta.disks[0].extents());
    await delta.release();
    expect(await sha256Device(replica)).toBe(await sha256Device(disk));
    await replica.close();
    await disk.close();
  });

  it('an initial copy stopped early leaves every block pending', async () => {
    const t = await tempDir('initial-stop');
    cleanup = t.cleanup;
    const disk = await TrackedDisk.create(join(t.dir, 'vm.raw'), 4 * MiB);
    await populate(disk).catch(() => undefined);
    for await (const e of initialCopyExtents(disk)) {
      void e;
      break;
    }
    expect(disk.frozen).toBeUndefined();
    expect(disk.pendingBytes()).toBe(4 * MiB);
    await disk.close();
  });
});

describe('external media', () => {
  it('exports a point-in-time image per disk and imports it verified; tampering is rejected naming the file', async () => {
    const t = await tempDir('media');
    cleanup = t.cleanup;
    const disks = [await TrackedDisk.create(join(t.dir, 'os.raw'), 8 * MiB), await TrackedDisk.create(join(t.dir, 'data.raw'), 2 * MiB + 512)];
    await populate(disks[0]);
    await disks[1].write(MiB, random(MiB + 512));
    const expected = [await sha256Device(disks[0]), await sha256Device(disks[1])];
    const key = random(32);
    const folder = join(t.dir, 'usb');
    let stops: (() => Promise<number>)[] = [];
    // The first progress report comes after the cut: from then on the VM writes concurrently.
    const onProgress = () => {
      if (stops.length === 0) stops = disks.map((d, i) => keepWriting(d, 10 + i));
    };
    const manifest = await exportToMedia(disks, folder, { cutId: 'media-1', time: 42, relationshipId: 'rel-1', macKey: key, onProgress });
    expect((await Promise.all(stops.map((s) => s()))).every((n) => n > 0)).toBe(true);
    expect(manifest.disks.map((d) => [d.id, d.size, d.sha256])).toEqual([['os', 8 * MiB, expected[0]], ['data', 2 * MiB + 512, expected[1]]]);
    const imported = await importFromMedia(folder, { macKey: key, expect: [{ id: 'os', size: 8 * MiB }] });
    expect(imported.disks.map((d) => d.sha256)).toEqual(expected);
    expect(await sha256File(join(folder, 'os.raw'))).toBe(expected[0]);
    expect(imported.manifest.cutId).toBe('media-1');

    // Replica = imported image + first delta = primary now.
    const delta = await cutVm(disks, { cutId: 'd1', time: 43 });
    for (let i = 0; i < 2; i++) {
      const replica = await RawDisk.open(imported.disks[i].path);
      await applyExtents(replica, delta.disks[i].extents());
      expect(await sha256Device(replica)).toBe(await sha256Device(disks[i]));
      await replica.close();
    }
    await delta.release();

    // Refuses to overwrite an export.
    await expect(exportToMedia(disks, folder, { cutId: 'again', time: 44 })).rejects.toThrow(/already holds an export/);
    for (const d of disks) await d.close();
  });

  it('rejects a tampered image, a wrong MAC key and a missing manifest', async () => {
    const t = await tempDir('media-tamper');
    cleanup = t.cleanup;
    const disk = await TrackedDisk.create(join(t.dir, 'vm.raw'), 2 * MiB);
    await disk.write(4096, random(8192));
    const key = random(32);
    const folder = join(t.dir, 'media');
    const manifest = await exportToMedia([disk], folder, { cutId: 'm', time: 1, macKey: key });
    await disk.close();
    await expect(importFromMedia(folder, { macKey: random(32) })).rejects.toMatchObject({ code: 'authentication' });
    // Editing the manifest's hash without the key is caught by the MAC.
    const text = await readFile(join(folder, 'manifest.json'), 'utf8');
    await writeFile(join(folder, 'manifest.json'), text.replace(manifest.disks[0].sha256, '0'.repeat(64)));
    await expect(importFromMedia(folder, { macKey: key })).rejects.toMatchObject({ code: 'authentication' });
    await writeFile(join(folder, 'manifest.json'), text);
    // One flipped byte in the image.
    const fh = await open(join(folder, 'vm.raw'), 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 5000);
    b[0] ^= 1;
    await fh.write(b, 0, 1, 5000);
    await fh.close();
    const err = await importFromMedia(folder, { macKey: key }).catch((e) => e);
    expect(TerminalError.is(err)).toBe(true);
    expect(err.code).toBe('integrity');
    expect(err.message).toContain(join(folder, 'vm.raw'));
    expect(err.message).toContain('tampered');
    await expect(importFromMedia(join(t.dir, 'nothing-here'))).rejects.toMatchObject({ code: 'not-found' });
  });
});
