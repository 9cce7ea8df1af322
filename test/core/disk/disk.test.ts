// The raw disk: sparse creation, positional I/O, zeroes, bounds and hashing.
import { describe, it, expect, afterEach } from 'vitest';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { RawDisk, sha256Device, sha256File } from '../../../src/core/disk/disk.ts';
import { TerminalError } from '../../../src/model/errors.ts';
import { tempDir, random } from '../helpers.ts';

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

describe('RawDisk', () => {
  it('creates a sparse image and reads back what was written', async () => {
    const t = await tempDir('disk');
    cleanup = t.cleanup;
    const path = join(t.dir, 'd.raw');
    const disk = await RawDisk.create(path, 64 << 20);
    const st = await stat(path);
    expect(st.size).toBe(64 << 20);
    expect(st.blocks * 512).toBeLessThan(1 << 20); // sparse: nothing allocated yet
    const data = random(10_000);
    await disk.write(123_456, data);
    expect((await disk.read(123_456, 10_000)).equals(data)).toBe(true);
    await disk.writeZeroes(123_456 + 100, 3 << 20);
    const back = await disk.read(123_456, 10_000);
    expect(back.subarray(0, 100).equals(data.subarray(0, 100))).toBe(true);
    expect(back.subarray(100).every((b) => b === 0)).toBe(true);
    await disk.flush();
    expect(disk.bytesWritten).toBe(10_000 + (3 << 20));
    await expect(disk.read((64 << 20) - 10, 20)).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(RawDisk.create(path, 4096)).rejects.toThrow(/already exists/);
    await disk.close();
    await expect(disk.read(0, 1)).rejects.toThrow(/closed/);
    const ro = await RawDisk.open(path, { readOnly: true });
    await expect(ro.write(0, Buffer.alloc(1))).rejects.toThrow(/read-only/);
    expect(await sha256Device(ro)).toBe(await sha256File(path));
    await ro.close();
  });

  it('rejects bad sizes and missing files with typed errors', async () => {
    const t = await tempDir('disk-bad');
    cleanup = t.cleanup;
    await expect(RawDisk.create(join(t.dir, 'x.raw'), 1000)).rejects.toMatchObject({ code: 'invalid-argument' });
    const err = await RawDisk.open(join(t.dir, 'missing.raw')).catch((e) => e);
    expect(TerminalError.is(err) && err.code).toBe('not-found');
    const odd = join(t.dir, 'odd.bin');
    const content = random(1001);
    await writeFile(odd, content);
    await expect(RawDisk.open(odd)).rejects.toMatchObject({ code: 'invalid-argument' });
    expect(await sha256File(odd)).toBe(createHash('sha256').update(content).digest('hex'));
  });
});
