// Chooses the hypervisor driver a site declares (`hypervisor: files | qemu`).
import { TerminalError } from '../../model/errors.ts';
import type { Hypervisor } from '../../model/hypervisor.ts';
import { FilesHypervisor } from './files.ts';
import { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu-hypervisor.ts';
import type { QemuSettings } from './qemu/qemu-args.ts';

export type { QemuSettings } from './qemu/qemu-args.ts';

export function hypervisorFor(kind: string, root: string, settings: QemuSettings = {}, opts: QemuHypervisorOptions = {}): Hypervisor {
  switch (kind) {
    case 'files':
      return new FilesHypervisor(root);
    case 'qemu':
      return new QemuHypervisor(root, settings, opts);
    default:
      throw new TerminalError('invalid-argument', `unknown hypervisor "${kind}" (expected files or qemu)`);
  }
}
