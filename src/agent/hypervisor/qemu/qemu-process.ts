// The QEMU process outside QMP: the checks before a guest is started (socket path lengths, boot
// files), starting qemu-system daemonized and reading its pidfile, and telling whether a pid is
// still that QEMU or waiting for it to be gone.
import { spawn } from 'node:child_process';
import { readFile, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TerminalError } from '../../../model/errors.ts';
import type { PowerOptions, VmDefinition } from '../../../model/hypervisor.ts';
import { QEMU_DEFAULTS, qemuArgs, type Accel, type GuestPaths, type QemuSettings } from './qemu-args.ts';

const UNIX_PATH_MAX = 107;

/** Refuses, with what to fix, a guest whose sockets or boot files QEMU could not use. */
export async function checkStartable(vm: VmDefinition, settings: QemuSettings, opts: PowerOptions, paths: GuestPaths): Promise<void> {
  for (const p of [paths.qmp, paths.qga]) {
    if (Buffer.byteLength(p) > UNIX_PATH_MAX) throw new TerminalError('invalid-argument', `VM "${vm.name}": socket path ${p} is longer than ${UNIX_PATH_MAX} bytes; use a shorter agent data directory`);
  }
  const boot = vm.boot;
  if (boot && 'kernel' in boot) {
    for (const [what, p] of [['kernel', boot.kernel], ['initrd', boot.initrd]] as const) {
      if (p !== undefined && !(await isFile(p))) throw new TerminalError('invalid-argument', `VM "${vm.name}": boot ${what} ${p} is not a readable file`);
    }
  } else if (boot?.firmware === 'uefi') {
    const fw = settings.uefiFirmware ?? QEMU_DEFAULTS.uefiFirmware;
    if (!(await isFile(fw))) throw new TerminalError('invalid-argument', `VM "${vm.name}": UEFI firmware ${fw} not found (install ovmf or set the site's qemu.uefiFirmware)`);
  }
  if (opts.seedImage !== undefined && !(await isFile(opts.seedImage))) throw new TerminalError('invalid-argument', `VM "${vm.name}": seed image ${opts.seedImage} is not a readable file`);
}

/** Starts QEMU daemonized for `vm` (paused: the driver resumes it once attached); returns its pid. */
export async function launchQemu(vm: VmDefinition, settings: QemuSettings, opts: PowerOptions, paths: GuestPaths, accel: Accel): Promise<number> {
  const emulator = settings.emulator ?? QEMU_DEFAULTS.emulator;
  const boot = vm.boot;
  const absolute = boot && 'kernel' in boot
    ? { ...vm, boot: { ...boot, kernel: resolve(boot.kernel), ...(boot.initrd !== undefined ? { initrd: resolve(boot.initrd) } : {}) } }
    : vm;
  const seedImage = opts.seedImage !== undefined ? resolve(opts.seedImage) : undefined;
  const args = qemuArgs({ vm: absolute, settings, accel, paths, nbdSocket: resolve(opts.nbdSocket), seedImage });
  for (const p of [paths.qmp, paths.qga, paths.pidfile]) await rm(p, { force: true });

  // -daemonize: QEMU returns once the machine is built, with its errors (bad kernel, unreachable
  // export) on our stderr and a non-zero exit; later output goes nowhere but the serial log.
  const { code, stderr } = await runToExit(emulator, args).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new TerminalError('not-found', `VM "${vm.name}": emulator "${emulator}" not found (the site's qemu.emulator; install qemu-system-x86)`);
    throw new TerminalError('invalid-state', `VM "${vm.name}": cannot run emulator "${emulator}": ${e.message}`);
  });
  if (code !== 0) {
    const why = stderr.trim().split('\n').filter((l) => l.trim()).slice(-3).join('; ') || `exit code ${code}`;
    throw new TerminalError('invalid-state', `VM "${vm.name}": QEMU did not start: ${why}`);
  }
  const pid = await readPid(paths.pidfile);
  if (pid === undefined) throw new TerminalError('invalid-state', `VM "${vm.name}": QEMU started but wrote no pidfile ${paths.pidfile}`);
  return pid;
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

export async function readPid(pidfile: string): Promise<number | undefined> {
  const text = await readFile(pidfile, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Live (not a zombie) and started with this QMP socket, so a reused pid is not mistaken for it. */
export async function isQemuOf(pid: number, qmpSocket: string): Promise<boolean> {
  try {
    const stat_ = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat_)) return false;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(qmpSocket.replace(/,/g, ',,'));
  } catch {
    return false;
  }
}

export async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      const s = await readFile(`/proc/${pid}/stat`, 'utf8');
      if (/\) Z /.test(s)) return;
    } catch {
      return;
    }
    await sleep(25);
  }
}

function runToExit(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stderr }));
  });
}
