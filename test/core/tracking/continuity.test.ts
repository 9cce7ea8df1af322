// Tracking continuity across process lifetimes: a real child process writes through a tracked
// disk and is either killed with SIGKILL or closes cleanly.
import { describe, it, expect, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFile } from 'node:fs/promises';
import { TrackedDisk } from '../../../src/core/tracking/tracker.ts';
import { cutVm } from '../../../src/core/tracking/cut.ts';
import { collect, tempDir } from '../helpers.ts';

const fixture = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tracked-writer.ts');
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

/** Runs the writer; in `kill` mode kills it with SIGKILL once it reports its writes done. */
function runWriter(path: string, mode: 'kill' | 'clean'): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture, path, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (mode === 'kill' && out.includes('ready')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code, signal) => {
      if (mode === 'kill' ? signal === 'SIGKILL' : code === 0) resolve(out.trim());
      else reject(new Error(`writer exited ${code ?? signal}: ${err}`));
    });
  });
}

describe('tracking continuity', () => {
  it('reopens as lost after kill -9, with every block dirty', async () => {
    const t = await tempDir('continuity-kill');
    cleanup = t.cleanup;
    const path = join(t.dir, 'vm.raw');
    await (await TrackedDisk.create(path, 1 << 20)).close();
    expect(await runWriter(path, 'kill')).toBe('ready intact');
    const disk = await TrackedDisk.open(path);
    expect(disk.continuity).toBe('lost');
    expect(disk.continuityReason).toContain('not closed cleanly');
    expect(disk.pendingBytes()).toBe(1 << 20);
    await disk.close();
  });

  it('reopens as intact after a clean close, with its bitmap restored', async () => {
    const t = await tempDir('continuity-clean');
    cleanup = t.cleanup;
    const path = join(t.dir, 'vm.raw');
    await (await TrackedDisk.create(path, 1 << 20)).close();
    expect(await runWriter(path, 'clean')).toBe('closed intact');
    const disk = await TrackedDisk.open(path);
    expect(disk.continuity).toBe('intact');
    expect(disk.pendingBytes()).toBe(3 * 4096);
    const cut = await cutVm([disk], { cutId: 'after-restart', time: 1 });
    const extents = await collect(cut.disks[0].extents());
    await cut.release();
    expect(extents.map((e) => ['data' in e ? e.data[0] : 0, e.offset, 'data' in e ? e.data.length : e.length])).toEqual([
      [1, 0, 4096],
      [2, 40960, 8192],
    ]);
    await disk.close();
    // A damaged state file is not trusted.
    await writeFile(`${path}.cbt`, 'garbage');
    const again = await TrackedDisk.open(path);
    expect(again.continuity).toBe('lost');
    await again.close();
  });

  it('an open cut at close returns to the dirty set, so nothing unshipped is forgotten', async () => {
    const t = await tempDir('continuity-open-cut');
    cleanup = t.cleanup;
    const path = join(t.dir, 'vm.raw');
    const disk = await TrackedDisk.create(path, 1 << 20);
    await disk.write(8192, Buffer.alloc(4096, 9));
    await cutVm([disk], { cutId: 'never-shipped', time: 1 });
    await disk.write(0, Buffer.alloc(4096, 8));
    await disk.close();
    const reopened = await TrackedDisk.open(path);
    expect(reopened.continuity).toBe('intact');
    expect(reopened.pendingBytes()).toBe(8192);
    await reopened.close();
  });
});
