// A VM's disks as the agent serves them, exported over NBD on the VM's unix socket
// (`<dataDir>/nbd/<vm>.sock`, one export per disk name). A protected VM's disks go through the
// change tracker, so every write a guest, QEMU or qemu-io makes is seen by replication; a VM
// created by a failover runs on overlays of a recovery point until it is committed.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TrackedDisk } from '../../core/tracking/tracker.ts';
import type { BlockDevice } from '../../model/block-device.ts';
import type { Logger } from '../../transport/logger.ts';
import type { Hypervisor, VmDefinition } from '../../model/hypervisor.ts';
import { NbdServer } from '../../nbd/server.ts';

export interface ClosableDevice extends BlockDevice {
  close(): Promise<void>;
}

export class VmRuntime {
  readonly vm: VmDefinition;
  /** Every disk as served, by disk name. */
  readonly devices: Map<string, ClosableDevice>;
  /** The same disks when they go through the change tracker (empty for overlay VMs). */
  readonly disks: Map<string, TrackedDisk>;
  readonly socketPath: string;
  #nbd: NbdServer | undefined;

  private constructor(vm: VmDefinition, devices: Map<string, ClosableDevice>, disks: Map<string, TrackedDisk>, socketPath: string) {
    this.vm = vm;
    this.devices = devices;
    this.disks = disks;
    this.socketPath = socketPath;
  }

  /**
   * Opens every disk of `vm` through the tracker (its state files beside the image) and starts the
   * NBD export. A disk whose tracker was not closed cleanly reports continuity `lost`.
   */
  static async start(hv: Pick<Hypervisor, 'diskPath'>, vm: VmDefinition, nbdDir: string, log: Logger): Promise<VmRuntime> {
    const disks = new Map<string, TrackedDisk>();
    try {
      for (const d of vm.disks) disks.set(d.name, await TrackedDisk.open(hv.diskPath(vm.name, d), { id: d.name }));
    } catch (e) {
      for (const t of disks.values()) await t.close();
      throw e;
    }
    return VmRuntime.#serve(vm, new Map(disks), disks, nbdDir, log);
  }

  /** Serves devices that are not tracked (a failover's overlays). */
  static async serve(vm: VmDefinition, devices: Map<string, ClosableDevice>, nbdDir: string, log: Logger): Promise<VmRuntime> {
    return VmRuntime.#serve(vm, devices, new Map(), nbdDir, log);
  }

  static async #serve(vm: VmDefinition, devices: Map<string, ClosableDevice>, disks: Map<string, TrackedDisk>, nbdDir: string, log: Logger): Promise<VmRuntime> {
    await mkdir(nbdDir, { recursive: true });
    const rt = new VmRuntime(vm, devices, disks, join(nbdDir, `${vm.name}.sock`));
    try {
      rt.#nbd = await NbdServer.listen(rt.socketPath, devices as ReadonlyMap<string, BlockDevice>, {
        onError: (error, where) => log.warn('nbd error', { vm: vm.name, where, error: (error as Error).message }),
      });
    } catch (e) {
      for (const d of devices.values()) await d.close();
      throw e;
    }
    return rt;
  }

  /**
   * Whether the exports take writes: a VM of the `files` kind has no guest to stop, so powering it
   * off is this (whatever wrote through its exports is disconnected, its writes done).
   */
  async setWritable(writable: boolean): Promise<void> {
    await this.#nbd?.setReadOnly(!writable);
  }

  /** Disks whose tracking continuity was lost (the agent stopped without closing them). */
  lostContinuity(): string[] {
    return [...this.disks.values()].filter((d) => d.continuity === 'lost').map((d) => d.id);
  }

  async stop(): Promise<void> {
    await this.#nbd?.close();
    for (const d of this.devices.values()) await d.close();
  }
}
