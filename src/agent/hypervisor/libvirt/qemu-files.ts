// What libvirt's QEMU may open of the files drsite makes. It runs as its own user, so the run
// directory and what lives under it (NBD sockets, scratch files, seed disks, consoles) belong to
// the QEMU group: directories 0770, files 0660 (0711 / 0660 when the host has no such group).
import { chmod, chown, mkdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TerminalError } from '../../../model/errors.ts';

export class QemuFiles {
  readonly runDir: string;
  readonly #qemuGroup: string | undefined;
  #gid: Promise<number | undefined> | undefined;

  /** `qemuGroup`: the site's setting; absent, the first of libvirt-qemu, qemu, kvm the host has. */
  constructor(runDir: string, qemuGroup?: string) {
    this.runDir = runDir;
    this.#qemuGroup = qemuGroup;
  }

  /** Makes `dir` (and runDir above it) reachable by libvirt's QEMU: owned by its group, 0770. */
  async prepareDir(dir: string): Promise<void> {
    const gid = await this.gid();
    await mkdir(dir, { recursive: true });
    for (let d = resolve(dir); d.startsWith(this.runDir); d = resolve(d, '..')) {
      if (gid !== undefined) await chown(d, process.getuid?.() ?? 0, gid).catch(() => {});
      await chmod(d, gid !== undefined ? 0o770 : 0o711).catch(() => {});
      if (d === this.runDir) break;
    }
    // runDir's parent (by default /var/lib/libvirt/drsite) must be traversable by QEMU.
    const parent = resolve(this.runDir, '..');
    await mkdir(parent, { recursive: true });
    await chmod(parent, 0o711).catch(() => {});
  }

  /** A file QEMU opens (a socket it connects to, the seed disk it reads): the QEMU group's, mode 0660. */
  async share(path: string): Promise<void> {
    const gid = await this.gid();
    if (gid !== undefined) await chown(path, process.getuid?.() ?? 0, gid);
    await chmod(path, 0o660);
  }

  gid(): Promise<number | undefined> {
    this.#gid ??= (async () => {
      const groups = await readFile('/etc/group', 'utf8').catch(() => '');
      const gidOf = (n: string) => {
        const line = groups.split('\n').find((l) => l.startsWith(`${n}:`));
        return line ? Number(line.split(':')[2]) : undefined;
      };
      const wanted = this.#qemuGroup;
      if (wanted !== undefined) {
        const gid = gidOf(wanted);
        if (gid === undefined) throw new TerminalError('invalid-argument', `libvirt site setting qemuGroup: no group "${wanted}" on this host`);
        return gid;
      }
      for (const n of ['libvirt-qemu', 'qemu', 'kvm']) {
        const gid = gidOf(n);
        if (gid !== undefined) return gid;
      }
      return undefined;
    })();
    return this.#gid;
  }
}
