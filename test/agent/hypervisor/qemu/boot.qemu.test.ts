// A real guest under TCG on a disk the agent serves over NBD (through the change tracker): it
// writes a file the test chose, powers off, boots again and reads it back; graceful shutdown
// through QMP's ACPI power-down. Boot and shutdown times are printed, not asserted.
import { randomUUID } from 'node:crypto';
import { join, relative } from 'node:path';
import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { VmRuntime } from '../../../../src/agent/hypervisor/vm-runtime.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { boot, createGuestVm, fileInImage, nbdDirOf, serve, sha256, testGuest, waitFor, waitForLine } from './guest.ts';

let dir: { path: string; remove(): Promise<void> };
let hv: QemuHypervisor;
const runtimes: VmRuntime[] = [];

beforeAll(async () => {
  await testGuest();
  dir = await tempDir('qemu-boot');
  // A relative root and NBD socket, as a site's data directory often is.
  hv = new QemuHypervisor(relative(process.cwd(), join(dir.path, 'vms')), { accel: 'tcg' });
}, 180_000);

afterAll(async () => {
  for (const vm of await hv.list()) await hv.setPower(vm.name, 'Off', { nbdSocket: '', force: true, timeoutMs: 0 }).catch(() => {});
  for (const rt of runtimes) await rt.stop();
  await dir.remove();
});

const off = (name: string) => waitFor(`${name} powered off`, async () => ((await hv.status(name)).power === 'Off' ? true : undefined), 40_000);

describe('QemuHypervisor with the test guest', () => {
  it('boots from the agent NBD export, writes the chosen file, and reads it back on the next boot', async () => {
    const vm = await createGuestVm(hv, 'web');
    const rt = await serve(hv, vm, nbdDirOf(dir.path));
    runtimes.push(rt);
    const content = `drsite qemu test ${randomUUID()}\n`;
    const want = sha256(content);

    await boot(hv, 'web', { run: 'write', path: '/data/known.txt', data: content });
    const t0 = Date.now();
    expect((await hv.setPower('web', 'Running', { nbdSocket: rt.socketPath })).power).toBe('Running');
    const wrote = await waitForLine(hv.consolePath('web'), /DRSITE wrote \/data\/known.txt sha256=(\w+)/, 40_000);
    console.log(`boot to the write marker under TCG: ${Date.now() - t0} ms`);
    expect(wrote[1]).toBe(want);
    await off('web');
    const st = await hv.status('web');
    expect(st).toEqual({ power: 'Off', detail: 'stopped' });
    expect((await hv.get('web')).power).toBe('Off');
    // The guest's writes reached the change tracker, not just the image.
    expect(rt.disks.get('os')!.dirtyBlocks()).toBeGreaterThan(0);

    await boot(hv, 'web', { run: 'read', path: '/data/known.txt' });
    const t1 = Date.now();
    await hv.setPower('web', 'Running', { nbdSocket: rt.socketPath });
    const read = await waitForLine(hv.consolePath('web'), /DRSITE read \/data\/known.txt (sha256=\w+|missing)/, 40_000);
    console.log(`boot to the read marker under TCG: ${Date.now() - t1} ms`);
    expect(read[1]).toBe(`sha256=${want}`);
    await off('web');

    await rt.stop();
    runtimes.splice(runtimes.indexOf(rt), 1);
    expect(sha256(await fileInImage(hv.diskPath('web', vm.disks[0]!), '/data/known.txt'))).toBe(want);
  });

  it('shuts a running guest down gracefully through QMP system_powerdown', async () => {
    const vm = await createGuestVm(hv, 'db');
    const rt = await serve(hv, vm, nbdDirOf(dir.path));
    runtimes.push(rt);
    await boot(hv, 'db', { run: 'wait' });
    await hv.setPower('db', 'Running', { nbdSocket: relative(process.cwd(), rt.socketPath) });
    await waitForLine(hv.consolePath('db'), /DRSITE waiting/, 40_000);
    expect(await hv.status('db')).toEqual({ power: 'Running', detail: 'running' });

    const t0 = Date.now();
    const after = await hv.setPower('db', 'Off', { nbdSocket: rt.socketPath, timeoutMs: 30_000 });
    console.log(`graceful shutdown (system_powerdown to QEMU gone): ${Date.now() - t0} ms`);
    expect(after.power).toBe('Off');
    await waitForLine(hv.consolePath('db'), /DRSITE power button\r?\nDRSITE poweroff/, 1000);
    expect(await hv.status('db')).toEqual({ power: 'Off', detail: 'stopped' });
    await expect(stat(join(hv.vmDir('db'), 'qemu.pid'))).rejects.toThrow();
    // Idempotent: already off.
    expect((await hv.setPower('db', 'Off', { nbdSocket: rt.socketPath })).power).toBe('Off');

    // Removing a running VM stops its QEMU first.
    await hv.setPower('db', 'Running', { nbdSocket: rt.socketPath });
    await waitForLine(hv.consolePath('db'), /DRSITE waiting/, 40_000);
    const pid = Number((await readFile(join(hv.vmDir('db'), 'qemu.pid'), 'utf8')).trim());
    await hv.remove('db');
    expect(await hv.find('db')).toBeUndefined();
    await expect(stat(hv.vmDir('db'))).rejects.toThrow();
    expect(await readFile(`/proc/${pid}/stat`, 'utf8').then((st) => / Z /.test(st), () => true)).toBe(true);
  });
});
