// The `files` hypervisor: a VM is a folder `<root>/<vm>/` holding `vm.json` (name, disks, network
// adapters, power state) and its raw disk images. It boots nothing; it is the real on-disk shape
// that replication, failover and the tests work on, where QEMU is not needed.
import { mkdir, readdir, rm, open } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from '../../core/atomic-file.ts';
import { TerminalError } from '../../model/errors.ts';
import type { Hypervisor, PowerOptions, PowerState, VmDefinition, VmDisk, VmRuntimeStatus } from '../../model/hypervisor.ts';

export type { PowerState, VmAdapter, VmDefinition, VmDisk } from '../../model/hypervisor.ts';

const VM_NAME = /^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$/;

export class FilesHypervisor implements Hypervisor {
  readonly kind = 'files';
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  vmDir(name: string): string {
    if (!VM_NAME.test(name)) throw new TerminalError('invalid-argument', `invalid VM name "${name}"`);
    return join(this.root, name);
  }

  diskPath(vm: string, disk: VmDisk): string {
    return join(this.vmDir(vm), disk.file);
  }

  async list(): Promise<VmDefinition[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const vms: VmDefinition[] = [];
    for (const n of names.sort()) {
      const vm = await readJsonIfExists<VmDefinition>(join(this.root, n, 'vm.json'));
      if (vm) vms.push(vm);
    }
    return vms;
  }

  async find(name: string): Promise<VmDefinition | undefined> {
    return readJsonIfExists<VmDefinition>(join(this.vmDir(name), 'vm.json'));
  }

  async get(name: string): Promise<VmDefinition> {
    const vm = await this.find(name);
    if (!vm) throw new TerminalError('not-found', `VM "${name}" not found in ${this.root}`);
    return vm;
  }

  /** Creates the VM folder, sparse disk images of the given sizes and vm.json. Refuses to overwrite. */
  async create(def: Omit<VmDefinition, 'disks'> & { disks: { name: string; size: number; file?: string }[] }): Promise<VmDefinition> {
    const dir = this.vmDir(def.name);
    if (await this.find(def.name)) throw new TerminalError('invalid-state', `VM "${def.name}" already exists in ${this.root}`);
    await mkdir(dir, { recursive: true });
    const disks: VmDisk[] = [];
    for (const d of def.disks) {
      if (d.size % 512 !== 0) throw new TerminalError('invalid-argument', `disk "${d.name}" size ${d.size} is not a multiple of 512`);
      const file = d.file ?? `${d.name}.img`;
      const h = await open(join(dir, file), 'wx');
      await h.truncate(d.size);
      await h.close();
      disks.push({ name: d.name, file, size: d.size });
    }
    const vm: VmDefinition = { ...def, disks };
    await this.save(vm);
    return vm;
  }

  async save(vm: VmDefinition): Promise<void> {
    await writeJsonAtomic(join(this.vmDir(vm.name), 'vm.json'), vm);
  }

  /** Nothing boots here: the power state is what vm.json records. */
  async setPower(name: string, power: PowerState, _opts?: PowerOptions): Promise<VmDefinition> {
    const vm = await this.get(name);
    const next = { ...vm, power };
    await this.save(next);
    return next;
  }

  async status(name: string): Promise<VmRuntimeStatus> {
    return { power: (await this.get(name)).power };
  }

  async remove(name: string): Promise<void> {
    await rm(this.vmDir(name), { recursive: true, force: true });
  }
}
