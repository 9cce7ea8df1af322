// The domain XML the libvirt driver reads and writes, table-driven (no libvirtd needed): what it
// reads of a domain, which disks it refuses and why, and the failover rewrite.
import { describe, expect, test } from 'vitest';
import { child, children, parseXml, readDomain, rewriteForTarget, textOf, untrackableReason, type DomainDisk } from '../../../../src/agent/hypervisor/libvirt/domain-xml.ts';

const SOURCE = `<domain type='kvm' id='7'>
  <name>web-01</name>
  <uuid>6f0e1d9e-0000-4000-8000-000000000001</uuid>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web-01-data.raw'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AA:BB:01'/>
      <source network='lan'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:02'/>
      <source bridge='br-mgmt'/>
    </interface>
    <serial type='file'><source path='/var/log/web-01.log'/><target port='0'/></serial>
    <channel type='unix'><source mode='bind' path='/run/x/org.qemu.guest_agent.0'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source></hostdev>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>`;

describe('readDomain', () => {
  test('disks (not the cdrom) by target with type and format, interfaces as eth<n> with lower-case MACs', () => {
    const d = readDomain(SOURCE);
    expect(d.name).toBe('web-01');
    expect(d.disks.map((x) => [x.target, x.type, x.format, x.path])).toEqual([
      ['vda', 'file', 'qcow2', '/var/lib/libvirt/images/web-01.qcow2'],
      ['vdb', 'file', 'raw', '/var/lib/libvirt/images/web-01-data.raw'],
    ]);
    expect(d.interfaces).toEqual([
      { name: 'eth0', type: 'network', network: 'lan', bridge: undefined, mac: '52:54:00:aa:bb:01' },
      { name: 'eth1', type: 'bridge', network: undefined, bridge: 'br-mgmt', mac: '52:54:00:aa:bb:02' },
    ]);
  });

  test('not a domain: a clear error', () => {
    expect(() => readDomain('<network><name>x</name></network>', 'libvirt domain "x"')).toThrow(/libvirt domain "x": root element is <network>, not <domain>/);
    expect(() => readDomain('<domain', 'libvirt domain "x"')).toThrow(/libvirt domain "x"/);
  });
});

describe('untrackableReason', () => {
  const disk = (over: Partial<DomainDisk>): DomainDisk => ({ target: 'vda', bus: 'virtio', type: 'file', format: 'qcow2', path: '/x', protocol: undefined, volume: undefined, readonly: false, backing: false, ...over });
  test.each([
    { reason: 'a local qcow2 image is tracked (checkpoints)', d: disk({}), why: undefined },
    { reason: 'a local raw image is tracked (QEMU dirty bitmaps)', d: disk({ format: 'raw' }), why: undefined },
    { reason: 'a block device in qcow2 is tracked', d: disk({ type: 'block' }), why: undefined },
    { reason: 'a network disk lives on its storage server', d: disk({ type: 'network', protocol: 'rbd' }), why: /network disk \(protocol rbd\)/ },
    { reason: 'vmdk has no bitmaps drsite can use', d: disk({ format: 'vmdk' }), why: /its format is vmdk/ },
    { reason: 'a vhost-user disk has no image', d: disk({ type: 'vhostuser' }), why: /disk type "vhostuser"/ },
    { reason: 'an overlay with a backing chain', d: disk({ backing: true }), why: /backing chain/ },
  ])('$reason', ({ d, why }) => {
    if (why === undefined) expect(untrackableReason(d)).toBeUndefined();
    else expect(untrackableReason(d)).toMatch(why);
  });
});

describe('rewriteForTarget', () => {
  const xml = rewriteForTarget(SOURCE, {
    name: 'dr-web-01',
    disks: [{ target: 'vda', socket: '/var/lib/libvirt/drsite/x/nbd/web-01.sock', exportName: 'vda' }],
    networks: { eth0: 'lan-dr' },
    seedImage: '/var/lib/libvirt/drsite/x/vms/web-01/seed.img',
    serialLog: '/var/lib/libvirt/drsite/x/vms/web-01/serial.log',
  });
  const root = parseXml(xml, 'rewritten');
  const devices = child(root, 'devices');

  test('new name, no source uuid, no id, no seclabel, no host devices or emulator path', () => {
    expect(textOf(child(root, 'name'))).toBe('dr-web-01');
    expect(child(root, 'uuid')).toBeUndefined();
    expect(root.attrs.id).toBeUndefined();
    expect(child(root, 'seclabel')).toBeUndefined();
    expect(children(devices, 'hostdev')).toEqual([]);
    expect(children(devices, 'emulator')).toEqual([]);
  });

  test('replicated disks on the NBD export (target and address kept), excluded ones gone, the cdrom empty, the seed disk added', () => {
    const disks = children(devices, 'disk');
    const vda = disks.find((d) => child(d, 'target')?.attrs.dev === 'vda')!;
    expect(vda.attrs).toEqual({ type: 'network', device: 'disk' });
    expect(child(vda, 'driver')?.attrs).toEqual({ name: 'qemu', type: 'raw', cache: 'none' });
    expect(child(vda, 'source')?.attrs).toEqual({ protocol: 'nbd', name: 'vda' });
    expect(child(child(vda, 'source'), 'host')?.attrs).toEqual({ transport: 'unix', socket: '/var/lib/libvirt/drsite/x/nbd/web-01.sock' });
    expect(child(vda, 'address')?.attrs.slot).toBe('0x00');
    expect(disks.find((d) => child(d, 'target')?.attrs.dev === 'vdb')).toBeUndefined();
    const cdrom = disks.find((d) => d.attrs.device === 'cdrom')!;
    expect(child(cdrom, 'source')).toBeUndefined();
    const seed = disks.find((d) => textOf(child(d, 'serial')) === 'cidata')!;
    expect(child(seed, 'source')?.attrs.file).toBe('/var/lib/libvirt/drsite/x/vms/web-01/seed.img');
    expect(child(seed, 'readonly')).toBeDefined();
    expect(child(seed, 'target')?.attrs.dev).toBe('vdz');
  });

  test('interfaces: the mapped one on its network with its MAC and model, an unmapped one removed', () => {
    const nics = children(devices, 'interface');
    expect(nics).toHaveLength(1);
    expect(nics[0]!.attrs).toEqual({ type: 'network' });
    expect(child(nics[0], 'source')?.attrs).toEqual({ network: 'lan-dr' });
    expect(child(nics[0], 'mac')?.attrs.address).toBe('52:54:00:AA:BB:01');
    expect(child(nics[0], 'model')?.attrs.type).toBe('virtio');
  });

  test("the console goes to this site's log, the guest agent channel to a path libvirt chooses", () => {
    expect(child(children(devices, 'serial')[0], 'source')?.attrs).toEqual({ path: '/var/lib/libvirt/drsite/x/vms/web-01/serial.log' });
    expect(child(children(devices, 'channel')[0], 'source')).toBeUndefined();
    expect(child(child(children(devices, 'channel')[0], 'target'), '#text')).toBeUndefined();
  });

  test('a redefinition keeps the uuid the domain has here', () => {
    const again = parseXml(rewriteForTarget(SOURCE, { name: 'dr-web-01', disks: [], networks: {}, uuid: '11111111-2222-4333-8444-555555555555' }), 'again');
    expect(textOf(child(again, 'uuid'))).toBe('11111111-2222-4333-8444-555555555555');
  });
});
