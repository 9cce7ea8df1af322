// The QEMU command line as data (disks from the NBD exports, NICs from the site's network map,
// the seed and guest-agent channel), the settings errors and the factory (the accelerator probe: accel.test.ts).
import { describe, expect, it } from 'vitest';
import { FilesHypervisor } from '../../../../src/agent/hypervisor/files.ts';
import { hypervisorFor } from '../../../../src/agent/hypervisor/index.ts';
import { macFor, qemuArgs, type LaunchInput } from '../../../../src/agent/hypervisor/qemu/qemu-args.ts';
import { QemuHypervisor } from '../../../../src/agent/hypervisor/qemu/qemu-hypervisor.ts';
import type { VmDefinition } from '../../../../src/model/hypervisor.ts';

const paths = { qmp: '/v/web/qmp.sock', qga: '/v/web/qga.sock', pidfile: '/v/web/qemu.pid', serial: '/v/web/serial.log' };
const vm: VmDefinition = {
  name: 'web',
  power: 'Off',
  cpus: 2,
  disks: [{ name: 'os', file: 'os.img', size: 1 << 20 }, { name: 'data', file: 'data.img', size: 1 << 20 }],
  adapters: [{ name: 'lan', network: 'prod' }, { name: 'spare' }],
  boot: { kernel: '/k/vmlinuz', initrd: '/k/initrd', append: 'console=ttyS0' },
};
const input: LaunchInput = { vm, settings: { memoryMiB: 512, networks: { prod: 'socket,listen=127.0.0.1:5000' } }, accel: 'tcg', paths, nbdSocket: '/d/nbd/web.sock', seedImage: '/v/web/seed.img' };

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('qemuArgs', () => {
  it('attaches each disk from its NBD export, the seed read-only, NICs by network, the guest-agent channel', () => {
    const args = qemuArgs(input);
    expect(values(args, '-accel')).toEqual(['tcg']);
    expect(values(args, '-smp')).toEqual(['2']);
    expect(values(args, '-m')).toEqual(['512']);
    expect(args).toContain('-no-shutdown');
    expect(values(args, '-blockdev').map((b) => JSON.parse(b))).toEqual([
      { driver: 'nbd', 'node-name': 'disk0', server: { type: 'unix', path: '/d/nbd/web.sock' }, export: 'os', 'reconnect-delay': 60 },
      { driver: 'nbd', 'node-name': 'disk1', server: { type: 'unix', path: '/d/nbd/web.sock' }, export: 'data', 'reconnect-delay': 60 },
      { driver: 'file', 'node-name': 'seed-file', filename: '/v/web/seed.img', 'read-only': true },
      { driver: 'raw', 'node-name': 'seed', file: 'seed-file', 'read-only': true },
    ]);
    expect(values(args, '-netdev')).toEqual(['socket,listen=127.0.0.1:5000,id=net0']);
    expect(values(args, '-device')).toEqual([
      'virtio-blk-pci,drive=disk0,serial=os',
      'virtio-blk-pci,drive=disk1,serial=data',
      'virtio-blk-pci,drive=seed,serial=cidata',
      `virtio-net-pci,mac=${macFor('web', vm.adapters[0]!)},netdev=net0`,
      // No network: a NIC with no backend, i.e. disconnected.
      `virtio-net-pci,mac=${macFor('web', vm.adapters[1]!)}`,
      'virtio-serial-pci,id=vser0',
      'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0',
    ]);
    expect(values(args, '-chardev')).toContain('socket,id=qga0,path=/v/web/qga.sock,server=on,wait=off');
    expect(values(args, '-kernel')).toEqual(['/k/vmlinuz']);
    expect(values(args, '-append')).toEqual(['console=ttyS0']);
  });

  it('boots from the disks in order with firmware boot, escaping commas in paths', () => {
    const args = qemuArgs({ ...input, vm: { ...vm, adapters: [], boot: { firmware: 'uefi' } }, paths: { ...paths, qmp: '/v/a,b/qmp.sock' }, seedImage: undefined });
    expect(values(args, '-device').filter((d) => d.startsWith('virtio-blk'))).toEqual(['virtio-blk-pci,drive=disk0,serial=os,bootindex=1', 'virtio-blk-pci,drive=disk1,serial=data,bootindex=2']);
    expect(values(args, '-bios')).toEqual(['/usr/share/ovmf/OVMF.fd']);
    expect(values(args, '-chardev')).toContain('socket,id=qmp,path=/v/a,,b/qmp.sock,server=on,wait=off');
    expect(args).not.toContain('-kernel');
  });

  it('refuses an adapter on a network the site does not map, and netdev options that set an id', () => {
    expect(() => qemuArgs({ ...input, settings: {} })).toThrow('VM "web" adapter "lan": network "prod" has no QEMU netdev in the site\'s qemu.networks (none declared)');
    expect(() => qemuArgs({ ...input, settings: { networks: { test: 'user' } } })).toThrow('(declared: test)');
    expect(() => qemuArgs({ ...input, settings: { networks: { prod: 'user,id=x' } } })).toThrow('site qemu.networks.prod: "user,id=x" must not set id');
    expect(() => qemuArgs({ ...input, settings: { networks: { prod: 'hubport' } } })).toThrow('site qemu.networks.prod: "hubport" does not start with a netdev type');
  });
});

describe('hypervisorFor', () => {
  it('makes the driver a site names, and refuses others', () => {
    expect(hypervisorFor('files', '/r')).toBeInstanceOf(FilesHypervisor);
    const q = hypervisorFor('qemu', '/r', { accel: 'tcg' });
    expect(q).toBeInstanceOf(QemuHypervisor);
    expect((q as QemuHypervisor).settings).toEqual({ accel: 'tcg' });
    expect(() => hypervisorFor('vmware', '/r')).toThrow('unknown hypervisor "vmware" (expected files, qemu or libvirt)');
  });
});
