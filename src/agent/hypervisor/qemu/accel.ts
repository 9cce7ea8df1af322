// Chooses the accelerator for `accel: auto`. /dev/kvm opening is not enough, and neither is a toy
// guest: in a nested guest a boot sector (real mode) and even a protected-mode multiboot image run
// under KVM while a Linux kernel then spins at 100 % CPU without printing a byte. So the probe boots
// what the VM boots: its own kernel, under the site's machine type, with a serial console, and KVM
// is used only when that kernel's first line reaches the serial port in time.
import { spawn } from 'node:child_process';
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../../transport/logger.ts';
import type { Accel } from './qemu-args.ts';

export interface AccelProbe {
  readonly accel: Accel;
  readonly works: boolean;
  /** Why it does not work (or that it does), for logs and status. */
  readonly reason: string;
}

/** What the probe boots: the VM's kernel under the VM's machine type. */
export interface ProbeGuest {
  /** QEMU machine type. @default "q35" */
  readonly machine?: string;
  /**
   * The kernel the VM boots (`-kernel`: a Linux bzImage or a multiboot image); it is given
   * `console=ttyS0` and must print one line there. Absent (a VM that boots from its firmware):
   * a built-in multiboot image that prints one line in protected mode, a weaker test, which is why
   * a running guest's boot is also watched (QemuHypervisor.liveness).
   */
  readonly kernel?: string;
  /** @default 256 */
  readonly memoryMiB?: number;
}

export const PROBE_TIMEOUT_MS = 10_000;

/**
 * A multiboot (v1, a.out kludge) image loaded at 1 MiB whose 32-bit `code` runs in protected mode.
 * QEMU's `-kernel` loads it without firmware help.
 */
export function multibootImage(code: readonly number[]): Buffer {
  const magic = 0x1badb002;
  const flags = 0x00010000; // the load addresses below are valid
  const h = Buffer.alloc(32);
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(flags, 4);
  h.writeUInt32LE(-(magic + flags) >>> 0, 8);
  h.writeUInt32LE(0x100000, 12); // header_addr
  h.writeUInt32LE(0x100000, 16); // load_addr
  h.writeUInt32LE(0, 20); // load_end_addr: the whole file
  h.writeUInt32LE(0, 24); // bss_end_addr: none
  h.writeUInt32LE(0x100020, 28); // entry: right after the header
  return Buffer.concat([h, Buffer.from(code)]);
}

/** mov dx,0x3f8; mov al,'K'; out dx,al; mov al,10; out dx,al; cli; hlt; jmp hlt. */
const PRINT_LINE = [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xb0, 0x0a, 0xee, 0xfa, 0xf4, 0xeb, 0xfd];

/** A non-blank line ended by a newline: the kernel is running and its console works. */
const FIRST_LINE = /\S[^\n]*\n/;

/** Boots `guest` under `accel`; works when a first line reaches the serial port within `timeoutMs`. */
export async function probeAccel(emulator: string, accel: Accel, guest: ProbeGuest = {}, timeoutMs = PROBE_TIMEOUT_MS): Promise<AccelProbe> {
  if (accel === 'kvm') {
    try {
      await (await open('/dev/kvm', 'r+')).close();
    } catch (e) {
      return { accel, works: false, reason: `/dev/kvm cannot be opened (${(e as NodeJS.ErrnoException).code})` };
    }
  }
  const machine = guest.machine ?? 'q35';
  const what = guest.kernel ? `kernel ${guest.kernel}` : 'the built-in protected-mode probe';
  const dir = await mkdtemp(join(tmpdir(), 'drsite-accel-'));
  try {
    const serial = join(dir, 'serial.out');
    let kernel = guest.kernel;
    if (kernel === undefined) {
      kernel = join(dir, 'probe.mb');
      await writeFile(kernel, multibootImage(PRINT_LINE));
    }
    const child = spawn(emulator, [
      '-accel', accel, '-machine', machine, '-m', String(guest.memoryMiB ?? 256),
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      // No initrd: the first line comes long before the kernel looks for its root.
      '-kernel', kernel, '-append', 'console=ttyS0 panic=-1',
      '-chardev', `file,id=s0,path=${serial.replace(/,/g, ',,')}`, '-serial', 'chardev:s0',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let exited: string | undefined;
    child.on('exit', (code, signal) => (exited = `QEMU exited (${signal ?? code})`));
    child.on('error', (e) => (exited = e.message));
    const until = Date.now() + timeoutMs;
    try {
      while (Date.now() < until) {
        if (FIRST_LINE.test((await readFile(serial).catch(() => Buffer.alloc(0))).toString('latin1'))) {
          // An emulation failure stops the guest after it ran a little: make sure it is still up.
          await sleep(200);
          if (exited === undefined && !/internal error|emulation failure/i.test(stderr)) {
            return { accel, works: true, reason: `${what} printed its first line under ${accel} (machine ${machine})` };
          }
          break;
        }
        if (exited !== undefined) break;
        await sleep(50);
      }
      const errors = stderr.split('\n').filter((l) => l.trim() && !/host doesn't support requested feature/.test(l));
      const why = errors.slice(-2).join(' ').trim() || exited || `no serial output within ${timeoutMs} ms`;
      return { accel, works: false, reason: `${what} did not boot under ${accel} (machine ${machine}): ${why}` };
    } finally {
      if (exited === undefined) child.kill('SIGKILL');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `auto` → KVM when `guest` boots under it, else TCG (with the reason KVM was not taken). */
export async function chooseAccel(emulator: string, wanted: Accel | 'auto', guest: ProbeGuest = {}, timeoutMs = PROBE_TIMEOUT_MS): Promise<{ accel: Accel; reason: string }> {
  if (wanted !== 'auto') return { accel: wanted, reason: 'set in the site settings' };
  const kvm = await probeAccel(emulator, 'kvm', guest, timeoutMs);
  return kvm.works ? { accel: 'kvm', reason: kvm.reason } : { accel: 'tcg', reason: `KVM not usable: ${kvm.reason}` };
}

/**
 * `chooseAccel` once per machine type and kernel (what the probe booted), a fallback to TCG logged
 * with its reason; a probe that could not run at all (no temp dir, say) is tried again next time.
 */
export class AccelChoices {
  readonly #emulator: string;
  readonly #wanted: Accel | 'auto';
  readonly #log: Logger;
  readonly #chosen = new Map<string, Promise<{ accel: Accel; reason: string }>>();

  constructor(emulator: string, wanted: Accel | 'auto', log: Logger) {
    this.#emulator = emulator;
    this.#wanted = wanted;
    this.#log = log;
  }

  for(guest: ProbeGuest): Promise<{ accel: Accel; reason: string }> {
    const key = `${guest.machine}\0${guest.kernel ?? ''}`;
    let chosen = this.#chosen.get(key);
    if (!chosen) {
      chosen = chooseAccel(this.#emulator, this.#wanted, guest);
      if (this.#wanted === 'auto') {
        chosen.then((c) => {
          if (c.accel === 'kvm') this.#log.info('qemu accel: KVM', { machine: guest.machine, kernel: guest.kernel, reason: c.reason });
          else this.#log.warn('qemu accel: falling back to TCG', { machine: guest.machine, kernel: guest.kernel, reason: c.reason });
        }, () => {});
      }
      this.#chosen.set(key, chosen);
      chosen.catch(() => this.#chosen.delete(key));
    }
    return chosen;
  }
}
