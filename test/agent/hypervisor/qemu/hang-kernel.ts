// A kernel that hangs: a multiboot image QEMU's -kernel loads and enters in protected mode, which
// halts with interrupts off and never prints, as a Linux kernel does when it spins under a KVM
// that cannot run it (the same silence, without the CPU cost).
import { writeFile } from 'node:fs/promises';
import { multibootImage } from '../../../../src/agent/hypervisor/qemu/accel.ts';

/** cli; hlt; jmp hlt. */
const HANG = [0xfa, 0xf4, 0xeb, 0xfd];

export async function writeHangKernel(path: string): Promise<string> {
  await writeFile(path, multibootImage(HANG));
  return path;
}
