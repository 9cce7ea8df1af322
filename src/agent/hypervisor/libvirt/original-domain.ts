// Failback onto a libvirt domain drsite did not create. When replication is reversed towards the
// site that holds it, the (shut-off) domain's images seed the new replica, and the domain stays
// defined, recorded here as the VM's original. A failover back to that site then restores the
// recovery point into the original's own images and starts the original domain: its definition
// (name, uuid, devices, networks, MACs) is the one it always had, nothing is defined twice.
import { spawn, execFile } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { readJsonIfExists, writeJsonAtomic } from '../../../core/atomic-file.ts';
import { TerminalError } from '../../../model/errors.ts';
import type { BlockDevice } from '../../../model/block-device.ts';
import { NbdClient } from '../../../nbd/client.ts';
import { checkDomain, domState } from './checkpoint-source.ts';
import { readDomain } from './domain-xml.ts';
import type { LibvirtHypervisor } from './libvirt-hypervisor.ts';

const run = promisify(execFile);
const CHUNK = 4 << 20;

export interface OriginalDomain {
  readonly vm: string;
  readonly disks: readonly { readonly target: string; readonly image: string; readonly format: string; readonly size: number }[];
}

const fileOf = (hv: LibvirtHypervisor, vm: string) => join(hv.root, '..', 'libvirt-originals', `${vm}.json`);

export function findOriginal(hv: LibvirtHypervisor, vm: string): Promise<OriginalDomain | undefined> {
  hv.vmDir(vm);
  return readJsonIfExists<OriginalDomain>(fileOf(hv, vm));
}

export async function forgetOriginal(hv: LibvirtHypervisor, vm: string): Promise<void> {
  await rm(fileOf(hv, vm), { force: true });
}

/**
 * Reverse replication towards this site: the shut-off domain's disks become the replica's
 * starting images (`<storageDir>/<disk>.img`, raw), so only blocks that differ ship; the domain
 * stays defined and is recorded as the original to fail back onto.
 */
export async function seedFromOriginal(hv: LibvirtHypervisor, vm: string, storageDir: string, diskIds: readonly string[], useDisks: boolean): Promise<void> {
  if ((await domState(hv.virsh, vm)) !== 'shut off') throw new TerminalError('invalid-state', `libvirt domain "${vm}" is running on this site: shut it down before reverse replication onto it`);
  const all = readDomain(await hv.virsh.run(['dumpxml', '--inactive', vm], { domain: vm }), `libvirt domain "${vm}"`).disks.map((d) => d.target);
  const { disks } = await checkDomain(hv.virsh, vm, all.filter((t) => !diskIds.includes(t)));
  await mkdir(storageDir, { recursive: true });
  for (const id of useDisks ? diskIds : []) {
    const d = disks.find((x) => x.target === id);
    if (!d) continue;
    await run('qemu-img', ['convert', '-q', '-f', d.format, '-O', 'raw', d.image, join(storageDir, `${id}.img`)]).catch((e: { stderr?: string; message: string }) => {
      throw new TerminalError('invalid-state', `libvirt domain "${vm}": cannot copy disk ${id} (${d.image}) to seed the replica: ${(e.stderr ?? e.message).trim()}`);
    });
  }
  const original: OriginalDomain = { vm, disks: disks.map((d) => ({ target: d.target, image: d.image, format: d.format, size: d.size })) };
  await mkdir(join(hv.root, '..', 'libvirt-originals'), { recursive: true });
  await writeJsonAtomic(fileOf(hv, vm), original);
}

/**
 * Failback: writes the recovery point's disks into the original domain's images (only the chunks
 * that differ), then starts the domain unless `start` is false. The domain must be off.
 */
export async function restoreIntoOriginal(hv: LibvirtHypervisor, original: OriginalDomain, devices: ReadonlyMap<string, BlockDevice>, start: boolean): Promise<void> {
  const vm = original.vm;
  if ((await domState(hv.virsh, vm)) !== 'shut off') throw new TerminalError('invalid-state', `libvirt domain "${vm}" is running on this site: shut it down before failing back onto it`);
  for (const d of original.disks) {
    const dev = devices.get(d.target);
    if (!dev) throw new TerminalError('not-found', `the recovery point has no disk ${d.target} for libvirt domain "${vm}"`);
    if (dev.size !== d.size) throw new TerminalError('invalid-state', `libvirt domain "${vm}": disk ${d.target} is ${d.size} bytes, the recovery point's ${dev.size}`);
    await writeImage(hv, vm, d, dev);
  }
  if (start) await hv.virsh.run(['start', vm], { domain: vm });
}

async function writeImage(hv: LibvirtHypervisor, vm: string, d: OriginalDomain['disks'][number], dev: BlockDevice): Promise<void> {
  const workDir = join(hv.runDir, 'failback', vm);
  await mkdir(workDir, { recursive: true });
  const socket = join(workDir, `${d.target}.sock`);
  await rm(socket, { force: true });
  const proc = spawn('qemu-nbd', ['-f', d.format, '--socket', socket, '-x', d.target, '--cache=none', '--aio=threads', d.image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.once('error', () => {});
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    let c: NbdClient | undefined;
    for (let i = 0; i < 200 && !c && proc.exitCode === null; i++) {
      c = await NbdClient.connect(socket, d.target).catch(() => undefined);
      if (!c) await Promise.race([sleep(50), exited]);
    }
    if (!c) throw new TerminalError('invalid-state', `libvirt domain "${vm}": cannot open disk ${d.target} (${d.image}) for writing: ${stderr.trim() || 'qemu-nbd did not start'}`);
    try {
      for (let at = 0; at < d.size; at += CHUNK) {
        const n = Math.min(CHUNK, d.size - at);
        const want = await dev.read(at, n);
        if (!want.equals(await c.read(at, n))) await c.write(at, want);
      }
      await c.flush();
    } finally {
      await c.close();
    }
  } finally {
    if (proc.exitCode === null) {
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
    await rm(workDir, { recursive: true, force: true });
  }
}

