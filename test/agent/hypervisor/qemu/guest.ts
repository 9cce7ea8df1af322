// Test plumbing for real guests: the cached test guest, a VM whose disk is an ext4 image served
// by the agent's NBD export through the change tracker, and waiting on serial console markers.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { buildTestGuest, makeGuestDisk, type TestGuest } from '../../../../src/demo/test-guest.ts';
import { VmRuntime } from '../../../../src/agent/hypervisor/vm-runtime.ts';
import type { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { VmAdapter, VmDefinition } from '../../../../src/model/hypervisor.ts';
import { silentLogger } from '../../../../src/transport/logger.ts';

const run = promisify(execFile);

export async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      await stat(path);
      return;
    } catch {
      if (Date.now() > until) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
      await sleep(50);
    }
  }
}

let guest: Promise<TestGuest> | undefined;
/** Builds the guest once per process; the cache in .cache/test-guest makes later runs instant. */
export function testGuest(): Promise<TestGuest> {
  guest ??= buildTestGuest();
  return guest;
}

export interface GuestRun {
  /** Comma-separated actions of src/demo/guest/init.sh. */
  run: string;
  path?: string;
  data?: string;
  stayUp?: boolean;
}

/** The kernel command line for one boot of the test guest. */
export function append(r: GuestRun): string {
  const parts = ['console=ttyS0', 'quiet', `drsite.run=${r.run}`];
  if (r.path) parts.push(`drsite.path=${r.path}`);
  if (r.data !== undefined) parts.push(`drsite.data=${Buffer.from(r.data).toString('base64')}`);
  if (r.stayUp) parts.push('drsite.off=0');
  return parts.join(' ');
}

/** Creates a VM with one ext4 `os` disk; the boot arguments are set per boot with `boot()`. */
export async function createGuestVm(hv: QemuHypervisor, name: string, opts: { adapters?: VmAdapter[]; size?: number } = {}): Promise<VmDefinition> {
  const g = await testGuest();
  const vm = await hv.create({ name, power: 'Off', adapters: opts.adapters ?? [], disks: [{ name: 'os', size: opts.size ?? 32 << 20 }], boot: { kernel: g.kernel, initrd: g.initrd, append: '' } });
  await makeGuestDisk(hv.diskPath(name, vm.disks[0]!));
  return vm;
}

/** Sets what the next boot does. */
export async function boot(hv: QemuHypervisor, name: string, r: GuestRun): Promise<void> {
  const g = await testGuest();
  const vm = await hv.get(name);
  await hv.save({ ...vm, boot: { kernel: g.kernel, initrd: g.initrd, append: append(r) } });
}

/** Serves the VM's disks as the agent does: NBD on `<nbdDir>/<vm>.sock`, through the tracker. */
export function serve(hv: QemuHypervisor, vm: VmDefinition, nbdDir: string): Promise<VmRuntime> {
  return VmRuntime.start(hv, vm, nbdDir, silentLogger);
}

/** Waits until the serial log has a line matching `re`; returns the match. */
export async function waitForLine(path: string, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => '');
    const m = text.match(re);
    if (m) return m;
    if (Date.now() > until) throw new Error(`no line matching ${re} in ${path} within ${timeoutMs} ms; it holds:\n${text.slice(-2000)}`);
    await sleep(50);
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** A file's content inside an ext4 image, read on the host with debugfs (e2fsprogs). */
export async function fileInImage(image: string, path: string): Promise<Buffer> {
  const { stdout } = await run('debugfs', ['-R', `cat ${path}`, image], { encoding: 'buffer', maxBuffer: 64 << 20 });
  return stdout;
}

/**
 * The guest's own logic for failover tests (/drsite/run.sh on its disk): report every file it
 * has (`DRSITE have /files/x sha256=...`), then write the next one: `a` as a.txt on the first
 * boot, `b` as b.txt on the next (`DRSITE wrote ...`), then `DRSITE script done`.
 */
export function writeNextFileScript(a: Buffer, b: Buffer): string {
  return `#!/bin/sh
mkdir -p /mnt/files
for f in /mnt/files/*; do [ -f "$f" ] && echo "DRSITE have \${f#/mnt} sha256=$(sha256sum "$f" | cut -d' ' -f1)"; done
put() { echo "$2" | base64 -d > "/mnt/files/$1"; sync; echo "DRSITE wrote /files/$1 sha256=$(sha256sum "/mnt/files/$1" | cut -d' ' -f1)"; }
if [ ! -f /mnt/files/a.txt ]; then put a.txt ${a.toString('base64')}
elif [ ! -f /mnt/files/b.txt ]; then put b.txt ${b.toString('base64')}
fi
echo "DRSITE script done"
`;
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function nbdDirOf(root: string): string {
  return join(root, 'nbd');
}
