// Chooses the accelerator for `accel: auto`. /dev/kvm opening is not enough: in a nested guest it
// opens and the guest then dies with an emulation failure. So KVM is used only when a probe guest
// (one boot sector that writes a byte to the serial port and halts) actually runs under it.
import { spawn } from 'node:child_process';
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Accel } from './qemu-args.ts';

export interface AccelProbe {
  readonly accel: Accel;
  readonly works: boolean;
  /** Why it does not work (or that it does), for logs and status. */
  readonly reason: string;
}

/** mov dx,0x3f8; mov al,'K'; out dx,al; cli; hlt; jmp hlt — then the boot signature. */
function bootSector(): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from([0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xfa, 0xf4, 0xeb, 0xfd]).copy(b);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/** Boots the probe sector under `accel`; works when its byte reaches the serial port within `timeoutMs`. */
export async function probeAccel(emulator: string, accel: Accel, timeoutMs = 8000): Promise<AccelProbe> {
  if (accel === 'kvm') {
    try {
      await (await open('/dev/kvm', 'r+')).close();
    } catch (e) {
      return { accel, works: false, reason: `/dev/kvm cannot be opened (${(e as NodeJS.ErrnoException).code})` };
    }
  }
  const dir = await mkdtemp(join(tmpdir(), 'drsite-accel-'));
  try {
    const disk = join(dir, 'probe.img');
    const serial = join(dir, 'serial.out');
    await writeFile(disk, bootSector());
    const child = spawn(emulator, [
      '-accel', accel, '-machine', 'pc', '-m', '16', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-drive', `file=${disk.replace(/,/g, ',,')},format=raw,if=ide,snapshot=on`,
      '-chardev', `file,id=s0,path=${serial.replace(/,/g, ',,')}`, '-serial', 'chardev:s0',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let exited: string | undefined;
    child.on('exit', (code, signal) => (exited = `exited (${signal ?? code})`));
    child.on('error', (e) => (exited = e.message));
    const until = Date.now() + timeoutMs;
    try {
      while (Date.now() < until) {
        if ((await readFile(serial).catch(() => Buffer.alloc(0))).includes('K')) {
          // An emulation failure stops the guest after it ran a little: make sure it is still up.
          await sleep(200);
          if (exited === undefined && !/internal error|emulation failure/i.test(stderr)) return { accel, works: true, reason: 'probe guest ran' };
          break;
        }
        if (exited !== undefined) break;
        await sleep(50);
      }
      const why = stderr.trim().split('\n').slice(-2).join(' ') || exited || `no output within ${timeoutMs} ms`;
      return { accel, works: false, reason: `probe guest failed under ${accel}: ${why}` };
    } finally {
      if (exited === undefined) child.kill('SIGKILL');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `auto` → KVM when the probe runs under it, else TCG. */
export async function chooseAccel(emulator: string, wanted: Accel | 'auto'): Promise<{ accel: Accel; reason: string }> {
  if (wanted !== 'auto') return { accel: wanted, reason: 'set in the site settings' };
  const kvm = await probeAccel(emulator, 'kvm');
  return kvm.works ? { accel: 'kvm', reason: kvm.reason } : { accel: 'tcg', reason: `KVM not usable: ${kvm.reason}` };
}
