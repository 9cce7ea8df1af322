// A VM's disks as the agent serves them: each disk image wrapped in a change tracker and exported
// over NBD on the VM's unix socket (`<dataDir>/nbd/<vm>.sock`, one export per disk name), so that
// every write a guest, QEMU or qemu-io makes is seen by change tracking.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TrackedDisk } from '../core/tracker.ts';
import type { BlockDevice } from '../model/block-device.ts';
import type { FilesHypervisor, VmDefinition } from './hypervisor-files.ts';
import { NbdServer } from './nbd-server.ts';
import type { Logger } from '../transport/logger.ts';

export class VmRuntime {
  readonly vm: VmDefinition;
  readonly disks: Map<string, TrackedDisk>;
  readonly socketPath: string;
  #nbd: NbdServer | undefined;

  private constructor(vm: VmDefinition, disks: Map<string, TrackedDisk>, socketPath: string) {
    this.vm = vm;
    this.disks = disks;
    this.socketPath = socketPath;
  }

  /**
   * Opens every disk of `vm` through the tracker (its state files beside the image) and starts the
   * NBD export. A disk whose tracker was not closed cleanly reports continuity `lost`.
   */
  static async start(hv: FilesHypervisor, vm: VmDefinition, nbdDir: string, log: Logger): Promise<VmRuntime> {
    const disks = new Map<string, TrackedDisk>();
    try {
      for (const d of vm.disks) disks.set(d.name, await TrackedDisk.open(hv.diskPath(vm.name, d), { id: d.name }));
    } catch (e) {
      for (const t of disks.values()) await t.close();
      throw e;
    }
    await mkdir(nbdDir, { recursive: true });
    const rt = new VmRuntime(vm, disks, join(nbdDir, `${vm.name}.sock`));
    rt.#nbd = await NbdServer.listen(rt.socketPath, disks as ReadonlyMap<string, BlockDevice>, {
      onError: (error, where) => log.warn('nbd error', { vm: vm.name, where, error: (error as Error).message }),
    });
    return rt;
  }

  /** Disks whose tracking continuity was lost (the agent stopped without closing them). */
  lostContinuity(): string[] {
    return [...this.disks.values()].filter((d) => d.continuity === 'lost').map((d) => d.id);
  }

  async stop(): Promise<void> {
    await this.#nbd?.close();
    for (const d of this.disks.values()) await d.close();
  }
}
