// The `accel: auto` probe boots what the VM boots. The real test guest's kernel prints its first
// line under TCG; a kernel that hangs (silent, see hang-kernel.ts) fails the probe under any
// accelerator, so `auto` falls back to TCG with the reason, and the driver logs that fallback.
// Whether KVM itself works depends on the host: on a nested host its /dev/kvm opens and the
// built-in protected-mode probe passes while the Linux kernel spins, which is why the kernel is
// what gets probed.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseAccel, probeAccel } from '../../../../src/agent/hypervisor/qemu/accel.ts';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { LogFields, Logger } from '../../../../src/transport/logger.ts';
import { tempDir } from '../../../nbd/helpers.ts';
import { testGuest } from './guest.ts';
import { writeHangKernel } from './hang-kernel.ts';

const QEMU = 'qemu-system-x86_64';
let dir: { path: string; remove(): Promise<void> };
let hang: string;
let kernel: string;

beforeAll(async () => {
  kernel = (await testGuest()).kernel;
  dir = await tempDir('qemu-accel');
  hang = await writeHangKernel(join(dir.path, 'hang.mb'));
}, 180_000);
afterAll(async () => dir?.remove());

describe('accelerator probe', () => {
  it('the test guest kernel prints its first line under TCG', async () => {
    const p = await probeAccel(QEMU, 'tcg', { kernel, machine: 'q35' });
    expect(p).toEqual({ accel: 'tcg', works: true, reason: `kernel ${kernel} printed its first line under tcg (machine q35)` });
  });

  it('a kernel that hangs does not work, and says what was (not) seen', async () => {
    const p = await probeAccel(QEMU, 'tcg', { kernel: hang, machine: 'pc' }, 3000);
    expect(p).toEqual({ accel: 'tcg', works: false, reason: `kernel ${hang} did not boot under tcg (machine pc): no serial output within 3000 ms` });
  });

  it('the built-in probe (for VMs booting from firmware) runs under TCG', async () => {
    const p = await probeAccel(QEMU, 'tcg');
    expect(p.works).toBe(true);
    expect(p.reason).toBe('the built-in protected-mode probe printed its first line under tcg (machine q35)');
  });

  it('auto falls back to TCG with the reason when the kernel does not boot under KVM', async () => {
    const auto = await chooseAccel(QEMU, 'auto', { kernel: hang }, 3000);
    expect(auto.accel).toBe('tcg');
    // Either this host has no usable /dev/kvm, or the hanging kernel printed nothing under it.
    expect(auto.reason).toMatch(/^KVM not usable: (\/dev\/kvm cannot be opened \(\w+\)|kernel .*hang\.mb did not boot under kvm \(machine q35\): no serial output within 3000 ms)$/);
    expect(await chooseAccel(QEMU, 'tcg', { kernel: hang })).toEqual({ accel: 'tcg', reason: 'set in the site settings' });
  });

  it('auto picks KVM for the test guest kernel only when that kernel boots under it', async () => {
    const auto = await chooseAccel(QEMU, 'auto', { kernel });
    if (auto.accel === 'kvm') expect(auto.reason).toBe(`kernel ${kernel} printed its first line under kvm (machine q35)`);
    else expect(auto.reason).toMatch(/^KVM not usable: (\/dev\/kvm cannot be opened|kernel .* did not boot under kvm \(machine q35\): )/);
  }, 30_000);

  it('the driver probes per kernel and logs a fallback to TCG with its reason', async () => {
    const warnings: { msg: string; fields?: LogFields }[] = [];
    const log: Logger = { info: () => {}, warn: (msg, fields) => warnings.push({ msg, ...(fields && { fields }) }), error: () => {} };
    const hv = new QemuHypervisor(join(dir.path, 'vms'), { accel: 'auto' }, { log });
    const chosen = await hv.accel(hang);
    expect(chosen.accel).toBe('tcg');
    expect(hv.accel(hang)).toBe(hv.accel(hang)); // probed once per kernel
    await new Promise((r) => setImmediate(r));
    expect(warnings).toEqual([{ msg: 'qemu accel: falling back to TCG', fields: { machine: 'q35', kernel: hang, reason: chosen.reason } }]);
  }, 30_000);

  it('an emulator that does not exist does not work', async () => {
    const p = await probeAccel('/nonexistent/qemu-system-x86_64', 'tcg', {}, 2000);
    expect(p.works).toBe(false);
    expect(p.reason).toContain('ENOENT');
  });
});
