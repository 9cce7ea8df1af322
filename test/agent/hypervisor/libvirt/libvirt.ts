// Test plumbing for the libvirt driver: a running libvirtd (started here when it is not, as on a
// bare CI machine), domains defined with plain `virsh define` that run the test guest (direct
// kernel boot, TCG: nested KVM guests die here) on a qcow2 or raw image, isolated libvirt networks,
// and a cleanup that undefines whatever a test defined, also when it failed.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { makeGuestDisk } from '../../../../src/demo/test-guest.ts';
import { append, testGuest, type GuestRun } from '../qemu/guest.ts';
import { listening, untilListening } from '../../../support/sockets.ts';

const run = promisify(execFile);
export const URI = 'qemu:///system';
export const IMAGES = '/var/lib/libvirt/images/drsite-test';

export async function virsh(...args: string[]): Promise<string> {
  const { stdout } = await run('virsh', ['-q', '-c', URI, ...args], { maxBuffer: 16 << 20 });
  return stdout;
}

async function answers(): Promise<boolean> {
  return virsh('uri').then(() => true, () => false);
}

/**
 * Starts virtlogd and libvirtd (as daemons) unless libvirtd answers already. First gives /dev/kvm
 * to group kvm (0660), as Debian's udev rule does where udev runs: with /dev/kvm root-only,
 * libvirtd probes QEMU as root, finds KVM, then finds libvirt-qemu cannot open it, and probes
 * again on every `virsh define` (80 s each on this machine). The test guests run TCG either way.
 */
export async function ensureLibvirtd(): Promise<void> {
  await kvmForGroupKvm();
  if (!(await listening(VIRTLOGD_SOCK))) {
    await daemon('virtlogd');
    await untilListening(VIRTLOGD_SOCK, { timeoutMs: 30_000, what: 'virtlogd (started with `virtlogd -d`)' });
  }
  if (await answers()) return;
  await daemon('libvirtd');
  for (let i = 0; i < 300; i++) {
    if (await answers()) return;
    await sleep(100);
  }
  throw new Error('libvirtd did not answer on qemu:///system within 30 s of `libvirtd -d`');
}

// Asked, not inferred from the file: a virtlogd that died leaves its socket file behind, and then
// every `virsh start` fails "Failed to connect socket to '/run/libvirt/virtlogd-sock'".
const VIRTLOGD_SOCK = '/run/libvirt/virtlogd-sock';

let kvmDone: Promise<void> | undefined;
/** Once per process (see ensureLibvirtd). */
function kvmForGroupKvm(): Promise<void> {
  kvmDone ??= kvmForGroupKvmNow();
  return kvmDone;
}

async function kvmForGroupKvmNow(): Promise<void> {
  if (!existsSync('/dev/kvm') || process.getuid?.() !== 0) return;
  const { stdout } = await run('getent', ['group', 'kvm']).catch(() => ({ stdout: '' }));
  const gid = Number(stdout.split(':')[2]);
  if (!Number.isInteger(gid)) return;
  const s = statSync('/dev/kvm');
  if (s.gid !== gid) await chown('/dev/kvm', s.uid, gid);
  if ((s.mode & 0o060) !== 0o060) await chmod('/dev/kvm', (s.mode & 0o7777) | 0o060);
}

async function daemon(cmd: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, ['-d'], { stdio: 'ignore' });
    p.once('error', (e) => reject(new Error(`${cmd} -d: ${e.message} (install libvirt-daemon-system libvirt-daemon-driver-qemu)`)));
    p.once('exit', () => resolve());
  });
}

export interface GuestDomain {
  readonly name: string;
  readonly dir: string;
  readonly disk: string;
  readonly serial: string;
  readonly mac: string;
  readonly xml: string;
}

export interface GuestDomainOptions {
  readonly run: GuestRun;
  /** @default qcow2 */
  readonly format?: 'qcow2' | 'raw' | 'vmdk';
  /** Files on the guest's ext4 disk. */
  readonly files?: Record<string, string | Buffer>;
  /** libvirt network of its one interface; absent = no interface. */
  readonly network?: string;
  /** Extra `<disk>` elements. */
  readonly extraDisks?: string[];
  readonly size?: number;
  /** The kernel command line instead of the test guest's (`append(run)`). */
  readonly cmdline?: string;
}

/**
 * The test guest's kernel and initrd copied under IMAGES: libvirt's QEMU runs as libvirt-qemu, which
 * cannot reach a checkout under a private directory (a CI clone in a `mktemp -d` folder is 0700).
 */
async function guestBoot(): Promise<{ kernel: string; initrd: string }> {
  const g = await testGuest();
  const dir = join(IMAGES, `boot-${basename(dirname(g.kernel))}`);
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.img');
  if (!existsSync(initrd)) {
    await mkdir(dir, { recursive: true });
    await chmod(IMAGES, 0o711);
    await copyFile(g.kernel, kernel);
    await copyFile(g.initrd, `${initrd}.part`);
    await rename(`${initrd}.part`, initrd); // last: its presence says both are whole
  }
  return { kernel, initrd };
}

/** The test guest as a libvirt domain drsite did not create: its image, its XML, `virsh define`. */
export async function defineGuestDomain(name: string, opts: GuestDomainOptions): Promise<GuestDomain> {
  await kvmForGroupKvm();
  const g = await guestBoot();
  const dir = join(IMAGES, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await chmod(IMAGES, 0o711);
  const raw = join(dir, 'os.raw');
  await writeFile(raw, '');
  await truncate(raw, opts.size ?? 32 << 20);
  await makeGuestDisk(raw, opts.files ?? {});
  const format = opts.format ?? 'qcow2';
  let disk = raw;
  if (format !== 'raw') {
    disk = join(dir, `os.${format}`);
    await run('qemu-img', ['convert', '-q', '-O', format, raw, disk]);
    await rm(raw);
  }
  const serial = join(dir, 'serial.log');
  const mac = `52:54:00:${[...createHash('sha256').update(name).digest().subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
  const xml = `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${g.kernel}</kernel>
    <initrd>${g.initrd}</initrd>
    <cmdline>${opts.cmdline ?? append(opts.run)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${format}'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    ${(opts.extraDisks ?? []).join('\n    ')}
    ${opts.network ? `<interface type='network'><source network='${opts.network}'/><mac address='${mac}'/><model type='virtio'/></interface>` : ''}
    <serial type='file'><source path='${serial}'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>
`;
  await writeFile(join(dir, 'domain.xml'), xml);
  await virsh('define', join(dir, 'domain.xml'));
  return { name, dir, disk, serial, mac, xml };
}

/** An isolated libvirt network (no forward, no address: nothing leaves its bridge). */
export async function defineIsolatedNetwork(name: string): Promise<void> {
  const file = join('/tmp', `${name}.net.xml`);
  await writeFile(file, `<network><name>${name}</name><bridge name='dr${randomBytes(4).toString('hex')}'/></network>`);
  await virsh('net-define', file);
  await virsh('net-start', name);
  await rm(file, { force: true });
}

/**
 * Destroys and undefines domains and networks (each only if it exists), and removes their folders.
 * libvirtd is started first if it is down (a test that stopped it may have failed midway).
 */
export async function cleanup(domains: string[], networks: string[] = []): Promise<void> {
  await ensureLibvirtd();
  for (const d of domains) {
    await virsh('destroy', d).catch(() => {});
    await virsh('undefine', d, '--checkpoints-metadata').catch(() => virsh('undefine', d).catch(() => {}));
    await rm(join(IMAGES, d), { recursive: true, force: true });
  }
  for (const n of networks) {
    await virsh('net-destroy', n).catch(() => {});
    await virsh('net-undefine', n).catch(() => {});
  }
}

export async function domState(name: string): Promise<string> {
  return (await virsh('domstate', name).catch(() => 'absent')).trim();
}

/** Names of the running domains (`virsh list`). */
export async function runningDomains(): Promise<string[]> {
  return (await virsh('list', '--name')).split('\n').map((l) => l.trim()).filter(Boolean);
}

/** sha256 of a domain's image as raw bytes (the domain paused or off: its writes flushed). */
export async function imageSha(disk: string, format: 'qcow2' | 'raw' | 'vmdk' = 'qcow2'): Promise<string> {
  const out = `${disk}.sha-${randomBytes(4).toString('hex')}.raw`;
  try {
    await run('qemu-img', ['convert', '-U', '-q', '-f', format, '-O', 'raw', disk, out]);
    return createHash('sha256').update(await readFile(out)).digest('hex');
  } finally {
    await rm(out, { force: true });
  }
}

/** A unique suffix per test run, so parallel or leftover runs never collide. */
export const suffix = (): string => randomBytes(3).toString('hex');
