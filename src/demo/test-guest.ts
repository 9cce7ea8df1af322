// Builds drsite's test guest from Debian packages only: the cloud kernel (apt-get download, then
// dpkg-deb -x), an initramfs of busybox-static, the kernel modules it needs, qemu-guest-agent (the
// package's qemu-ga and the host's copies of the libraries it links) and guest/init.sh,
// and ext4 disk images for it (mkfs.ext4 -d). Cached under .cache/test-guest/<key>/, keyed by the
// kernel package, busybox and the init script, so CI builds it once per run. The tests boot it,
// and so does examples/qemu (its sample VMs run it).
// Run: npx node scripts/build-test-guest.ts   (prints the kernel and initrd paths)
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const run = promisify(execFile);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const INIT = join(REPO, 'src', 'demo', 'guest', 'init.sh');
const KERNEL_META = 'linux-image-cloud-amd64';
const QGA_PACKAGE = 'qemu-guest-agent';

/**
 * The modules the guest loads, in the order the virtio stack needs them; their dependencies (read
 * from each module's `depends=`, since the package ships no modules.dep) are loaded first.
 */
const MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_blk',
  'virtio_net', 'virtio_console',
  // The seed disk (vfat, or iso9660) and the ACPI power button (QMP system_powerdown) via evdev.
  'fat', 'vfat', 'nls_cp437', 'nls_ascii', 'nls_utf8', 'cdrom', 'isofs', 'button', 'evdev',
];

export interface TestGuest {
  readonly kernel: string;
  readonly initrd: string;
  /** Kernel release, e.g. `6.1.0-57-cloud-amd64`. */
  readonly release: string;
  readonly dir: string;
}

async function out(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { maxBuffer: 64 << 20, ...opts });
    return stdout;
  } catch (e) {
    const x = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(x.stderr ?? '').trim() || x.message}`);
  }
}

/** A package's candidate version in the archive. */
async function candidate(name: string): Promise<string> {
  const version = /Candidate: (\S+)/.exec(await out('apt-cache', ['policy', name]))?.[1];
  if (!version || version === '(none)') throw new Error(`apt-cache policy ${name} has no candidate version (is the Debian archive in sources.list?)`);
  return version;
}

/** A package's .deb: from drsite's cache, apt's, or downloaded from the archive (no install). */
async function debOf(debs: string, pkg: { name: string; version: string }): Promise<string> {
  const debName = `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}_amd64.deb`;
  for (const d of [join(debs, debName), join('/var/cache/apt/archives', debName)]) if (await exists(d)) return d;
  await out('apt-get', ['download', '-q', `${pkg.name}=${pkg.version}`], { cwd: debs });
  return join(debs, debName);
}

/**
 * qemu-guest-agent (Debian's qemu-ga) in the initramfs: the binary from its package, and the
 * shared libraries and loader it links against as `ldd` finds them on this (Debian) host.
 */
async function addGuestAgent(debs: string, work: string, root: string): Promise<void> {
  const x = join(work, 'qga');
  await out('dpkg-deb', ['-x', await debOf(debs, { name: QGA_PACKAGE, version: await candidate(QGA_PACKAGE) }), x]);
  const bin = join(x, 'usr', 'sbin', 'qemu-ga');
  await mkdir(join(root, 'usr', 'sbin'), { recursive: true });
  await copyFile(bin, join(root, 'usr', 'sbin', 'qemu-ga'));
  await chmod(join(root, 'usr', 'sbin', 'qemu-ga'), 0o755);
  const libs = (await out('ldd', [bin])).split('\n').flatMap((l) => {
    const m = /=>\s+(\/\S+)/.exec(l) ?? /^\s*(\/\S+)\s+\(/.exec(l);
    return m ? [m[1]!] : [];
  });
  if (/not found/.test(await out('ldd', [bin]))) throw new Error(`ldd ${bin}: a library qemu-ga needs is not installed on this host`);
  for (const lib of libs) {
    // The loader keeps its absolute path (/lib64/ld-linux-x86-64.so.2); libraries go where it looks.
    const target = lib.startsWith('/lib64/') ? join(root, lib) : join(root, 'lib', 'x86_64-linux-gnu', basename(lib));
    await mkdir(dirname(target), { recursive: true });
    await copyFile(lib, target);
  }
}

/** The versioned kernel package the cloud metapackage points at, and its candidate version. */
async function kernelPackage(): Promise<{ name: string; version: string }> {
  const deps = await out('apt-cache', ['depends', KERNEL_META]);
  const name = /Depends: (linux-image-[^\s]+-cloud-amd64)/.exec(deps)?.[1];
  if (!name) throw new Error(`apt-cache depends ${KERNEL_META} names no kernel package (is the Debian archive in sources.list?)`);
  return { name, version: await candidate(name) };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

function moduleDepends(ko: Buffer): string[] {
  const at = ko.indexOf('depends=');
  if (at < 0) return [];
  const end = ko.indexOf(0, at);
  const list = ko.subarray(at + 'depends='.length, end).toString('ascii');
  return list ? list.split(',') : [];
}

/** Finds each module's file and orders them so dependencies come first; built-in ones are skipped. */
async function resolveModules(modRoot: string): Promise<{ name: string; path: string }[]> {
  const builtin = new Set((await readFile(join(modRoot, 'modules.builtin'), 'utf8')).split('\n').map((l) => l.replace(/^.*\//, '').replace(/\.ko$/, '')));
  const files = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (e.name.endsWith('.ko')) files.set(e.name.slice(0, -3).replace(/-/g, '_'), join(d, e.name));
    }
  };
  await walk(join(modRoot, 'kernel'));
  const order: { name: string; path: string }[] = [];
  const seen = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    const n = name.replace(/-/g, '_');
    if (seen.has(n) || builtin.has(n)) return;
    seen.add(n);
    const path = files.get(n);
    if (!path) throw new Error(`kernel module ${n} is neither built in nor in ${modRoot}`);
    for (const dep of moduleDepends(await readFile(path))) await visit(dep);
    order.push({ name: n, path });
  };
  for (const m of MODULES) await visit(m);
  return order;
}

/** A newc cpio archive of `root`, gzip-compressed, as the kernel's initramfs loader reads it. */
async function initramfs(root: string, target: string): Promise<void> {
  const list = (await out('find', ['.', '-mindepth', '1'], { cwd: root })).split('\n').filter(Boolean).sort().join('\n');
  const cpio = await new Promise<Buffer>((res, rej) => {
    const child = execFile('cpio', ['-o', '-H', 'newc', '--quiet', '--owner=0:0'], { cwd: root, encoding: 'buffer', maxBuffer: 256 << 20 }, (e, stdout, stderr) =>
      e ? rej(new Error(`cpio failed: ${stderr.toString()}`)) : res(stdout),
    );
    child.stdin?.end(`${list}\n`);
  });
  await writeFile(target, gzipSync(cpio));
}

function guestIn(dir: string, release: string): TestGuest {
  return { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), release, dir };
}

async function cacheKey(pkg: { name: string; version: string }): Promise<string> {
  const busybox = (await out('dpkg-query', ['-W', '-f', '${Version}', 'busybox-static'])).trim();
  const qga = await candidate(QGA_PACKAGE);
  const h = createHash('sha256').update(`${pkg.name}=${pkg.version}\nbusybox=${busybox}\n${QGA_PACKAGE}=${qga}\n`).update(await readFile(INIT)).update(MODULES.join(','));
  return `${pkg.name}_${pkg.version}_${h.digest('hex').slice(0, 12)}`;
}

/** Builds the guest (or returns the cached one): the kernel and initramfs to boot with `-kernel`/`-initrd`. */
export async function buildTestGuest(cacheRoot = join(REPO, '.cache', 'test-guest')): Promise<TestGuest> {
  const pkg = await kernelPackage();
  const dir = join(cacheRoot, await cacheKey(pkg));
  const done = join(dir, 'guest.json');
  if (await exists(done)) return guestIn(dir, (JSON.parse(await readFile(done, 'utf8')) as { release: string }).release);

  await mkdir(cacheRoot, { recursive: true });
  // Built aside and renamed into place, so concurrent builders (parallel test files) never see half a guest.
  const work = await mkdtemp(join(cacheRoot, '.build-'));
  try {
    const debs = join(cacheRoot, 'debs');
    await mkdir(debs, { recursive: true });
    const deb = await debOf(debs, pkg);
    const x = join(work, 'deb');
    await out('dpkg-deb', ['-x', deb, x]);
    const release = (await readdir(join(x, 'lib', 'modules')))[0];
    if (!release) throw new Error(`${deb} holds no /lib/modules`);
    const modules = await resolveModules(join(x, 'lib', 'modules', release));

    const root = join(work, 'initramfs');
    await mkdir(join(root, 'bin'), { recursive: true });
    await mkdir(join(root, 'lib', 'modules'), { recursive: true });
    await copyFile('/bin/busybox', join(root, 'bin', 'busybox'));
    for (const m of modules) await copyFile(m.path, join(root, 'lib', 'modules', `${m.name}.ko`));
    await writeFile(join(root, 'lib', 'modules', 'order'), `${modules.map((m) => m.name).join('\n')}\n`);
    await addGuestAgent(debs, work, root);
    await copyFile(INIT, join(root, 'init'));
    await chmod(join(root, 'init'), 0o755);

    const out_ = join(work, 'out');
    await mkdir(out_);
    await copyFile(join(x, 'boot', `vmlinuz-${release}`), join(out_, 'vmlinuz'));
    await initramfs(root, join(out_, 'initrd.img'));
    await writeFile(join(out_, 'guest.json'), `${JSON.stringify({ release, package: pkg }, null, 2)}\n`);
    try {
      await rename(out_, dir);
    } catch (e) {
      if (!(await exists(done))) throw e;
    }
    return guestIn(dir, release);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Makes `image` (an existing file: its size is the filesystem's) an ext4 filesystem holding `files`
 * (path inside the filesystem → content), e.g. `/drsite/run.sh` for the guest's `script` action.
 */
export async function makeGuestDisk(image: string, files: Readonly<Record<string, string | Buffer>> = {}): Promise<void> {
  const staging = await mkdtemp(join(dirname(image), '.rootfs-'));
  try {
    for (const [path, content] of Object.entries(files)) {
      const target = join(staging, path.replace(/^\/+/, ''));
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, content, { mode: 0o755 });
    }
    await out('mkfs.ext4', ['-q', '-F', '-L', 'drsite-root', '-d', staging, image]);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
