// Chooses the hypervisor driver a site declares (`hypervisor: files | qemu | libvirt`).
import { TerminalError } from '../../model/errors.ts';
import type { Hypervisor } from '../../model/hypervisor.ts';
import { FilesHypervisor } from './files.ts';
import { LibvirtHypervisor, type LibvirtSettings } from './libvirt/libvirt-hypervisor.ts';
import { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu-hypervisor.ts';
import type { QemuSettings } from './qemu/qemu-args.ts';

export type { QemuSettings } from './qemu/qemu-args.ts';
export type { LibvirtSettings } from './libvirt/libvirt-hypervisor.ts';

export function hypervisorFor(kind: string, root: string, settings: QemuSettings = {}, opts: QemuHypervisorOptions = {}, libvirt: LibvirtSettings = {}): Hypervisor {
  switch (kind) {
    case 'files':
      return new FilesHypervisor(root);
    case 'qemu':
      return new QemuHypervisor(root, settings, opts);
    case 'libvirt':
      return new LibvirtHypervisor(root, libvirt, opts.log ? { log: opts.log } : {});
    default:
      throw new TerminalError('invalid-argument', `unknown hypervisor "${kind}" (expected files, qemu or libvirt)`);
  }
}
