// Sets up what examples/libvirt protects, the way an operator's host would already have it: three
// isolated libvirt networks and the domain web-01 (the test guest, direct kernel boot, on a qcow2
// image, writing to its disk all the time), defined with plain `virsh define` and started. drsite
// creates none of it. Run as root (or a member of the libvirt group):
//   npx node examples/libvirt/setup.ts          # define and start
//   npx node examples/libvirt/setup.ts --down   # destroy and undefine all of it again
// Then: npx node bin/drsite.mjs run examples/libvirt --state-dir .drsite-libvirt
import { execFile } from 'node:child_process';
import { copyFile, mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildTestGuest, makeGuestDisk } from '../../src/demo/test-guest.ts';

const run = promisify(execFile);
const URI = process.env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system';
const DIR = '/var/lib/libvirt/images/drsite-example';
const VM = 'web-01';
const NETWORKS = ['drsite-lan-a', 'drsite-lan-b', 'drsite-test'];
const virsh = (...args: string[]) => run('virsh', ['-q', '-c', URI, ...args]).then((r) => r.stdout);

async function down(): Promise<void> {
  for (const d of [VM, `dr-${VM}`, `dr-${VM}-Test`]) {
    await virsh('destroy', d).catch(() => {});
    await virsh('undefine', d, '--checkpoints-metadata').catch(() => {});
  }
  for (const n of NETWORKS) {
    await virsh('net-destroy', n).catch(() => {});
    await virsh('net-undefine', n).catch(() => {});
  }
  await rm(DIR, { recursive: true, force: true });
  console.log(`removed ${VM}, its image and the networks ${NETWORKS.join(', ')}`);
}

async function up(): Promise<void> {
  const built = await buildTestGuest();
  await mkdir(DIR, { recursive: true });
  // The kernel and initrd beside the image: libvirt's QEMU runs as libvirt-qemu, which may not reach
  // the checkout (a home or `mktemp -d` folder is private).
  const g = { kernel: join(DIR, 'vmlinuz'), initrd: join(DIR, 'initrd.img') };
  await copyFile(built.kernel, g.kernel);
  await copyFile(built.initrd, g.initrd);
  for (const [i, n] of NETWORKS.entries()) {
    if (await virsh('net-info', n).then(() => true, () => false)) continue;
    const file = join(DIR, `${n}.xml`);
    await writeFile(file, `<network><name>${n}</name><bridge name='drsitex${i}'/></network>\n`);
    await virsh('net-define', file);
    await virsh('net-start', n);
  }
  const raw = join(DIR, `${VM}.raw`);
  const image = join(DIR, `${VM}.qcow2`);
  await writeFile(raw, '');
  await truncate(raw, 64 << 20);
  await makeGuestDisk(raw);
  await run('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, image]);
  await rm(raw);
  // The guest: its agent (for application-consistent points), the seed disk's address if it has
  // one (after a failover), then a write every moment until it is shut down.
  const xml = `<domain type='qemu'>
  <name>${VM}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${g.kernel}</kernel>
    <initrd>${g.initrd}</initrd>
    <cmdline>console=ttyS0 quiet drsite.run=qga,seed,churn</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='drsite-lan-a'/><mac address='52:54:00:d5:00:01'/><model type='virtio'/></interface>
    <serial type='file'><source path='${join(DIR, `${VM}.console.log`)}'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>
`;
  const file = join(DIR, `${VM}.xml`);
  await writeFile(file, xml);
  await virsh('define', file);
  await virsh('start', VM);
  console.log(`defined and started ${VM} (console: ${join(DIR, `${VM}.console.log`)}); networks ${NETWORKS.join(', ')}`);
}

await (process.argv.includes('--down') ? down() : up());
