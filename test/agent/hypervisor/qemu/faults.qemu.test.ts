// What goes wrong with real guests: QEMU killed -9 under a writing guest (reported as crashed,
// the filesystem still mounts on the next boot), a missing emulator, an unbootable kernel, a guest
// that ignores the power button. Each error names the VM, and another VM keeps running throughout.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { VmRuntime } from '../../../../src/agent/hypervisor/vm-runtime.ts';
import { TerminalError } from '../../../../src/model/errors.ts';
import type { VmRuntimeStatus } from '../../../../src/model/hypervisor.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { boot, createGuestVm, nbdDirOf, serve, testGuest, waitFor, waitForLine } from './guest.ts';

let dir: { path: string; remove(): Promise<void> };
let hv: QemuHypervisor;
const stopped: [string, VmRuntimeStatus][] = [];
const runtimes = new Map<string, VmRuntime>();

beforeAll(async () => {
  await testGuest();
  dir = await tempDir('qemu-faults');
  hv = new QemuHypervisor(join(dir.path, 'vms'), { accel: 'tcg' }, { onStopped: (vm, s) => stopped.push([vm, s]) });
}, 180_000);

afterAll(async () => {
  for (const vm of await hv.list()) await hv.setPower(vm.name, 'Off', { nbdSocket: '', force: true, timeoutMs: 0 }).catch(() => {});
  for (const rt of runtimes.values()) await rt.stop();
  await dir.remove();
});

async function guestVm(name: string): Promise<string> {
  const vm = await createGuestVm(hv, name);
  const rt = await serve(hv, vm, nbdDirOf(dir.path));
  runtimes.set(name, rt);
  return rt.socketPath;
}

async function rejection(p: Promise<unknown>): Promise<TerminalError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(TerminalError.is(e)).toBe(true);
  return e as TerminalError;
}

describe('QemuHypervisor faults', () => {
  it('reports QEMU killed -9 under a writing guest as crashed; the next boot mounts the disk and finds the log', async () => {
    const nbd = await guestVm('writer');
    await boot(hv, 'writer', { run: 'churn' });
    await hv.setPower('writer', 'Running', { nbdSocket: nbd });
    await waitForLine(hv.consolePath('writer'), /DRSITE churn 10\b/, 60_000);
    const pid = Number((await readFile(join(hv.vmDir('writer'), 'qemu.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL');

    const st = await waitFor('crash seen', async () => {
      const s = await hv.status('writer');
      return s.crashed ? s : undefined;
    }, 20_000);
    expect(st.power).toBe('Off');
    expect(st.detail).toBe('crashed');
    expect(st.crashed!.message).toBe(`QEMU (pid ${pid}) of VM "writer" exited without a shutdown: killed or crashed`);
    expect(stopped.find(([vm]) => vm === 'writer')?.[1].crashed?.message).toBe(st.crashed!.message);
    // Declared Running still: the crash did not silently turn the VM off in its definition.
    expect((await hv.get('writer')).power).toBe('Running');

    await boot(hv, 'writer', { run: 'read', path: '/churn.log' });
    await hv.setPower('writer', 'Running', { nbdSocket: nbd });
    const read = await waitForLine(hv.consolePath('writer'), /DRSITE read \/churn.log (sha256=\w+|missing)/, 40_000);
    expect(read[1]).toMatch(/^sha256=[0-9a-f]{64}$/);
    await waitFor('writer off', async () => ((await hv.status('writer')).power === 'Off' ? true : undefined), 40_000);
    expect(await hv.status('writer')).toEqual({ power: 'Off', detail: 'stopped' });
  });

  it('refuses bad inputs with errors naming the VM while another VM keeps running', async () => {
    const otherNbd = await guestVm('other');
    await boot(hv, 'other', { run: 'wait' });
    await hv.setPower('other', 'Running', { nbdSocket: otherNbd });
    await waitForLine(hv.consolePath('other'), /DRSITE waiting/, 40_000);

    // A missing emulator (a site setting pointing nowhere).
    const noBin = new QemuHypervisor(hv.root, { accel: 'tcg', emulator: join(dir.path, 'no-such-qemu') });
    const nbd1 = await guestVm('nobin');
    const e1 = await rejection(noBin.setPower('nobin', 'Running', { nbdSocket: nbd1 }));
    expect(e1.message).toBe(`VM "nobin": emulator "${join(dir.path, 'no-such-qemu')}" not found (the site's qemu.emulator; install qemu-system-x86)`);
    expect(await hv.status('nobin')).toEqual({ power: 'Off', detail: 'stopped' });

    // A kernel path that does not exist, and a file that is not a kernel.
    const nbd2 = await guestVm('nokernel');
    const vm2 = await hv.get('nokernel');
    await hv.save({ ...vm2, boot: { kernel: join(dir.path, 'missing-vmlinuz') } });
    const e2 = await rejection(hv.setPower('nokernel', 'Running', { nbdSocket: nbd2 }));
    expect(e2.message).toBe(`VM "nokernel": boot kernel ${join(dir.path, 'missing-vmlinuz')} is not a readable file`);
    const junk = join(dir.path, 'junk-kernel');
    await writeFile(junk, 'this is not a kernel\n');
    await hv.save({ ...vm2, boot: { kernel: junk } });
    const e3 = await rejection(hv.setPower('nokernel', 'Running', { nbdSocket: nbd2 }));
    expect(e3.message).toMatch(/^VM "nokernel": QEMU did not start: .*kernel/i);
    expect((await hv.get('nokernel')).power).toBe('Off');

    // A guest that ignores the power button.
    const nbd3 = await guestVm('stubborn');
    await boot(hv, 'stubborn', { run: 'hang' });
    await hv.setPower('stubborn', 'Running', { nbdSocket: nbd3 });
    await waitForLine(hv.consolePath('stubborn'), /DRSITE hanging/, 40_000);
    const e4 = await rejection(hv.setPower('stubborn', 'Off', { nbdSocket: nbd3, timeoutMs: 3000 }));
    expect(e4.message).toBe('VM "stubborn" did not power off within 3000 ms of an ACPI power-down (system_powerdown); it is still running. Retry with a longer timeout, or force to stop it hard');
    expect(await hv.status('stubborn')).toEqual({ power: 'Running', detail: 'running' });
    expect((await hv.get('stubborn')).power).toBe('Running');
    expect((await hv.setPower('stubborn', 'Off', { nbdSocket: nbd3, timeoutMs: 1000, force: true })).power).toBe('Off');
    expect(await hv.status('stubborn')).toEqual({ power: 'Off', detail: 'stopped' });

    // None of it touched the other guest.
    expect(await hv.status('other')).toEqual({ power: 'Running', detail: 'running' });
    expect((await hv.setPower('other', 'Off', { nbdSocket: otherNbd, timeoutMs: 30_000 })).power).toBe('Off');
    expect(stopped.filter(([vm]) => vm !== 'writer')).toEqual([]);
  });
});
